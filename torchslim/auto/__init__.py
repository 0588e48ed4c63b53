"""Automatic compression to a target: candidate actions per layer, measured one by one, combined greedily.

    result = auto_compress(model, data, target="latency=0.5x", max_drop=1.0)
"""
from torchslim.auto.actions import Action, lowrank_actions
from torchslim.auto.search import AutoResult, Measured, Target, auto_compress, greedy_path, pareto_front

__all__ = ["Action", "AutoResult", "Measured", "Target", "auto_compress", "greedy_path", "lowrank_actions",
           "pareto_front"]
