"""Figures for run directories: loss curves and simple line/scatter charts (matplotlib, Agg backend).

Every `plot_*` function writes one PNG and returns its path; `figure_scatter` returns the matplotlib
Figure itself (so tests can inspect titles, labels and legends) and `save_figure` writes any Figure.
matplotlib is imported lazily and forced onto the non-interactive Agg backend, so plotting works on a
headless machine and never opens a window.

Labels never sit on top of each other: scatter points are named in a legend beside the axes rather
than by text next to each point, and points that form a sequence (e.g. rising temperature) share a
colour ramp and are joined by arrows in their order.
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
            marker: str = "o-", logx: bool = False, errors: dict[str, list] | None = None) -> Path:
    """One line per named series {name: (xs, ys)}; x on a log scale with logx; error bars from errors[name]."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for name, (xs, ys) in series.items():
        if errors and name in errors:
            axes.errorbar(xs, ys, yerr=errors[name], fmt=marker, label=name, capsize=3)
        else:
            axes.plot(xs, ys, marker, label=name)
    if logx:
        axes.set_xscale("log")
    if len(series) > 1:
        axes.legend(fontsize="small")
    return _label_and_save(plt, figure, axes, path, title, xlabel, ylabel)


def figure_scatter(points: dict[str, tuple[float, float]], title: str, xlabel: str, ylabel: str,
                   ordered: list[str] = ()):
    """A Figure of labelled points {label: (x, y)}, named in a legend to the right of the axes.

    `ordered`: labels of points that form a sequence; they are coloured along a colour ramp and joined
    by arrows from each to the next, in the given order. The other points get distinct markers."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7.6, 4.4), dpi=100)
    ordered = [label for label in ordered if label in points]
    ramp = plt.get_cmap("plasma")
    for i, label in enumerate(ordered):
        x, y = points[label]
        colour = ramp(0.1 + 0.75 * i / max(len(ordered) - 1, 1))
        axes.scatter([x], [y], s=60, color=colour, edgecolors="black", linewidths=0.5, zorder=3, label=label)
        if i:
            x0, y0 = points[ordered[i - 1]]
            axes.annotate("", xy=(x, y), xytext=(x0, y0), zorder=2,
                          arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.4, "shrinkA": 5, "shrinkB": 5})
    markers = ["s", "D", "^", "v", "P", "X", "*", "h"]
    others = [label for label in points if label not in ordered]
    for i, label in enumerate(others):
        x, y = points[label]
        axes.scatter([x], [y], s=55, marker=markers[i % len(markers)], color=f"C{i % 10}", zorder=3, label=label)
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def save_figure(figure, path, dpi: int = 110) -> Path:
    """Write `figure` as a PNG (parent folders created, legends outside the axes kept) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, bbox_inches="tight")
    pyplot().close(figure)
    return path


def plot_scatter(points: dict[str, tuple[float, float]], path, title: str, xlabel: str, ylabel: str,
                 ordered: list[str] = ()) -> Path:
    """Labelled points {label: (x, y)} (e.g. the sampling settings on a quality/diversity plane); see figure_scatter."""
    return save_figure(figure_scatter(points, title, xlabel, ylabel, ordered), path)


__all__ = ["figure_scatter", "plot_loss_curve", "plot_scatter", "plot_xy", "save_figure", "smooth"]
