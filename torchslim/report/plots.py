"""The report's plots, drawn with matplotlib's Agg backend (no display needed) into PNG bytes."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def tradeoff(series: dict[str, list[tuple[str, float, float]]], xlabel: str, title: str, logx: bool = False) -> bytes:
    """Accuracy (y) against a cost (x); one line per run, each point labelled with its stage.

    Args:
        series: {run name: [(stage label, cost, top-1 %), ...]} in stage order.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for run, points in series.items():
        pts = [(s, x, y) for s, x, y in points if x is not None and y is not None]
        if not pts:
            continue
        xs, ys = [p[1] for p in pts], [p[2] for p in pts]
        ax.plot(xs, ys, "-o", label=run, alpha=0.85)
        for i, (s, x, y) in enumerate(pts):  # staggered, so stages with equal figures stay readable
            ax.annotate(s, (x, y), textcoords="offset points", xytext=(5, 4 - 10 * (i % 3)), fontsize=7)
    if logx:
        ax.set_xscale("log")
    else:  # from zero, so that measurement noise does not look like a trade-off
        ax.set_xlim(left=0, right=ax.get_xlim()[1] * 1.08)
        ax.ticklabel_format(axis="x", useOffset=False, style="plain")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _png(fig)


def stage_bars(labels: list[str], values: dict[str, list[float]], title: str) -> bytes:
    """Each quantity relative to the input model (1.0 = unchanged), grouped by stage."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    n = len(values)
    width = 0.8 / max(n, 1)
    x = np.arange(len(labels))
    for k, (name, vals) in enumerate(values.items()):
        base = vals[0] or 1.0
        ax.bar(x + k * width - 0.4 + width / 2, [v / base if v is not None else 0 for v in vals], width, label=name)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("relative to input model")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(True, axis="y", alpha=0.3)
    return _png(fig)


def layer_params(names: list[str], before: list[int], after: list[int | None], title: str,
                 after_label: str = "final") -> bytes:
    """Parameters per layer of the input and a later model (layers matched by name)."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(6.4, 0.22 * len(names)), 3.6))
    x = np.arange(len(names))
    ax.bar(x - 0.2, before, 0.4, label="input")
    ax.bar(x + 0.2, [a or 0 for a in after], 0.4, label=after_label)
    ax.set_xticks(x, names, rotation=90, fontsize=6)
    ax.set_ylabel("parameters (nonzero)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _png(fig)
