"""Deep Compression (Han, Mao & Dally, ICLR 2016): prune -> retrain -> k-means weight sharing ->
retrain centroids -> Huffman-coded `.slim` file, with accuracy and storage after every stage.

Stage 1 uses `torchslim.sparsity` magnitude pruning with masks (Han et al. 2015, iterative
prune + retrain); any callable `prune_fn(model, data) -> model` can replace it.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from torch import nn

from torchslim.quant.kmeans import KMeansConfig, kmeans_quantize


@dataclass
class DeepCompressionConfig:
    """sparsity: fraction pruned (float, or {layer fqn: fraction}: the paper's per-layer rates).
    prune_rounds / prune_epochs: iterative pruning, epochs of retraining per round.
    bits: k-means bits per kind / layer (paper: conv 8, fc 5). kmeans_epochs: centroid fine-tuning.
    fit: FitConfig for the retraining stages (epochs are set per stage)."""

    sparsity: float | dict = 0.9
    prune_rounds: int = 3
    prune_epochs: int = 1
    bits: dict = field(default_factory=lambda: {"conv": 8, "fc": 5})
    kmeans_epochs: int = 1
    fit: object = None
    prune_fn: object = None  # callable(model, data) -> pruned model; default: torchslim.sparsity magnitude


def _default_prune(model: nn.Module, data, cfg: DeepCompressionConfig) -> nn.Module:
    from torchslim.sparsity import sparsify
    from torchslim.sparsity.masks import remove_masks
    from torchslim.train import FitConfig

    fc = cfg.fit or FitConfig(lr=0.01, weight_decay=0.0, progress=False)
    pruned = sparsify(model, "magnitude", sparsity=cfg.sparsity, data=data, schedule="iterative",
                      rounds=cfg.prune_rounds, epochs=cfg.prune_epochs, fit=fc)
    return remove_masks(pruned)


def deep_compression(model: nn.Module, data, config: DeepCompressionConfig | None = None, *,
                     output: str | Path | None = None, eval_loader=None) -> tuple[nn.Module, dict]:
    """Run the three stages; returns (k-means model, report). Writes `output/model.slim` if given.

    Example:
        >>> model, report = deep_compression(create_model("lenet300", weights=...), get_data("mnist"),
        ...                                  DeepCompressionConfig(sparsity={"1": .92, "3": .91, "5": .74}))
    """
    from torchslim import encode
    from torchslim.sparsity.masks import density_summary
    from torchslim.train import FitConfig, evaluate

    cfg = config or DeepCompressionConfig()
    test = eval_loader if eval_loader is not None else getattr(data, "test", None)
    report: dict = {"stages": {}}

    def stage(name, m, t0):
        row = {"seconds": time.time() - t0}
        if test is not None:
            row["top1"] = evaluate(m, test)["top1"]
        report["stages"][name] = row
        return row

    t = time.time()
    stage("baseline", model, t)
    t = time.time()
    pruned = cfg.prune_fn(copy.deepcopy(model), data) if cfg.prune_fn else _default_prune(model, data, cfg)
    stage("pruned", pruned, t)["density"] = density_summary(pruned)["density"]
    t = time.time()
    fc = cfg.fit or FitConfig(lr=1e-3, weight_decay=0.0, progress=False)
    kcfg = KMeansConfig(bits=cfg.bits, epochs=cfg.kmeans_epochs, fit=replace(fc, weight_decay=0.0))
    q = kmeans_quantize(pruned, kcfg, train_loader=getattr(data, "train", data), val_loader=getattr(data, "val", None))
    stage("quantized", q, t)
    storage = encode.storage_report(q)
    report["storage"] = storage
    report["compression"] = storage["compression"]
    if output is not None:
        out = Path(output)
        path = encode.save(q, out / "model.slim", metadata={"stages": report["stages"]})
        report["slim_path"] = str(path)
        r = encode.load(path)
        if test is not None:
            report["stages"]["slim_reloaded"] = {"top1": evaluate(r, test)["top1"]}
    return q, report
