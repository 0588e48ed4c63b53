"""Quantization-aware training (Jacob et al. 2018, sec. 3): fake quantization with the STE in the
forward pass, per-channel symmetric int8 weights, uint8 activations whose ranges track an EMA of the
observed min/max. BN is folded into the convs before training (the running statistics are frozen
into the weights, the "BN folding with frozen statistics" variant of Jacob et al. sec. 3.2 /
Krishnamoorthi 2018 sec. 3.2), so training sees exactly the weights that int8 inference uses.

After training the fake-quant wrappers are removed and the float model goes through the same int8
execution paths as post-training quantization (`torchslim.quant.int8_ptq`) with the activation ranges
learned in training: its weights already sit on the int8 grid, so conversion adds little error.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

from torch import nn

from torchslim.quant.bn_fold import fold_bn
from torchslim.quant.fakequant import FakeQuantLayer, unwrap_layers, wrap_layers
from torchslim.quant.int8_ptq import Int8Config, calibration_batches, quantize_int8, torch_input_ranges


@dataclass
class QATConfig:
    """epochs of fake-quant training (`fit`), then int8 conversion with `int8` settings."""

    epochs: int = 1  # epochs of fake-quant training
    fit: object = None
    int8: Int8Config = field(default_factory=Int8Config)


def fake_quant_train(model: nn.Module, train_loader, val_loader=None, config: QATConfig | None = None) -> nn.Module:
    """BN-fold, wrap every Conv/Linear in FakeQuantLayer, train with `fit`; returns the wrapped model."""
    from torchslim.train import FitConfig, fit

    cfg = config or QATConfig()
    qat = fold_bn(copy.deepcopy(model))
    layers = {n: qat.get_submodule(n) for n, m in qat.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    ranges = torch_input_ranges(qat, layers, calibration_batches(train_loader, 256), "minmax")
    for n, w in wrap_layers(qat).items():
        w.set_range(*ranges[n])
        w.observe = True
    fc = cfg.fit or FitConfig(lr=1e-3, weight_decay=0.0, progress=False)
    fit(qat, train_loader, val_loader=val_loader, config=replace(fc, epochs=cfg.epochs))
    return qat.eval()


def qat_quantize(model: nn.Module, train_loader, val_loader=None, config: QATConfig | None = None, *,
                 calib=None, eval_loader=None) -> nn.Module:
    """QAT then int8 conversion through the measured execution paths (see `quantize_int8`).

    Example:
        >>> q = qat_quantize(model, data.train, data.val, QATConfig(epochs=1), calib=data)
    """
    cfg = config or QATConfig()
    trained = fake_quant_train(model, train_loader, val_loader, cfg)
    reference = copy.deepcopy(trained)
    # the ranges training adapted to are the ones int8 inference uses (Jacob et al. sec. 3), not a recalibration
    learned = {n: (float(m.lo), float(m.hi)) for n, m in trained.named_modules()
               if isinstance(m, FakeQuantLayer) and float(m.hi - m.lo) > 0}
    out = quantize_int8(unwrap_layers(trained), calib if calib is not None else train_loader, cfg.int8,
                        eval_loader=eval_loader, input_ranges=learned)
    object.__setattr__(out, "qat_reference", reference)
    return out
