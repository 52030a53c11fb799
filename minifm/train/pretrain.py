"""Pre-training: next-token prediction (GPT), masked LM (BERT) and span corruption (T5).

Pre-training turns raw text into knowledge in the weights by self-supervision: the text itself
supplies the targets. Three objectives, one per architecture family:
  causal  (GPT, decoder)       predict token t+1 from tokens <= t; every position is a target
  mlm     (BERT, encoder)      15% of the tokens are selected (80% -> <|mask|>, 10% random, 10% kept)
                               and predicted from both sides
  span    (T5, enc-decoder)    random spans are replaced by sentinels <|extra_i|> in the encoder input;
                               the decoder writes "<|extra_0|> span0 <|extra_1|> span1 ..."
The pipeline (`run_pretraining`): load the corpus (minifm.data.sources: "tinyworld", "python-stdlib",
a folder, a .txt/.md file cut into documents on its blank lines, or a JSONL of {"text": ...}),
optionally curate it (quality rules + dedup; a curation that drops more than 95% of the documents
is refused after printing its per-rule table, with the way out: no curation or the other preset),
train or load a BPE tokenizer, split into train / held-out, pack the token stream into fixed
windows, and run the shared loop (minifm.train.loop). The held-out split takes whole documents at
random when there are at least DOCUMENT_SPLIT_MIN_DOCUMENTS of them (no window straddles the
split), else the last val_fraction of the token stream (one long file still trains); the log says
which. Too little text for one held-out window or one training batch is refused before the model
is built, with the numbers and what to change.
Held-out loss is the token-weighted mean cross-entropy on the held-out windows and perplexity its
exp; for mlm/span it is over the masked / corrupted targets (a "pseudo" perplexity, comparable
only within one objective). A loss-curve PNG is written to the run directory.

Data parallel (`mpiexec -n N minifm pretrain ...`, docs/distributed.md): every rank loads and curates
the corpus itself; rank 0 alone trains (or loads) the tokenizer and shares it with the others (as
JSON), the ranks compare a digest of their training and held-out windows (a rank whose corpus
differs stops the run with the ranks named), and only rank 0 writes files and log lines. The shared
loop does the rest (minifm/train/loop.py).

Simplifications: windows are packed with an eos between documents (GPT-2 style), the held-out set
is capped at `eval_batches` batches, and the held-out masking / corruption is drawn from a fixed
seed so every evaluation scores the same targets.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

import minifm.functional as F
from minifm.config import ConfigBase
from minifm.data.batches import causal_lm_batches, mask_for_mlm, pack_causal_lm, span_corruption
from minifm.data.quality import PRESET_NAMES, QualityPipeline, preset_for
from minifm.data.sources import load_corpus, plural
from minifm.distributed import batch_digest, get_world
from minifm.models import BERT, GPT, T5, BERTConfig, GPTConfig, T5Config
from minifm.models.sizes import param_count
from minifm.tokenizer import BPETokenizer
from minifm.tokenizer.special import DEFAULT_SPECIAL_TOKENS
from minifm.train.config import TrainConfig
from minifm.train.loop import Trainer
from minifm.train.plots import plot_loss_curve

OBJECTIVE_OF_ARCH = {"gpt": "causal", "bert": "mlm", "t5": "span"}
MAX_CURATION_DROP = 0.95            # a curation dropping more than this share does not fit the text
DOCUMENT_SPLIT_MIN_DOCUMENTS = 20   # fewer documents: hold out the tail of the token stream instead


@dataclass
class PretrainConfig(ConfigBase):
    """What to pre-train on and which model (the optimisation settings are in minifm.train.config.TrainConfig)."""

    arch: str = "gpt"               # "gpt" (causal LM) | "bert" (masked LM) | "t5" (span corruption)
    corpus: str = "tinyworld"       # "tinyworld" | "python-stdlib" | a path (.txt/.md, folder, .jsonl with "text")
    corpus_bytes: int = 400_000     # size of the generated tinyworld corpus / cap for python-stdlib
    curate: bool = True             # run the quality pipeline (+ dedup) before tokenizing
    rules: str | None = None        # curation preset "web" | "code" (default: code for python-stdlib, web otherwise)
    vocab_size: int = 1024          # BPE vocabulary when a tokenizer is trained here
    val_fraction: float = 0.05      # fraction held out: of the documents, or of the tokens when there are few
    eval_batches: int = 8           # held-out batches scored at each evaluation
    block_size: int = 128           # context length in tokens
    n_layer: int = 4                # transformer blocks
    n_head: int = 4                 # attention heads
    n_embd: int = 128               # model width
    n_kv_head: int | None = None    # key/value heads for grouped-query attention (unset: n_head)
    dropout: float = 0.0            # dropout probability
    pos: str = "learned"            # positions, every arch: "learned" (absolute table) | "rope"
    norm: str = "layernorm"         # "layernorm" | "rmsnorm"
    mlp: str = "gelu"               # "gelu" | "swiglu"
    mlm_probability: float = 0.15   # BERT: share of tokens selected for masking
    noise_density: float = 0.15     # T5: share of tokens replaced by sentinel spans
    mean_span_length: float = 3.0   # T5: mean corrupted span length
    model_seed: int = 0             # seed of the weight initialisation

    def validate(self) -> None:
        self.check_choice("arch", sorted(OBJECTIVE_OF_ARCH))
        self.check_choice("pos", ("learned", "rope"))
        self.check_choice("norm", ("layernorm", "rmsnorm"))
        self.check_choice("mlp", ("gelu", "swiglu"))
        if self.rules is not None:
            self.check_choice("rules", PRESET_NAMES)
        self.check_range("val_fraction", 0, 1, low_open=True, high_open=True)
        for name in ("corpus_bytes", "vocab_size", "eval_batches", "block_size", "n_layer", "n_head", "n_embd",
                     "n_kv_head"):
            self.check_range(name, low=1)
        self.check_range("dropout", 0, 1, high_open=True)
        for name in ("mlm_probability", "noise_density"):
            self.check_range(name, 0, 1, low_open=True, high_open=True)
        self.check_range("mean_span_length", low=1)

    @property
    def objective(self) -> str:
        return OBJECTIVE_OF_ARCH[self.arch]


# ---------------------------------------------------------------------------------------- model
def build_model(config: PretrainConfig, vocab_size: int, special_tokens: dict | None = None):
    """The GPT / BERT / T5 that config.arch names, sized by the config and the tokenizer."""

    common = dict(vocab_size=vocab_size, block_size=config.block_size, n_layer=config.n_layer,
                  n_head=config.n_head, n_embd=config.n_embd, n_kv_head=config.n_kv_head, dropout=config.dropout,
                  norm=config.norm, mlp=config.mlp, seed=config.model_seed)
    if config.arch == "gpt":
        return GPT(GPTConfig(pos=config.pos, **common))
    if config.arch == "bert":
        return BERT(BERTConfig(pos=config.pos, **common))
    pad = (special_tokens or {}).get("<|pad|>", 0)
    return T5(T5Config(pos=config.pos, pad_token_id=pad, decoder_start_token_id=pad, **common))


# ---------------------------------------------------------------------------------------- objectives
def endless(make_epoch, rng):
    """Epoch after epoch of make_epoch(rng) (each epoch reshuffles with the same generator)."""
    while True:
        produced = False
        for batch in make_epoch(rng):
            produced = True
            yield batch
        if not produced:
            raise ValueError("an epoch produced no batch: the training set is smaller than one batch")


class CausalLMObjective:
    """GPT: next-token cross-entropy on packed windows (inputs = window[:-1], targets = window[1:])."""

    name = "causal"

    def __init__(self, train_windows: np.ndarray, val_windows: np.ndarray, batch_size: int, eval_batches: int):
        self.train_windows = train_windows  # (n, T + 1)
        self.val_windows = val_windows[:batch_size * eval_batches]  # (m, T + 1)
        self.batch_size = batch_size

    def batches(self, rng):

        return endless(lambda r: causal_lm_batches(self.train_windows, self.batch_size, r, drop_last=True), rng)

    def loss(self, model, batch):
        inputs, targets = batch  # (B, T), (B, T)
        logits = model(inputs)  # (B, T, V)
        return F.cross_entropy(logits, targets), targets.size

    def eval_batches(self):
        for start in range(0, self.val_windows.shape[0], self.batch_size):
            windows = self.val_windows[start:start + self.batch_size]
            yield windows[:, :-1], windows[:, 1:]

    def evaluate(self, model) -> dict:
        return _weighted_eval(self, model)


class MaskedLMObjective:
    """BERT: predict the selected tokens of each window (mask_for_mlm, 80/10/10)."""

    name = "mlm"

    def __init__(self, train_windows, val_windows, batch_size, eval_batches, tokenizer, mlm_probability):
        self.train_windows = train_windows[:, :-1]  # (n, T)
        self.val_windows = val_windows[:batch_size * eval_batches, :-1]  # (m, T)
        self.batch_size = batch_size
        specials = tokenizer.special_tokens
        if "<|mask|>" not in specials:
            raise ValueError("masked-LM pre-training needs a '<|mask|>' special token in the tokenizer")
        self.mask_id = specials["<|mask|>"]
        self.special_ids = sorted(specials.values())
        self.vocab_size = tokenizer.vocab_size
        self.mlm_probability = mlm_probability

    def _mask(self, windows, rng):

        return mask_for_mlm(windows, rng, self.mask_id, self.vocab_size, self.special_ids, self.mlm_probability)

    def batches(self, rng):
        def epoch(r):
            order = r.permutation(self.train_windows.shape[0])
            for start in range(0, order.size - self.batch_size + 1, self.batch_size):
                yield self._mask(self.train_windows[order[start:start + self.batch_size]], r)

        return endless(epoch, rng)

    def loss(self, model, batch):
        inputs, labels = batch  # (B, T), (B, T) with -100 where not selected
        logits = model.mlm_logits(model(inputs))  # (B, T, V)
        return F.cross_entropy(logits, labels), int((labels != -100).sum())

    def eval_batches(self):
        rng = np.random.default_rng(12345)  # the same held-out masking at every evaluation
        for start in range(0, self.val_windows.shape[0], self.batch_size):
            yield self._mask(self.val_windows[start:start + self.batch_size], rng)

    def evaluate(self, model) -> dict:
        return _weighted_eval(self, model)


class SpanCorruptionObjective:
    """T5: encoder sees the window with spans replaced by sentinels, decoder writes the spans."""

    name = "span"

    def __init__(self, train_windows, val_windows, batch_size, eval_batches, tokenizer, noise_density,
                 mean_span_length):
        self.train_windows = train_windows[:, :-1]  # (n, T)
        self.val_windows = val_windows[:batch_size * eval_batches, :-1]  # (m, T)
        self.batch_size = batch_size
        specials = tokenizer.special_tokens
        self.sentinels = [specials[f"<|extra_{i}|>"] for i in range(32) if f"<|extra_{i}|>" in specials]
        if not self.sentinels:
            raise ValueError("span-corruption pre-training needs '<|extra_i|>' sentinel special tokens")
        self.noise_density = noise_density
        self.mean_span_length = mean_span_length

    def _corrupt(self, windows, rng):

        pairs = [span_corruption(row, rng, self.sentinels, self.noise_density, self.mean_span_length)
                 for row in windows]
        encoder = np.stack([p[0] for p in pairs])  # (B, S): equal lengths for equal window lengths
        targets = np.stack([p[1] for p in pairs])  # (B, T_dec)
        return encoder, targets

    def batches(self, rng):
        def epoch(r):
            order = r.permutation(self.train_windows.shape[0])
            for start in range(0, order.size - self.batch_size + 1, self.batch_size):
                yield self._corrupt(self.train_windows[order[start:start + self.batch_size]], r)

        return endless(epoch, rng)

    def loss(self, model, batch):
        encoder_ids, targets = batch
        return model.loss(encoder_ids, targets), targets.size

    def eval_batches(self):
        rng = np.random.default_rng(12345)
        for start in range(0, self.val_windows.shape[0], self.batch_size):
            yield self._corrupt(self.val_windows[start:start + self.batch_size], rng)

    def evaluate(self, model) -> dict:
        return _weighted_eval(self, model)


def _weighted_eval(objective, model) -> dict:
    """Token-weighted mean held-out loss and its exp (perplexity)."""
    total, count = 0.0, 0
    for batch in objective.eval_batches():
        loss, n_tokens = objective.loss(model, batch)
        total += float(loss.data) * n_tokens
        count += n_tokens
    if count == 0:
        raise ValueError("the held-out set is empty: raise corpus_bytes or val_fraction")
    mean = total / count
    return {"val_loss": mean, "val_ppl": math.exp(min(mean, 700.0))}


def make_objective(config: PretrainConfig, train_windows, val_windows, batch_size: int, tokenizer):
    if config.objective == "causal":
        return CausalLMObjective(train_windows, val_windows, batch_size, config.eval_batches)
    if config.objective == "mlm":
        return MaskedLMObjective(train_windows, val_windows, batch_size, config.eval_batches, tokenizer,
                                 config.mlm_probability)
    return SpanCorruptionObjective(train_windows, val_windows, batch_size, config.eval_batches, tokenizer,
                                   config.noise_density, config.mean_span_length)


# ---------------------------------------------------------------------------------------- data
def curate_texts(texts: list[str], preset: str = "web"):
    """Run the quality pipeline with the "web" (prose) or "code" rules."""
    return QualityPipeline(preset=preset).run(texts)


def check_curation(curation, preset: str, log=print) -> None:
    """Refuse a curation that kept nothing or dropped more than MAX_CURATION_DROP of the documents: the
    rules do not fit this text. `log` gets the per-rule table; the error is one line with the way out."""
    if curation.kept and curation.dropped_fraction() <= MAX_CURATION_DROP:
        return
    log(curation.table())
    top = curation.top_rule()
    culprit = f"; {top.rule} dropped {top.dropped}" if top is not None else ""
    other = next(p for p in PRESET_NAMES if p != preset)
    raise ValueError(f"curation kept {len(curation.kept)} of {curation.n_input} documents with the {preset!r} "
                     f"rules (table above{culprit}); try --no-curate or --rules {other}")


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE with minifm's default special tokens (eos, pad, chat roles, mask, sentinels)."""

    return BPETokenizer.train(texts, vocab_size, special_tokens=DEFAULT_SPECIAL_TOKENS)


class HeldOutSplit(NamedTuple):
    train: list                # token lists
    held_out: list             # token lists
    kind: str                  # "document" | "token"
    description: str           # one line for the log


def split_documents(token_lists: list, val_fraction: float, seed: int) -> HeldOutSplit:
    """Train / held-out token lists.

    With at least DOCUMENT_SPLIT_MIN_DOCUMENTS documents, a random val_fraction of whole documents is
    held out (at least one, never all): no window straddles the split. With fewer (one long file, a
    handful of notes), a whole-document split would be too coarse, so the last val_fraction of the
    tokens of the documents in order is held out (at least one token, never all), cutting one
    document in two: a token-level split.
    """
    n_documents = len(token_lists)
    n_tokens = sum(len(tokens) for tokens in token_lists)
    if n_tokens < 2:
        raise ValueError(f"split_documents: need at least 2 tokens to hold some out, got {n_tokens} in "
                         f"{plural(n_documents, 'document')}")
    if n_documents >= DOCUMENT_SPLIT_MIN_DOCUMENTS:
        order = np.random.default_rng(seed).permutation(n_documents)
        n_val = min(n_documents - 1, max(1, int(round(n_documents * val_fraction))))
        held_out = [token_lists[i] for i in sorted(order[:n_val])]
        train = [token_lists[i] for i in sorted(order[n_val:])]
        return HeldOutSplit(train, held_out, "document",
                            f"held out {n_val:,} of {n_documents:,} documents ({n_val / n_documents:.1%}), chosen "
                            "at random (a document-level split)")
    n_val = min(n_tokens - 1, max(1, int(round(n_tokens * val_fraction))))
    train, held_out, missing = list(token_lists), [], n_val
    while missing:
        last = train.pop()
        if len(last) <= missing:
            held_out.insert(0, last)
            missing -= len(last)
        else:
            train.append(last[:len(last) - missing])
            held_out.insert(0, last[len(last) - missing:])
            missing = 0
    few = plural(n_documents, "document") + (" is" if n_documents == 1 else " are")
    return HeldOutSplit(train, held_out, "token",
                        f"held out the last {n_val:,} of {n_tokens:,} tokens ({n_val / n_tokens:.1%}), a token-level "
                        f"split since {few} fewer than {DOCUMENT_SPLIT_MIN_DOCUMENTS}")


def pack(token_lists, block_size: int, eos_id: int, what: str) -> np.ndarray:
    """Windows of block_size + 1 tokens (documents joined by eos); too few tokens is a ValueError."""
    total = sum(len(t) + 1 for t in token_lists)
    if total < block_size + 1:
        raise ValueError(f"the {what} split has {total} tokens, fewer than one window of block_size + 1 = "
                         f"{block_size + 1}: use a larger corpus, a smaller block_size or (held-out) a larger "
                         "val_fraction")
    return pack_causal_lm(token_lists, block_size, eos_id)


def pack_split(split: HeldOutSplit, config: PretrainConfig, batch_size: int, eos_id: int):
    """(train windows, held-out windows), after checking that the held-out part fills one window and the
    training part one batch; else a ValueError with the numbers and what to change."""
    window = config.block_size + 1
    train_tokens = sum(len(t) + 1 for t in split.train)     # + 1: the eos after each document
    val_tokens = sum(len(t) + 1 for t in split.held_out)
    total = train_tokens + val_tokens
    if val_tokens < window:
        needed = math.ceil(100 * window / total * 1.05) / 100   # 5% slack: random documents vary in length
        ways = [f"raise val_fraction (now {config.val_fraction}; about {needed} would do)"] if needed < 0.5 else []
        ways += [f"lower block_size to at most {val_tokens - 1}", f"add text (the corpus has {total:,} tokens)"]
        raise ValueError(f"the held-out split has {val_tokens:,} tokens, fewer than one window of block_size + 1 "
                         f"= {window}: {', '.join(ways[:-1])}{',' if len(ways) > 2 else ''} or {ways[-1]}")
    n_train_windows = (train_tokens - 1) // config.block_size
    if n_train_windows < batch_size:
        raise ValueError(f"the training split has {train_tokens:,} tokens, which pack into {n_train_windows} windows of "
                         f"block_size + 1 = {window}, fewer than one batch of per_device_train_batch_size = {batch_size}: lower "
                         f"per_device_train_batch_size or block_size, or add text (one batch needs "
                         f"{batch_size * config.block_size + 1:,} training tokens)")
    return pack(split.train, config.block_size, eos_id, "training"), pack(split.held_out, config.block_size, eos_id,
                                                                           "held-out")


# ---------------------------------------------------------------------------------------- pipeline
def run_pretraining(run_dir, config: PretrainConfig, train_config: TrainConfig, tokenizer=None, texts=None,
                    resume: bool = False, log=print) -> dict:
    """Corpus -> (curation) -> tokenizer -> windows -> shared loop -> held-out perplexity + loss curve.

    Writes into run_dir: tokenizer.json, config.json, model.safetensors, optimizer.safetensors,
    train_state.json, metrics.jsonl, loss_curve.png, pretrain_summary.json. Returns the summary
    dict (with the live "model" and "tokenizer" objects added under those keys). Nothing is written
    until the data is ready: text that cannot train (curation dropping nearly all of it, too little
    for a held-out window or a batch) is refused with run_dir untouched. With several ranks only
    rank 0 writes and logs; every rank returns the summary.
    """

    run_dir = Path(run_dir)
    world = get_world()
    if not world.is_writer:
        log = _silent  # one writer
    started = time.perf_counter()
    curation = None
    if texts is None:
        texts = load_corpus(config.corpus, max_bytes=config.corpus_bytes, log=log)  # log: how a file was split
        if config.curate:
            preset = preset_for(config.corpus, config.rules)
            curation = curate_texts(texts, preset)
            log(f"curation ({preset} rules) kept {len(curation.kept)} of {curation.n_input} documents")
            check_curation(curation, preset, log)
            texts = curation.kept
    tokenizer_path = run_dir / "tokenizer.json"

    def choose_tokenizer():
        chosen = tokenizer
        if chosen is None and resume and tokenizer_path.exists():
            chosen = BPETokenizer.load(tokenizer_path)
        if chosen is None:
            log(f"training a {config.vocab_size}-token BPE tokenizer on {plural(len(texts), 'document')}")
            chosen = train_tokenizer(texts, config.vocab_size)
        return chosen

    if world.distributed:  # rank 0 chooses; the others need no copy of the run directory or tokenizer file
        shared = world.share_from_root(lambda: json.dumps(choose_tokenizer().to_dict()).encode("utf-8"),
                                       "the tokenizer of rank 0")
        tokenizer = BPETokenizer.from_dict(json.loads(shared.decode("utf-8")), "rank 0's tokenizer")
    else:
        tokenizer = choose_tokenizer()
    eos_id = tokenizer.special_tokens.get("<|endoftext|>")
    if eos_id is None:
        raise ValueError("the tokenizer needs an '<|endoftext|>' special token to separate documents")
    token_lists = tokenizer.encode_batch(texts)
    split = split_documents(token_lists, config.val_fraction, train_config.seed)
    log(split.description)
    train_windows, val_windows = pack_split(split, config, train_config.per_device_train_batch_size, eos_id)
    world.check_same("the training and held-out windows (each rank reads and tokenizes the corpus itself)",
                     batch_digest((train_windows, val_windows)))
    if world.is_writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save(tokenizer_path)
    objective = make_objective(config, train_windows, val_windows, train_config.per_device_train_batch_size, tokenizer)
    model = build_model(config, tokenizer.vocab_size, tokenizer.special_tokens)

    n_params = int(param_count(model.config))
    log(f"{config.arch.upper()} with {n_params:,} parameters; {train_windows.shape[0]} training windows of "
        f"{config.block_size} tokens ({train_windows.shape[0] * config.block_size:,} tokens), "
        f"{val_windows.shape[0]} held-out windows")
    run_config = {"stage": "pretrain", "pretrain": config.to_dict(), "train": train_config.to_dict(),
                  "model": {"arch": config.arch, "config": model.config.to_dict()}}
    trainer = Trainer(model, objective.loss, objective.batches, train_config, run_dir=run_dir,
                      eval_fn=objective.evaluate, stage="pretrain", run_config=run_config)
    result = trainer.fit(resume=resume)

    rows = result.history  # every row of metrics.jsonl, on every rank
    curve = run_dir / "loss_curve.png"
    if world.is_writer:
        plot_loss_curve(rows, curve, title=f"{config.arch.upper()} pre-training ({config.objective}) on {config.corpus}")
    final = result.final_eval
    losses = [r["loss"] for r in rows if "loss" in r]
    speeds = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r]
    summary = {
        "arch": config.arch, "objective": config.objective, "corpus": config.corpus,
        "documents": len(texts), "held_out_split": split.kind, "train_windows": int(train_windows.shape[0]),
        "val_windows": int(min(val_windows.shape[0], train_config.per_device_train_batch_size * config.eval_batches)),
        "params": n_params, "steps": result.step, "tokens": result.tokens,
        "train_elapsed_s": result.elapsed_s, "total_elapsed_s": time.perf_counter() - started,
        "tokens_per_s_median": float(np.median(speeds)) if speeds else None,
        "first_loss": losses[0] if losses else None, "final_train_loss": losses[-1] if losses else None,
        "val_loss": final.get("val_loss"), "val_ppl": final.get("val_ppl"),
        "loss_curve": curve.name, "vocab_size": tokenizer.vocab_size,
        "curation_kept": None if curation is None else len(curation.kept),
    }
    if world.is_writer:
        (run_dir / "pretrain_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    log(f"held-out loss {summary['val_loss']:.4f} nats/token, perplexity {summary['val_ppl']:.2f}")
    summary["model"] = model
    summary["tokenizer"] = tokenizer
    summary["curation"] = curation
    return summary


def _silent(*args, **kwargs) -> None:
    """The log of a rank other than 0 (one writer)."""


__all__ = ["CausalLMObjective", "HeldOutSplit", "MaskedLMObjective", "PretrainConfig", "SpanCorruptionObjective",
           "build_model", "check_curation", "make_objective", "pack_split", "run_pretraining", "split_documents"]
