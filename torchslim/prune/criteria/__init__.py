"""Importance criteria, one file each, in one registry: `CRITERIA.get("l1")(ctx) -> scores per unit`.

Register your own with `@register_criterion("name")` (`needs_data=True` if it reads images) on a
function `ScoreContext -> Tensor[num_units]` (higher = more important).
"""
from torchslim.prune.criteria.base import CRITERIA, ScoreContext, criterion_needs_data, register_criterion
from torchslim.prune.criteria import (  # noqa: F401 (registration)
    apoz, bn_scale, entropy, icc, l1, l2, lda, oracle, random, random_masks, taylor,
)

__all__ = ["CRITERIA", "ScoreContext", "criterion_needs_data", "register_criterion"]
