"""Small networks, one per structure that structured pruning must understand.

`STRUCTURES[name] = (build, source, exact)`: `build()` returns (model, example_input) (a tensor, a tuple of
positional inputs or a dict of keyword inputs); `source` is "torch-pruning" for the structures of
Torch-Pruning's test suite (v1.6.1, tests/*.py), re-written here, or "torchslim" for ones it lacks; `exact`
is False where removing a channel changes a statistic the model computes (LayerNorm over channels), so a
zeroed channel and a removed one differ. Used by tests/graph/test_structures.py and by
benchmarks/bench_prune_structures.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

STRUCTURES: dict[str, tuple] = {}
OUTPUT_LAYERS: dict[str, list[str]] = {}


def structure(name: str, source: str = "torchslim", exact: bool = True, outputs: str = ""):
    """Register `build`; `outputs`: the layers that write the model's outputs (comma-separated), which a
    pruner that does not keep output shapes by itself (Torch-Pruning) must be told to leave alone."""
    def deco(build):
        STRUCTURES[name] = (build, source, exact)
        OUTPUT_LAYERS[name] = [n for n in outputs.split(",") if n]
        return build
    return deco


def _cbr(cin, cout, k=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.BatchNorm2d(cout), nn.GELU())


def _cb(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout))


def random_plan(graph, ratio: float, gen: torch.Generator) -> torch.Tensor:
    """Remove `ratio` of every group's units at random (each group keeps one)."""
    plan = graph.empty_plan()
    for g in graph.groups:
        k = min(int(round(ratio * len(g))), len(g) - 1)
        plan[g.units[torch.randperm(len(g), generator=gen)[:k]]] = True
    return plan


def mask_plan(model: nn.Module, graph, plan: torch.Tensor) -> None:
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


def outputs(y) -> list:
    return list(y) if isinstance(y, (tuple, list)) else [y]


# -- Torch-Pruning's test structures --------------------------------------------------------------------
class CascadedConcat(nn.Module):  # tests/test_cascaded_concat.py
    def __init__(self, c=6):
        super().__init__()
        self.b1 = nn.Sequential(_cbr(c, c), _cb(c, c))
        self.b2 = nn.Sequential(_cbr(c, 2 * c), _cb(2 * c, 2 * c))
        self.b3 = _cb(c, 3 * c)
        self.b4 = _cb(c, 6 * c)
        self.out = nn.Conv2d(12 * c, 10, 1)

    def forward(self, x):
        y = torch.cat([torch.cat([self.b1(x), self.b2(x)], 1), self.b3(x)], 1)
        return self.out(torch.cat([y, self.b4(x)], 1))


@structure("cascaded_concat", "torch-pruning", outputs="out")
def _():
    return CascadedConcat(), torch.randn(2, 6, 7, 7)


class WideDeep(nn.Module):  # tests/test_concat.py: an MLP and a linear branch concatenated on the last dim
    def __init__(self, d=32):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2),
                                 nn.Linear(32, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
        self.linear = nn.Linear(d, 3)
        self.lin2 = nn.Linear(4, 1)

    def forward(self, x):
        x = x.reshape(x.shape[0], -1)
        return torch.sigmoid(self.lin2(torch.concat([self.linear(x), self.mlp(x)], dim=-1)))


@structure("concat_last_dim_mlp", "torch-pruning", outputs="lin2")
def _():
    return WideDeep(), torch.randn(2, 32)


class ConcatSplit(nn.Module):  # tests/test_concat_split.py: split sizes read from the layers
    def __init__(self, c=10):
        super().__init__()
        self.block1 = nn.Sequential(*_cbr(c, c), *_cb(c, 2 * c))
        self.parallel_path = nn.Sequential(*_cbr(c, c), *_cb(c, c))
        self.block2 = _cb(2 * c, c)

    def forward(self, x):
        x3 = self.parallel_path(x)
        x = self.block1(x)
        x1_ch = self.block2[0].in_channels - self.parallel_path[-1].num_features
        x2_ch = self.block1[-1].num_features - x1_ch
        x1, x2 = torch.split(x, (x1_ch, x2_ch), 1)
        return self.block2(torch.cat([x1, x3], dim=1)) + x2


@structure("concat_split_module_sizes", "torch-pruning", outputs="block2.0")
def _():
    return ConcatSplit(), torch.randn(2, 10, 7, 7)


class ChannelL2Norm(nn.Module):  # tests/test_customized_layer.py, test_unused_parameters.py
    def __init__(self, d):
        super().__init__()
        self.in_dim = d
        self.scale = nn.Parameter(torch.rand(d) + 0.5)
        self.bias = nn.Parameter(torch.randn(d))
        self.fc = nn.Linear(d, d)

    def forward(self, x):
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt()
        return self.fc(torch.div(x, norm) * self.scale + self.bias)


class L2NormNet(nn.Module):
    def __init__(self, d_in=16, hidden=24, classes=5, unused=False):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.customized_layer = ChannelL2Norm(hidden)
        self.fc2 = nn.Linear(hidden, classes)
        if unused:
            self.unused = nn.Parameter(torch.randn(10))

    def forward(self, x):
        return self.fc2(self.customized_layer(F.relu(self.fc1(x))))


@structure("l2_norm_over_channels", "torch-pruning", outputs="fc2")
def _():
    return L2NormNet(), torch.randn(2, 16)


@structure("unused_parameter", "torch-pruning", outputs="fc2")
def _():
    return L2NormNet(unused=True), torch.randn(2, 16)


class LeNet(nn.Module):  # tests/test_dependency_lenet.py: x.view(x.shape[0], -1) after a conv
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(256, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        y = F.max_pool2d(F.relu(self.conv1(x)), 2)
        y = F.max_pool2d(F.relu(self.conv2(y)), 2)
        y = y.view(y.shape[0], -1)
        return F.relu(self.fc3(F.relu(self.fc2(F.relu(self.fc1(y))))))


@structure("lenet_view", "torch-pruning", outputs="fc3")
def _():
    return LeNet(), torch.randn(2, 1, 28, 28)


class ViewSize0(LeNet):  # the CIFAR idiom x.view(x.size(0), -1)
    def forward(self, x):
        y = F.max_pool2d(F.relu(self.conv2(F.max_pool2d(F.relu(self.conv1(x)), 2))), 2)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(y.view(y.size(0), -1))))))


@structure("view_size0", outputs="fc3")
def _():
    return ViewSize0(), torch.randn(2, 1, 28, 28)


class ResidualMLP(nn.Module):  # tests/test_fully_connected_layers.py
    def __init__(self, d_in=16, hidden=24, classes=5):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(d_in, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, classes)

    def forward(self, x):
        x = F.relu(self.fc1(x))
        return self.fc3(F.relu(self.fc2(x)) + x)


@structure("residual_mlp", "torch-pruning", outputs="fc3")
def _():
    return ResidualMLP(), torch.randn(2, 16)


class TwoInputs(nn.Module):
    """tests/test_multiple_inputs_and_outputs.py, with a head: there every layer writes a model output,
    so keeping output shapes leaves nothing to prune."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(16, 12), nn.Linear(8, 12), nn.Linear(24, 20)
        self.head = nn.Linear(20, 3)

    def forward(self, x1, x2):
        x1, x2 = F.relu(self.fc1(x1)), F.relu(self.fc2(x2))
        x3 = F.relu(self.fc3(torch.cat([x1, x2], dim=1)))
        return self.head(x3), x3.sum(1)


@structure("multi_input_keywords", "torch-pruning", outputs="head")
def _():
    return TwoInputs(), {"x1": torch.randn(2, 16), "x2": torch.randn(2, 8)}


@structure("multi_input_tuple", outputs="head")
def _():
    return TwoInputs(), (torch.randn(2, 16), torch.randn(2, 8))


class SpatialCat(nn.Module):  # tests/test_non_feature_dim_cat.py: cat and split along height
    def __init__(self, c=8):
        super().__init__()
        self.block1 = nn.Sequential(_cbr(c, c), _cb(c, c))
        self.parallel_path = nn.Sequential(_cbr(c, c), _cb(c, c))
        self.conv1, self.conv2 = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)

    def forward(self, x):
        x1, x2 = self.block1(x), self.parallel_path(x)
        x = self.conv1(torch.cat([x1, x2], dim=2))
        x1, x2 = torch.split(x, [x1.shape[2], x2.shape[2]], dim=2)
        return self.conv2(x1)


@structure("cat_split_spatial", "torch-pruning", outputs="conv2")
def _():
    return SpatialCat(), torch.randn(2, 8, 5, 5)


class LinearToTransposed(nn.Module):  # tests/test_reshape.py: view to (-1, self.up1.in_channels, 4, 4)
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(32, 16 * 16)
        self.up1 = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
        self.up2 = nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)
        self.final = nn.Linear(4 * 16 * 16, 10)

    def forward(self, x):
        x = F.relu(self.linear(x)).view(-1, self.up1.in_channels, 4, 4)
        x = F.relu(self.up2(F.relu(self.up1(x))))
        return self.final(torch.flatten(x, 1))


@structure("reshape_module_size_transposed", "torch-pruning", outputs="final")
def _():
    return LinearToTransposed(), torch.randn(2, 32)


class SingleChannelOutput(nn.Module):  # tests/test_single_channel_output.py
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 2, stride=2), nn.BatchNorm2d(32)
        self.conv3, self.bn3 = nn.Conv2d(32, 1, 3, 1, 1), nn.BatchNorm2d(1)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn3(self.conv3(F.relu(self.bn2(self.conv2(x))))))


@structure("single_channel_output", "torch-pruning", outputs="conv3")
def _():
    return SingleChannelOutput(), torch.randn(2, 3, 16, 16)


class SplitByModules(nn.Module):  # tests/test_split.py: split sizes read from consumers, a branch used twice
    def __init__(self, c=8):
        super().__init__()
        self.block1 = nn.Sequential(_cbr(c, c), _cb(c, 4 * c))
        self.block2_1 = _cb(c, c)
        self.block2_2 = _cb(2 * c, c)

    def forward(self, x):
        x = self.block1(x)
        c1, c2 = self.block2_1[0].in_channels, self.block2_2[0].in_channels
        x1, x2, x3 = torch.split(x, [c1, c1, c2], dim=1)
        return self.block2_1(x1), self.block2_1(x2), self.block2_2(x3)


@structure("split_module_sizes", "torch-pruning", outputs="block2_1.0,block2_2.0")
def _():
    return SplitByModules(), torch.randn(2, 8, 5, 5)


class TransposeModel(nn.Module):  # tests/test_pruner.py, test_isomorphic.py: test_pruner_TransposeConv
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.ConvTranspose2d(16, 32, 2, stride=2), nn.BatchNorm2d(32)
        self.conv3, self.bn3 = nn.Conv2d(32, 8, 3, 1, 1), nn.BatchNorm2d(8)

    def forward(self, x):
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return F.relu(self.bn3(self.conv3(x)))


@structure("conv_transpose2d", "torch-pruning", outputs="conv3")
def _():
    return TransposeModel(), torch.randn(2, 3, 8, 8)


@structure("resnet18", "torch-pruning", outputs="fc")  # tests/test_dependency_graph.py, test_group_prune.py
def _():
    return torchvision.models.resnet18(num_classes=10), torch.randn(2, 3, 32, 32)


@structure("resnet50", "torch-pruning", outputs="fc")  # tests/test_pruner.py, test_isomorphic.py
def _():
    return torchvision.models.resnet50(num_classes=10), torch.randn(2, 3, 32, 32)


@structure("alexnet", "torch-pruning", outputs="classifier.6")  # tests/test_pruning_fn.py
def _():
    return torchvision.models.alexnet(num_classes=10), torch.randn(2, 3, 64, 64)


# tests/test_unwrapped_parameters.py
@structure("convnext_layer_scale", "torch-pruning", exact=False, outputs="classifier.2")
def _():
    return torchvision.models.convnext_tiny(num_classes=10), torch.randn(2, 3, 32, 32)


# -- structures Torch-Pruning's tests lack --------------------------------------------------------------
class ConvND(nn.Module):
    def __init__(self, nd: int):
        super().__init__()
        conv, bn = {1: (nn.Conv1d, nn.BatchNorm1d), 3: (nn.Conv3d, nn.BatchNorm3d)}[nd]
        self.c1, self.b1, self.c2, self.b2 = conv(3, 12, 3, padding=1), bn(12), conv(12, 16, 3, padding=1), bn(16)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))))
        return self.fc(x.flatten(2).mean(-1))


@structure("conv1d", outputs="fc")
def _():
    return ConvND(1), torch.randn(2, 3, 20)


@structure("conv3d", outputs="fc")
def _():
    return ConvND(3), torch.randn(2, 3, 4, 6, 6)


class TransposedND(nn.Module):
    """Encoder-decoder: conv down, transposed conv up (with groups), skip add, 1-D/3-D variants."""

    def __init__(self, nd: int = 2, groups: int = 1):
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[nd]
        up = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[nd]
        self.enc = conv(3, 24, 3, padding=1)
        self.down = conv(24, 32, 2, stride=2)
        self.up = up(32, 24, 2, stride=2, groups=groups)  # groups=2: 16 inputs -> 12 outputs per group
        self.head = conv(24, 4, 1)

    def forward(self, x):
        e = F.relu(self.enc(x))
        return self.head(F.relu(self.up(F.relu(self.down(e)))) + e)


@structure("conv_transpose1d_skip", outputs="head")
def _():
    return TransposedND(1), torch.randn(2, 3, 16)


@structure("conv_transpose3d_skip", outputs="head")
def _():
    return TransposedND(3), torch.randn(2, 3, 4, 8, 8)


@structure("conv_transpose2d_grouped", outputs="head")
def _():
    return TransposedND(2, groups=2), torch.randn(2, 3, 8, 8)


class Grouped(nn.Module):
    """Grouped convs with several channels per group (8 -> 12 per group: same count per group),
    depthwise with a channel multiplier (prune whole groups), and a residual around them."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.g = nn.Conv2d(16, 24, 3, padding=1, groups=2)
        self.bn = nn.BatchNorm2d(24)
        self.dwm = nn.Conv2d(24, 48, 3, padding=1, groups=24)  # multiplier 2
        self.pw = nn.Conv2d(48, 16, 1)
        self.head = nn.Conv2d(16, 5, 1)

    def forward(self, x):
        s = F.relu(self.stem(x))
        y = self.pw(F.relu(self.dwm(F.relu(self.bn(self.g(s)))))) + s
        return self.head(y).mean((2, 3))


@structure("grouped_and_depthwise_multiplier", outputs="head")
def _():
    return Grouped(), torch.randn(2, 3, 8, 8)


class Norms(nn.Module):
    """GroupNorm (whole groups), InstanceNorm with and without affine, per-channel PReLU, a residual."""

    def __init__(self):
        super().__init__()
        self.c1, self.gn = nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16)
        self.c2, self.inorm = nn.Conv2d(16, 16, 3, padding=1), nn.InstanceNorm2d(16, affine=True)
        self.c3, self.inorm2 = nn.Conv2d(16, 12, 1), nn.InstanceNorm2d(12)
        self.prelu = nn.PReLU(12)
        self.gn2 = nn.GroupNorm(3, 12, affine=False)
        self.head = nn.Conv2d(12, 5, 1)

    def forward(self, x):
        y = F.relu(self.gn(self.c1(x)))
        y = F.relu(self.inorm(self.c2(y))) + y
        y = self.gn2(self.prelu(self.inorm2(self.c3(y))))
        return self.head(y)


@structure("groupnorm_instancenorm_prelu", outputs="head")
def _():
    return Norms(), torch.randn(2, 3, 8, 8)


class LayerNormChannels(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.ln = nn.Conv2d(3, 16, 3, padding=1), nn.LayerNorm(16)
        self.c2 = nn.Conv2d(16, 5, 1)

    def forward(self, x):
        y = self.ln(self.c1(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.c2(F.gelu(y))


@structure("layernorm_channels_last", exact=False, outputs="c2")
def _():
    return LayerNormChannels(), torch.randn(2, 3, 8, 8)


class ChannelNormalize(nn.Module):
    """F.normalize over channels and a channel-sum attention map (reductions that only read channels)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        y = F.normalize(F.relu(self.c1(x)), dim=1)
        y = self.c2(y)
        att = torch.sigmoid(y.sum(1, keepdim=True))
        return self.head(y * att + y / torch.linalg.vector_norm(y, dim=1, keepdim=True).clamp(min=1e-6))


@structure("channel_reductions", outputs="head")
def _():
    return ChannelNormalize(), torch.randn(2, 3, 8, 8)


class PatchAttention(nn.Module):
    """Conv patches -> tokens by a size read from the model (`self.hidden_dim`) -> self-attention with
    a residual -> token MLP -> mean. No LayerNorm, so pruning is exact."""

    def __init__(self, hidden=32, heads=4, batch_first=True):
        super().__init__()
        self.hidden_dim, self.batch_first = hidden, batch_first
        self.patch = nn.Conv2d(3, hidden, 4, stride=4)
        self.attn = nn.MultiheadAttention(hidden, heads, batch_first=batch_first)
        self.fc1, self.fc2 = nn.Linear(hidden, 2 * hidden), nn.Linear(2 * hidden, hidden)
        self.head = nn.Linear(hidden, 5)

    def forward(self, x):
        n = x.shape[0]
        t = self.patch(x).reshape(n, self.hidden_dim, -1).permute(0, 2, 1)
        if not self.batch_first:
            t = t.transpose(0, 1)
        t = t + self.attn(t, t, t, need_weights=False)[0]
        t = t + self.fc2(F.gelu(self.fc1(t)))
        return self.head(t.mean(1 if self.batch_first else 0))


@structure("multihead_attention", outputs="head")
def _():
    return PatchAttention(), torch.randn(2, 3, 16, 16)


@structure("multihead_attention_seq_first", outputs="head")
def _():
    return PatchAttention(batch_first=False), torch.randn(2, 3, 16, 16)


@structure("vision_transformer_small", exact=False, outputs="heads.head")
def _():
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                                 hidden_dim=32, mlp_dim=64, num_classes=10)
    nn.init.normal_(model.heads.head.weight)  # torchvision zero-inits the head: outputs would all be 0
    return model, torch.randn(2, 3, 32, 32)


class MatmulAttention(nn.Module):
    """timm-style attention written with matmul: qkv reshaped by the module's num_heads / head_dim,
    q @ k^T with a stored scale, softmax, @ v, heads merged by the size of the input. Head dims follow."""

    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5  # stored: removing head dims leaves it as it is (exact)
        self.embed = nn.Conv2d(3, dim, 4, stride=4)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 5)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.head((x + self.proj(y)).mean(1))


@structure("matmul_attention", outputs="head")
def _():
    return MatmulAttention(), torch.randn(2, 3, 16, 16)


STRUCTURE_NAMES = list(STRUCTURES)


def call(model: nn.Module, example):
    """model(example) for a tensor, model(*example) for a tuple, model(**example) for a dict."""
    if isinstance(example, dict):
        return model(**example)
    if isinstance(example, (tuple, list)):
        return model(*example)
    return model(example)
