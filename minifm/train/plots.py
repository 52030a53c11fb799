"""Figures for run directories: loss curves and simple line/bar charts (matplotlib, Agg backend).

Every function writes one PNG and returns its path. matplotlib is imported lazily and forced onto
the non-interactive Agg backend, so plotting works on a headless machine and never opens a window.
"""
from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no screen)."""
    import matplotlib  # lazy: its ~0.5 s import is paid only by commands that plot

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _label_and_save(plt, figure, axes, path, title: str, xlabel: str, ylabel: str) -> Path:
    """Axis labels, title and a light grid; write the PNG (parent folders created) and close the figure."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction (what TensorBoard's smoothing slider shows)."""
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight ** i))
    return out


def plot_loss_curve(rows: list[dict], path, title: str = "loss", eval_key: str = "val_loss") -> Path:
    """Training loss per step (raw and smoothed) and the held-out loss at each evaluation."""
    plt = pyplot()
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["step"], r[eval_key]) for r in rows if eval_key in r]
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    if train:
        steps, losses = zip(*train)
        axes.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=1, label="train (per step)")
        axes.plot(steps, smooth(list(losses)), color="tab:blue", linewidth=2, label="train (smoothed)")
    if evals:
        steps, losses = zip(*evals)
        axes.plot(steps, losses, "o-", color="tab:orange", linewidth=2, label="held-out")
    axes.legend()
    return _label_and_save(plt, figure, axes, path, title, "optimizer step", "cross-entropy (nats/token)")


def plot_xy(series: dict[str, tuple[list, list]], path, title: str, xlabel: str, ylabel: str,
            marker: str = "o-") -> Path:
    """One line per named series {name: (xs, ys)}."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for name, (xs, ys) in series.items():
        axes.plot(xs, ys, marker, label=name)
    if len(series) > 1:
        axes.legend()
    return _label_and_save(plt, figure, axes, path, title, xlabel, ylabel)


def plot_scatter(points: dict[str, tuple[float, float]], path, title: str, xlabel: str, ylabel: str) -> Path:
    """Labelled points {label: (x, y)} (e.g. the sampling settings on a quality/diversity plane)."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.4), dpi=100)
    for label, (x, y) in points.items():
        axes.scatter([x], [y], s=40)
        axes.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    return _label_and_save(plt, figure, axes, path, title, xlabel, ylabel)


__all__ = ["plot_loss_curve", "plot_scatter", "plot_xy", "smooth"]
