"""Taylor scores (Molchanov et al. 2017) read each layer's output channels where its weight keeps them."""
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torchslim.graph import ChannelGraph
from torchslim.prune.criteria import CRITERIA, ScoreContext


@pytest.mark.parametrize("groups", [1, 2])
def test_taylor_scores_the_channels_of_a_transposed_conv(groups):
    """A transposed conv's weight is (in, out / groups, k, k): its output channels are dim 1. Channels
    whose filters are zero contribute nothing and score 0; the others score above 0 (they once all
    scored 0: the transposed conv was left out)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(8, 8, 3, groups=groups),
                          nn.ReLU(), nn.Conv2d(8, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    dead = [1, 6]  # one output channel in each group of the transposed conv
    with torch.no_grad():
        model[2].weight[:, 1] = 0  # output channel 1 of each group (1 and 5 with two groups)
        model[2].bias.zero_()
        if groups == 1:
            model[2].weight[:, 6] = 0
        else:
            dead = [1, 5]
    x, y = torch.randn(32, 1, 6, 6), torch.randint(0, 4, (32,))
    graph = ChannelGraph(model, x[:1])
    out_use = next(i for i, u in enumerate(graph.uses) if u.module == "2" and u.kind == "out" and u.name == "weight")
    units = graph.unit_of[out_use]
    s = CRITERIA.get("taylor")(ScoreContext(model, graph, DataLoader(TensorDataset(x, y), batch_size=16), batches=2,
                                            options={"flops_lambda": 0.0}))
    scores = s[units]
    if groups == 1:
        assert (scores[dead] == 0).all() and (scores[[c for c in range(8) if c not in dead]] > 0).all()
    else:  # grouped: a unit is one position in every group, joined with the inputs there (conv 0's
        # live channels 1 and 5), so the dead outputs do not make a zero; the layer is read all the same
        from torchslim.prune.criteria.taylor import TaylorCallback

        assert len(units) == 4 and "2" in TaylorCallback(graph).uses and torch.isfinite(scores).all()
