"""Every structure of tests/graph/structures.py prunes, and pruning is exact: the pruned model computes
what the original computes with the removed channels zeroed (their filters, biases, norm affines and
per-channel parameters set to 0)."""
import copy

import pytest
import torch

from tests.graph.structures import STRUCTURES, call
from torchslim.graph import ChannelGraph
from torchslim.prune import apply_plan, prune, prune_report


def _random_plan(graph, ratio, gen):
    plan = graph.empty_plan()
    for g in graph.groups:
        k = min(int(round(ratio * len(g))), len(g) - 1)
        plan[g.units[torch.randperm(len(g), generator=gen)[:k]]] = True
    return plan


def mask_plan(model, graph, plan):
    """Zero, in `model`, every value the plan removes from what writes a channel: filters and biases,
    norm affines and running means, per-channel parameters (labelled per element)."""
    with torch.no_grad():
        for i, u in enumerate(graph.uses):
            if u.kind == "in" or u.name.startswith("_") or u.name == "running_var":
                continue
            t = getattr(model.get_submodule(u.module), u.name)
            gone = ~graph.keep_mask(i, plan)
            if u.dim < 0:
                t[gone] = 0.0
            else:
                t.index_fill_(u.dim, torch.nonzero(gone).flatten(), 0.0)


def _outputs(y):
    return list(y) if isinstance(y, (tuple, list)) else [y]


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_pruning_is_exact_against_the_masked_original(name):
    build, _, exact = STRUCTURES[name]
    torch.manual_seed(0)
    model, x = build()
    model.eval()
    graph = ChannelGraph(model, x)
    plan = _random_plan(graph, 0.4, torch.Generator().manual_seed(1))
    assert plan.sum() > 0, f"{name}: nothing prunable ({graph.trace.notes})"
    masked = copy.deepcopy(model)
    mask_plan(masked, graph, plan)
    expected = graph.estimate(plan)
    apply_plan(model, graph, plan)
    with torch.no_grad():
        want, got = _outputs(call(masked, x)), _outputs(call(model, x))
    assert [w.shape for w in want] == [g.shape for g in got]
    if exact:
        for w, g in zip(want, got):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    assert ChannelGraph(model, x).base == expected  # exactly the planned channels went


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_prune_verb_shrinks_every_structure(name):
    """The outside check of issue 21: prune(model, x, "l1", 0.3) runs, keeps output shapes, MACs <= 0.8x."""
    build, _, _ = STRUCTURES[name]
    model, x = build()
    model.eval()
    with torch.no_grad():
        before = _outputs(call(model, x))
    small = prune(model, x, "l1", 0.3)
    with torch.no_grad():
        after = _outputs(call(small.eval(), x))
    assert [a.shape for a in after] == [b.shape for b in before]
    assert prune_report(small)["macs_ratio"] <= 0.8, prune_report(small)["pinned"]
