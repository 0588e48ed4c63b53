"""Low-rank decomposition (survey family 3): one layer becomes a short chain of smaller layers.

Methods (one file each, one registry `METHODS`): `svd` (Linear / 1x1 conv), `tucker` (Tucker-2, Kim
et al. 2016), `cp` (Lebedev et al. 2015), `separable` (Jaderberg et al. 2014, scheme 2),
`channel` (Zhang et al. 2015, response reconstruction, asymmetric), `zhang3d` (their 3-D scheme:
Dx1, 1xD, 1x1), `tt` (Novikov et al. 2015), `btd` (block terms), `monochromatic` and `bicluster` (Denton et al. 2014). Ranks: see `torchslim.lowrank.ranks`.
"""
from torchslim.lowrank.core import (METHODS, Context, DecomposeConfig, DecompositionReport, LayerResult, Method, Skip,
                                    decompose, decompose_layer, decompose_with_report, register_method)
from torchslim.lowrank import svd, tucker, cp, separable, channel, zhang3d, tt, btd, denton  # noqa: F401,E402  (registers the methods)
from torchslim.lowrank.vbmf import evbmf

__all__ = ["METHODS", "Context", "DecomposeConfig", "DecompositionReport", "LayerResult", "Method", "Skip", "decompose",
           "decompose_layer", "decompose_with_report", "register_method", "evbmf"]
