from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from torchslim.train.device import resolve_device


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, *, device: str | torch.device | None = None,
             topk: tuple[int, ...] = (1, 5), max_batches: int | None = None, progress: bool | str = False) -> dict:
    """Top-k accuracy (in %) and mean cross-entropy loss of `model` on `loader`.

    `progress`: show progress (`torchslim.progress`); a string labels it (e.g. "test before").

    Returns {"top1": ..., "top5": ..., "loss": ..., "n": images}.
    """
    if device is None:  # where the model is: a CPU model is evaluated on the CPU even if a GPU exists
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    else:
        device = resolve_device(device, model)
        model.to(device)
    was_training = model.training
    model.eval()
    correct = {k: 0 for k in topk}
    loss_sum, n = 0.0, 0
    from torchslim.progress import Progress

    batches = len(loader) if max_batches is None else min(len(loader), max_batches)
    bar = Progress(total=batches, desc=progress if isinstance(progress, str) else "evaluate", unit="batch",
                   enabled=bool(progress), leave=False)
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        kmax = min(max(topk), logits.shape[1])
        pred = logits.topk(kmax, dim=1).indices
        hits = pred.eq(y[:, None])
        for k in topk:
            correct[k] += hits[:, : min(k, kmax)].any(dim=1).sum().item()
        n += len(y)
        bar.update()
    bar.close()
    model.train(was_training)
    out = {f"top{k}": 100.0 * correct[k] / max(n, 1) for k in topk}
    out.update(loss=loss_sum / max(n, 1), n=n)
    return out
