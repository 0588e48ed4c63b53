"""Any model made of torch and torchvision modules saves and loads back with identical outputs, however it
was built (16.3); what cannot be described is refused at save time. The whole zoo:
benchmarks/bench_model_file_zoo.py."""
import pytest
import torch
from torch import nn
from torchvision import models as tvm

import torchslim
from torchslim.errors import InvalidInputError
from torchslim.io import load_model, save_model
from torchslim.models import create_model


def _small_members():
    """One small model of every torchvision classification family, built directly (no torchslim arch):
    (name, builder, input size)."""
    from torchvision.models.convnext import CNBlockConfig

    yield "resnet18", lambda: tvm.resnet18(num_classes=10), 32
    yield "resnet_custom", lambda: tvm.ResNet(tvm.resnet.Bottleneck, [1, 1, 1, 1], num_classes=5, groups=2,
                                      width_per_group=8), 32
    yield "mobilenet_v3_small", lambda: tvm.mobilenet_v3_small(num_classes=10), 32
    yield "mobilenet_v2", lambda: tvm.mobilenet_v2(num_classes=10, width_mult=0.25), 32
    yield "efficientnet_b0", lambda: tvm.efficientnet_b0(num_classes=10), 32
    yield "mnasnet0_5", lambda: tvm.mnasnet0_5(num_classes=10), 32
    yield "shufflenet_v2_x0_5", lambda: tvm.shufflenet_v2_x0_5(num_classes=10), 32
    yield "squeezenet1_1", lambda: tvm.squeezenet1_1(num_classes=10), 64
    yield "regnet", lambda: tvm.RegNet(tvm.regnet.BlockParams.from_init_params(depth=4, w_0=8, w_a=8.0, w_m=2.0,
                                                                       group_width=8), num_classes=10), 32
    yield "densenet", lambda: tvm.DenseNet(growth_rate=4, block_config=(1, 1), num_init_features=8,
                                           num_classes=10), 32
    yield "googlenet", lambda: tvm.googlenet(num_classes=10, aux_logits=False, init_weights=True), 32
    yield "convnext", lambda: tvm.ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)],
                                           num_classes=10), 32
    yield "vit", lambda: tvm.VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16,
                                       mlp_dim=32, num_classes=10), 32
    yield "swin", lambda: tvm.SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 1],
                                      window_size=[2, 2], num_classes=10), 32
    yield "swin_v2", lambda: tvm.SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 1],
                                         window_size=[2, 2], num_classes=10,
                                         block=tvm.swin_transformer.SwinTransformerBlockV2,
                                         downsample_layer=tvm.swin_transformer.PatchMergingV2), 32
    yield "maxvit", lambda: tvm.MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[8, 16],
                               block_layers=[1, 1], head_dim=4, stochastic_depth_prob=0.0, num_classes=10), 32


def _round_trip(model, x, tmp_path):
    model.eval()
    with torch.no_grad():
        y = model(x)
        loaded = load_model(save_model(model, tmp_path / "m.safetensors"))
        assert torch.equal(y, loaded(x))
    return loaded


@pytest.mark.parametrize("name,model,size", list(_small_members()), ids=lambda v: v if isinstance(v, str) else None)
def test_directly_built_torchvision_models_round_trip(name, model, size, tmp_path):
    _round_trip(model(), torch.randn(2, 3, size, size), tmp_path)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "convnext", "densenet"])
def test_pruned_torchvision_models_round_trip(name, tmp_path):
    model = dict((n, build) for n, build, _ in _small_members())[name]().eval()
    x = torch.randn(2, 3, 32, 32)
    _round_trip(torchslim.prune(model, x, ratio=0.25), x, tmp_path)


def test_pruned_convnext_tiny_from_the_registry_round_trips(tmp_path):
    x = torch.randn(1, 3, 32, 32)
    pruned = torchslim.prune(create_model("torchvision:convnext_tiny", num_classes=10).eval(), x, ratio=0.25)
    loaded = _round_trip(pruned, x, tmp_path)
    assert any(type(m).__name__ == "CNBlock" for m in loaded.modules())


def test_pruning_leaves_no_fx_constants_on_the_model():
    m = tvm.MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[8, 16],
                   block_layers=[1, 1], head_dim=4, stochastic_depth_prob=0.0, num_classes=10).eval()
    torchslim.prune(m, torch.randn(1, 3, 32, 32), ratio=0.25, inplace=True)
    assert not [k for k in vars(m) if k.startswith("_tensor_constant")]


def test_what_a_file_cannot_hold_is_refused_at_save_time(tmp_path):
    m = tvm.resnet18(num_classes=10)
    h = m.layer1.register_forward_hook(lambda *a: None)
    with pytest.raises(InvalidInputError, match="layer1.*forward hooks"):
        save_model(m, tmp_path / "a.safetensors")
    h.remove()
    m.scale_fn = lambda x: x * 2  # an attribute forward might call: no file can describe it
    with pytest.raises(InvalidInputError, match="the model.*attribute .scale_fn. holds a function"):
        save_model(m, tmp_path / "b.safetensors")
    lin = nn.Sequential(nn.Linear(4, 4))
    torch.nn.utils.parametrize.register_parametrization(lin[0], "weight", nn.Identity())
    with pytest.raises(InvalidInputError, match="cannot save module 0"):
        save_model(lin, tmp_path / "c.safetensors")
    assert not list(tmp_path.iterdir())
