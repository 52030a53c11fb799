"""Supervised fine-tuning (SFT): teach a pre-trained GPT to answer instructions in the chat format.

Each {"prompt", "completion"} example becomes one chat conversation,

    <|user|> prompt <|end|> <|assistant|> completion <|end|>

(minifm.data.conversations), and the next-token cross-entropy is taken only on the assistant's
tokens (the completion and its closing <|end|>): the model learns to answer, not to imitate
questions. TRL calls this `completion_only_loss`; labels of prompt tokens are -100, the
ignore_index of F.cross_entropy. With `packing` several examples share one row of `max_length`
tokens (fewer padding tokens, more examples per step); without it each row is one example,
right-padded (minifm.data.batches.collate_sft). Training runs on the shared loop (minifm.train.loop).

Your own data (`train_sft_on_rows`, what `minifm sft --data FILE.jsonl` runs): TRL's rows (text,
prompt/completion, messages; minifm.data.sources.read_jsonl_records) are encoded with the model's
own chat template or as plain text (minifm.data.conversations.encode_sft_rows: the masks, the
truncation to max_length and its warnings), each batch is padded only to its longest row, and a
held-out set, if given, is scored before training, every `eval_steps` and at the end:

    eval_loss                  mean cross-entropy over the held-out rows' trained tokens (token-weighted)
    eval_mean_token_accuracy   share of those tokens that are the argmax of the model's prediction

(TRL's names). `max_length` is cut to the model's context. The checkpoint records a fingerprint of
the encoded data, and --resume refuses data that changed since; the held-out loss before training
is kept in the checkpoint so a resumed run reports it too. OWN_DATA_DEFAULTS are the settings that
path starts from: TRL SFTConfig's defaults (learning rate 2e-5 decaying linearly to 0, no warm-up,
batch 8, max_length 1024), not the tinyworld presets, which suit a ~1M-parameter model.

Simplifications: packed examples attend across their boundaries (no per-example attention reset,
like TRL's classic packing); the learning rate is constant (no warm-up) by default; no epochs
(max_steps counts optimizer updates; the log says how many epochs that is).
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np

from minifm import functional as F
from minifm.autograd.grad_mode import no_grad
from minifm.checkpoint import read_train_state
from minifm.data.batches import IGNORE_INDEX, collate_sft, shuffled_batches
from minifm.data.conversations import PAD_TOKEN, encode_sft_examples, encode_sft_rows, padding_id, special_id
from minifm.data.sources import plural
from minifm.train.config import PostTrainingConfig
from minifm.train.loop import train

# What `minifm sft --data` starts from (TRL SFTConfig's defaults), before --config and the flags.
OWN_DATA_DEFAULTS = {"learning_rate": 2e-5, "lr_scheduler_type": "linear", "warmup_steps": 0, "min_lr": 0.0,
                     "per_device_train_batch_size": 8, "max_length": 1024, "disable_tqdm": False}


def sft_loss(model, inputs: np.ndarray, targets: np.ndarray, attention_mask: np.ndarray | None = None):
    """Mean cross-entropy over target tokens that are not -100 (the completion tokens)."""
    if not np.any(targets != IGNORE_INDEX):
        raise ValueError("sft_loss: the batch has no completion tokens (every target is -100)")
    logits = model(inputs, attention_mask=attention_mask)  # (B, T, V)
    return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)


@dataclass
class SFTConfig(PostTrainingConfig):
    """SFT hyper-parameters: PostTrainingConfig with SFT's defaults, plus TRL SFTConfig's packing."""

    learning_rate: float = 1e-3
    max_steps: int = 200
    warmup_steps: int = 10
    max_length: int = 48
    packing: bool = False                   # lay several examples end to end in one row of max_length


def train_sft_encoded(model, encoded, pad_id: int, config: SFTConfig | None = None, run_dir=None,
                      resume: bool = False, eval_fn=None, extra_state: dict | None = None,
                      pad_to_longest: bool = False):
    """Fine-tune `model` in place on (input_ids, labels) pairs with the shared loop; returns its TrainResult.
    `eval_fn(model) -> metrics` runs every eval_steps and at the end; pad_to_longest pads each batch only
    to its longest row."""
    config = config or SFTConfig()

    def loss_fn(model, batch):
        inputs, targets, mask = collate_sft(batch, config.max_length, pad_id, config.packing, pad_to_longest)
        n_tokens = int(np.sum(targets != IGNORE_INDEX))
        return sft_loss(model, inputs, targets, mask), n_tokens

    model.train()
    result = train(model, loss_fn, shuffled_batches(encoded, config.per_device_train_batch_size), config,
                   run_dir=run_dir, eval_fn=eval_fn, stage="sft", run_config=config.to_dict(), resume=resume,
                   extra_state=extra_state)
    model.eval()
    return result


def train_sft(model, tokenizer, examples, config: SFTConfig | None = None, run_dir=None, resume: bool = False):
    """Fine-tune `model` in place on [{"prompt", "completion"}] / [{"messages"}] examples (shared loop)."""
    return train_sft_encoded(model, encode_sft_examples(tokenizer, examples), special_id(tokenizer, PAD_TOKEN),
                             config, run_dir, resume)


# ---------------------------------------------------------------------- your own data
def context_length(model) -> int:
    """Positions a sequence may fill: block_size minus a prompt- or prefix-tuned model's virtual tokens."""
    return model.config.block_size - int(getattr(model, "num_virtual_tokens", 0) or 0)


def fit_max_length(config, model, log=print):
    """`config` with max_length cut to the model's context (said in the log when it is cut)."""
    context = context_length(model)
    if config.max_length <= context:
        return config
    log(f"max_length {config.max_length} is longer than the model's context; using {context}")
    return type(config)(**{**config.to_dict(), "max_length": context})


def evaluate_sft(model, examples, pad_id: int, max_length: int, batch_size: int) -> dict:
    """eval_loss and eval_mean_token_accuracy over the trained tokens of `examples` (see the module docstring)."""
    total_loss, total_tokens, correct = 0.0, 0, 0
    with no_grad():
        for start in range(0, len(examples), batch_size):
            batch = examples[start:start + batch_size]
            inputs, targets, mask = collate_sft(batch, max_length, pad_id, pad_to_longest=True)  # (B, T) each
            logits = model(inputs, attention_mask=mask)  # (B, T, V)
            trained = targets != IGNORE_INDEX  # (B, T)
            n_tokens = int(trained.sum())
            if n_tokens == 0:
                continue
            loss = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
            total_loss += float(loss.item()) * n_tokens
            total_tokens += n_tokens
            predictions = np.argmax(logits.data, axis=-1)  # (B, T)
            correct += int(np.sum((predictions == targets) & trained))
    if total_tokens == 0:
        raise ValueError("evaluate_sft: the held-out rows have no trained tokens")
    return {"eval_loss": total_loss / total_tokens, "eval_mean_token_accuracy": correct / total_tokens}


def data_fingerprint(*datasets) -> str:
    """sha256 over every array of the encoded datasets: a resumed run must see the same ids and labels."""
    digest = hashlib.sha256()
    for dataset in datasets:
        digest.update(str(len(dataset)).encode())
        for ids, labels in dataset:
            digest.update(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
            digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def saved_extra_state(run_dir, fingerprint: str) -> dict:
    """The extra state of the checkpoint in run_dir (to resume), refusing data other than the checkpoint's."""
    extra = read_train_state(run_dir).get("extra") or {}
    if extra.get("data_fingerprint") not in (None, fingerprint):
        raise ValueError(f"resume: the data differ from the data the checkpoint in {run_dir} was trained on "
                         "(another file, eval split, max_length or model tokenizer); start a new run instead")
    return extra


def epochs_line(stage: str, n_train: int, n_eval: int, config, noun: str = "row") -> str:
    """One log line: how many training and held-out rows, and how many epochs max_steps makes of them."""
    per_step = min(config.per_device_train_batch_size, n_train) * config.gradient_accumulation_steps
    epochs = config.max_steps * per_step / n_train
    held = f", {n_eval} held out" if n_eval else ", none held out"
    return (f"{stage}: {plural(n_train, 'training ' + noun)}{held}; {config.max_steps} steps of "
            f"{plural(per_step, noun)} = {epochs:.1f} epochs")


def train_sft_on_rows(model, tokenizer, train_rows, eval_rows=(), config: SFTConfig | None = None, run_dir=None,
                      resume: bool = False, source: str = "data", eval_source: str | None = None,
                      log=print) -> dict:
    """Fine-tune `model` in place on TRL SFT rows (minifm.data.sources.JsonlRecord) with a held-out set;
    returns the summary (rows, cuts, losses, held-out metrics before and after, seconds per step)."""
    config = fit_max_length(config or SFTConfig(**OWN_DATA_DEFAULTS), model, log)
    examples, report = encode_sft_rows(tokenizer, train_rows, config.max_length, source)
    held_out, held_report = [], None
    if eval_rows:
        held_out, held_report = encode_sft_rows(tokenizer, eval_rows, config.max_length, eval_source or source)
    pad_id = padding_id(tokenizer)
    fingerprint = data_fingerprint(examples, held_out)
    log(epochs_line("sft", len(examples), len(held_out), config))

    def evaluate(model):
        return evaluate_sft(model, held_out, pad_id, config.max_length, config.per_device_train_batch_size)

    eval_before = None
    if resume:
        eval_before = saved_extra_state(run_dir, fingerprint).get("eval_before")
    elif held_out:
        model.eval()
        eval_before = evaluate(model)
        log(f"sft: held-out loss before training {eval_before['eval_loss']:.4f}")
    started = time.perf_counter()
    result = train_sft_encoded(model, examples, pad_id, config, run_dir, resume,
                               eval_fn=evaluate if held_out else None,
                               extra_state={"data_fingerprint": fingerprint, "eval_before": eval_before},
                               pad_to_longest=not config.packing)
    seconds = time.perf_counter() - started
    summary = {"train_rows": len(examples), "eval_rows": len(held_out), "data": report.to_dict(),
               "eval_data": held_report.to_dict() if held_report else None, "steps": result.step,
               "final_loss": result.losses()[-1] if result.losses() else None, "eval_before": eval_before,
               "eval": result.final_eval or None, "tokens": result.tokens, "seconds": seconds,
               "seconds_per_step": result.elapsed_s / max(result.step, 1), "config": config.to_dict()}
    if held_out:
        before = f"{eval_before['eval_loss']:.4f} -> " if eval_before else ""
        log(f"sft: held-out loss {before}{result.final_eval['eval_loss']:.4f}, token accuracy "
            f"{result.final_eval['eval_mean_token_accuracy']:.3f}")
    return summary


__all__ = ["OWN_DATA_DEFAULTS", "SFTConfig", "context_length", "data_fingerprint", "evaluate_sft", "fit_max_length",
           "sft_loss", "train_sft", "train_sft_encoded", "train_sft_on_rows"]
