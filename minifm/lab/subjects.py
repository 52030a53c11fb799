"""The models an experiment studies, behind one interface, and what a set of sampled answers says.

Two kinds of model answer questions in the laboratory:

    minifm's own model   tinyworld's chat format (<|user|> ... <|assistant|>), held-out tinyworld
                         instructions, graded by tinyworld.grade and scored by tinyworld.ground_truth_reward
    SmolLM2-135M-Instruct  its own ChatML template with a short system prompt, the lab's 42 questions
                         (minifm/lab/questions.py), graded by questions.grade_answer (reward: +1 right, -1 wrong)

A `Subject` bundles one of them: the model, how a prompt becomes token ids, how new tokens become a
reply, how a reply is graded, rewarded and reduced to an "answer key" (what two replies must share to
agree). `draw(subject, prompts, samples, seed, ...)` answers every prompt `samples` times with
minifm.sampling.generate and returns `Draws`: (P, S) arrays of replies, correctness, ground-truth
reward, summed log-probability and length.

What a set of answers to one prompt says:
    majority_vote(keys)        the most common answer key (ties: the one seen first): self-consistency
    pairwise_agreement(keys)   the chance that two different samples give the same key, sum c(c-1) / (S(S-1))

SmolLM2 is optional: `smollm2_subject(lab)` returns None (and logs how to install it) when its
package is absent, and the experiments skip its part.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from minifm.autograd.grad_mode import no_grad
from minifm.data import tinyworld
from minifm.data.conversations import END_TOKEN, PAD_TOKEN, decode_response, prompt_ids, special_id
from minifm.data.tinyworld.tasks import SFT_FILLER_TEMPLATES, normalise, split_sentences, strip_polite_prefix
from minifm.lab import questions
from minifm.lifecycle.evaluation import context_length, fitting
from minifm.pretrained.registry import ModelNotInstalledError, resolve_model_path
from minifm.runs import load_any
from minifm.sampling.generate import generate

SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_END = "<|im_end|>"
# the sentences tinyworld's SFT data wraps around an answer ("Let me see.", "That is all."): not part of it
FILLER_SENTENCES = {normalise(sentence) for template in SFT_FILLER_TEMPLATES
                    for sentence in split_sentences(template.format(answer=""))}


class Subject:
    """One model answering one kind of question (see the module docstring). The model and its tokenizer
    are loaded by `load()` on first use, so an experiment whose SmolLM2 sub-runs are all kept never loads it.

    encode_prompt(tokenizer, prompt) -> ids ending where the reply starts
    decode_reply(tokenizer, new ids) -> reply text, cut at the end token
    grade(prompt, reply) -> right?;  reward(prompt, reply) -> ground-truth reward
    answer_key(prompt, reply) -> what agreeing replies share
    end_token, pad_token: the special tokens (by their text) that end a reply and pad finished rows
    """

    def __init__(self, name: str, load: Callable[[], tuple], encode_prompt: Callable, decode_reply: Callable,
                 grade: Callable[[str, str], bool], reward: Callable[[str, str], float],
                 answer_key: Callable[[str, str], str], end_token: str, pad_token: str, max_new_tokens: int,
                 rows_per_call: int = 512):
        self.name, self._load, self._loaded = name, load, None
        self._encode_prompt, self._decode_reply = encode_prompt, decode_reply
        self.grade, self.reward, self.answer_key = grade, reward, answer_key
        self.end_token, self.pad_token = end_token, pad_token
        self.max_new_tokens = max_new_tokens
        self.rows_per_call = rows_per_call  # prompts x samples per generate() call (KV-cache memory)

    def _get(self) -> tuple:
        if self._loaded is None:
            self._loaded = self._load()
        return self._loaded

    @property
    def model(self):
        return self._get()[0]

    @property
    def tokenizer(self):
        return self._get()[1]

    @property
    def eos_token_id(self) -> int:
        return int(self.tokenizer.special_tokens[self.end_token])

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.special_tokens[self.pad_token])

    def encode_prompt(self, prompt: str) -> list[int]:
        return self._encode_prompt(self.tokenizer, prompt)

    def decode_reply(self, tokens: list[int]) -> str:
        return self._decode_reply(self.tokenizer, tokens)


# ------------------------------------------------------------------ minifm's own model on tinyworld
def tinyworld_answer_key(prompt: str, reply: str) -> str:
    """The reply's content: polite marker and the SFT data's filler sentences dropped, normalised."""
    body, _ = strip_polite_prefix(reply)
    sentences = [normalise(sentence) for sentence in split_sentences(body)]
    return " ".join(sentence for sentence in sentences if sentence and sentence not in FILLER_SENTENCES)


def tinyworld_subject(name: str, model, tokenizer, max_new_tokens: int = 24) -> Subject:
    """minifm's own chat model on tinyworld's instructions."""
    return Subject(name, lambda: (model, tokenizer), prompt_ids, decode_response, grade=tinyworld.grade,
                   reward=tinyworld.ground_truth_reward, answer_key=tinyworld_answer_key, end_token=END_TOKEN,
                   pad_token=PAD_TOKEN, max_new_tokens=max_new_tokens)


def tinyworld_prompts(subject: Subject, n: int | None, split: str = "test", seed: int = 0) -> list[str]:
    """The first `n` (None: all) distinct instructions of `split` whose prompt leaves room for the reply."""
    tasks = fitting(tinyworld.instructions(split, seed=seed), subject.tokenizer, context_length(subject.model),
                    subject.max_new_tokens)
    return [task["prompt"] for task in tasks][:n]


# ------------------------------------------------------------------ SmolLM2 on the lab's questions
def chatml_question(tokenizer, question: str) -> list[int]:
    """SmolLM2's chat template with the lab's short system prompt, ready for the reply."""
    messages = [{"role": "system", "content": questions.SYSTEM_PROMPT}, {"role": "user", "content": question}]
    return [int(i) for i in tokenizer.apply_chat_template(messages, add_generation_prompt=True)]


def chatml_reply(tokenizer, tokens: list[int]) -> str:
    """The reply's text up to <|im_end|>."""
    end_id = int(tokenizer.special_tokens[SMOLLM2_END])
    kept = []
    for token in tokens:
        if int(token) == end_id:
            break
        kept.append(int(token))
    return tokenizer.decode(kept).strip()


def question_reward(question: str, reply: str) -> float:
    """+1 for a right answer to one of the lab's questions, -1 for a wrong one."""
    return 1.0 if questions.grade_answer(question, reply) else -1.0


def smollm2_subject(lab, max_new_tokens: int = 12, question=None) -> Subject | None:
    """SmolLM2-135M-Instruct on the lab's questions, or None (logged) when its package is not installed.
    The model is loaded when a sub-run first needs it. `question(tokenizer, text) -> prompt ids` (default
    chatml_question: the question as the only user turn) is how each question is put to it."""
    try:
        resolve_model_path(SMOLLM2)
    except ModelNotInstalledError as missing:
        lab.log(f"SmolLM2 part skipped: {missing}")
        return None
    return Subject("SmolLM2-135M-Instruct", lambda: load_any(SMOLLM2), question or chatml_question, chatml_reply,
                   grade=questions.grade_answer, reward=question_reward, answer_key=questions.answer_key,
                   end_token=SMOLLM2_END, pad_token=SMOLLM2_END, max_new_tokens=max_new_tokens, rows_per_call=128)


# ------------------------------------------------------------------ drawing answers
@dataclass
class Draws:
    """`samples` answers to each of P prompts; every array is (P, S)."""

    prompts: list[str]
    replies: list[list[str]]
    tokens: list[list[list[int]]]   # each reply's new token ids, the end token dropped
    logprob: np.ndarray             # sum of log p_model over the reply's tokens (end token included)
    length: np.ndarray              # generated tokens (end token included)
    correct: np.ndarray             # graded right (bool)
    reward: np.ndarray              # ground-truth reward
    keys: list[list[str]]           # answer keys

    @property
    def shape(self) -> tuple[int, int]:
        return self.logprob.shape


def draw(subject: Subject, prompts: list[str], samples: int, seed: int, *, do_sample: bool = True,
         max_new_tokens: int | None = None, **options) -> Draws:
    """Answer each prompt `samples` times. Sampling draws independent samples (num_return_sequences);
    greedy decoding (do_sample=False) is deterministic, so its one answer is repeated `samples` times.
    `options` go to generate() (temperature, top_k, top_p, repetition_penalty, ...)."""
    max_new_tokens = subject.max_new_tokens if max_new_tokens is None else max_new_tokens
    rng = np.random.default_rng(seed)
    copies = samples if do_sample else 1
    prompts_per_call = max(1, subject.rows_per_call // copies)
    replies, tokens, logprob, length = [], [], [], []
    end_ids = {subject.eos_token_id, subject.pad_token_id}
    for start in range(0, len(prompts), prompts_per_call):
        ids = [subject.encode_prompt(prompt) for prompt in prompts[start:start + prompts_per_call]]
        with no_grad():
            out = generate(subject.model, ids, max_new_tokens, do_sample=do_sample, num_return_sequences=copies,
                           eos_token_id=subject.eos_token_id, pad_token_id=subject.pad_token_id, seed=rng,
                           return_logprobs=True, **options)
        for prompt_row in range(len(ids)):
            rows = [prompt_row * copies + copy for copy in range(copies)] * (samples // copies)
            new = [out.new_tokens(row) for row in rows]
            replies.append([subject.decode_reply(t) for t in new])
            tokens.append([[token for token in t if token not in end_ids] for t in new])
            logprob.append([float(out.logprobs[row].sum()) for row in rows])
            length.append([int(out.num_generated[row]) for row in rows])
    correct = np.array([[subject.grade(p, r) for r in row] for p, row in zip(prompts, replies)], dtype=bool)
    reward = np.array([[subject.reward(p, r) for r in row] for p, row in zip(prompts, replies)], dtype=np.float64)
    keys = [[subject.answer_key(p, r) for r in row] for p, row in zip(prompts, replies)]
    return Draws(list(prompts), replies, tokens, np.array(logprob, dtype=np.float64).reshape(len(prompts), samples),
                 np.array(length, dtype=np.int64).reshape(len(prompts), samples), correct.reshape(len(prompts), samples),
                 reward.reshape(len(prompts), samples), keys)


# ------------------------------------------------------------------ what a set of answers says
def majority_vote(keys: list[str]) -> int:
    """The index of the first answer whose key is the most common one (ties: the key seen first)."""
    if not keys:
        raise ValueError("majority_vote needs at least one answer")
    counts = Counter(keys)
    best = max(counts.values())
    for index, key in enumerate(keys):
        if counts[key] == best:
            return index
    raise AssertionError("unreachable")


def pairwise_agreement(keys: list[str]) -> float:
    """P(two different samples share a key) = sum over keys of c (c - 1) / (S (S - 1)); 1.0 for one sample."""
    total = len(keys)
    if total < 2:
        return 1.0
    same_pairs = sum(count * (count - 1) for count in Counter(keys).values())
    return same_pairs / (total * (total - 1))


__all__ = ["Draws", "Subject", "chatml_question", "chatml_reply", "draw", "majority_vote", "pairwise_agreement",
           "smollm2_subject", "tinyworld_answer_key", "tinyworld_prompts", "tinyworld_subject"]
