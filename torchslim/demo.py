"""The built-in default job: the one place a newcomer sees the whole pipeline on `digits`.

Now: train a small CNN on scikit-learn's 8x8 digits, evaluate it, analyse it, measure its latency on
PyTorch and ONNX Runtime, save it pickle-free and check the saved file reloads to the same outputs.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from torchslim.analysis import measure_latency, profile, saved_size_bytes
from torchslim.data import get_data
from torchslim.io import load_model, save_model
from torchslim.models import create_model
from torchslim.report.format import human
from torchslim.train import FitConfig, evaluate, fit


def run_demo(output: str | Path = "runs/demo", epochs: int = 15, console=None) -> dict:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]torchslim demo: digits_cnn on scikit-learn digits")
    data = get_data("digits", batch_size=64)
    model = create_model("digits_cnn")
    t0 = time.perf_counter()
    fit(model, data.train, val_loader=data.val,
        config=FitConfig(epochs=epochs, lr=0.05, weight_decay=5e-4, progress=True), checkpoint_dir=out / "train")
    train_s = time.perf_counter() - t0
    test = evaluate(model, data.test)
    prof = profile(model, data.input_size)
    console.print(prof.table(title="digits_cnn, per layer (one 1x8x8 image)"))
    path = save_model(model, out / "model.safetensors", input_size=data.input_size, metadata={"test": test})
    x = next(iter(data.test))[0]
    same = torch.equal(load_model(path)(x), model.eval()(x))
    lat = {rt: measure_latency(model, input_size=data.input_size, batch_size=64, runtime=rt, repeats=20)
           for rt in ("torch", "onnxruntime")}
    summary = Table(title="summary", show_header=False)
    summary.add_row("test accuracy", f"{test['top1']:.2f} % top-1 on {test['n']} held-out images")
    summary.add_row("training", f"{epochs} epochs in {train_s:.1f} s")
    summary.add_row("parameters / MACs", f"{human(prof.params)} / {human(prof.macs)} per image")
    summary.add_row("size on disk", human(saved_size_bytes(model), "B"))
    for rt, r in lat.items():
        summary.add_row(f"latency ({rt}, batch 64)", f"median {r.median_ms:.2f} ms (p10 {r.p10_ms:.2f}, p90 {r.p90_ms:.2f})")
    summary.add_row("saved model", f"{path} (reloads to identical outputs: {same})")
    console.print(summary)
    return {"test": test, "train_s": train_s, "params": prof.params, "macs": prof.macs, "model_path": str(path),
            "reload_identical": same, "latency_ms": {k: v.median_ms for k, v in lat.items()}}
