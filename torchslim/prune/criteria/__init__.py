"""Importance criteria, one file each, in one registry: `CRITERIA.get("l1")(ctx) -> scores per unit`.

Register your own with `@CRITERIA.register("name")` on a function `ScoreContext -> Tensor[num_units]`
(higher = more important).
"""
from torchslim.prune.criteria.base import CRITERIA, ScoreContext
from torchslim.prune.criteria import (  # noqa: F401 (registration)
    apoz, bn_scale, entropy, icc, l1, l2, lda, oracle, random, random_masks, taylor,
)

# Criteria that read data (the rest look at weights only).
DATA_DRIVEN = {"apoz", "entropy", "taylor", "random_masks", "lda", "icc", "oracle"}

__all__ = ["CRITERIA", "DATA_DRIVEN", "ScoreContext"]
