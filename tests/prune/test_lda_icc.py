"""LDA-pruned net (multi-channel LDA on fire scores) and ICC: planted discriminative channels rank first."""
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torchslim.graph import ChannelGraph
from torchslim.prune import prune, prune_report
from torchslim.prune.criteria import CRITERIA, ScoreContext, criterion_needs_data
from torchslim.prune.criteria.icc import icc_scores
from torchslim.prune.criteria.lda import lda_scores

PLANTED = [3, 7, 12]


def planted_fires(n=300, channels=16, classes=3, seed=0, shift=1.5):
    """Fire scores where only PLANTED channels move with the class; the rest are noise of larger scale."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    F = torch.randn(n, channels, generator=g) * torch.linspace(1, 5, channels)
    for i, c in enumerate(PLANTED):
        F[:, c] += shift * ((y + i) % classes).float()
    return F, y


@pytest.mark.parametrize("score", [lda_scores, icc_scores])
def test_planted_channels_rank_first(score):
    F, y = planted_fires()
    s = score(F, y)
    assert set(s.argsort(descending=True)[: len(PLANTED)].tolist()) == set(PLANTED)


def test_lda_weights_a_channel_that_only_helps_jointly():
    # channel 1 separates nothing alone but cancels channel 0's noise: the per-channel Fisher ratio (and
    # ICC) ranks it with the noise, the joint LDA projection needs it as much as channel 0
    g = torch.Generator().manual_seed(1)
    n = 400
    y = torch.arange(n) % 2
    shared = 5 * torch.randn(n, generator=g)
    F = torch.randn(n, 6, generator=g)
    F[:, 0] = shared + y.float() + 0.1 * torch.randn(n, generator=g)
    F[:, 1] = shared + 0.1 * torch.randn(n, generator=g)
    lda = lda_scores(F, y)
    assert set(lda.argsort(descending=True)[:2].tolist()) == {0, 1}
    assert icc_scores(F, y)[1] < icc_scores(F, y)[2:].max()


def test_lda_survives_more_channels_than_images_per_class():
    F, y = planted_fires(n=24, channels=64, classes=4, shift=3.0)  # 6 images per class, 64 channels: S_w singular
    s = lda_scores(F, y)
    assert torch.isfinite(s).all()
    assert set(s.argsort(descending=True)[:3].tolist()) == set(PLANTED)
    assert torch.isfinite(lda_scores(F, y, shrinkage=0.0)).all()


def test_constant_channels_score_lowest():
    F, y = planted_fires()
    F[:, 0] = 2.0
    for score in (lda_scores, icc_scores):
        s = score(F, y)
        assert s[0] == s.min() and torch.isfinite(s).all()


class Bundle:
    def __init__(self, x, y):
        self.train = self.val = DataLoader(TensorDataset(x, y), batch_size=100)

    def split(self, name):
        return self.train


def planted_images(n=300):
    F, y = planted_fires(n=n)
    return (F + 30)[:, :, None, None].repeat(1, 1, 4, 4), y  # positive: the ReLU passes them unchanged


@pytest.mark.parametrize("name", ["lda", "icc"])
def test_criteria_through_the_graph_and_the_verb(name):
    # a 1x1 identity conv + ReLU: the units' fire scores are the input channels
    conv = nn.Conv2d(16, 16, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(16)[:, :, None, None])
    model = nn.Sequential(conv, nn.ReLU(), nn.Conv2d(16, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    x, y = planted_images()
    data = Bundle(x, y)
    graph = ChannelGraph(model, x[:1])
    assert criterion_needs_data(name)
    s = CRITERIA.get(name)(ScoreContext(model, graph, data, batches=3))
    assert set(s.argsort(descending=True)[:3].tolist()) == set(PLANTED)
    p = prune(model, x[:1], name, 0.5, data=data, batches=3)
    assert p[0].out_channels == 8 and prune_report(p)["after"]["macs"] < prune_report(p)["before"]["macs"]


def test_cli_and_recipe_take_the_new_criteria(tmp_path):
    import json

    from torchslim.cli.main import main
    from torchslim.recipe import parse_recipe, run_recipe

    out = tmp_path / "cli"
    assert main(["prune", "digits_cnn", "--criterion", "lda", "--ratio", "0.5", "--data", "digits", "-o", str(out)]) == 0
    assert json.loads((out / "prune.json").read_text())["after"]["macs"] < \
        json.loads((out / "prune.json").read_text())["before"]["macs"]
    recipe = parse_recipe("""\
name: icc
model: {name: digits_cnn, kwargs: {width: 8}}
data: {name: digits, batch_size: 32, limit_train: 128, limit_eval: 64, augment: false}
measure: {latency: false}
stages:
  - method: prune
    params: {criterion: icc, ratio: 0.5}
""", "icc.yaml")
    st = run_recipe(recipe, tmp_path / "run", progress=False, log=lambda *a: None)["stages"]
    assert [s["stage"] for s in st] == ["00-input", "01-prune"] and st[1]["params_count"] < st[0]["params_count"]


def test_data_driven_criteria_read_a_plain_loader_too():
    # the recipe's prune stage passed a DataLoader where criteria read `data.split(...)`: AttributeError
    model = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3))
    x, y = torch.randn(24, 1, 8, 8), torch.arange(24) % 3
    graph = ChannelGraph(model, x[:1])
    scores = CRITERIA.get("apoz")(ScoreContext(model, graph, DataLoader(TensorDataset(x, y), batch_size=8),
                                               batches=2))
    assert scores.shape == (graph.num_units,) and torch.isfinite(scores).all()
