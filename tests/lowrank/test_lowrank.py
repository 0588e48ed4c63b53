import json

import pytest
import torch
from torch import nn

import torchslim
from torchslim.errors import InvalidInputError, UnknownNameError
from torchslim.io import load_model, save_model
from torchslim.lowrank import METHODS, Context, decompose_layer, decompose_with_report, evbmf
from torchslim.lowrank.ranks import energy_rank
from torchslim.models import create_model

CONVS = [  # (conv, input) covering stride, padding, dilation, bias, rectangular kernels
    (lambda: nn.Conv2d(6, 10, 3, padding=1), (2, 6, 9, 11)),
    (lambda: nn.Conv2d(6, 10, 3, stride=2, padding=1, bias=False), (2, 6, 9, 11)),
    (lambda: nn.Conv2d(6, 10, (3, 5), padding=(2, 1), dilation=(2, 1)), (1, 6, 10, 12)),
    (lambda: nn.Conv2d(6, 8, 3, padding="same"), (1, 6, 7, 7)),
    (lambda: nn.Conv2d(3, 8, 5, padding=2), (1, 3, 8, 8)),  # first layer: output mode only (tucker)
    (lambda: nn.Conv2d(8, 12, 1, stride=2), (1, 8, 6, 6)),
]


def _ctx_for(method, layer, x):
    if not METHODS.get(method).needs_data:
        return None
    return Context("layer", tuple(x.shape[1:]), None, x, None, {})


def _data(x):
    return torch.randn(16, *x.shape[1:])


@pytest.mark.parametrize("method", METHODS.names())
@pytest.mark.parametrize("case", range(len(CONVS) + 1))
def test_full_rank_reproduces_layer(method, case):
    """rank=1.0 keeps full rank: the chain equals the layer up to float error, for every method."""
    if case == len(CONVS):
        layer, shape = nn.Linear(20, 12), (3, 20)
    else:
        make, shape = CONVS[case]
        layer = make()
    x = torch.randn(*shape)
    m = METHODS.get(method)
    ctx = _ctx_for(method, layer, _data(x))
    chain, res = decompose_layer(layer, m, 1.0, ctx=ctx, allow_growth=True)
    if not isinstance(layer, m.layer_types) or m.skip_reason(layer):
        pytest.skip(f"{method} does not apply to {layer}")
    assert res.status == "decomposed", res.reason
    if not m.exact_full_rank:  # monochromatic: each filter's best colour x space rank-1 (Eckart-Young)
        s = torch.linalg.svdvals(layer.weight.detach().double().flatten(2))
        bound = float((s[:, 1:] ** 2).sum().sqrt() / layer.weight.detach().double().norm())
        assert res.rel_error == pytest.approx(bound, rel=1e-4)
        return
    assert res.rel_error < 1e-5
    with torch.no_grad():
        torch.testing.assert_close(chain(x), layer(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method", ["tucker", "cp", "separable"])
def test_never_grows_a_layer(method):
    layer = nn.Conv2d(8, 8, 3, padding=1)
    chain, res = decompose_layer(layer, method, 1.0)
    assert chain is layer and res.status == "skipped" and "would not reduce" in res.reason


def test_grouped_conv_left_alone_with_reason():
    layer = nn.Conv2d(16, 16, 3, groups=16)
    for method in ("tucker", "cp", "separable"):
        chain, res = decompose_layer(layer, method, 4)
        assert chain is layer and "groups=16" in res.reason


def test_1x1_without_gain_is_left_alone():
    layer = nn.Conv2d(8, 8, 1)
    chain, res = decompose_layer(layer, "tucker", 6)  # 6 * (8 + 8) = 96 > 64
    assert chain is layer and "would not reduce" in res.reason


def test_vbmf_finds_planted_rank():
    g = torch.Generator().manual_seed(1)
    for r in (1, 4, 12):
        Y = torch.randn(40, r, generator=g) @ torch.randn(r, 90, generator=g) + 0.05 * torch.randn(40, 90, generator=g)
        assert evbmf(Y).rank == r
        assert evbmf(Y.T).rank == r
    assert evbmf(torch.randn(40, 90, generator=g)).rank <= 1


def test_tucker_vbmf_ranks_match_planted_tucker_ranks():
    g = torch.Generator().manual_seed(2)
    core = torch.randn(5, 3, 3, 3, generator=g)  # R4=5, R3=3
    U4, U3 = torch.linalg.qr(torch.randn(32, 5, generator=g))[0], torch.linalg.qr(torch.randn(24, 3, generator=g))[0]
    W = torch.einsum("rqij,tr,sq->tsij", core, U4, U3) + 0.003 * torch.randn(32, 24, 3, 3, generator=g)
    conv = nn.Conv2d(24, 32, 3, padding=1, bias=False)
    conv.weight.data.copy_(W)
    _, res = decompose_layer(conv, "tucker", "vbmf")
    assert res.ranks == (3, 5) and res.rel_error < 0.05


def test_energy_rank_and_error_bound():
    layer = nn.Linear(40, 30)
    s = torch.linalg.svdvals(layer.weight.detach())
    assert energy_rank(s, 1.0) == 30
    for q in (0.5, 0.8, 0.95):
        _, res = decompose_layer(layer, "svd", q, allow_growth=True)
        assert res.ranks[0] == energy_rank(s, q)
        assert res.rel_error**2 <= 1 - q + 1e-6  # Eckart-Young: the dropped energy


@pytest.mark.parametrize("method", ["tucker", "cp", "separable", "svd"])
def test_compression_target_is_met(method):
    layer = nn.Linear(64, 48) if method == "svd" else nn.Conv2d(16, 24, 3, padding=1)
    _, res = decompose_layer(layer, method, {"compression": 3})
    assert res.status == "decomposed" and res.compression >= 3
    assert res.compression < 6  # the largest ranks meeting the target, not arbitrary small ones


@pytest.mark.parametrize("method", ["tucker", "cp", "btd", "zhang3d"])
def test_macs_target_is_met_at_the_layers_input_size(method):
    # stride 2: the chain's first factor runs at the input resolution, so MACs and parameters part ways
    layer = nn.Conv2d(16, 24, 3, stride=2, padding=1)
    x = torch.randn(32, 16, 12, 12)
    ctx = Context("conv", (16, 12, 12), (24, 6, 6), x if METHODS.get(method).needs_data else None, None, {})
    _, res = decompose_layer(layer, method, {"macs": 3}, ctx=ctx)
    assert res.status == "decomposed" and res.speedup >= 3
    assert res.speedup < 6  # the largest ranks meeting the target
    with pytest.raises(InvalidInputError, match="input_size"):
        decompose_layer(layer, method, {"macs": 3})  # no shapes: MACs cannot be counted


def test_explicit_ranks_and_bad_rank_values():
    conv = nn.Conv2d(16, 24, 3)
    _, res = decompose_layer(conv, "tucker", (4, 6))
    assert res.ranks == (4, 6)
    for bad in (0, 1.5, -0.1, "auto", {"compression": 0.5}, {"macs": 1}, {"macs": 2, "compression": 2}, (2, 0),
                True):
        with pytest.raises(InvalidInputError):
            decompose_layer(conv, "tucker", bad)
    with pytest.raises(InvalidInputError, match="needs 2"):
        decompose_layer(conv, "tucker", (1, 2, 3))
    with pytest.raises(UnknownNameError, match="tucker"):
        decompose_layer(conv, "nope", 2)


def test_randomized_svd_for_large_matrix_matches_exact():
    g = torch.Generator().manual_seed(3)
    W = torch.randn(1100, 20, generator=g) @ torch.randn(20, 1024, generator=g) + 0.01 * torch.randn(1100, 1024, generator=g)
    layer = nn.Linear(1024, 1100, bias=False)
    layer.weight.data.copy_(W)
    _, res = decompose_layer(layer, "svd", 20)
    assert res.rel_error < 0.01


def _toy_data(n=64):
    return [torch.randn(n, 1, 8, 8)]


def test_whole_model_roundtrips_and_reports(tmp_path):
    model = create_model("digits_cnn").eval()
    small, rep = decompose_with_report(model, "tucker", {"compression": 2}, include_ends=True)
    assert small is not model and all(isinstance(m, nn.Conv2d) for m in [model[0]])  # original untouched
    tot = rep.totals()
    assert tot["decomposed"] >= 3 and tot["compression"] > 1.5 and tot["speedup"] > 1.2
    first = rep.layers[0]
    assert first.ranks[0] == 1  # 1 input channel: output mode only
    json.dumps(rep.to_dict())
    x = torch.randn(4, 1, 8, 8)
    path = save_model(small, tmp_path / "m.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(load_model(path).eval()(x), small.eval()(x))
    rep.measure(threads=1, repeats=2, min_time_s=0.0)
    assert all(l.latency_before_ms and l.latency_after_ms for l in rep.layers)
    assert rep.latency_runtime == "torch" and "ms before (torch)" in [c.header for c in rep.table().columns]
    from rich.console import Console

    Console(file=open(tmp_path / "t.txt", "w"), width=200).print(rep.table())
    assert "total" in (tmp_path / "t.txt").read_text()


def test_default_leaves_the_input_layer_and_the_classifier_alone_and_says_why():
    model = create_model("resnet20")
    lines = []
    small, rep = decompose_with_report(model, "tucker", "vbmf", progress=lines.append)
    by = {l.name: l for l in rep.layers}
    assert by["conv1"].status == "skipped" and "input layer" in by["conv1"].reason
    assert by["linear"].status == "skipped" and "final classifier" in by["linear"].reason
    assert small.conv1 is not model.conv1 and isinstance(small.conv1, nn.Conv2d) and isinstance(small.linear, nn.Linear)
    assert rep.totals()["decomposed"] >= 10  # the body still is
    assert len(lines) == len(rep.layers) and lines[0].startswith("[1/")
    _, rep = decompose_with_report(model, "tucker", "vbmf", include_ends=True)
    assert {l.name for l in rep.decomposed} >= {"conv1", "linear"}
    _, rep = decompose_with_report(model, "tucker", 4, layers=["conv1", "linear"])  # named: obeyed
    assert {l.name for l in rep.decomposed} == {"conv1", "linear"}


def test_layer_selection_and_verb():
    model = create_model("digits_cnn")
    small = torchslim.decompose(model, "cp", 4, layers=["3"])
    assert isinstance(small[3], nn.Sequential) and isinstance(small[0], nn.Conv2d)
    assert isinstance(small[-1], nn.Linear)
    small = torchslim.decompose(model, "tucker", 2, layers=lambda m, n: isinstance(m, nn.Linear))
    assert isinstance(small[-1], nn.Sequential)
    with pytest.raises(InvalidInputError, match="matches no"):
        torchslim.decompose(model, "tucker", 2, layers=["features.*"])


def _correlated_inputs(n=32, S=16, k=4, hw=8):
    g = torch.Generator().manual_seed(4)
    src = torch.randn(n, k, hw, hw, generator=g)
    mix = torch.randn(S, k, generator=g)
    return torch.einsum("nkhw,sk->nshw", src, mix) + 0.05 * torch.randn(n, S, hw, hw, generator=g)


def test_channel_decomposition_reconstructs_responses_better_than_weights():
    """Zhang et al.: fitting the responses beats fitting the weights (Tucker) at the same MACs."""
    conv = nn.Conv2d(16, 24, 3, padding=1)
    x = _correlated_inputs()
    y = torch.relu(conv(x)).detach()
    ctx = Context("c", (16, 8, 8), (24, 8, 8), x, None, {})
    ch, res = decompose_layer(conv, "channel", 6, ctx=ctx)
    ctx_lin = Context("c", (16, 8, 8), (24, 8, 8), x, None, {"nonlinear": False})
    ch_lin, res_lin = decompose_layer(conv, "channel", 6, ctx=ctx_lin)
    # the weight-reconstruction chain with the same MACs: Tucker on the output mode only (rank 6)
    from torchslim.lowrank.tucker import tucker2, tucker2_to_tensor

    w_hat = tucker2_to_tensor(*tucker2(conv.weight.detach(), None, 6)).float()
    tk = lambda inp: torch.nn.functional.conv2d(inp, w_hat, conv.bias, padding=1)
    err = lambda m: float((torch.relu(m(x)) - y).norm() / y.norm())
    with torch.no_grad():
        assert err(ch_lin) < 0.8 * err(tk)
        assert err(ch) <= err(ch_lin) * 1.02
    assert res.response_error is not None and res.response_error < res.rel_error


def test_channel_needs_data_and_uses_following_batchnorm(tmp_path):
    model = create_model("digits_cnn").eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1); m.running_var.uniform_(0.5, 2); m.weight.data.uniform_(0.5, 2)
    with pytest.raises(InvalidInputError, match="data="):
        decompose_with_report(model, "channel", 0.9)
    small, rep = decompose_with_report(model, "channel", 1.0, data=[torch.randn(8, 1, 8, 8)], allow_growth=True)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), atol=1e-4, rtol=1e-4)
    path = save_model(small, tmp_path / "c.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(load_model(path).eval()(x), small(x))


def test_tt_linear_roundtrips_and_matches_its_dense_weight(tmp_path):
    from torchslim.lowrank.tt import TTLinear, factor_modes

    assert factor_modes(4096, 3) == [16, 16, 16] and factor_modes(10, 3) == [5, 2, 1]
    model = nn.Sequential(nn.Flatten(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))
    _, res = decompose_layer(model[1], "tt", 0.9, allow_growth=True)
    assert res.rel_error**2 <= 0.1 + 1e-6  # delta-truncated TT-SVD keeps the energy asked for
    small, rep = decompose_with_report(model, "tt", 4, layers=["1"], linear_method=None)
    tt = small[1]
    assert isinstance(tt, TTLinear) and rep.layers[0].compression > 3
    x = torch.randn(5, 512)
    with torch.no_grad():
        torch.testing.assert_close(tt(x), x @ tt.weight_matrix().T + tt.bias, atol=1e-5, rtol=1e-5)
    path = save_model(small, tmp_path / "tt.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(load_model(path)(x), small(x))


def test_block_term_uses_grouped_conv_and_fits_like_tucker():
    conv = nn.Conv2d(32, 48, 3, padding=1)
    chain, res = decompose_layer(conv, "btd", {"compression": 3})
    _, res_t = decompose_layer(conv, "tucker", {"compression": 3})
    assert res.status == "decomposed" and chain[1].groups == 2 and res.compression >= 3
    assert res.rel_error < res_t.rel_error + 0.05  # same budget, comparable fit


def test_monochromatic_first_layer_groups_filters_by_colour():
    g = torch.Generator().manual_seed(5)
    colours = torch.nn.functional.normalize(torch.randn(4, 3, generator=g), dim=1)
    conv = nn.Conv2d(3, 16, 5, padding=2)
    # filters that truly are colour x space, with 4 distinct colours: 4 clusters are exact
    conv.weight.data = torch.einsum("ts,tij->tsij", colours[torch.arange(16) % 4], torch.randn(16, 5, 5, generator=g))
    chain, res = decompose_layer(conv, "monochromatic", 4)
    assert res.status == "decomposed" and chain[1].groups == 4 and res.rel_error < 1e-5
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(chain(x), conv(x), atol=1e-4, rtol=1e-4)
    _, res = decompose_layer(nn.Conv2d(16, 16, 3), "monochromatic", 4)
    assert res.status == "skipped" and "first layer" in res.reason


def test_monochromatic_model_roundtrips(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 16, 5, padding=2), nn.ReLU(), nn.Conv2d(16, 8, 3))
    small = torchslim.decompose(model, "monochromatic", 4, linear_method=None)
    x = torch.randn(2, 3, 12, 12)
    path = save_model(small, tmp_path / "mono.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(load_model(path)(x), small(x))


def test_bicluster_recovers_block_structure_and_roundtrips(tmp_path):
    """Denton et al. biclustering: a kernel made of 2 x 2 rank-1 blocks (channels shuffled) is exact at k=1."""
    g = torch.Generator().manual_seed(6)
    W = torch.zeros(12, 8, 3, 3)
    v = torch.rand(2, 6, generator=g) + 0.5  # per output cluster h, per input cluster g: v_h(t) u_g(s) K_hg
    u = torch.rand(2, 4, generator=g) + 0.5
    for h in range(2):
        for gg in range(2):
            W[h * 6:(h + 1) * 6, gg * 4:(gg + 1) * 4] = torch.einsum(
                "t,s,hw->tshw", v[h], u[gg], torch.randn(3, 3, generator=g))
    W = W[torch.randperm(12, generator=g)][:, torch.randperm(8, generator=g)]
    conv = nn.Conv2d(8, 12, 3, padding=1)
    conv.weight.data.copy_(W)
    chain, res = decompose_layer(conv, "bicluster", 1)
    assert res.status == "decomposed" and res.rel_error < 1e-5
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(chain(x), conv(x), atol=1e-4, rtol=1e-4)
    path = save_model(nn.Sequential(chain), tmp_path / "b.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(load_model(path)(x), chain(x))


def test_per_layer_ranks_and_default_rank():
    model = create_model("digits_cnn")
    small, rep = decompose_with_report(model, "tucker", {"3": (8, 8), "7": {"compression": 2}}, linear_method=None)
    by = {l.name: l for l in rep.layers}
    assert by["3"].ranks == (8, 8) and by["7"].compression >= 2
    assert by["10"].status == "skipped" and "no rank" in by["10"].reason
    _, rep = decompose_with_report(model, "tucker", None)
    assert rep.rank == "vbmf"
    with pytest.raises(InvalidInputError):
        decompose_with_report(model, "tucker", {"3": 0})


@pytest.mark.parametrize("gram_dtype", ["float64", "float32"])
def test_gram_singular_values_match_the_svd_and_give_the_same_vbmf_rank(monkeypatch, gram_dtype):
    from torchslim.lowrank import linalg
    from torchslim.lowrank.vbmf import evbmf

    if gram_dtype == "float32":  # the path of large layers (VGG's classifier)
        monkeypatch.setattr(linalg, "EXACT_GRAM_MACS", 0)
    g = torch.Generator().manual_seed(7)
    W = torch.randn(200, 12, generator=g) @ torch.randn(12, 900, generator=g) + 0.5 * torch.randn(200, 900, generator=g)
    for Y in (W, W.T):  # the smaller side's Gram either way
        exact = torch.linalg.svdvals(Y.double())
        got = linalg.singular_values(Y)
        tol = 1e-9 if gram_dtype == "float64" else 1e-4
        torch.testing.assert_close(got, exact, rtol=0, atol=tol * float(exact[0]))
        assert evbmf(gamma=got.numpy(), shape=tuple(Y.shape)).rank == evbmf(Y).rank == 12


def test_vbmf_on_a_large_linear_takes_values_from_the_gram():
    g = torch.Generator().manual_seed(3)
    layer = nn.Linear(1024, 1100, bias=False)
    layer.weight.data.copy_(torch.randn(1100, 20, generator=g) @ torch.randn(20, 1024, generator=g)
                            + 0.01 * torch.randn(1100, 1024, generator=g))
    _, res = decompose_layer(layer, "svd", "vbmf")
    assert res.ranks == (20,) and res.rel_error < 0.01


@pytest.mark.parametrize("shape", [(1100, 1024), (1024, 1100)])
def test_factors_from_the_gram_are_the_best_rank_r_approximation(shape):
    from torchslim.lowrank.linalg import gram
    from torchslim.lowrank.svd import svd_factors
    from torchslim.lowrank.core import Analysis

    g = torch.Generator().manual_seed(8)
    W = (torch.randn(shape[0], 30, generator=g) @ torch.randn(30, shape[1], generator=g)
         + 0.1 * torch.randn(*shape, generator=g))
    s = torch.linalg.svdvals(W.double())
    for R in (30, 300):  # subspace iteration (R at the spectral gap, as VBMF picks it), then the exact eigh
        A, B = svd_factors(W, R, Analysis([], (), {"gram": gram(W)}))
        best = float(s[R:].square().sum().sqrt())  # Eckart-Young: the error of the truncated SVD
        assert float((W.double() - A @ B).norm()) == pytest.approx(best, rel=1e-4 if R == 30 else 1e-6)
