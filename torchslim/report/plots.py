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


def y_range(ys: list[float]) -> tuple[float, float] | None:
    """Accuracy limits that show the interesting range: a point far below all others (the untrained input
    model of a recipe at chance accuracy) is left out and drawn at the bottom edge instead. None: autoscale."""
    if len(ys) < 3:
        return None
    rest = sorted(ys)[1:]
    spread = max(rest) - min(rest)
    if min(ys) >= min(rest) - max(5.0, 2 * spread):
        return None
    margin = max(0.5, 0.15 * spread)
    return min(rest) - margin, max(rest) + margin


def tradeoff(series: dict[str, list[tuple[str, float, float]]], xlabel: str, title: str, logx: bool = False) -> bytes:
    """Accuracy (y) against a cost (x); one line per run, points numbered in stage order.

    Stage names go into a key under the plot, not next to the points, where they overlapped when stages
    have nearly equal figures. A point far below the others is drawn on the bottom edge with its value.

    Args:
        series: {run name: [(stage label, cost, top-1 %), ...]} in stage order.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    keys, all_ys = [], []
    for run, points in series.items():
        pts = [(i + 1, s, x, y) for i, (s, x, y) in enumerate(points) if x is not None and y is not None]
        all_ys += [p[3] for p in pts]
    limits = y_range(all_ys)
    for run, points in series.items():
        pts = [(i + 1, s, x, y) for i, (s, x, y) in enumerate(points) if x is not None and y is not None]
        if not pts:
            continue
        low = limits[0] if limits else float("-inf")
        xs, ys = [p[2] for p in pts], [max(p[3], low) for p in pts]
        (line,) = ax.plot(xs, ys, "-o", label=run, alpha=0.85)
        xspan = (max(xs) - min(xs)) or 1.0
        yspan = ((limits[1] - limits[0]) if limits else (max(ys) - min(ys))) or 1.0
        spots: list[list] = []  # points drawn on top of each other share one label: "5,6,7"
        for (n, s, x, y), yy in zip(pts, ys):
            near = next((g for g in spots if abs(g[0] - x) <= 0.02 * xspan and abs(g[1] - yy) <= 0.03 * yspan), None)
            if near is None:
                spots.append([x, yy, [str(n)], y])
            else:
                near[2].append(str(n))
        for x, yy, nums, y in spots:
            below = y < low
            ax.annotate(",".join(nums) + (f" ({y:.1f} %)" if below else ""), (x, yy), textcoords="offset points",
                        xytext=(4, 5), fontsize=8, color=line.get_color())
            if below:
                ax.plot([x], [yy], "v", color=line.get_color(), clip_on=False)
        keys.append((f"{run}: " if len(series) > 1 else "") + ", ".join(f"{n} {s}" for n, s, _, _ in pts))
    if limits:
        ax.set_ylim(*limits)
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
    import textwrap

    key = "\n".join(textwrap.fill(k, 100) for k in keys)
    fig.text(0.01, -0.02, key, fontsize=7, va="top", ha="left")
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
