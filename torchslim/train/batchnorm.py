"""BatchNorm re-calibration: after surgery, decomposition or quantization the running statistics
describe activations the network no longer produces. Re-estimating them on a few hundred training
images (no gradient, no weight change) recovers much of the accuracy before any fine-tuning
(as in Li et al. 2020, "EagleEye", and the BN-recalibration step of NNCF and AIMET)."""
from __future__ import annotations

import torch
from torch import nn


def recalibrate_batchnorm(model: nn.Module, batches, *, device=None) -> int:
    """Recompute every BatchNorm layer's running mean and variance on `batches`, in place.

    Args:
        model: the network; its weights are not changed, only the BN buffers.
        batches: iterable of input tensors or (input, label) pairs, e.g. `data.calibration_batches(512)`.
        device: where to run (default: where the model is).

    Returns the number of BatchNorm layers re-estimated (0: nothing to do, the model is untouched).

    Example:
        >>> recalibrate_batchnorm(pruned, data.calibration_batches(512))
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    if not norms:
        return 0
    device = device or next((p.device for p in model.parameters()), torch.device("cpu"))
    saved = [(m.momentum, m.training) for m in norms]
    was_training = model.training
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over all the batches, not an exponential one
        m.train()  # only the BN layers: dropout and the rest stay in eval mode
    try:
        with torch.no_grad():
            for b in batches:
                x = b[0] if isinstance(b, (tuple, list)) else b
                model(x.to(device))
    finally:
        for m, (momentum, training) in zip(norms, saved):
            m.momentum = momentum
        model.train(was_training)
    return len(norms)
