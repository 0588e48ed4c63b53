"""Per-layer accounting next to measured latency: theoretical (MACs) vs measured speedup per layer.

Kim et al. 2016 observe that the 1x1 convs of a Tucker chain cost more than their FLOPs suggest
(memory bound, poor GEMM shapes); measuring every original layer and its chain side by side on the
recorded input shape shows where the theoretical ratio E holds and where it does not.
"""
from __future__ import annotations

import torch

from torchslim.analysis import measure_latency


def measure_layers(report, threads: int | None = None, batch_size: int = 1, repeats: int = 10,
                   min_time_s: float = 0.1, runtime: str = "torch") -> None:
    """Fill latency_before_ms / latency_after_ms of every layer with a known input shape, each layer and its
    replacement run alone on `runtime` (torch eager, onnxruntime or openvino: each exported on its own);
    `report.latency_runtime` records which."""
    from torchslim.runtimes import check_runtime

    report.latency_runtime = check_runtime(runtime)
    for l in report.layers:
        if l.input_shape is None or l.original is None:
            continue
        x = torch.randn(batch_size, *l.input_shape)
        kw = dict(threads=threads, repeats=repeats, min_time_s=min_time_s, with_peak=False, warmup=3,
                  runtime=runtime)
        l.latency_before_ms = measure_latency(l.original, x, **kw).median_ms
        if l.replacement is not None:
            l.latency_after_ms = measure_latency(l.replacement, x, **kw).median_ms
        else:
            l.latency_after_ms = l.latency_before_ms


def _fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def report_table(report, title: str | None = None):
    """A rich Table: one row per layer, then the totals."""
    from rich.table import Table

    t = Table(title=title or f"decompose: method={report.method} rank={report.rank}")
    for col, j in [("layer", "left"), ("shape", "left"), ("ranks", "left"), ("error", "right"),
                   ("params", "right"), ("M", "right"), ("MACs", "right"), ("E", "right"),
                   (f"ms before ({getattr(report, 'latency_runtime', None) or 'not measured'})", "right"),
                   ("ms after", "right"), ("measured", "right"), ("note", "left")]:
        t.add_column(col, justify=j)
    for l in report.layers:
        note = l.reason if l.status == "skipped" else ""
        t.add_row(l.name, l.layer, "-" if l.ranks is None else ",".join(map(str, l.ranks)),
                  _fmt(l.rel_error, ".3f"), f"{l.params_after:,}", f"{l.compression:.2f}x",
                  f"{l.macs_after:,}", f"{l.speedup:.2f}x", _fmt(l.latency_before_ms, ".3f"),
                  _fmt(l.latency_after_ms, ".3f"),
                  "-" if l.measured_speedup is None else f"{l.measured_speedup:.2f}x", note)
    tot = report.totals()
    t.add_row("total", f"{tot['decomposed']}/{tot['layers']} decomposed", "", "", f"{tot['params_after']:,}",
              f"{tot['compression']:.2f}x", f"{tot['macs_after']:,}", f"{tot['speedup']:.2f}x",
              _fmt(tot.get("latency_before_ms"), ".3f"), _fmt(tot.get("latency_after_ms"), ".3f"),
              "-" if tot.get("measured_speedup") is None else f"{tot['measured_speedup']:.2f}x", "", style="bold")
    return t
