"""Image folders fast enough to train on: DataLoader workers and the decoded-image cache (`--cache`).

    python -m benchmarks.bench_folder_data [--per-class 100] [--steps 3] [--batch 16]

A class-folder data set of CIFAR-10 test images upscaled to 256 px JPEGs (quality 90), read as
torchvision ResNet-18 expects (its weights' transforms(): resize 256, centre-crop 224 for evaluation,
random-resized-crop 224 + flip for training). Three pipelines, each measured twice:
  - data only: images/s of the train loader alone (decode, augment, normalise, collate);
  - fine-tuning: ResNet-18 SGD steps (fp32, `torchslim.train.fit`), images/s and the share of each
    epoch spent waiting for the next batch (fit's `data_wait`).
Pipelines: one process decoding (workers 0), DataLoader workers on every core (the default), and workers
reading the decoded, resized uint8 cache (one memory-mapped .npy). ResNet-18 starts from random weights
(no network here for the published ones); the step time does not depend on the weights.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import command_line, md_table, write_result


def make_folder(root: Path, per_class: int, size: int = 256) -> Path:
    from PIL import Image

    from torchslim.paths import find_data_file

    if (root / "done").is_file():
        return root
    with np.load(find_data_file("cifar10/test.npz"), allow_pickle=False) as f:
        x, y = f["x"], f["y"]
    names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(y == c)[:per_class]:
            Image.fromarray(x[i]).resize((size, size), Image.BICUBIC).save(root / name / f"{i:05d}.jpg", quality=90)
    (root / "done").write_text("")
    return root


def data_only(loader, batches: int) -> float:
    it = iter(loader)
    next(it)  # workers started, first batch made
    t, n = time.perf_counter(), 0
    for _ in range(batches):
        x, _ = next(it)
        n += len(x)
    return n / (time.perf_counter() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=100, help="images per class (10 classes)")
    ap.add_argument("--steps", type=int, default=3, help="fine-tuning steps measured per pipeline")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--data-batches", type=int, default=12, help="batches timed for the data-only figure")
    args = ap.parse_args(argv)

    from torchslim.data import get_data
    from torchslim.data.folder import default_workers
    from torchslim.models import create_model
    from torchslim.paths import cache_dir
    from torchslim.train import FitConfig, fit

    t_start = time.perf_counter()
    root = make_folder(cache_dir() / "bench_folder_data" / f"cifar10-256px-{args.per_class}", args.per_class)
    shutil.rmtree(cache_dir() / "images", ignore_errors=True)  # the cache build is measured, not reused
    cores = default_workers()
    pipelines = [("1 process (workers 0)", 0, False), (f"{cores} workers", cores, False),
                 (f"{cores} workers + cache", cores, True)]
    import torchvision  # noqa: F401  (imported before the timings: it takes seconds on a loaded machine)

    torch.manual_seed(0)
    model = create_model("torchvision:resnet18", num_classes=10)
    rows, results = [], []
    for i, (label, workers, cache) in enumerate(pipelines):
        t = time.perf_counter()
        data = get_data(root, preprocess="torchvision:resnet18", batch_size=args.batch, num_workers=workers,
                        cache=cache)
        prepare_s = time.perf_counter() - t  # scan + check every image (+ build the cache)
        loader_ips = data_only(data.train, args.data_batches)
        if i == 0:  # one warm-up step (oneDNN set-up) before any timed step; the model is shared (same speed)
            fit(model, data.train, config=FitConfig(epochs=1, lr=0.01, max_steps_per_epoch=1, progress=False,
                                                    eval_every=0))
        cfg = FitConfig(epochs=1, lr=0.01, max_steps_per_epoch=args.steps, progress=False, eval_every=0)
        h = fit(model, data.train, config=cfg).history[-1]
        results.append({"pipeline": label, "workers": workers, "cache": cache, "prepare_s": round(prepare_s, 2),
                        "loader_images_per_s": round(loader_ips, 1), "train_images_per_s": h["images_per_s"],
                        "data_wait_share": h["data_wait"], "steps": args.steps, "batch": args.batch,
                        "cache_file": data.source.get("cache")})
        rows.append([label, f"{prepare_s:.1f}", f"{loader_ips:.0f}", f"{h['images_per_s']:.1f}",
                     f"{100 * h['data_wait']:.0f} %"])
        print(rows[-1], flush=True)
    wall = time.perf_counter() - t_start
    cpu = platform.processor() or platform.machine()
    n = 10 * args.per_class
    md = "\n".join([
        "## Image folders: DataLoader workers and the decoded-image cache", "",
        f"{n} CIFAR-10 test images upscaled to 256 px JPEGs in class folders (80/10/10 split here), read with "
        "torchvision ResNet-18's preprocessing (train: random-resized-crop 224 + flip). `data only`: the train "
        f"loader alone, {args.data_batches} batches of {args.batch}; `fine-tuning`: ResNet-18, fp32 SGD, "
        f"{args.steps} steps of {args.batch} per pipeline after one warm-up step (torchslim.train.fit's images/s and "
        "share of the epoch waiting for data). `prepare`: scanning and checking every image, plus building the "
        f"cache where used. {os.cpu_count()} cores ({cpu}), shared with other jobs; wall time {wall:.0f} s.", "",
        md_table(["pipeline", "prepare s", "data only img/s", "fine-tuning img/s", "waiting on data"], rows), "",
        f"Fine-tuning ran at {min(r['train_images_per_s'] for r in results):.1f}-"
        f"{max(r['train_images_per_s'] for r in results):.1f} images/s whatever the pipeline: on this CPU the "
        "ResNet-18 step dominates. The data-only column is each pipeline's ceiling, which decides whether a "
        "faster device would wait on data: decoding in the training process is slowest because its transforms "
        "share the training process's torch threads (workers run single-threaded). "
        f"Load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.", "",
        f"Reproduce: `{command_line()}`", ""])
    write_result("folder_data", {"results": results, "images": n, "cores": os.cpu_count(), "cpu": cpu,
                                 "wall_s": round(wall, 1), "torch_threads": torch.get_num_threads()}, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
