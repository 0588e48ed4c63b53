import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchslim
from torchslim.io import load_model, save_model
from torchslim.models import create_model
from torchslim.models.cifar_resnet import CifarResNet
from torchslim.sparsity import (GroupLasso, LoweredConv2d, drop_zero_blocks, gemm_table, lower_sparse_convs,
                                remove_zero_groups, zero_small_groups)
from torchslim.train import FitConfig


def tiny_resnet():
    torch.manual_seed(0)
    return CifarResNet(1, widths=(4, 8, 8)).eval()


def test_lowered_conv_matches_conv_with_zero_rows_and_columns():
    conv = nn.Conv2d(6, 5, 3, stride=2, padding=1, bias=True)
    with torch.no_grad():
        conv.weight[1] = 0  # a filter
        conv.weight[:, 2] = 0  # a whole input channel
        conv.weight[:, 0, 1, 2] = 0  # one column
    low = LoweredConv2d.from_conv(conv)
    assert low.gemm_shape == (4, 6 * 9 - 9 - 1)
    x = torch.randn(2, 6, 9, 9)
    assert torch.allclose(low(x), conv(x), atol=1e-5)


def test_lowered_conv_round_trips_through_io(tmp_path):
    m = create_model("resnet20").eval()
    with torch.no_grad():
        m.layer2[0].conv1.weight.view(32, -1)[:, ::3] = 0
        m.layer3[1].conv2.weight[5:9] = 0
    assert lower_sparse_convs(m) == ["layer2.0.conv1", "layer3.1.conv2"]
    x = torch.randn(2, 3, 32, 32)
    m2 = load_model(save_model(m, tmp_path / "low.safetensors"))
    assert isinstance(m2.layer2[0].conv1, LoweredConv2d) and m2.layer3[1].conv2.gemm_shape == (60, 576)
    assert torch.allclose(m(x), m2(x), atol=1e-5)


def test_group_norms_and_regularizer_values():
    m = nn.Sequential(nn.Conv2d(2, 3, 1, bias=False))
    with torch.no_grad():
        m[0].weight.copy_(torch.arange(6.0).view(3, 2, 1, 1))
    w = m[0].weight.detach().view(3, 2)
    assert torch.allclose(GroupLasso("filter", 1.0)(m), w.norm(dim=1).sum())
    assert torch.allclose(GroupLasso("channel", 1.0)(m), w.norm(dim=0).sum())
    assert torch.allclose(GroupLasso("shape", 2.0)(m), 2 * w.norm(dim=0).sum())  # 1x1 conv: column == channel
    with pytest.raises(torchslim.errors.InvalidInputError):
        GroupLasso("depth")(m)


def test_depthwise_group_drops_a_block_exactly():
    m = tiny_resnet()
    blk = m.layer2[0]
    with torch.no_grad():
        for p in (blk.conv1.weight, blk.conv2.weight, blk.bn1.weight, blk.bn1.bias, blk.bn2.weight, blk.bn2.bias):
            p.mul_(1e-5)
    x = torch.randn(2, 3, 16, 16)
    counts = zero_small_groups(m, ["depth"], threshold=1e-3)
    assert counts["depth"] == 1
    ref = m(x)
    assert drop_zero_blocks(m) == ["layer2.0"]
    assert isinstance(m.layer2[0], nn.Sequential)
    assert torch.allclose(m(x), ref, atol=1e-6)


def _random_data(n=64):
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g))
    return DataLoader(ds, batch_size=16, shuffle=True, generator=g)


def test_ssl_shrinks_gemms_and_keeps_outputs():
    m = tiny_resnet()
    loader = _random_data()
    sparse, info = torchslim.sparsify(m, "ssl", data=loader, groups=("filter", "shape"), lam=0.05, epochs=2,
                                      finetune_epochs=0, threshold=0.05,
                                      fit=FitConfig(lr=0.05, weight_decay=0, progress=False), return_info=True)
    assert info["zeroed_groups"]["shape"] > 0
    rows = {r["layer"]: r for r in info["gemm"]}
    assert sum(r["macs_after"] for r in rows.values()) < sum(r["macs_before"] for r in rows.values())
    assert any(isinstance(mod, LoweredConv2d) for mod in sparse.modules())


def test_gemm_table_sizes():
    m = tiny_resnet()
    rows = {r["layer"]: r for r in gemm_table(m, torch.zeros(1, 3, 16, 16))}
    assert (rows["conv1"]["filters"], rows["conv1"]["columns"], rows["conv1"]["locations"]) == (4, 27, 256)
    assert (rows["layer2.0.conv1"]["filters"], rows["layer2.0.conv1"]["columns"]) == (8, 36)


def test_channel_removal_through_the_pruning_engine():
    prune = pytest.importorskip("torchslim.prune")
    if not hasattr(prune, "remove_zero_channels"):
        pytest.skip("torchslim.prune.remove_zero_channels not integrated yet")
    m = tiny_resnet()
    with torch.no_grad():
        m.layer1[0].conv1.weight[1:3] = 0  # two filters of an inner conv
        m.layer1[0].bn1.weight[1:3] = 0
        m.layer1[0].bn1.bias[1:3] = 0
    x = torch.randn(2, 3, 16, 16)
    ref = m(x)
    done = remove_zero_groups(m, x[:1], channels=True, columns=True, depth=False)
    m2 = done["model"]
    assert torch.allclose(m2(x), ref, atol=1e-5)
    rows = {r["layer"]: r for r in done["gemm"]}
    assert rows["layer1.0.conv1"]["after"].startswith("2x")


def test_lowered_conv_batched_and_channel_only_paths():
    conv = nn.Conv2d(6, 5, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight[:, 1] = 0  # whole channel: the small dense conv path
        conv.weight[3] = 0
    low = LoweredConv2d.from_conv(conv)
    assert low._all_cols and low.gemm_shape == (4, 45)
    x = torch.randn(3, 6, 7, 7)
    assert torch.allclose(low(x), conv(x), atol=1e-5)
    with torch.no_grad():
        conv.weight[:, 0, 0, 0] = 0
    low = LoweredConv2d.from_conv(conv)
    assert not low._all_cols and torch.allclose(low(x), conv(x), atol=1e-5)


def test_proximal_group_lasso_gives_exact_zero_groups():
    m = tiny_resnet()
    _, info = torchslim.sparsify(m, "ssl", data=_random_data(), groups=("shape",), lam=2.0, proximal=True,
                                 epochs=1, finetune_epochs=0, threshold=1e-12, remove="none",
                                 fit=FitConfig(lr=0.05, weight_decay=0, progress=False), return_info=True)
    assert info["zeroed_groups"]["shape"] > 0


@pytest.mark.parametrize("all_cols", [True, False])
def test_lowered_conv_exports_with_a_dynamic_batch(all_cols, tmp_path):
    """Exported at batch 1, the ONNX file runs in ONNX Runtime at batch 3 with PyTorch's outputs."""
    from torchslim.onnx_export import to_onnx, verify_onnx

    m = create_model("resnet20").eval()
    with torch.no_grad():
        m.layer2[0].conv1.weight[:, 3] = 0  # a whole input channel
        m.layer2[0].conv1.weight[5:9] = 0  # filters
        if not all_cols:
            m.layer3[1].conv2.weight.view(64, -1)[:, ::3] = 0  # im2col rows: the GEMM path
    assert lower_sparse_convs(m)
    path = to_onnx(m, torch.randn(1, 3, 32, 32), tmp_path / "low.onnx")
    assert verify_onnx(m, path, torch.randn(3, 3, 32, 32))["batch"] == 3
