"""Automatic compression to a target: candidate actions per layer, measured one by one, combined greedily.

    result = auto_compress(model, actions, evaluate=..., example_input=x, target="latency=0.5x", max_drop=1.0)
"""
from torchslim.auto.actions import (KINDS, Action, apply_stages, build_actions, compatible, lowrank_actions,
                                    merge_stages, prune_actions, quant_actions)
from torchslim.auto.search import (AutoResult, Measured, PathPoint, Target, apply_actions, auto_compress, greedy_path,
                                   greedy_paths,
                                   measure_actions, metric_fn, pareto_front, project)

__all__ = ["KINDS", "Action", "AutoResult", "Measured", "PathPoint", "Target", "apply_actions", "apply_stages",
           "auto_compress", "build_actions", "compatible", "greedy_path", "greedy_paths", "lowrank_actions", "measure_actions", "merge_stages",
           "metric_fn", "pareto_front", "project", "prune_actions", "quant_actions"]
