"""Zhang et al. 2015: the asymmetric channel decomposition and the 3-D (spatial + channel) scheme."""
import pytest
import torch
from torch import nn

from tests.conftest import shared_data_available
from torchslim.io import load_model, save_model
from torchslim.lowrank import METHODS, Context, decompose_layer, decompose_with_report
from torchslim.lowrank.core import layer_macs, original_cost


def _correlated(n, S=8, k=3, hw=10, seed=0):
    """Inputs whose channels live near a k-dimensional subspace, as real feature maps do."""
    mix = torch.randn(S, k, generator=torch.Generator().manual_seed(100))  # one distribution
    g = torch.Generator().manual_seed(seed)  # its samples
    return torch.einsum("nkhw,sk->nshw", torch.randn(n, k, hw, hw, generator=g), mix) \
        + 0.1 * torch.randn(n, S, hw, hw, generator=g)


def _stack(depth=4, width=24, seed=0):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(8, width, 3, padding=1), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
    model = nn.Sequential(*layers)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1); m.running_var.uniform_(0.5, 2); m.weight.data.uniform_(0.5, 2)
    return model.eval()


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("method", ["channel", "zhang3d"])
def test_asymmetric_beats_symmetric_on_the_final_layer(method):
    """Sec. 3.3: fitting each layer on the approximated network's inputs (target: the original responses)
    corrects the error accumulated below it; the symmetric fit never sees that error."""
    model = _stack()
    x, held_out = _correlated(32), _correlated(32, seed=1)
    rank = 4 if method == "channel" else (8, 6)
    with torch.no_grad():
        y, y_held = model(x), model(held_out)
    err, reported = {}, {}
    for asym in (False, True):
        small, rep = decompose_with_report(model, method, rank, data=[x], options={"asymmetric": asym},
                                           include_ends=True)
        assert rep.totals()["decomposed"] == 4
        with torch.no_grad():
            err[asym] = (_rel(small(x), y), _rel(small(held_out), y_held))
        reported[asym] = rep.layers[-1].response_error
    assert err[True][0] < 0.97 * err[False][0]
    assert err[True][1] < err[False][1]
    # the asymmetric error of the last layer is measured against the original network: it is the
    # end-to-end error (the model ends in that layer's ReLU); the symmetric one only sees its own layer
    assert reported[True] == pytest.approx(err[True][0], rel=0.05)
    assert reported[False] < 0.85 * err[False][0]


def test_asymmetric_at_full_rank_and_symmetric_option_reproduce_the_model(tmp_path):
    model = _stack(depth=3)
    x = _correlated(8)
    for opts in ({}, {"asymmetric": False}):
        small, rep = decompose_with_report(model, "zhang3d", 1.0, data=[x], allow_growth=True, options=opts)
        with torch.no_grad():
            torch.testing.assert_close(small(x), model(x), atol=1e-4, rtol=1e-4)
    path = save_model(small, tmp_path / "z.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(load_model(path).eval()(x), small(x))


def test_zhang3d_chain_has_the_promised_shapes_and_kernel():
    conv = nn.Conv2d(16, 24, (3, 5), stride=2, padding=(1, 2))
    x = _correlated(16, S=16, hw=12)
    ctx = Context("c", (16, 12, 12), (24, 6, 6), x, None, {})
    chain, res = decompose_layer(conv, "zhang3d", (10, 6), ctx=ctx)
    vert, horiz, point = chain
    assert (vert.in_channels, vert.out_channels, vert.kernel_size, vert.stride) == (16, 10, (3, 1), (2, 1))
    assert (horiz.in_channels, horiz.out_channels, horiz.kernel_size, horiz.stride) == (10, 6, (1, 5), (1, 2))
    assert (point.in_channels, point.out_channels, point.kernel_size) == (6, 24, (1, 1))
    assert vert.bias is None and horiz.bias is None and point.bias is not None
    T, S, kh, kw = conv.weight.shape
    K, R = res.ranks
    assert res.params_after == S * kh * K + K * kw * R + R * T + T
    V, H, P = vert.weight[..., 0], horiz.weight[:, :, 0], point.weight[:, :, 0, 0]  # (K,S,kh), (R,K,kw), (T,R)
    w_hat = torch.einsum("tr,rki,ksj->tsji", P, H, V).detach()
    with torch.no_grad():  # the chain is one conv with the kernel the report measures its error on
        torch.testing.assert_close(chain(x), nn.functional.conv2d(x, w_hat, point.bias, stride=2, padding=(1, 2)),
                                   atol=1e-4, rtol=1e-4)
    assert res.rel_error == pytest.approx(_rel(w_hat, conv.weight.detach()), rel=1e-4)
    assert chain(x).shape == conv(x).shape


def test_zhang3d_never_grows_a_layer_and_says_why():
    x = _correlated(8, S=8)
    ctx = lambda: Context("c", (8, 10, 10), (8, 10, 10), x, None, {})
    chain, res = decompose_layer(nn.Conv2d(8, 8, 3, padding=1), "zhang3d", 1.0, ctx=ctx())
    assert res.status == "skipped" and "would not reduce" in res.reason
    chain, res = decompose_layer(nn.Conv2d(8, 8, 1), "zhang3d", 4, ctx=ctx())
    assert res.status == "skipped" and "already separable" in res.reason
    _, res = decompose_layer(nn.Conv2d(8, 8, 3), "zhang3d", 4)
    assert res.status == "skipped" and "calibration" in res.reason


def test_zhang3d_compression_target_splits_the_budget_by_energy():
    conv = nn.Conv2d(16, 24, 3, padding=1)
    x = _correlated(16, S=16)
    _, res = decompose_layer(conv, "zhang3d", {"compression": 3}, ctx=Context("c", (16, 10, 10), (24, 10, 10), x, None, {}))
    assert res.status == "decomposed" and 3 <= res.compression < 4


needs_resnet20 = pytest.mark.skipif(not (shared_data_available("cifar10/test.npz")
                                         and shared_data_available("weights/resnet20-12fca82f.th")),
                                    reason="../shared/data cifar10 or resnet20 weights not present")


@needs_resnet20
def test_response_fits_beat_tucker_at_equal_macs_on_a_trained_layer():
    """Pretrained ResNet-20, CIFAR-10 images: at half the MACs of one layer, the response fits (channel,
    zhang3d) reconstruct that layer's ReLU responses on *held-out* images better than Tucker-2 fitted to
    the weights, whatever split of Tucker's ranks (R3, R4) is taken."""
    from torchslim.data import get_data
    from torchslim.lowrank.core import following_batchnorm, trace_layers
    from torchslim.models import create_model

    model = create_model("resnet20", pretrained=True).eval()
    data = get_data("cifar10", batch_size=64, limit_train=64, limit_eval=64)
    calib, test = data.calibration_batches(64), data.calibration_batches(64, split="test")
    name = "layer2.1.conv2"
    layer = model.get_submodule(name)
    si, so, inp = trace_layers(model, [name], calib, True)
    _, _, held = trace_layers(model, [name], test, True)
    a, c = following_batchnorm(model, [name])[name]
    ctx = lambda: Context(name, si[name], so[name], inp[name], (a, c), {})
    relu_bn = lambda y: torch.relu(a[None, :, None, None] * y + c[None, :, None, None])
    budget = layer_macs(original_cost(layer), ctx()) / 2
    fits = lambda m, r: layer_macs(METHODS.get(m).cost(layer, r), ctx()) <= budget

    def err(chain):
        with torch.no_grad():
            return _rel(relu_bn(chain(held[name])), relu_bn(layer(held[name])))

    T, S = layer.out_channels, layer.in_channels
    tucker = min(err(decompose_layer(layer, "tucker", (R3, max(r for r in range(1, T + 1) if fits("tucker", (R3, r)))))[0])
                 for R3 in (S // 4, S // 3, S // 2))
    R = max(r for r in range(1, T + 1) if fits("channel", (r,)))
    channel = err(decompose_layer(layer, "channel", R, ctx=ctx())[0])
    chain, res = decompose_layer(layer, "zhang3d", {"compression": 2}, ctx=ctx())
    assert res.macs_after <= budget
    z3d = err(chain)
    # measured on the original CIFAR-10 (64 to 256 calibration images alike): channel 0.86x and
    # zhang3d 0.79x Tucker's best error; the channel-only fit gains less than the 3-D scheme
    assert channel < 0.92 * tucker
    assert z3d < 0.85 * tucker
