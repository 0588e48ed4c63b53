"""The channel graph: coupled channels are found, and removing zeroed channels leaves outputs unchanged."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings, strategies as st
from torch import nn

from torchslim.errors import UnsupportedModelError
from torchslim.graph import ChannelGraph
from torchslim.models import create_model
from torchslim.prune import apply_plan, remove_zero_channels


class Zoo(nn.Module):
    """Concat with offsets, chunk, channel shuffle, depthwise + grouped conv, SE, flatten -> linear."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 6, 1)
        self.bn = nn.BatchNorm2d(14)
        self.dw = nn.Conv2d(14, 14, 3, padding=1, groups=14)
        self.gc = nn.Conv2d(14, 14, 1, groups=2)
        self.se1 = nn.Conv2d(14, 4, 1)
        self.se2 = nn.Conv2d(4, 14, 1)
        self.mix = nn.Conv2d(7, 7, 1)
        self.fc = nn.Linear(14 * 4 * 4, 5)

    def forward(self, x):
        y = F.relu(self.bn(torch.cat([self.a(x), self.b(x)], 1)))
        y = self.gc(self.dw(y))
        y = y * torch.sigmoid(self.se2(F.relu(self.se1(F.adaptive_avg_pool2d(y, 1)))))
        y1, y2 = y.chunk(2, dim=1)
        y = torch.cat([y1, self.mix(y2)], 1)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)  # channel shuffle
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 4), 1))


def _zero_plan(model, graph, plan):
    """Zero every writer of the planned units (filters, biases, BN affine) so they are exactly 0."""
    with torch.no_grad():
        for i, u in enumerate(graph.uses):
            if u.kind in ("out", "norm") and u.dim >= 0 and not u.name.startswith("_") \
                    and u.name not in ("running_var",):
                idx = torch.nonzero(~graph.keep_mask(i, plan)).flatten()
                getattr(model.get_submodule(u.module), u.name).index_fill_(u.dim, idx, 0.0)


def _random_plan(graph, ratio, gen):
    plan = graph.empty_plan()
    for g in graph.groups:
        k = min(int(ratio * len(g)), len(g) - 1)
        plan[g.units[torch.randperm(len(g), generator=gen)[:k]]] = True
    return plan


def _check_exact(model, x, ratio=0.4, seed=0):
    model.eval()
    g = ChannelGraph(model, x)
    plan = _random_plan(g, ratio, torch.Generator().manual_seed(seed))
    _zero_plan(model, g, plan)
    with torch.no_grad():
        y0 = model(x)
    est = g.estimate(plan)
    remove_zero_channels(model, x)
    with torch.no_grad():
        y1 = model(x)
    assert y1.shape == y0.shape
    torch.testing.assert_close(y1, y0, rtol=1e-4, atol=1e-5)
    after = ChannelGraph(model, x).base
    assert after == est  # exactly the planned channels went
    return g, plan


@pytest.mark.parametrize("build,size", [
    (lambda: create_model("resnet20"), 32),
    (Zoo, 16),
    (lambda: torchvision.models.mobilenet_v3_small(), 32),
    (lambda: torchvision.models.shufflenet_v2_x0_5(), 32),
])
def test_removing_zero_channels_is_exact(build, size):
    torch.manual_seed(0)
    model = build()
    g, plan = _check_exact(model, torch.randn(2, 3, size, size))
    assert plan.sum() > 0


def test_zoo_groups_follow_the_channel_arithmetic():
    g = ChannelGraph(Zoo(), torch.randn(1, 3, 16, 16))
    # chunk(2) and the 2-group conv pair position p with p + 7 of the 14 concatenated channels
    # (a0..a7, b0..b5): 7 units; a0~a7 touches only `a`, the other 6 touch a and b. se1 is its own group.
    rows = {(r["name"], r["channels"]): set(r["layers"]) for r in g.describe()}
    assert rows[("se1", 4)] == {"se1", "se2"}
    assert sum(len(x) for x in g.groups) == 7 + 4
    assert {"a", "b", "dw", "gc", "mix", "fc"} <= rows[("a", 6)]


def test_cifar_resnet_pad_shortcut_is_updated_and_roundtrips(tmp_path):
    from torchslim.io import load_model, save_model

    model = create_model("resnet20")
    x = torch.randn(2, 3, 32, 32)
    _check_exact(model, x, ratio=0.5, seed=3)
    sc = model.layer2[0].shortcut
    assert sc.out_channels < 32 and sc.in_channels < 16 and len(sc.index) == sc.in_channels
    path = save_model(model, tmp_path / "m.safetensors", input_size=(3, 32, 32))
    back = load_model(path)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model.eval()(x))


@settings(max_examples=3, deadline=None)
@given(ratio=st.floats(0.0, 0.9), seed=st.integers(0, 1000))
def test_property_random_ratios_exact(ratio, seed):
    torch.manual_seed(seed)
    _check_exact(create_model("resnet20"), torch.randn(2, 3, 32, 32), ratio=ratio, seed=seed)


def test_estimate_matches_the_profile():
    from torchslim.analysis import profile

    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 32, 32)
    g = ChannelGraph(model, x)
    plan = _random_plan(g, 0.5, torch.Generator().manual_seed(0))
    est = g.estimate(plan)
    apply_plan(model, g, plan)
    p = profile(model, (3, 32, 32))
    assert (p.macs, p.params) == (est["macs"], est["params"])
    assert model(x).shape == (1, 1000)


def test_untraceable_model_names_the_problem():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow, and the traced input fails
                raise ValueError("positive inputs are not accepted")
            return self.c(x)

    with pytest.raises(UnsupportedModelError, match="Bad"):
        ChannelGraph(Bad(), torch.ones(1, 3, 8, 8))


def test_unknown_op_pins_its_channels_instead_of_breaking():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1)

        def forward(self, x):
            y = self.a(x)
            y = torch.cumsum(y, dim=1)[:, :6]  # positional slice of channels
            return self.b(torch.cat([y, y[:, :2]], 1))

    model = Odd()
    g = ChannelGraph(model, torch.randn(1, 3, 4, 4))
    assert all(g.uses[i].module != "a" for grp in g.groups for i in grp.uses)
    assert any("indexing" in n for n in g.trace.notes)


class SizeFromAnotherTensor(nn.Module):
    """MaxViT's attention pattern: `out.reshape(B, N, C)` with C read from the *input* x, while out comes
    from a projection reshaped with literal head sizes (its channels are pinned)."""

    def __init__(self, c=16, heads=2):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.qkv = nn.Linear(c, 3 * c)
        self.heads, self.dh = heads, c // heads
        self.merge = nn.Linear(c, c)
        self.fc = nn.Linear(c, 5)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)  # B, N, C
        B, N, C = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        heads, dh = self.sizes()
        v = v.reshape(B, N, heads, dh) * torch.sigmoid(q.reshape(B, N, heads, dh))
        out = v.reshape(B, N, C)  # C of x, not of v
        return self.fc((x + self.merge(out)).mean(1))

    def sizes(self):
        return 2, 8  # literal head sizes


class SizeFromAttributes(SizeFromAnotherTensor):
    def sizes(self):
        return self.heads, self.dh  # read from the model: they follow the pruning


def test_a_size_read_from_another_tensor_couples_the_two():
    torch.manual_seed(0)
    model = SizeFromAnotherTensor()
    x = torch.randn(2, 3, 8, 8)
    g = ChannelGraph(model, x)
    # v's channels are pinned (literal head sizes) and C comes from x: x's channels must be kept too
    assert not any("stem" in grp.name for grp in g.groups)
    _check_exact(model, x)  # the pruned model runs (it failed with a shape error in reshape before)


def test_head_sizes_read_from_the_model_follow_the_pruning():
    torch.manual_seed(0)
    model = SizeFromAttributes()
    x = torch.randn(2, 3, 8, 8)
    g = ChannelGraph(model, x)
    assert any("stem" in grp.name for grp in g.groups)  # C, heads and dh are free now
    _check_exact(model, x, ratio=0.5)
    assert model.heads == 2 and model.dh < 8 and model.merge.in_features == 2 * model.dh


class TokenMLP(nn.Module):
    """A transformer / ConvNeXt MLP on channels-last tokens (B, N, C): Linear -> GELU -> Linear."""

    def __init__(self, c=8, hidden=24):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.fc1, self.act, self.fc2 = nn.Linear(c, hidden), nn.GELU(), nn.Linear(hidden, c)
        self.head = nn.Linear(c, 5)

    def forward(self, x):
        t = self.stem(x).flatten(2).transpose(1, 2)
        return self.head((t + self.fc2(self.act(self.fc1(t)))).mean(1))


def test_channels_last_activations_keep_their_channels_apart():
    torch.manual_seed(0)
    model = TokenMLP()
    x = torch.randn(2, 3, 8, 8)
    g = ChannelGraph(model, x)
    sizes = {grp.name: len(grp) for grp in g.groups}
    assert sizes["fc1"] == 24  # one unit per hidden channel, not one for the whole GELU output
    _check_exact(model, x)


class SplitByAnUnrelatedLayer(nn.Module):
    """A split size read from a layer whose channels are not the ones split: it would not follow."""

    def __init__(self):
        super().__init__()
        self.a, self.other = nn.Conv2d(3, 16, 1), nn.Conv2d(3, 8, 1)
        self.b1, self.b2, self.c = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        n = self.other.out_channels
        y1, y2 = torch.split(self.a(x), [n, self.a.out_channels - n], dim=1)
        return self.b1(y1) + self.b2(y2) + self.c(self.other(x))


def test_a_module_size_that_does_not_follow_the_channels_pins_them():
    model = SplitByAnUnrelatedLayer().eval()
    x = torch.randn(2, 3, 4, 4)
    g = ChannelGraph(model, x)
    assert not any(grp.name in ("a", "other") for grp in g.groups)  # both kept: they decide the split
    assert any("size read from other.out_channels" in n for n in g.trace.notes)
    _check_exact(model, x)


def test_example_input_of_another_type_is_refused_with_its_type():
    with pytest.raises(UnsupportedModelError, match="got int"):
        ChannelGraph(nn.Conv2d(3, 4, 1), 3)
