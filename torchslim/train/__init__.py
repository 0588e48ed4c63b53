"""Evaluation and the fine-tuning loop every compression method recovers with."""
from torchslim.train.batchnorm import recalibrate_batchnorm
from torchslim.train.evaluate import evaluate
from torchslim.train.device import resolve_device
from torchslim.train.fit import Callback, FitConfig, FitResult, fit, seed_everything

__all__ = ["Callback", "FitConfig", "FitResult", "evaluate", "fit", "recalibrate_batchnorm", "resolve_device", "seed_everything"]
