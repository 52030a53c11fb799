"""The lifecycle's PEFT stage (the PEFT methods compared): quality against trainable parameters on the tinyworld instructions.

Starting from the same pre-trained GPT each time, it fine-tunes on tinyworld's instruction
examples (the chat format, loss on the answer only: minifm.train.sft) with
    full fine-tuning, LoRA r = 1, 4, 16 (each also training the embedding rows of the chat special
    tokens, `trainable_token_indices`), bottleneck adapters, prompt tuning, prefix tuning and IA3,
every run with the same data order, batch size and number of steps (each method at its own learning
rate, since PEFT methods usually want a larger one), then answers the held-out prompts greedily and
grades them with tinyworld's grader. For each run it records
    held-out accuracy, trainable parameters, training wall time, optimizer memory (AdamW's two
    moment arrays per trainable parameter, measured from the optimizer's state), final train loss,
and writes `peft/peft_results.json`, `peft/peft_table.md` (the report's PEFT section: what each run
trains, the table, and what its numbers say, from minifm/lifecycle/report.py) and the plot
`peft/peft_tradeoff.png` (accuracy and train loss vs trainable parameters, log scale; wall time;
optimizer memory).

Entry point for minifm/lifecycle/__init__.py:
    run_peft_comparison(model, tokenizer, out_dir, settings, seed=0, log=print) -> dict

The base model passed in is never modified: every run trains a fresh copy built from its config
and state dict. The training answers are the bare reference answers by default (`plain_answers`;
the post-training stage uses tinyworld's style mix instead), since this experiment is about
learning the facts and format, not the style. Simplification: held-out accuracy is measured on a fixed subset of the test split
(preset `n_test`) to keep the stage inside the lifecycle's time budget.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from minifm.checkpoint import atomic_write_bytes
from minifm.config import ConfigBase
from minifm.data import tinyworld
from minifm.data.batches import IGNORE_INDEX, collate_sft, shuffled_batches
from minifm.data.conversations import PAD_TOKEN, encode_sft_examples, special_id
from minifm.lifecycle.evaluation import evaluate_instructions
from minifm.lifecycle.report import peft_markdown, plot_peft_tradeoff
from minifm.peft import AdapterConfig, IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model
from minifm.train.loop import make_optimizer, train
from minifm.train.sft import SFTConfig, sft_loss


@dataclass
class PeftStageConfig(ConfigBase):
    """How much work each of the eight runs does."""

    max_steps: int = 120
    per_device_train_batch_size: int = 16
    max_length: int = 40
    n_train: int | None = None       # training examples (None = the whole train split)
    n_test: int = 64                 # held-out prompts answered greedily
    max_new_tokens: int = 16
    warmup_steps: int = 5
    lora_targets: tuple = ("q_proj", "v_proj")
    lora_alpha_per_rank: float = 2.0   # lora_alpha = 2 r
    # chat special tokens whose (input and tied output) embedding rows the LoRA runs also train:
    # they never occur in pre-training (docs/peft.md); () = LoRA on the projections alone
    lora_trainable_tokens: tuple = ("<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
    num_virtual_tokens: int = 8
    reduction_factor: int = 16
    lr_full: float = 2e-3
    lr_lora: float = 5e-3
    lr_adapter: float = 1e-2
    lr_prompt: float = 3e-2
    lr_prefix: float = 1e-2
    lr_ia3: float = 3e-2
    plain_answers: bool = True       # train on the bare reference answers (style_mix={"plain": 1.0})


def method_specs(config: PeftStageConfig, token_ids=()) -> list[tuple[str, object, float]]:
    """(run name, PEFT config or None for full fine-tuning, learning rate) of the eight runs.

    `token_ids`: ids whose embedding rows the LoRA runs also train (trainable_token_indices); empty = none."""
    targets = list(config.lora_targets)
    tokens = [int(i) for i in token_ids] or None

    def lora(r: int) -> LoraConfig:
        return LoraConfig(r=r, lora_alpha=config.lora_alpha_per_rank * r, target_modules=targets,
                          trainable_token_indices=tokens)

    return [
        ("full", None, config.lr_full),
        ("lora_r1", lora(1), config.lr_lora),
        ("lora_r4", lora(4), config.lr_lora),
        ("lora_r16", lora(16), config.lr_lora),
        ("adapter", AdapterConfig(reduction_factor=config.reduction_factor), config.lr_adapter),
        ("prompt", PromptTuningConfig(num_virtual_tokens=config.num_virtual_tokens), config.lr_prompt),
        ("prefix", PrefixTuningConfig(num_virtual_tokens=config.num_virtual_tokens), config.lr_prefix),
        ("ia3", IA3Config(), config.lr_ia3),
    ]


def describe(name: str, peft_config, config: PeftStageConfig) -> str:
    """The table's words for one run, e.g. "LoRA r=16 (q, v) + 5 special-token rows"."""
    if peft_config is None:
        return "full fine-tuning"
    if isinstance(peft_config, LoraConfig):
        short = ", ".join(t.replace("_proj", "") for t in config.lora_targets)
        text = f"LoRA r={peft_config.r} ({short}), alpha {peft_config.lora_alpha:g}"
        if peft_config.trainable_token_indices:
            text += f" + {len(peft_config.trainable_token_indices)} special-token rows"
        return text
    return {"adapter": f"bottleneck adapter (rf {config.reduction_factor})",
            "prompt": f"prompt tuning (P={config.num_virtual_tokens})",
            "prefix": f"prefix tuning (P={config.num_virtual_tokens})", "ia3": "IA3"}.get(name, name)


def special_token_ids(tokenizer, names) -> list[int]:
    """Ids of the special tokens `names` that `tokenizer` has (in the given order)."""
    specials = getattr(tokenizer, "special_tokens", {})
    return [int(specials[name]) for name in names if name in specials]


def fresh_copy(model):
    """A new model of the same class and config with the same weights (the original is never touched)."""
    copy = type(model)(model.config)
    copy.load_state_dict(model.state_dict(copy=True))
    return copy


def optimizer_state_bytes(optimizer) -> int:
    """Bytes of every array the optimizer keeps per parameter (AdamW: exp_avg and exp_avg_sq)."""
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, np.ndarray):
                total += value.nbytes
    return int(total)


def train_one(model, encoded, pad_id: int, config: PeftStageConfig, learning_rate: float, seed: int):
    """Fine-tune `model` (full or PEFT-wrapped) in place with the shared loop; returns (result, optimizer)."""
    sft_config = SFTConfig(learning_rate=learning_rate, max_steps=config.max_steps,
                           per_device_train_batch_size=config.per_device_train_batch_size,
                           max_length=config.max_length, warmup_steps=config.warmup_steps, weight_decay=0.0, seed=seed)
    optimizer = make_optimizer(model, sft_config)

    def loss_fn(model, batch):
        inputs, targets, mask = collate_sft(batch, config.max_length, pad_id)
        return sft_loss(model, inputs, targets, mask), int(np.sum(targets != IGNORE_INDEX))

    model.train()
    batches = shuffled_batches(encoded, config.per_device_train_batch_size)
    result = train(model, loss_fn, batches, sft_config, optimizer=optimizer, stage="peft",
                   run_config=sft_config.to_dict())
    model.eval()
    return result, optimizer


def run_peft_comparison(model, tokenizer, out_dir, settings: dict, seed: int = 0, log=print) -> dict:
    """Run the eight fine-tuning runs and write the table, plot and JSON (see the module docstring).

    `settings` are fields of PeftStageConfig (a preset's "peft" table; missing fields keep their defaults). Returns
    {"config", "rows", "lora_r16_vs_full", "files"}, where each row has method, trainable_params,
    trainable_fraction, accuracy, mean_ground_truth_reward, train_loss, wall_time_s, optimizer_bytes.
    """
    config = PeftStageConfig.from_dict(settings)
    out_dir = Path(out_dir) / "peft"
    out_dir.mkdir(parents=True, exist_ok=True)

    style_mix = {"plain": 1.0} if config.plain_answers else None   # None: tinyworld's default style mix
    train_examples = tinyworld.instructions("train", seed=seed, n=config.n_train, style_mix=style_mix)
    test_tasks = tinyworld.instructions("test", seed=seed)[:config.n_test]
    encoded = encode_sft_examples(tokenizer, train_examples)
    pad_id = special_id(tokenizer, PAD_TOKEN)
    base_total = sum(p.size for p in model.parameters())
    token_ids = special_token_ids(tokenizer, config.lora_trainable_tokens)
    if config.lora_trainable_tokens:
        log(f"[peft] LoRA runs also train the embedding rows of {list(config.lora_trainable_tokens)} "
            f"(ids {token_ids}; tokens the tokenizer lacks are skipped)")

    rows = []
    for name, peft_config, learning_rate in method_specs(config, token_ids):
        candidate = fresh_copy(model)
        if peft_config is not None:
            candidate = get_peft_model(candidate, peft_config, rng=np.random.default_rng(seed))
        trainable = int(sum(p.size for p in candidate.parameters() if p.requires_grad))
        started = time.perf_counter()
        result, optimizer = train_one(candidate, encoded, pad_id, config, learning_rate, seed)
        wall_time = time.perf_counter() - started
        evaluation = evaluate_instructions(candidate, tokenizer, test_tasks, max_new_tokens=config.max_new_tokens)
        losses = result.losses()
        row = {
            "method": name,
            "setting": describe(name, peft_config, config),
            "trainable_params": trainable,
            "trainable_fraction": trainable / base_total,
            "accuracy": evaluation["accuracy"],
            "mean_ground_truth_reward": evaluation["mean_ground_truth_reward"],
            "train_loss": float(np.mean(losses[-5:])) if losses else float("nan"),
            "wall_time_s": wall_time,
            "optimizer_bytes": optimizer_state_bytes(optimizer),
            "learning_rate": learning_rate,
            "example": evaluation["examples"][0] if evaluation["examples"] else None,
        }
        rows.append(row)
        log(f"[peft] {name:9s} trainable {trainable:>9,d} ({100 * row['trainable_fraction']:.2f}%)  "
            f"accuracy {row['accuracy']:.3f}  loss {row['train_loss']:.3f}  {wall_time:.1f}s")

    verdict = lora_verdict(rows)
    log(f"[peft] {verdict['summary']}")
    files = {"json": str(out_dir / "peft_results.json"), "table": str(out_dir / "peft_table.md")}
    report = {"config": {**asdict(config), "seed": seed, "base_params": base_total},
              "rows": rows, "lora_r16_vs_full": verdict, "files": files}
    table = peft_markdown(rows, report["config"], n_train_examples=len(train_examples))
    files["plot"] = str(plot_peft_tradeoff(rows, out_dir / "peft_tradeoff.png"))
    atomic_write_bytes(out_dir / "peft_table.md", (table + "\n\n" + verdict["summary"] + "\n").encode())
    atomic_write_bytes(out_dir / "peft_results.json", (json.dumps(report, indent=2, default=str) + "\n").encode())
    report["table_markdown"] = table
    return report


def lora_verdict(rows: list[dict]) -> dict:
    """LoRA r=16 against full fine-tuning: its share of full fine-tuning's accuracy (`accuracy_ratio`) and of its
    trainable parameters (`param_ratio`), a sentence saying both (`summary`, for the report), and `met`: whether
    it reached >= 90% of the accuracy with < 5% of the parameters (a check for tests and tuning, not report text)."""
    by_name = {row["method"]: row for row in rows}
    full, lora = by_name.get("full"), by_name.get("lora_r16")
    if full is None or lora is None:
        return {"summary": "LoRA r=16 vs full fine-tuning: not both measured", "met": None}
    accuracy_ratio = lora["accuracy"] / full["accuracy"] if full["accuracy"] > 0 else float("nan")
    param_ratio = lora["trainable_params"] / full["trainable_params"]
    met = bool(accuracy_ratio >= 0.9 and param_ratio < 0.05)
    share = (f"{100 * accuracy_ratio:.0f}% of its accuracy" if np.isfinite(accuracy_ratio)
             else "an accuracy ratio is undefined while full fine-tuning scores 0")
    summary = (f"{lora.get('setting', 'LoRA r=16')} reached {lora['accuracy']:.3f} against full fine-tuning's "
               f"{full['accuracy']:.3f} ({share}) while training {100 * param_ratio:.2f}% as many parameters.")
    return {"accuracy_ratio": accuracy_ratio, "param_ratio": param_ratio, "met": met, "summary": summary}


__all__ = ["PeftStageConfig", "lora_verdict", "method_specs", "run_peft_comparison"]
