"""Lab: architectures. An encoder (BERT), a decoder (GPT) and an encoder-decoder (T5), side by side.

The question. The chapter sorts transformers into three families: decoder-only models (GPT) read left
to right and are trained to predict the next token, so they generate; encoder-only models (BERT) read
the whole text at once and are trained to fill in masked tokens, so they understand but do not
generate; encoder-decoders (T5) read an input with an encoder and write an output with a decoder, so
they transform one text into another. At the same size and the same training compute, is each one
actually better at its own kind of task, and how badly does it do the others?

The setup. The three models are pre-trained from scratch on the same bilingual tinyworld corpus (English
and Spanish, half each) with the same tokenizer, each with its own objective (minifm/train/pretrain.py):
next-token prediction (GPT), masked LM (BERT), span corruption (T5). They are matched in parameters:
GPT and BERT have `n_layer` layers of width `n_embd`; T5 has n_layer / 2 encoder and n_layer / 2
decoder layers (a decoder layer carries an extra cross-attention) and a width that brings its
parameter count within MATCH_TOLERANCE of GPT's, with as many heads as that allows (each head's size
must stay even for rotary positions: at the default 4 x 48, T5 is 44 wide with 2 heads of 22, as a
46-wide T5 nearer in size could have only one head); BERT carries its masked-LM head and pooler on
top. The default preset keeps both within MATCH_TOLERANCE of GPT (tests/lab/test_lab_architectures.py
checks it). They are matched in training compute: each trains for as many steps as GPT's budget of
FLOPs buys, counted as minifm.models.sizes counts them (6 FLOPs per matrix parameter per token, plus
attention). T5's decoder only writes the corrupted spans (about a third of the window here), so a T5
step costs less and it gets more of them.

Making the comparison fair at a tiny budget. A first version trained 4 x 64 models for 300 GPT steps
with BERT's usual 15% masking and T5's usual 15% noise: GPT reached a held-out loss of 1.1 nats, while
BERT's masked-LM loss stayed at 4.9 and T5's encoder learned nothing usable (both scored the
context-free unigram guess on every task). Two things were wrong with that, neither of them about the
architectures:
  - too few steps. A masked LM spends its first few hundred steps on a plateau at the unigram loss
    before it learns to use its context (GPT escapes at once: its left neighbour predicts the next
    token). A probe at 4 x 64, 40% masking, a 1000-step schedule: 5.1 nats at step 80, 4.3 at 200,
    2.0 at 480. So the default preset buys more steps with smaller models (4 x 48, 900 GPT steps)
    rather than larger models trained for fewer;
  - too little signal per step. GPT learns from every token of a window, BERT only from the masked
    share, T5 only from the corrupted spans. The default preset masks 40% (Wettig et al. 2023, "Should
    you mask 15% in masked language modeling?", found 40% better than 15% for BERT) and corrupts 30% for
    T5 (its paper's 15% was chosen for much longer training); the report measures the tokens that carry
    a loss in each step ("loss tokens").
Each objective keeps the same learning rate (3e-3, cosine, 5% warm-up): it is the rate GPT trains well
at, and in the probes BERT learned faster at 3e-3 than at 1e-3 (3.1 against 4.3 nats by step 320,
with 40% and 15% masking). That is the extent of the tuning (one learning rate each, a mask / noise
rate each), which a careful study would sweep per objective.
The report plots each model's training loss against the unigram loss, so a model that did not learn
shows as one; its task scores then say nothing about its architecture, and the report says so.

T5 is the one that does not learn here: its decoder never learns to read the encoder for the first token
of a span (the report measures it with the window's own encoder input against another window's). Probes
at the default budget, each one seed, the default otherwise, that did not change that (first-token loss
with its own input / another window's; unigram guess 5.05):
  - learning rate 1e-2 instead of 3e-3: span loss 2.41, blank accuracy 0.08;
  - learned absolute positions (`POSITIONS`; positions are a per-model setting of the preset, and
    `PretrainConfig.pos` reaches T5 too): 4.79 / 4.96; they also cost GPT (held-out loss 0.85-0.87
    against 0.72) and kept BERT on its unigram plateau (4.57-4.61 against 2.24), so all three keep RoPE;
  - spans of one token at 40% noise, BERT's masking rate, so that every span token is a first token:
    4.07 / 4.17, blank accuracy at the floor.
The last probe gives T5's encoder as many targets per window as BERT has masked tokens (about 25; the
default settings give it only about 6 first tokens of spans), so the count of targets alone is not the
cause. Untested hypotheses: the route (the encoder's guess reaches the loss only through cross-attention
from a decoder that must first find the matching sentinel), and the depth (2 + 2 layers, 44 wide, where
BERT has 4 layers, 48 wide, all of them reading the whole window).

Speed is measured side by side, not read off the training runs: on a shared machine the three runs
happen minutes apart under different loads (the first version reported T5 at 5,431 ± 2,279 tokens/s
against ~750 for the others: its window tokens over its wall time; a T5 step costs about half of
GPT's FLOPs, and the rest was a quieter machine while it ran). One training step of each model in
turn, a few rounds, the median; counted both as window tokens (the text read) and as loss tokens.

Three tasks, each scored on text no model trained on:
  next token         held-out windows cut at a few positions: predict the token after the cut from
                     the text before it. GPT: its own objective. BERT: the text then a [MASK] at the
                     end (in training only a window's last token has nothing to its right). T5: the text then a
                     sentinel, the decoder writes the sentinel's span (its objective ends with one).
  fill in the blank  one token in the middle of a held-out window is hidden: predict it. BERT: a
                     [MASK] there, with both sides visible. T5: a sentinel there. GPT: it reads left
                     to right, so it can only use the text before the blank.
  translation        en -> es of tinyworld fact sentences, after the same fine-tuning steps on parallel
                     pairs (several tinyworlds, so new names and towns); graded by exact match on
                     sentences held out by a hash of their text. T5: encoder reads English, decoder
                     writes Spanish. GPT: "English <|sep|> Spanish" as one sequence, continued after
                     the separator. BERT: English <|sep|> then one [MASK] per output slot, every
                     output token predicted at once (it must also guess where the sentence ends).

Reported: parameters, FLOPs per token (sizes.flops_per_token), training steps and FLOPs, training speed
(window and loss tokens per second), the pre-training curves against the unigram loss, and each model on
each task (accuracy and loss, and the context-free unigram guess as the floor), with seeds as error bars.

Simplifications: tiny models, short pre-training and a synthetic corpus; all three use rotary
positions and minifm's pre-norm blocks (the originals differ in details: BERT's learned positions and
post-norm, T5's relative-position buckets); the fine-tuning for translation is short and the same
for all three; next-token and blank accuracy score one token (T5 and BERT may have learned spans);
GPT fills a blank from its left side only (it could also rescore candidates with the right side, as
decoder-only models are often evaluated on cloze tasks; that is not measured here).
"""
from __future__ import annotations

import math
import time
import zlib

import numpy as np

import minifm.functional as F
from minifm.autograd.grad_mode import no_grad
from minifm.data.batches import span_corruption
from minifm.data.tinyworld import FACT_KINDS, World, clean_corpus
from minifm.data.tinyworld import sentences
from minifm.lab.common import LabRun, markdown_table, mean_and_stderr, quiet, settings_fingerprint
from minifm.models import T5Config
from minifm.models.sizes import flops_per_token, param_count
from minifm.runs import load_model
from minifm.sampling.generate import generate
from minifm.train.config import TrainConfig
from minifm.train.loop import make_optimizer, read_metrics, train
from minifm.train.plots import pyplot
from minifm.train.pretrain import (
    PretrainConfig, build_model, make_objective, pack, run_pretraining, train_tokenizer,
)

NAME = "architectures"
CLAIM = "encoders, decoders and encoder-decoders each suit their own tasks"
SUMMARY = "GPT, BERT, T5 at matched parameters and compute: next token, fill in the blank, en->es translation"
DEFAULT_MINUTES = 10

ARCHITECTURES = ("gpt", "bert", "t5")
NAMES = {"gpt": "GPT (decoder)", "bert": "BERT (encoder)", "t5": "T5 (encoder-decoder)"}
TASKS = ("next token", "fill in the blank", "translation en->es")
MATCH_TOLERANCE = 0.05     # T5's parameter count within 5% of GPT's
HELD_OUT_SEED = 9_999      # the held-out documents
LANGUAGES = {"en": 0.5, "es": 0.5}
TEST_PERCENT = 20          # translation pairs held out: crc32(English sentence) % 100 < TEST_PERCENT
IGNORE_INDEX = -100
LEFT_CONTEXTS = (1, 2, 4, 8, 16, 32, 48)   # blanks after this many tokens of the window (blank_by_left_context)
POSITIONS = {"gpt": "rope", "bert": "rope", "t5": "rope"}   # each model's position encoding (module docstring)

PRESETS = {
    "tiny": dict(corpus_bytes=40_000, held_out_bytes=8_000, vocab_size=300, block_size=48, batch_size=8, n_layer=2,
                 n_head=2, n_embd=16, pos=POSITIONS, gpt_steps=8, learning_rate={"gpt": 3e-3, "bert": 3e-3, "t5": 3e-3},
                 mlm_probability=0.4, noise_density=0.3, n_eval_windows=16, translation_worlds=2,
                 translation_steps=6, translation_batch=8, n_translation_test=16, speed_steps=1, seeds=1),
    "default": dict(corpus_bytes=500_000, held_out_bytes=60_000, vocab_size=512, block_size=64, batch_size=16,
                    n_layer=4, n_head=4, n_embd=48, pos=POSITIONS, gpt_steps=900,
                    learning_rate={"gpt": 3e-3, "bert": 3e-3, "t5": 3e-3},
                    mlm_probability=0.4, noise_density=0.3, n_eval_windows=200, translation_worlds=20,
                    translation_steps=150, translation_batch=32, n_translation_test=200, speed_steps=4, seeds=2),
}
MEAN_SPAN_LENGTH = 3.0     # T5's mean corrupted span length (its paper's value)
TRANSLATION_LR = 1e-3      # the same fine-tuning for all three


# ------------------------------------------------------------------ matching size and compute
def pretrain_config(arch: str, s: dict, n_layer: int, n_embd: int, n_head: int, seed: int = 0) -> PretrainConfig:
    return PretrainConfig(arch=arch, curate=False, vocab_size=s["vocab_size"], block_size=s["block_size"],
                          n_layer=n_layer, n_head=n_head, n_embd=n_embd, pos=s["pos"][arch], model_seed=seed,
                          eval_batches=4, mlm_probability=s["mlm_probability"], noise_density=s["noise_density"],
                          mean_span_length=MEAN_SPAN_LENGTH)


def model_config(config: PretrainConfig, tokenizer):
    """The model config that run_pretraining builds from `config` (GPTConfig, BERTConfig or T5Config)."""
    return build_model(config, tokenizer.vocab_size, tokenizer.special_tokens).config


def heads_for(width: int, most: int, pos: str) -> int:
    """The most attention heads (at most `most`) that split `width` into equal head dimensions, each of an even
    size if the positions are rotary (RoPE rotates pairs of dimensions)."""
    head_multiple = 2 if pos == "rope" else 1
    for heads in range(most, 0, -1):
        if width % (head_multiple * heads) == 0:
            return heads
    raise ValueError(f"width {width} cannot be split into heads{' of even size' if pos == 'rope' else ''}")


def matched_configs(s: dict, tokenizer, seed: int = 0) -> dict[str, PretrainConfig]:
    """GPT and BERT with n_layer x n_embd; T5 with n_layer / 2 encoder + n_layer / 2 decoder layers at an even
    width: of the widths within MATCH_TOLERANCE of GPT's parameter count, the one allowing the most heads (up to
    n_head, each of an even size), then the nearest in parameters (the nearest overall if none is within)."""
    n_layer, n_embd, n_head = s["n_layer"], s["n_embd"], s["n_head"]
    if n_layer < 2 or n_layer % 2:
        raise ValueError(f"n_layer must be even (T5 splits it into encoder and decoder layers), got {n_layer}")
    configs = {arch: pretrain_config(arch, s, n_layer, n_embd, n_head, seed) for arch in ("gpt", "bert")}
    target = param_count(model_config(configs["gpt"], tokenizer))
    candidates = []
    for width in range(2, 2 * n_embd + 1, 2):
        candidate = pretrain_config("t5", s, n_layer // 2, width, heads_for(width, n_head, s["pos"]["t5"]), seed)
        gap = abs(param_count(model_config(candidate, tokenizer)) / target - 1)
        candidates.append((gap > MATCH_TOLERANCE, -candidate.n_head if gap <= MATCH_TOLERANCE else 0, gap, width,
                           candidate))
    configs["t5"] = min(candidates, key=lambda item: item[:4])[4]
    return configs


def span_lengths(length: int, tokenizer, noise_density: float = 0.15,
                 mean_span_length: float = MEAN_SPAN_LENGTH) -> tuple[int, int]:
    """(encoder length, decoder length) of a span-corrupted window of `length` tokens (fixed by the lengths)."""
    sentinels = [tokenizer.special_tokens[f"<|extra_{i}|>"] for i in range(32)]
    encoder, decoder = span_corruption(np.zeros(length, dtype=np.int64), np.random.default_rng(0), sentinels,
                                       noise_density, mean_span_length)
    return encoder.size, decoder.size


def t5_training_flops(config: T5Config, encoder_length: int, decoder_length: int) -> float:
    """Training FLOPs of one T5 example, split into its encoder and decoder tokens.

    sizes.flops_per_token counts a T5 "token" as one encoder plus one decoder token of equal lengths;
    under span corruption the decoder is much shorter, so the two halves are counted apart here, in the
    same convention: 6 FLOPs per matrix parameter per token, and 12 d per attended position per layer
    (self-attention over its own length; the decoder's cross-attention over the encoder's).
    """
    d = config.n_embd
    d_kv = config.kv_heads * config.head_dim
    attention = 2 * d * d + 2 * d * d_kv                                   # q, o and k, v matrices
    mlp = (3 if config.mlp == "swiglu" else 2) * d * config.ffn_hidden
    encoder_per_token = 6 * config.n_layer * (attention + mlp) + 12 * config.n_layer * encoder_length * d
    decoder_per_token = (6 * (config.decoder_layers * (2 * attention + mlp) + config.vocab_size * d)
                         + 12 * config.decoder_layers * (decoder_length + encoder_length) * d)
    return encoder_per_token * encoder_length + decoder_per_token * decoder_length


def flops_per_step(arch: str, config, s: dict, tokenizer) -> float:
    """Training FLOPs of one batch of `batch_size` windows of `block_size` tokens."""
    if arch == "t5":
        encoder_length, decoder_length = span_lengths(s["block_size"], tokenizer, s["noise_density"])
        return s["batch_size"] * t5_training_flops(config, encoder_length, decoder_length)
    return s["batch_size"] * s["block_size"] * flops_per_token(config, seq_len=s["block_size"])


# ------------------------------------------------------------------ next token and fill in the blank
def special(tokenizer, name: str) -> int:
    return tokenizer.special_tokens[name]


def logits_at(arch: str, model, tokenizer, left: np.ndarray, right: np.ndarray | None) -> np.ndarray:
    """Each model's logits (n, V) for the token between `left` (n, a) and `right` (n, b) (None: at the end).

    GPT reads only `left`; BERT reads left [MASK] right; T5 encodes left <extra_0> right and its decoder,
    given <extra_0>, predicts the first token of that span.
    """
    n = left.shape[0]
    right = np.zeros((n, 0), dtype=np.int64) if right is None else right
    with no_grad():
        if arch == "gpt":
            return model(left).data[:, -1]  # (n, V)
        if arch == "bert":
            mask = np.full((n, 1), special(tokenizer, "<|mask|>"), dtype=np.int64)
            inputs = np.concatenate([left, mask, right], axis=1)  # (n, a + 1 + b)
            return model.mlm_logits(model(inputs)).data[:, left.shape[1]]
        sentinel = special(tokenizer, "<|extra_0|>")
        encoder_ids = np.concatenate([left, np.full((n, 1), sentinel, dtype=np.int64), right], axis=1)
        decoder_ids = np.tile([model.config.decoder_start_token_id, sentinel], (n, 1))  # (n, 2)
        return model(encoder_ids, decoder_ids).data[:, 1]  # (n, V)


def score_predictions(logits: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """(mean negative log-likelihood of the targets, accuracy of the argmax)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # (n, V)
    nll = -log_probs[np.arange(targets.size), targets]
    return float(nll.mean()), float(np.mean(np.argmax(logits, axis=-1) == targets))


def predict_at(arch: str, model, tokenizer, windows: np.ndarray, cut: int, blank: bool) -> tuple[float, float]:
    """(loss, accuracy) of predicting token `cut` of each held-out window (n, T + 1) from the tokens before
    it, and (blank=True) the rest of the window after it."""
    block = windows.shape[1] - 1
    right = windows[:, cut + 1:block] if blank else None
    logits = np.concatenate([logits_at(arch, model, tokenizer, windows[start:start + 64, :cut],
                                       None if right is None else right[start:start + 64])
                             for start in range(0, windows.shape[0], 64)])
    return score_predictions(logits, windows[:, cut])


def token_tasks(arch: str, model, tokenizer, windows: np.ndarray) -> dict:
    """Next-token and fill-in-the-blank loss and accuracy at three positions of each held-out window (n, T + 1)."""
    model.eval()
    block = windows.shape[1] - 1
    cuts = [block // 4, block // 2, 3 * block // 4]
    results = {}
    for task in ("next token", "fill in the blank"):
        scores = [predict_at(arch, model, tokenizer, windows, cut, task == "fill in the blank") for cut in cuts]
        results[task] = {"loss": float(np.mean([loss for loss, _ in scores])),
                         "accuracy": float(np.mean([accuracy for _, accuracy in scores]))}
    return results


def blank_by_left_context(arch: str, model, tokenizer, windows: np.ndarray) -> dict:
    """Fill-in-the-blank accuracy and loss with the blank after 1, 2, 4, ... tokens of the window: how much
    the right side is worth when the left side says little (GPT reads the left side only)."""
    model.eval()
    block = windows.shape[1] - 1
    contexts = [left for left in LEFT_CONTEXTS if left < block - 1]
    scores = [predict_at(arch, model, tokenizer, windows, left, blank=True) for left in contexts]
    return {"left_tokens": contexts, "loss": [loss for loss, _ in scores],
            "accuracy": [accuracy for _, accuracy in scores]}


def span_loss_by_kind(model, tokenizer, windows: np.ndarray, noise_density: float) -> dict:
    """T5's span-corruption loss on held-out windows split by what each target is: a sentinel, the first
    token of a span (only the encoder can tell it: the decoder has seen nothing of that span yet) or a later
    token of a span (the span's own earlier tokens help too); each with the window's own encoder input and
    with another window's. The first-token loss with the right encoder against the wrong one measures how
    much the model reads its encoder."""
    model.eval()
    sentinels = [special(tokenizer, f"<|extra_{i}|>") for i in range(32)]
    rng = np.random.default_rng(0)
    rows = windows[:, :-1]
    pairs = [span_corruption(row, rng, sentinels, noise_density, MEAN_SPAN_LENGTH) for row in rows]
    encoder, targets = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])  # (n, S), (n, T_dec)
    other = np.roll(np.arange(rows.shape[0]), 1)   # each window gets its neighbour's encoder input
    is_sentinel = np.isin(targets, sentinels)
    first = np.zeros_like(is_sentinel)
    first[:, 1:] = is_sentinel[:, :-1]
    kinds = {"sentinel": is_sentinel, "first of span": first, "rest of span": ~is_sentinel & ~first}
    result = {}
    with no_grad():
        decoder_inputs = model.shift_right(targets)
        for name, encoder_ids in (("own encoder input", encoder), ("another window's", encoder[other])):
            logits = model(encoder_ids, decoder_inputs).data  # (n, T_dec, V)
            shifted = logits - logits.max(axis=-1, keepdims=True)
            log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
            nll = -np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
            result[name] = {kind: float(nll[selected].mean()) for kind, selected in kinds.items()}
    return result


# ------------------------------------------------------------------ translation
def translation_pairs(n_worlds: int, source: str = "en", target: str = "es") -> tuple[list, list]:
    """(train, test) pairs of canonical fact sentences from tinyworlds 0..n_worlds-1; a sentence is a test
    sentence when crc32 of its source text % 100 < TEST_PERCENT (a fixed, seed-free split)."""
    pairs = {}
    for seed in range(n_worlds):
        for person in World(seed).people:
            for kind in FACT_KINDS:
                pairs[sentences.fact_sentence(person, kind, source)] = sentences.fact_sentence(person, kind, target)
    train_pairs, test_pairs = [], []
    for source_text, target_text in sorted(pairs.items()):
        held_out = zlib.crc32(source_text.encode("utf-8")) % 100 < TEST_PERCENT
        (test_pairs if held_out else train_pairs).append((source_text, target_text))
    return train_pairs, test_pairs


class TranslationFormat:
    """How each architecture reads a (source, target) pair and writes its answer (see the module docstring)."""

    def __init__(self, arch: str, tokenizer, max_target: int):
        self.arch, self.tokenizer, self.max_target = arch, tokenizer, max_target  # max_target counts <|end|>
        self.sep, self.end = special(tokenizer, "<|sep|>"), special(tokenizer, "<|end|>")
        self.pad, self.mask, self.cls = special(tokenizer, "<|pad|>"), special(tokenizer, "<|mask|>"), \
            special(tokenizer, "<|cls|>")

    def batch(self, pairs: list[tuple[list[int], list[int]]]):
        """Training arrays for token-id pairs: GPT (inputs, labels, mask); BERT (inputs, labels, mask);
        T5 (encoder ids, labels, encoder mask). Labels are -100 where nothing is predicted."""
        if self.arch == "gpt":
            rows = [(source + [self.sep] + target + [self.end], len(source) + 1) for source, target in pairs]
            width = max(len(row) for row, _ in rows) - 1
            inputs = np.full((len(rows), width), self.pad, dtype=np.int64)
            labels = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for index, (row, answer_start) in enumerate(rows):
                inputs[index, :len(row) - 1] = row[:-1]
                labels[index, answer_start - 1:len(row) - 1] = row[answer_start:]
                mask[index, :len(row) - 1] = 1
            return inputs, labels, mask
        if self.arch == "bert":
            rows = [[self.cls] + source + [self.sep] + [self.mask] * self.max_target for source, _ in pairs]
            width = max(len(row) for row in rows)
            inputs = np.full((len(rows), width), self.pad, dtype=np.int64)
            labels = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for index, (row, (source, target)) in enumerate(zip(rows, pairs)):
                inputs[index, :len(row)] = row
                mask[index, :len(row)] = 1
                slots = target + [self.end] + [self.pad] * (self.max_target - len(target) - 1)
                labels[index, len(source) + 2:len(row)] = slots
            return inputs, labels, mask
        width = max(len(source) for source, _ in pairs)
        encoder = np.full((len(pairs), width), self.pad, dtype=np.int64)
        encoder_mask = np.zeros((len(pairs), width), dtype=np.int64)
        labels = np.full((len(pairs), self.max_target), IGNORE_INDEX, dtype=np.int64)
        for index, (source, target) in enumerate(pairs):
            encoder[index, :len(source)] = source
            encoder_mask[index, :len(source)] = 1
            labels[index, :len(target) + 1] = target + [self.end]
        return encoder, labels, encoder_mask

    def loss(self, model, batch):
        inputs, labels, mask = batch
        if self.arch == "t5":
            loss = model.loss(inputs, labels, attention_mask=mask)
        elif self.arch == "gpt":
            loss = F.cross_entropy(model(inputs, attention_mask=mask), labels)
        else:
            loss = F.cross_entropy(model.mlm_logits(model(inputs, attention_mask=mask)), labels)
        return loss, int((labels != IGNORE_INDEX).sum())

    def translate(self, model, sources: list[list[int]]) -> list[list[int]]:
        """Greedy outputs (token ids, cut at <|end|>) for each source."""
        model.eval()
        with no_grad():
            if self.arch == "gpt":  # prompts of one length at a time: no padding, and room up to block_size
                outputs = [None] * len(sources)
                for length in sorted({len(source) for source in sources}):
                    rows = [row for row, source in enumerate(sources) if len(source) == length]
                    room = min(self.max_target, model.config.block_size - length - 1)
                    out = generate(model, [sources[row] + [self.sep] for row in rows], room, eos_token_id=self.end,
                                   pad_token_id=self.pad, return_dict_in_generate=True)
                    for index, row in enumerate(rows):
                        outputs[row] = list(out.new_tokens(index))
            elif self.arch == "t5":
                encoder, _, mask = self.batch([(source, []) for source in sources])
                outputs = model.greedy_decode(encoder, self.max_target, attention_mask=mask).tolist()
            else:
                inputs, _, mask = self.batch([(source, []) for source in sources])
                predictions = np.argmax(model.mlm_logits(model(inputs, attention_mask=mask)).data, axis=-1)
                outputs = [predictions[row, len(source) + 2:len(source) + 2 + self.max_target].tolist()
                           for row, source in enumerate(sources)]
        cut = []
        for output in outputs:
            tokens = []
            for token in output:
                if int(token) in (self.end, self.pad):
                    break
                tokens.append(int(token))
            cut.append(tokens)
        return cut


def translation_task(arch: str, model, tokenizer, s: dict, seed: int, run_dir) -> dict:
    """Fine-tune on the train pairs, then exact match and word accuracy on the held-out pairs."""
    block = model.config.block_size

    def fitting(pairs):  # GPT reads source <|sep|> target <|end|> as one sequence: it must fit the context
        encoded = [(source, target, list(tokenizer.encode(source)), list(tokenizer.encode(target)))
                   for source, target in pairs]
        return [item for item in encoded if len(item[2]) + len(item[3]) + 2 <= block]

    train_pairs, test_pairs = translation_pairs(s["translation_worlds"])
    train_items, test_items = fitting(train_pairs), fitting(test_pairs)[:s["n_translation_test"]]
    if not train_items or not test_items:
        raise ValueError(f"no translation pair fits block_size {block}: raise block_size")
    train_ids = [(source_ids, target_ids) for _, _, source_ids, target_ids in train_items]
    test_ids = [(source_ids, target_ids) for _, _, source_ids, target_ids in test_items]
    test_pairs = [(source, target) for source, target, _, _ in test_items]
    max_target = max(len(target) for _, target in train_ids + test_ids) + 1
    form = TranslationFormat(arch, tokenizer, max_target)

    def batches(rng):
        while True:
            order = rng.permutation(len(train_ids))
            for start in range(0, order.size - s["translation_batch"] + 1, s["translation_batch"]):
                yield form.batch([train_ids[index] for index in order[start:start + s["translation_batch"]]])

    model.train()
    config = TrainConfig(max_steps=s["translation_steps"], per_device_train_batch_size=s["translation_batch"],
                         learning_rate=TRANSLATION_LR, warmup_steps=max(1, s["translation_steps"] // 10), eval_steps=0,
                         seed=seed, disable_tqdm=True)
    train(model, form.loss, batches, config, run_dir=run_dir, stage="translation")
    outputs = []
    for start in range(0, len(test_ids), 64):
        outputs += form.translate(model, [source for source, _ in test_ids[start:start + 64]])
    exact, word_accuracy = [], []
    for (_, target_text), output in zip(test_pairs, outputs):
        text = tokenizer.decode(output).strip()
        exact.append(text == target_text)
        reference, written = target_text.split(), text.split()
        word_accuracy.append(sum(a == b for a, b in zip(reference, written)) / len(reference))
    examples = [{"source": source, "reference": target, "output": tokenizer.decode(output).strip()}
                for (source, target), output in list(zip(test_pairs, outputs))[:3]]
    return {"accuracy": float(np.mean(exact)), "word_accuracy": float(np.mean(word_accuracy)),
            "train_pairs": len(train_ids), "test_pairs": len(test_ids), "examples": examples}


# ------------------------------------------------------------------ the experiment
def run(lab: LabRun) -> None:
    s = lab.settings
    texts = clean_corpus(size_bytes=s["corpus_bytes"], seed=0, languages=LANGUAGES)
    tokenizer = train_tokenizer(texts, s["vocab_size"])
    held_out = clean_corpus(size_bytes=s["held_out_bytes"], seed=HELD_OUT_SEED, languages=LANGUAGES)
    windows = pack(tokenizer.encode_batch(held_out), s["block_size"], special(tokenizer, "<|endoftext|>"),
                   "held-out")[:s["n_eval_windows"]]  # (n, T + 1)
    configs = matched_configs(s, tokenizer)
    budget = s["gpt_steps"] * flops_per_step("gpt", model_config(configs["gpt"], tokenizer), s, tokenizer)
    fingerprint = settings_fingerprint(s)  # in every key: changed settings never reuse a kept result
    results = {}
    for arch in ARCHITECTURES:
        config = model_config(configs[arch], tokenizer)
        steps = max(1, round(budget / flops_per_step(arch, config, s, tokenizer)))
        for seed in range(s["seeds"]):
            key = f"{arch} seed={seed} settings={fingerprint}"

            def compute(arch=arch, steps=steps, seed=seed, key=key):
                return train_and_evaluate(lab, arch, configs, steps, seed, tokenizer, texts, windows, key)

            results[key] = dict(lab.sub_run(key, compute), arch=arch, seed=seed)
            results[key]["blank by left context"] = lab.sub_run(     # from the pre-trained model it saved
                f"{arch} seed={seed} blank by left context settings={fingerprint}",
                lambda arch=arch, key=key: blank_by_left_context(arch, load_model(run_directory(lab, key)),
                                                                 tokenizer, windows))
            if arch == "t5":
                results[key]["span loss by kind"] = lab.sub_run(
                    f"t5 seed={seed} span loss by kind settings={fingerprint}",
                    lambda key=key: span_loss_by_kind(load_model(run_directory(lab, key)), tokenizer, windows,
                                                      s["noise_density"]))
    speed = lab.sub_run(f"speed settings={fingerprint}", lambda: measure_speed(s, configs, tokenizer, texts))
    baseline = unigram_baseline(tokenizer, texts, windows)
    report(lab, results, budget, speed, baseline)


def train_and_evaluate(lab: LabRun, arch: str, configs: dict, steps: int, seed: int, tokenizer, texts, windows,
                       key: str) -> dict:
    s = lab.settings
    config = PretrainConfig(**{**configs[arch].to_dict(), "model_seed": seed})
    train_config = TrainConfig(max_steps=steps, per_device_train_batch_size=s["batch_size"],
                               learning_rate=s["learning_rate"][arch], warmup_steps=max(1, steps // 20),
                               eval_steps=0, seed=seed, disable_tqdm=True)
    run_dir = run_directory(lab, key)
    summary = run_pretraining(run_dir, config, train_config, tokenizer=tokenizer, texts=texts, log=quiet)
    model = summary["model"]
    config_of_model = model.config
    losses = [row["loss"] for row in read_metrics(run_dir / "metrics.jsonl") if "loss" in row]
    result = {"params": param_count(config_of_model), "steps": steps,
              "flops_per_token": flops_per_token(config_of_model, seq_len=s["block_size"]),
              "training_flops": steps * flops_per_step(arch, config_of_model, s, tokenizer),
              "train_elapsed_s": summary["train_elapsed_s"],
              "pretraining_loss": summary["val_loss"], "objective": summary["objective"],
              "first_loss": summary["first_loss"], "loss_curve": smoothed(losses),
              "n_layer": config_of_model.n_layer, "n_embd": config_of_model.n_embd, "n_head": config_of_model.n_head}
    result.update(token_tasks(arch, model, tokenizer, windows))
    result["translation en->es"] = translation_task(arch, model, tokenizer, s, seed, run_dir / "translation")
    return result


def run_directory(lab: LabRun, key: str):
    """Where the sub-run `key` pre-trains (its model is saved there; translation fine-tunes in translation/)."""
    return lab.path("runs") / key.replace(" ", "_").replace("=", "-")


def smoothed(losses: list[float], points: int = 50) -> list[list[float]]:
    """[[step, mean training loss of the steps around it], ...]: at most `points` points of the curve."""
    chunk = max(1, len(losses) // points)
    return [[start + chunk, float(np.mean(losses[start:start + chunk]))] for start in range(0, len(losses), chunk)]


def measure_speed(s: dict, configs: dict, tokenizer, texts) -> dict:
    """Training speed of the three models measured side by side: one training step (forward, backward, AdamW
    update) of each in turn, `speed_steps` rounds, the median kept. Timing the models in turn means a change
    of machine load hits all three alike (the pre-training runs themselves ran minutes apart, under whatever
    load the shared machine had then). Two token counts: window tokens (text read per step) and loss tokens
    (tokens that carry a loss: every one for GPT, the masked share for BERT, the decoder's targets for T5)."""
    windows = pack(tokenizer.encode_batch(texts), s["block_size"], special(tokenizer, "<|endoftext|>"), "training")
    train_config = TrainConfig(learning_rate=1e-4, warmup_steps=0, eval_steps=0)
    models, objectives, optimizers, batches = {}, {}, {}, {}
    for arch in ARCHITECTURES:
        models[arch] = build_model(configs[arch], tokenizer.vocab_size, tokenizer.special_tokens)
        models[arch].train()
        objectives[arch] = make_objective(configs[arch], windows, windows, s["batch_size"], tokenizer)
        optimizers[arch] = make_optimizer(models[arch], train_config)
        batches[arch] = objectives[arch].batches(np.random.default_rng(0))
    seconds = {arch: [] for arch in ARCHITECTURES}
    loss_tokens = {arch: [] for arch in ARCHITECTURES}
    for round_ in range(s["speed_steps"] + 1):   # round 0 warms up (allocations, kernel first calls)
        for arch in ARCHITECTURES:
            batch = next(batches[arch])
            started = time.perf_counter()
            optimizers[arch].zero_grad()
            loss, n_tokens = objectives[arch].loss(models[arch], batch)
            loss.backward()
            optimizers[arch].step()
            if round_:
                seconds[arch].append(time.perf_counter() - started)
                loss_tokens[arch].append(n_tokens)
    window_tokens = s["batch_size"] * s["block_size"]
    return {arch: {"step_s": float(np.median(seconds[arch])),
                   "window_tokens_per_s": window_tokens / float(np.median(seconds[arch])),
                   "loss_tokens_per_step": float(np.mean(loss_tokens[arch])),
                   "loss_tokens_per_s": float(np.mean(loss_tokens[arch])) / float(np.median(seconds[arch]))}
            for arch in ARCHITECTURES}


def unigram_baseline(tokenizer, texts, windows: np.ndarray) -> dict:
    """What a model that ignores the context scores: the training text's token frequencies as the prediction
    at every cut (the floor each model must beat to have learned anything from the context)."""
    counts = np.ones(tokenizer.vocab_size)
    for ids in tokenizer.encode_batch(texts):
        np.add.at(counts, np.asarray(ids, dtype=np.int64), 1)
    block = windows.shape[1] - 1
    targets = np.concatenate([windows[:, cut] for cut in (block // 4, block // 2, 3 * block // 4)])
    loss, accuracy = score_predictions(np.tile(np.log(counts / counts.sum()), (targets.size, 1)), targets)
    return {"loss": loss, "accuracy": accuracy}


# ------------------------------------------------------------------ the report
def plot_results(accuracy: dict, by_context: dict, curves: dict, baseline: dict, path) -> None:
    """Left: bars grouped by task (accuracy[task][arch] = (mean, stderr)), the context-free floor dashed.
    Middle: blank accuracy against the tokens to the blank's left (by_context[arch] = (lefts, means, stderrs)).
    Right: each model's training loss (its own objective) against the share of the compute budget spent."""
    plt = pyplot()
    figure, (bars, context, lines) = plt.subplots(1, 3, figsize=(15.5, 4.4), dpi=100,
                                                  gridspec_kw={"width_ratios": [3, 2, 2]})
    tasks = list(accuracy)
    width = 0.8 / len(ARCHITECTURES)
    for index, arch in enumerate(ARCHITECTURES):
        xs = np.arange(len(tasks)) + (index - (len(ARCHITECTURES) - 1) / 2) * width
        bars.bar(xs, [accuracy[task][arch][0] for task in tasks], width,
                 yerr=[accuracy[task][arch][1] for task in tasks], capsize=3, label=NAMES[arch], color=f"C{index}")
    bars.hlines(baseline["accuracy"], -0.45, 1.45, colors="black", linestyles="dashed",
                label="no context (unigram)")
    bars.set_xticks(np.arange(len(tasks)))
    bars.set_xticklabels(tasks)
    bars.set_ylabel("held-out accuracy")
    bars.set_ylim(0, 1)
    bars.set_title("Each architecture on each task (± s.e. over seeds)")
    bars.grid(alpha=0.3, axis="y")
    bars.legend(fontsize=8)
    for index, arch in enumerate(ARCHITECTURES):
        lefts, means, stderrs = by_context[arch]
        context.errorbar(lefts, means, yerr=stderrs, marker="o", capsize=3, color=f"C{index}", label=NAMES[arch])
    context.axhline(baseline["accuracy"], color="black", linestyle="dashed", label="no context (unigram)")
    context.set_xscale("log", base=2)
    context.set_xlabel("tokens to the left of the blank (the rest of the window to its right)")
    context.set_ylabel("fill-in-the-blank accuracy")
    context.set_ylim(0, 1)
    context.set_title("Blank by left context (GPT: left side only)")
    context.grid(alpha=0.3)
    context.legend(fontsize=8)
    for index, arch in enumerate(ARCHITECTURES):
        for seed, curve in enumerate(curves[arch]):
            steps = np.array([point[0] for point in curve], dtype=float)
            lines.plot(steps / steps[-1], [point[1] for point in curve], color=f"C{index}", alpha=0.8,
                       label=NAMES[arch] if seed == 0 else None)
    lines.axhline(baseline["loss"], color="black", linestyle="dashed", label="unigram loss (held-out text)")
    lines.set_xlabel("share of the training-FLOP budget spent")
    lines.set_ylabel("training loss, nats (each its own objective)")
    lines.set_title("Pre-training")
    lines.grid(alpha=0.3)
    lines.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def compare(accuracy: dict, task: str) -> tuple[str, str, bool]:
    """(best, runner-up, whether the best's lead exceeds two standard errors of the difference)."""
    ranked = sorted(ARCHITECTURES, key=lambda arch: -accuracy[task][arch][0])
    (mean_a, se_a), (mean_b, se_b) = accuracy[task][ranked[0]], accuracy[task][ranked[1]]
    return ranked[0], ranked[1], mean_a - mean_b > 2 * math.hypot(se_a, se_b)


def report(lab: LabRun, results: dict, budget: float, speed: dict, baseline: dict) -> None:
    s = lab.settings

    def runs(arch: str) -> list[dict]:
        return [r for r in results.values() if r["arch"] == arch]

    def stat(arch: str, pick) -> tuple[float, float]:
        return mean_and_stderr([pick(r) for r in runs(arch)])

    gpt_params = runs("gpt")[0]["params"]
    size_rows = []
    for arch in ARCHITECTURES:
        first = runs(arch)[0]
        layers = (f"{first['n_layer']} + {first['n_layer']}" if arch == "t5" else f"{first['n_layer']}")
        size_rows.append([NAMES[arch], layers, f"{first['n_embd']} ({first['n_head']} heads)", f"{first['params']:,}",
                          f"{first['params'] / gpt_params - 1:+.1%}", f"{first['flops_per_token']:,}",
                          first["steps"], f"{first['training_flops']:.3g}", f"{1000 * speed[arch]['step_s']:.0f}",
                          f"{speed[arch]['window_tokens_per_s']:,.0f}",
                          f"{speed[arch]['loss_tokens_per_step']:.0f} ({speed[arch]['loss_tokens_per_s']:,.0f}/s)",
                          f"{first['objective']} {stat(arch, lambda r: r['first_loss'])[0]:.2f} -> "
                          f"{stat(arch, lambda r: r['pretraining_loss'])[0]:.2f}"])
    accuracy = {task: {arch: stat(arch, lambda r, task=task: r[task]["accuracy"]) for arch in ARCHITECTURES}
                for task in TASKS}
    curves = {arch: [r["loss_curve"] for r in runs(arch)] for arch in ARCHITECTURES}
    lefts = runs("gpt")[0]["blank by left context"]["left_tokens"]
    by_context = {}
    for arch in ARCHITECTURES:
        pairs = [stat(arch, lambda r, i=i: r["blank by left context"]["accuracy"][i]) for i in range(len(lefts))]
        by_context[arch] = (lefts, [mean for mean, _ in pairs], [stderr for _, stderr in pairs])
    plot_results(accuracy, by_context, curves, baseline, lab.path("task_accuracy.png"))
    context_rows = [[NAMES[arch]] + [f"{mean:.2f} ± {stderr:.2f}" for mean, stderr in zip(*by_context[arch][1:])]
                    for arch in ARCHITECTURES]
    encoder_wins = [left for i, left in enumerate(lefts)
                    if by_context["bert"][1][i] - by_context["gpt"][1][i]
                    > 2 * math.hypot(by_context["bert"][2][i], by_context["gpt"][2][i])]
    decoder_wins = [left for i, left in enumerate(lefts)
                    if by_context["gpt"][1][i] - by_context["bert"][1][i]
                    > 2 * math.hypot(by_context["bert"][2][i], by_context["gpt"][2][i])]
    task_rows = []
    for task in TASKS:
        row = [task]
        for arch in ARCHITECTURES:
            mean, stderr = accuracy[task][arch]
            cell = f"{mean:.3f} ± {stderr:.3f}"
            if task != "translation en->es":
                cell += f" (loss {stat(arch, lambda r, task=task: r[task]['loss'])[0]:.2f})"
            else:
                cell += f" (words {stat(arch, lambda r: r[task]['word_accuracy'])[0]:.2f})"
            row.append(cell)
        row.append(f"{baseline['accuracy']:.3f} (loss {baseline['loss']:.2f})" if task != "translation en->es"
                   else "n/a")
        task_rows.append(row)
    expected = {"next token": "gpt", "fill in the blank": "bert", "translation en->es": "t5"}
    comparisons = {task: compare(accuracy, task) for task in TASKS}
    best = {task: comparisons[task][0] for task in TASKS}
    findings = []
    for task in TASKS:
        winner, second, clear = comparisons[task]
        lead = accuracy[task][winner][0] - accuracy[task][second][0]
        verdict = "as the chapter expects" if winner == expected[task] else \
            f"not the expected {NAMES[expected[task]]}"
        findings.append(f"- {task}: {NAMES[winner]} is best ({accuracy[task][winner][0]:.3f}), ahead of "
                        f"{NAMES[second]} by {lead:.3f}, " + ("more than" if clear else "within") +
                        f" two standard errors; {verdict}.")
    unlearned = [NAMES[arch] for arch in ARCHITECTURES
                 if max(accuracy[task][arch][0] for task in TASKS[:2]) <= baseline["accuracy"] + 0.02]
    def lead(wins: list[int]) -> str:
        return f"with {', '.join(map(str, wins))} token(s) to the blank's left" if wins else "at no position"

    findings.append(
        f"- Blank by left context: BERT is ahead of GPT by more than two standard errors {lead(encoder_wins)}, "
        f"GPT ahead of BERT {lead(decoder_wins)} (BERT {by_context['bert'][1][0]:.2f} vs GPT "
        f"{by_context['gpt'][1][0]:.2f} after {lefts[0]} token, {by_context['bert'][1][-1]:.2f} vs "
        f"{by_context['gpt'][1][-1]:.2f} after {lefts[-1]})."
        + (" The right side is worth most where the left side says little." if encoder_wins and
           (not decoder_wins or max(encoder_wins) < min(decoder_wins)) else ""))
    bert_blank, bert_next = accuracy["fill in the blank"]["bert"][0], accuracy["next token"]["bert"][0]
    findings.append(f"- BERT uses the right side: {bert_blank:.3f} on the blank (both sides) against {bert_next:.3f} "
                    f"on the next token (left side only) at the same positions"
                    + ("." if bert_blank > bert_next else " (no gain: it has not learned to use it)."))
    kinds = ("sentinel", "first of span", "rest of span")
    def span_loss(source: str, kind: str) -> float:
        return stat("t5", lambda r: r["span loss by kind"][source][kind])[0]

    span_rows = [[source] + [f"{span_loss(source, kind):.2f}" for kind in kinds]
                 for source in ("own encoder input", "another window's")]
    own_first, other_first = span_loss("own encoder input", "first of span"), span_loss("another window's",
                                                                                     "first of span")
    findings.append(f"- T5 reads its encoder {'little' if own_first > baseline['loss'] - 1 else 'well'}: the first "
                    f"token of a corrupted span (which only the encoder can tell) costs {own_first:.2f} nats with the "
                    f"window's own encoder input, {other_first:.2f} with another window's, against "
                    f"{baseline['loss']:.2f} for the unigram guess (table below the tasks).")
    if unlearned:
        findings.append(f"- {', '.join(unlearned)} did not beat the context-free unigram guess "
                        f"({baseline['accuracy']:.3f}) on the token tasks: at this budget "
                        + ("it" if len(unlearned) == 1 else "they") + " learned too little for the scores to say "
                        "anything about the architecture.")
    matches = [task for task in TASKS if best[task] == expected[task] and comparisons[task][2]]
    if len(matches) == len(TASKS):
        summary = "The result supports the claim: each family is clearly best at the task its pre-training resembles."
    else:
        summary = (f"The result supports the claim only in part at this scale: the expected family is clearly best "
                   f"at {len(matches)} of {len(TASKS)} tasks ({', '.join(matches) or 'none'}).")
    if unlearned:
        summary += (f" The tasks {' and '.join(unlearned)} should win are no test of its architecture here: it did "
                    "not learn at this budget, so its scores do not show that the claim is wrong either.")
    examples = "\n".join(f"- {NAMES[arch]}: \"{example['source']}\" -> \"{example['output']}\" "
                         f"(reference \"{example['reference']}\")"
                         for arch in ARCHITECTURES for example in runs(arch)[0]["translation en->es"]["examples"][:1])
    lrs = ", ".join(f"{arch.upper()} {s['learning_rate'][arch]:g}" for arch in ARCHITECTURES)
    sections = [
        ("Question", f"At the same size and training compute, is a decoder best at continuing text, an encoder at "
                     f"filling a blank, an encoder-decoder at transforming one text into another? (The chapter: "
                     f"\"{CLAIM}\".)"),
        ("Setup", f"Bilingual tinyworld (English and Spanish, {s['corpus_bytes']:,} bytes), a shared "
                  f"{s['vocab_size']}-token BPE, windows of {s['block_size']} tokens, batch {s['batch_size']}. "
                  f"GPT gets {s['gpt_steps']} steps; the others as many steps as the same training FLOPs "
                  f"({budget:.3g}) buy. Objectives: next token (GPT), masked LM with {s['mlm_probability']:.0%} of "
                  f"the tokens selected (BERT), span corruption with {s['noise_density']:.0%} of the tokens in spans "
                  f"of mean length {MEAN_SPAN_LENGTH:g} (T5); peak learning rates {lrs}, cosine decay, 5% warm-up. "
                  f"Held-out: {s['n_eval_windows']} windows of unseen documents (cuts and blanks at 1/4, 1/2 and 3/4 "
                  f"of each); translation: {s['translation_steps']} fine-tuning steps of {s['translation_batch']} "
                  f"pairs from {s['translation_worlds']} tinyworlds at learning rate {TRANSLATION_LR:g} for all "
                  f"three, graded on up to {s['n_translation_test']} held-out sentences. {s['seeds']} seed(s); ± is "
                  f"the standard error over seeds."),
        ("Size, compute and speed", markdown_table(
            ["model", "layers", "width", "parameters", "vs GPT", "FLOPs/token (sizes)", "steps", "training FLOPs",
             "ms/step", "window tokens/s", "loss tokens per step", "pre-training loss (step 1 -> held-out at the end)"],
            size_rows)
         + "\n\nFLOPs/token is sizes.flops_per_token at the window length (for T5, one encoder plus one decoder "
           "token); training FLOPs counts T5's shorter decoder (span corruption) as it is, which is why T5 gets "
           "more steps. Speed is measured side by side (one training step of each model in turn, "
           f"{s['speed_steps']} rounds, the median), so machine load hits the three alike. Window tokens are the "
           "text a step reads (batch x window, the same for all three); loss tokens are the ones that carry a "
           "loss and a gradient signal: every token for GPT, the masked share for BERT, the decoder's targets "
           "(spans and sentinels) for T5. The pre-training losses are of different objectives and do not compare "
           "across rows; each should fall well below the unigram loss "
           f"({baseline['loss']:.2f}) if the model learned to use its context."),
        ("Tasks", markdown_table(["task"] + [NAMES[arch] for arch in ARCHITECTURES] + ["no context (unigram)"],
                                 task_rows)
         + "\n\nFill-in-the-blank accuracy by the number of tokens to the blank's left (the rest of the "
           f"{s['block_size']}-token window to its right; GPT reads only the left):\n\n"
         + markdown_table(["model"] + [str(left) for left in lefts], context_rows)
         + "\n\nT5's held-out span-corruption loss (nats) by target, with each window's own encoder input and "
           "with another window's (the first token of a span is the one only the encoder can tell):\n\n"
         + markdown_table(["T5 encoder reads"] + list(kinds), span_rows)
         + "\n\n![task accuracy, blank by left context and pre-training curves](task_accuracy.png)\n\n"
           "One held-out translation per model:\n\n" + examples),
        ("Why", "GPT is trained to predict the next token from the tokens before it: exactly the next-token task, "
                "and for a blank it can only use the left side (its blank and next-token scores are the same "
                "predictions). BERT is trained to fill masks with both sides visible: exactly the blank task; a "
                "mask at the very end has nothing to its right, unlike most of its training, and it cannot write a "
                "sequence of unknown length (translation asks it to fill every output slot at once and to guess "
                "where the sentence ends). T5's encoder reads everything and its decoder writes one token at a "
                "time: its span objective covers both blanks and continuations (the last span always ends the "
                "window), and translation is its natural form (read one text, write another); GPT can translate "
                "too by treating source and target as one sequence, which is how decoder-only models do it at "
                "scale. Per step, GPT learns from every token and BERT only from the masked ones; T5's steps are "
                "cheaper (its decoder writes only the spans), so at equal compute it takes more of them."),
        ("What it shows", "\n".join(findings) + "\n\n" + summary),
    ]
    lab.write_report("Architectures: decoder, encoder and encoder-decoder at matched size and compute", sections,
                     {"results": results, "training_flops_budget": budget, "accuracy": accuracy, "best": best,
                      "clear_lead": {task: comparisons[task][2] for task in TASKS}, "speed": speed,
                      "blank_by_left_context": by_context,
                      "unigram_baseline": baseline})
