"""Channel dependency graph: trace a model once, group the channels that must be pruned together."""
from torchslim.graph.groups import ChannelGraph, Group
from torchslim.graph.trace import ParamUse, TraceResult, components, symbolic_trace, trace

__all__ = ["ChannelGraph", "Group", "ParamUse", "TraceResult", "components", "symbolic_trace", "trace"]
