"""Models torch.fx cannot trace (control flow on tensor values and shapes) are traced concretely, and
channel splits of unequal sizes (mixed kernel convs) are pruned part by part."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchslim
from torchslim.analysis import profile
from torchslim.errors import UnsupportedModelError
from torchslim.graph import ChannelGraph
from torchslim.prune import apply_plan, prune_report


class Branchy(nn.Module):
    """Branches on a tensor's value and on its shape (timm's VGG head), and reshapes by sizes it
    reads from the tensor (MobileViT's unfold): torch.fx gives up on the first `if`."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.c3 = nn.Conv2d(16, 12, 1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        if x.mean() > -1e9:  # always taken, but only a concrete run can tell
            x = x * 2
        x = F.relu(self.bn1(self.c1(x)))
        if x.shape[-1] < 7:
            x = F.adaptive_avg_pool2d(x, 7)
        b, c, h, w = x.shape
        x = x.reshape(b * c, h * w).reshape(b, c, h, w)  # channel count read from the tensor
        x = F.relu(self.c3(F.relu(self.c2(x))))
        return self.fc(x.mean((2, 3)))


class MixedConv(nn.Module):
    """timm's MixedConv2d: unequal channel parts, one depthwise kernel size each."""

    def __init__(self, channels=16, splits=(8, 4, 4)):
        super().__init__()
        self.splits = list(splits)
        self.convs = nn.ModuleList(nn.Conv2d(s, s, 3 + 2 * i, padding=1 + i, groups=s) for i, s in enumerate(splits))

    def forward(self, x):
        parts = torch.split(x, self.splits, 1)
        return torch.cat([c(p) for c, p in zip(self.convs, parts)], 1)


class MixNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.mix = MixedConv()
        self.head = nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.head(F.relu(self.mix(F.relu(self.stem(x)))))
        return self.fc(x.mean((2, 3)))


def _zero_remove_compare(model, x, ratio=0.5):
    """Zero the channels a plan removes, remove them, and check the outputs did not change."""
    model.eval()
    g = ChannelGraph(model, x)
    plan = g.empty_plan()
    for grp in g.groups:
        plan[grp.units[: min(int(ratio * len(grp)), len(grp) - 1)]] = True
    assert plan.any()
    with torch.no_grad():
        for i, u in enumerate(g.uses):
            if u.kind in ("out", "norm") and u.dim >= 0 and not u.name.startswith("_") and u.name != "running_var":
                idx = torch.nonzero(~g.keep_mask(i, plan)).flatten()
                getattr(model.get_submodule(u.module), u.name).index_fill_(u.dim, idx, 0.0)
        y0 = model(x)
        est = g.estimate(plan)
        apply_plan(model, g, plan)
        y1 = model(x)
    torch.testing.assert_close(y1, y0, rtol=1e-4, atol=1e-5)
    assert profile(model, tuple(x.shape[1:])).macs == est["macs"]
    return g


def test_symbolic_tracing_fails_on_this_model():
    with pytest.raises(Exception):
        torch.fx.symbolic_trace(Branchy())


def test_control_flow_model_prunes_through_the_concrete_tracer():
    x = torch.randn(1, 3, 8, 8)
    model = Branchy().eval()
    g = ChannelGraph(model, x)
    assert g.trace.tracer == "concrete" and "(1, 3, 8, 8)" in g.trace.caveat
    assert g.trace.notes == ["model output"]  # the reshape by the tensor's own sizes pins nothing
    assert sorted(len(grp) for grp in g.groups) == [12, 16, 16]
    before = profile(model, (3, 8, 8)).macs
    pruned = torchslim.prune(model, x, "l1", 0.5)
    rep = prune_report(pruned)
    assert rep["tracer"] == "concrete" and "another branch" in rep["tracer_caveat"]
    assert pruned(torch.randn(2, 3, 8, 8)).shape == (2, 5)
    assert profile(pruned, (3, 8, 8)).macs < 0.35 * before


def test_concrete_trace_is_exact():
    _zero_remove_compare(Branchy(), torch.randn(1, 3, 8, 8))


def test_a_model_that_fails_on_its_example_names_both_tracers():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            if x.sum() > 0:
                raise ValueError("this input is not accepted")
            return self.c(x)

    with pytest.raises(UnsupportedModelError, match="Bad.*forward pass of the example.*not accepted"):
        ChannelGraph(Bad(), torch.ones(1, 3, 8, 8))


def test_mixed_kernel_split_is_pruned_part_by_part():
    x = torch.randn(1, 3, 8, 8)
    model = MixNet().eval()
    g = _zero_remove_compare(model, x)
    assert g.trace.notes == ["model output"]  # the split by self.splits pinned nothing
    assert model.mix.splits == [4, 2, 2]
    assert [c.in_channels for c in model.mix.convs] == [4, 2, 2]


def test_mixed_kernel_macs_fall_with_the_ratio():
    x = torch.randn(1, 3, 8, 8)
    model = MixNet().eval()
    before = profile(model, (3, 8, 8)).macs
    pruned = torchslim.prune(model, x, "l1", 0.5)
    assert pruned(x).shape == (1, 5)
    # every channel count halves: stem and depthwise MACs by 2, the 1x1 head by 4
    assert profile(pruned, (3, 8, 8)).macs <= 0.5 * before


def test_the_recorded_graph_reruns_on_another_batch():
    # data-driven criteria run the traced graph on data batches: sizes read from tensors follow them
    model = Branchy().eval()
    g = ChannelGraph(model, torch.randn(1, 3, 8, 8))
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(g.trace.gm(x), model(x))


def test_padding_both_spatial_dims_keeps_channels_prunable():
    # timm's hgnetv2 pads H and W by one ("same" padding of an even kernel): the labels were expanded
    # to the padded shape one dim too early and tracing failed
    class Pad(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 2)

        def forward(self, x):
            return self.b(F.pad(self.a(x), (0, 1, 0, 1)))

    g = _zero_remove_compare(Pad(), torch.randn(1, 3, 8, 8))
    assert [len(grp) for grp in g.groups] == [8]


def test_a_conv_subclass_per_filter_gain_is_pruned_with_its_filters():
    class GainConv(nn.Conv2d):  # timm's ScaledStdConv2d keeps a (out, 1, 1, 1) gain
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.gain = nn.Parameter(torch.rand(self.out_channels, 1, 1, 1) + 0.5)

        def forward(self, x):
            return F.conv2d(x, self.weight * self.gain, self.bias, self.stride, self.padding)

    model = nn.Sequential(GainConv(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1))
    _zero_remove_compare(model, torch.randn(1, 3, 8, 8))
    assert model[0].gain.shape == (4, 1, 1, 1)


def test_summing_stacked_branches_joins_them_like_an_add():
    # selective-kernel / split attention: (B, paths, C, H, W).sum(1) adds the paths channel by channel
    class SK(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 5, padding=2)
            self.out = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return self.out(torch.stack([self.a(x), self.b(x)], 1).sum(1))

    g = _zero_remove_compare(SK(), torch.randn(1, 3, 8, 8))
    assert [len(grp) for grp in g.groups] == [8]


def test_a_scalar_scale_or_spatial_map_does_not_couple_all_channels():
    # timm's hgnetv2 multiplies every conv output by a learnable scalar; CBAM-like blocks by a
    # (B, 1, H, W) map: both broadcast over the channels, which stay separately prunable
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.att, self.b = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 1, 1), nn.Conv2d(8, 4, 1)
            self.scale = nn.Parameter(torch.ones(1) * 1.5)

        def forward(self, x):
            y = self.scale * self.a(x)
            return self.b(y * torch.sigmoid(self.att(y)))

    g = _zero_remove_compare(Scaled(), torch.randn(1, 3, 8, 8))
    assert sorted(len(grp) for grp in g.groups) == [1, 8]


def test_adding_to_a_pinned_stream_still_pins_the_branch():
    # the residual stream of a ViT is pinned; an MLP branch added to it must stay its width
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)

        def forward(self, x):
            return x + self.fc2(F.relu(self.fc1(x)))

    g = ChannelGraph(Res(), torch.randn(1, 5, 8))
    assert [grp.name for grp in g.groups] == ["fc1"]


def test_slicing_by_a_size_read_from_a_tensor_traces():
    # davit / lowformer slice `x[:, :, :H, :W]` with sizes from another tensor: the slice held fx nodes
    class Crop(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 3, padding=2), nn.Conv2d(8, 4, 1)

        def forward(self, x):
            h, w = x.shape[2:]
            return self.b(self.a(x)[:, :, :h, :w])

    g = _zero_remove_compare(Crop(), torch.randn(1, 3, 8, 8))
    assert [len(grp) for grp in g.groups] == [8]
