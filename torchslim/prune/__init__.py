"""Structured pruning: remove whole channels, on any traceable CNN.

`prune(model, criterion, ratio= | target_macs=, data=, filter_fn=)` is the verb; `ChannelGraph` (torchslim.graph),
`select` / `search_ratio` and `apply_plan` are the steps it is made of (scores -> selection -> surgery).
"""
from torchslim.prune.allocation import normalise, search_ratio, select
from torchslim.prune.api import PruneConfig, prune, prune_report
from torchslim.prune.criteria import CRITERIA, ScoreContext
from torchslim.prune.surgery import apply_plan
from torchslim.prune.zero import remove_zero_channels, zero_units

__all__ = ["CRITERIA", "PruneConfig", "ScoreContext", "apply_plan", "normalise", "prune", "prune_report",
           "remove_zero_channels", "search_ratio", "select", "zero_units"]

# `torchslim.prune` is the verb (a function) at the top level; give it this package's names too, so
# `torchslim.prune.remove_zero_channels(...)` works either way.
for _name in __all__:
    if _name != "prune":
        setattr(prune, _name, globals()[_name])
