"""Supervised fine-tuning (SFT): teach a pre-trained GPT to answer instructions in the chat format.

Each {"prompt", "completion"} example becomes one chat conversation,

    <|user|> prompt <|end|> <|assistant|> completion <|end|>

(minifm.tokenizer.chat.apply_chat_template), and the next-token cross-entropy is taken only on the
assistant's tokens (the completion and its closing <|end|>): the model learns to answer, not to
imitate questions. TRL calls this `completion_only_loss`; labels of prompt tokens are -100, the
ignore_index of F.cross_entropy. With `packing` several examples share one row of `max_length`
tokens (fewer padding tokens, more examples per step); without it each row is one example,
right-padded. Training runs on the shared loop (minifm.train.loop).

This file also holds the chat helpers every post-training stage uses to turn a prompt into the
ids a model continues (`prompt_ids`), a response into ids (`response_ids`) and generated ids back
into text (`decode_response`), and `evaluate_instructions`, which answers held-out prompts greedily
and scores the answers with tinyworld's grader and ground-truth reward.

Simplifications: packed examples attend across their boundaries (no per-example attention reset,
like TRL's classic packing); the learning rate is warm-up then constant.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from minifm import functional as F
from minifm.autograd.grad_mode import no_grad

IGNORE_INDEX = -100
END_TOKEN = "<|end|>"
PAD_TOKEN = "<|pad|>"


# ---------------------------------------------------------------------- chat helpers
def special_id(tokenizer, token: str) -> int:
    """The id of special token `token` in `tokenizer`, with a clear error when it is missing."""
    specials = getattr(tokenizer, "special_tokens", {})
    if token not in specials:
        raise KeyError(f"tokenizer has no special token {token!r}; it has {sorted(specials)[:8]}...")
    return int(specials[token])


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of a one-turn user conversation ending in "<|assistant|>", ready for generation."""
    from minifm.tokenizer.chat import apply_chat_template

    ids, _ = apply_chat_template([{"role": "user", "content": prompt}], tokenizer, add_generation_prompt=True)
    return [int(i) for i in ids]


def response_ids(tokenizer, response: str) -> list[int]:
    """Token ids of an assistant reply as the model should produce it: the text then <|end|>."""
    return [int(i) for i in tokenizer.encode(response)] + [special_id(tokenizer, END_TOKEN)]


def decode_response(tokenizer, new_tokens) -> str:
    """Text of generated ids, cut at the first <|end|> (the end-of-turn token) or pad."""
    stops = {special_id(tokenizer, END_TOKEN), special_id(tokenizer, PAD_TOKEN)}
    kept = []
    for token in new_tokens:
        if int(token) in stops:
            break
        kept.append(int(token))
    return tokenizer.decode(kept).strip()


def sft_example(prompt_tokens, completion_tokens) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, labels) of one conversation: labels are -100 on the prompt, the ids on the completion."""
    prompt_tokens = np.asarray(prompt_tokens, dtype=np.int64)
    completion_tokens = np.asarray(completion_tokens, dtype=np.int64)
    if prompt_tokens.ndim != 1 or completion_tokens.ndim != 1 or completion_tokens.size == 0:
        raise ValueError(f"sft_example needs 1-D prompt and non-empty completion ids, got shapes "
                         f"{prompt_tokens.shape} and {completion_tokens.shape}")
    input_ids = np.concatenate([prompt_tokens, completion_tokens])  # (T,)
    labels = np.concatenate([np.full(prompt_tokens.size, IGNORE_INDEX, dtype=np.int64), completion_tokens])  # (T,)
    return input_ids, labels


def encode_sft_examples(tokenizer, examples) -> list[tuple[np.ndarray, np.ndarray]]:
    """Tokenise [{"prompt", "completion"}] (or [{"messages"}]) into (input_ids, labels) pairs."""
    from minifm.tokenizer.chat import apply_chat_template

    encoded = []
    for index, example in enumerate(examples):
        if "messages" in example:
            ids, assistant_mask = apply_chat_template(example["messages"], tokenizer)
            ids = np.asarray(ids, dtype=np.int64)
            labels = np.where(np.asarray(assistant_mask, dtype=bool), ids, IGNORE_INDEX)
            encoded.append((ids, labels))
        elif "prompt" in example and "completion" in example:
            encoded.append(sft_example(prompt_ids(tokenizer, example["prompt"]),
                                       response_ids(tokenizer, example["completion"])))
        else:
            raise KeyError(f"example {index} needs 'prompt' and 'completion' or 'messages', got keys {sorted(example)}")
    return encoded


def collate(examples, max_length: int, pad_id: int, packing: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (inputs, targets, attention_mask), each (N, max_length) with targets shifted by one.

    Without packing each example is one row, right-padded (targets -100 on padding) and truncated
    to max_length + 1 tokens. With packing examples are laid end to end and cut into rows.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    width = max_length + 1
    if packing:
        # row r holds stream tokens [r L, r L + L + 1): consecutive rows overlap by one token, so
        # every token but the very first is a target exactly once
        all_ids = np.concatenate([ids for ids, _ in examples])
        all_labels = np.concatenate([labels for _, labels in examples])
        n_rows = max(1, int(np.ceil((all_ids.size - 1) / max_length)))
        stream = n_rows * max_length + 1
        ids = np.full(stream, pad_id, dtype=np.int64)
        labels = np.full(stream, IGNORE_INDEX, dtype=np.int64)
        valid = np.zeros(stream, dtype=np.int64)
        ids[:all_ids.size], labels[:all_labels.size], valid[:all_ids.size] = all_ids, all_labels, 1
        starts = np.arange(n_rows)[:, None] * max_length + np.arange(width)[None, :]  # (N, L+1)
        ids, labels, mask = ids[starts], labels[starts], valid[starts]
    else:
        ids = np.full((len(examples), width), pad_id, dtype=np.int64)  # (N, L+1)
        labels = np.full((len(examples), width), IGNORE_INDEX, dtype=np.int64)  # (N, L+1)
        mask = np.zeros((len(examples), width), dtype=np.int64)
        for row, (example_ids, example_labels) in enumerate(examples):
            length = min(example_ids.size, width)
            ids[row, :length], labels[row, :length], mask[row, :length] = example_ids[:length], example_labels[:length], 1
    return ids[:, :-1], labels[:, 1:], mask[:, :-1]


def sft_loss(model, inputs: np.ndarray, targets: np.ndarray, attention_mask: np.ndarray | None = None):
    """Mean cross-entropy over target tokens that are not -100 (the completion tokens)."""
    if not np.any(targets != IGNORE_INDEX):
        raise ValueError("sft_loss: the batch has no completion tokens (every target is -100)")
    logits = model(inputs, attention_mask=attention_mask)  # (B, T, V)
    return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)


# ---------------------------------------------------------------------- training
@dataclass
class SFTConfig:
    """SFT hyper-parameters (TRL's SFTConfig names where one exists)."""

    learning_rate: float = 1e-3
    max_steps: int = 200
    per_device_train_batch_size: int = 16
    max_length: int = 48
    packing: bool = False
    warmup_steps: int = 10
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def loop_config(config, schedule: str = "constant", progress: bool = False):
    """The shared loop's TrainConfig for a post-training stage config (TRL-style field names)."""
    from minifm.train.loop import TrainConfig

    return TrainConfig(max_steps=config.max_steps, batch_size=config.per_device_train_batch_size,
                       lr=config.learning_rate, min_lr=0.1 * config.learning_rate, warmup_steps=config.warmup_steps,
                       schedule=schedule, clip=config.max_grad_norm, weight_decay=config.weight_decay,
                       eval_every=0, seed=config.seed, progress=progress)


def shuffled_batches(items: list, batch_size: int):
    """batches(rng) for the shared loop: endless epochs of `items` in a fresh random order, full batches only."""
    if not items:
        raise ValueError("no training examples")
    size = min(batch_size, len(items))

    def batches(rng):
        while True:
            order = rng.permutation(len(items))
            for start in range(0, len(order) - size + 1, size):
                yield [items[i] for i in order[start:start + size]]

    return batches


def train_sft_encoded(model, encoded, pad_id: int, config: "SFTConfig | None" = None, run_dir=None):
    """Fine-tune `model` in place on (input_ids, labels) pairs with the shared loop; returns its TrainResult."""
    from minifm.train.loop import train

    config = config or SFTConfig()

    def loss_fn(model, batch):
        inputs, targets, mask = collate(batch, config.max_length, pad_id, config.packing)
        n_tokens = int(np.sum(targets != IGNORE_INDEX))
        return sft_loss(model, inputs, targets, mask), n_tokens

    model.train()
    result = train(model, loss_fn, shuffled_batches(encoded, config.per_device_train_batch_size),
                   loop_config(config), run_dir=run_dir, stage="sft", run_config=config.to_dict())
    model.eval()
    return result


def train_sft(model, tokenizer, examples, config: "SFTConfig | None" = None, run_dir=None):
    """Fine-tune `model` in place on [{"prompt", "completion"}] / [{"messages"}] examples (shared loop)."""
    return train_sft_encoded(model, encode_sft_examples(tokenizer, examples), special_id(tokenizer, PAD_TOKEN),
                             config, run_dir)


# ---------------------------------------------------------------------- evaluation
def generate_responses(model, tokenizer, prompts, max_new_tokens: int = 24, batch_size: int = 64,
                       do_sample: bool = False, temperature: float = 1.0, seed: int = 0) -> list[str]:
    """Answer each prompt (text) in the chat format; greedy unless do_sample."""
    from minifm.sampling.generate import generate

    end_id, pad_id = special_id(tokenizer, END_TOKEN), special_id(tokenizer, PAD_TOKEN)
    rng = np.random.default_rng(seed)
    answers = []
    for start in range(0, len(prompts), batch_size):
        batch = [prompt_ids(tokenizer, p) for p in prompts[start:start + batch_size]]
        out = generate(model, batch, max_new_tokens, do_sample=do_sample, temperature=temperature, top_k=0,
                       eos_token_id=end_id, pad_token_id=pad_id, seed=rng, return_dict_in_generate=True)
        answers.extend(decode_response(tokenizer, out.new_tokens(row)) for row in range(len(batch)))
    return answers


def evaluate_instructions(model, tokenizer, tasks, max_new_tokens: int = 24, batch_size: int = 64) -> dict:
    """Greedy answers to [{"prompt", ...}] graded by tinyworld: accuracy and mean ground-truth reward."""
    from minifm.data import tinyworld

    prompts = [task["prompt"] for task in tasks]
    with no_grad():
        answers = generate_responses(model, tokenizer, prompts, max_new_tokens, batch_size)
    correct = [bool(tinyworld.grade(p, a)) for p, a in zip(prompts, answers)]
    rewards = [float(tinyworld.ground_truth_reward(p, a)) for p, a in zip(prompts, answers)]
    return {"accuracy": float(np.mean(correct)), "mean_ground_truth_reward": float(np.mean(rewards)),
            "n": len(prompts), "examples": [{"prompt": p, "response": a} for p, a in list(zip(prompts, answers))[:5]]}
