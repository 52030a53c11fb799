"""The lifecycle's report: markdown tables, report.md / report.json, and the plots of every stage.

Each stage returns its figures (JSON-able numbers and texts, collected in report.json) and its
section of report.md; this file holds the pieces that turn numbers into text and pictures:
`markdown_table`, `write_report`, the post-training section (`post_training_markdown`) and the
PEFT table (`peft_table`), and the plots (`plot_ppo_rewards`, `plot_reward_vs_kl`,
`plot_peft_tradeoff`). Loss curves and generic scatter plots come from minifm.train.plots.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from minifm.checkpoint import atomic_write_bytes
from minifm.train.plots import pyplot


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def cell(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(run_dir: Path, report: dict, sections: list[str]) -> None:
    atomic_write_bytes(run_dir / "report.json", (json.dumps(report, indent=2, default=_json_default) + "\n")
                       .encode("utf-8"))
    atomic_write_bytes(run_dir / "report.md", "\n".join(sections).encode("utf-8"))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"report.json cannot store a {type(value).__name__}")


def plot_ppo_rewards(history: list[dict], path) -> None:
    plt = pyplot()

    iterations = [h["iteration"] for h in history]
    fig, axis = plt.subplots(figsize=(6, 3.6))
    axis.plot(iterations, [h["reward_mean"] for h in history], label="learned reward (reward model)")
    axis.plot(iterations, [h["ground_truth_reward_mean"] for h in history], label="ground-truth reward")
    axis.set_xlabel("PPO iteration")
    axis.set_ylabel("mean reward of rollouts")
    axis.legend()
    axis.set_title("PPO: learned vs ground-truth reward (they diverge if the policy hacks the reward model)",
                   fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reward_vs_kl(history: list[dict], table: dict, path) -> None:
    plt = pyplot()

    fig, axis = plt.subplots(figsize=(6, 3.6))
    axis.plot([h["kl"] for h in history], [h["ground_truth_reward_mean"] for h in history], ".-", alpha=0.5,
              label="PPO rollouts (per iteration)")
    for name, row in table.items():
        axis.scatter([row["kl_to_sft"]], [row["ground_truth_reward"]], s=50, label=f"{name} (held-out)")
    axis.set_xlabel("KL(policy || SFT) per response (nats)")
    axis.set_ylabel("mean ground-truth reward")
    axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def post_training_markdown(summary: dict) -> str:
    sft, reward, table = summary["sft"], summary["reward"], summary["evaluation"]
    lines = [
        f"{summary['seconds']:.0f} s in all "
        f"(SFT {sft['seconds']:.0f} s, reward model {reward['seconds']:.0f} s, PPO {summary['ppo']['seconds']:.0f} s, "
        f"DPO {summary['dpo']['seconds']:.0f} s, evaluation {summary['evaluation_seconds']:.0f} s).",
        "",
        f"* SFT, held-out greedy accuracy: {sft['accuracy_before']:.3f} before -> {sft['accuracy_after']:.3f} after "
        f"(ground-truth reward {sft['ground_truth_reward_before']:+.3f} -> {sft['ground_truth_reward_after']:+.3f}).",
        f"* Reward model, held-out preference accuracy {reward['preference_accuracy']:.3f}; correlation with the "
        f"ground-truth reward: Pearson {reward['pearson_r']:.3f}, Spearman {reward['spearman_r']:.3f}.",
        "",
        f"{next(iter(table.values()))['n_prompts']} held-out prompts x "
        f"{next(iter(table.values()))['samples_per_prompt']} sampled answers (temperature "
        f"{summary['temperature']}); standard errors over prompts; KL to the SFT policy per response:",
        "",
        "| policy | ground-truth reward ± s.e. | vs SFT (paired) ± s.e. | learned reward | polite share | "
        "sampled accuracy | greedy accuracy | greedy GT reward | KL to SFT |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in table.items():
        kl = f"<= {row['kl_to_sft']:.3f} (bound)" if name == "best_of_n" else f"{row['kl_to_sft']:.3f}"
        greedy = row["greedy"]
        lines.append(f"| {name} | {row['ground_truth_reward']:+.3f} ± {row['ground_truth_reward_se']:.3f} | "
                     f"{row['difference_vs_sft']:+.3f} ± {row['difference_vs_sft_se']:.3f} | "
                     f"{row['learned_reward']:+.3f} | {row['polite_fraction']:.2f} | "
                     f"{row['accuracy_sampled']:.3f} | {greedy['accuracy']:.3f} | "
                     f"{greedy['mean_ground_truth_reward']:+.3f} | {kl} |")
    lines += ["", "![learned vs ground-truth reward over PPO iterations](ppo_rewards.png)", "",
              "![ground-truth reward vs KL](reward_vs_kl.png)", ""]
    return "\n".join(lines)


def peft_table(rows: list[dict]) -> str:
    lines = ["| method | setting | trainable params | % of model | held-out accuracy | GT reward | train loss | "
             "wall time (s) | optimizer memory |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row.get('setting', row['method'])} | {row['trainable_params']:,d} | {100 * row['trainable_fraction']:.3f}% | "
            f"{row['accuracy']:.3f} | {row['mean_ground_truth_reward']:.3f} | {row['train_loss']:.3f} | "
            f"{row['wall_time_s']:.1f} | {_human_bytes(row['optimizer_bytes'])} |")
    return "\n".join(lines)


def _human_bytes(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} B"


def plot_peft_tradeoff(rows: list[dict], path: Path) -> Path:
    """Three panels: accuracy vs trainable parameters (log x), accuracy vs wall time, optimizer memory."""
    plt = pyplot()
    names = [row["method"] for row in rows]
    params = np.array([row["trainable_params"] for row in rows], dtype=float)
    accuracy = np.array([row["accuracy"] for row in rows])
    wall = np.array([row["wall_time_s"] for row in rows])
    memory = np.array([row["optimizer_bytes"] for row in rows], dtype=float) / 1024
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    axes[0].scatter(params, accuracy)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("trainable parameters (log)")
    axes[1].scatter(wall, accuracy)
    axes[1].set_xlabel("training wall time (s)")
    for axis, xs in ((axes[0], params), (axes[1], wall)):
        axis.set_ylabel("held-out accuracy")
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
        for x, y, name in zip(xs, accuracy, names):
            axis.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes[2].barh(names, memory)
    axes[2].set_xscale("log")
    axes[2].set_xlabel("optimizer state (KiB, log)")
    axes[0].set_title("quality vs trainable parameters")
    axes[1].set_title("quality vs wall time")
    axes[2].set_title("AdamW state memory")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


__all__ = ["markdown_table", "peft_table", "plot_peft_tradeoff", "plot_ppo_rewards", "plot_reward_vs_kl",
           "post_training_markdown", "write_report"]
