import torch
from torch import nn

from torchslim.quant import KMeansConfig, SharedWeightLinear, kmeans_quantize, quantize, share_weights
from torchslim.quant.kmeans import kmeans_1d


def test_kmeans_1d_linear_init_finds_the_clusters():
    v = torch.cat([torch.randn(500) * 0.01 + c for c in (-1.0, 0.2, 3.0)])
    c, a = kmeans_1d(v, 3)
    torch.testing.assert_close(c, torch.tensor([-1.0, 0.2, 3.0]), atol=0.01, rtol=0)
    assert a.tolist()[:500] == [0] * 500


def test_shared_layers_use_at_most_2_to_the_b_values_and_keep_pruned_zeros():
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Conv2d(1, 1, 1))
    with torch.no_grad():
        m[1].weight[:, ::2] = 0  # pruned
    share_weights(m, {"conv": 8, "fc": 3})
    w = m[1].weight.detach()
    assert len(torch.unique(w[w != 0])) <= 8
    assert (w[:, ::2] == 0).all()


def test_centroid_gradient_is_the_sum_of_member_gradients():
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    layer = share_weights(nn.Sequential(lin), {"fc": 2})["0"]
    x = torch.randn(4, 16)
    layer(x).pow(2).sum().backward()
    # the same loss through a plain dense weight: sum its gradient per cluster
    w = layer.weight.detach().clone().requires_grad_(True)
    torch.nn.functional.linear(x, w, layer.bias.detach()).pow(2).sum().backward()
    expect = torch.zeros(4).index_add_(0, layer.index.long().flatten()[layer.weight_mask.flatten()],
                                       w.grad.flatten()[layer.weight_mask.flatten()])
    torch.testing.assert_close(layer.centroids.grad, expect)


def test_fine_tuning_trains_centroids_only_and_pruned_weights_stay_zero(digits):
    from torchslim.sparsity.magnitude import prune_by_magnitude
    from torchslim.sparsity.masks import remove_masks
    from torchslim.train import FitConfig

    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    prune_by_magnitude(m, 0.8)
    remove_masks(m)
    zeros = m[1].weight == 0
    q = kmeans_quantize(m, KMeansConfig(bits={"fc": 4}, epochs=1,
                                        fit=FitConfig(lr=0.05, weight_decay=0, progress=False, max_steps_per_epoch=5)),
                        train_loader=digits.train)
    assert isinstance(q[1], SharedWeightLinear)
    assert (q[1].weight[zeros] == 0).all()
    assert len(torch.unique(q[1].weight.detach())) <= 17  # 16 centroids + the pruned zero


def test_kmeans_model_roundtrips_through_model_files(tmp_path):
    from torchslim.io import load_model, save_model
    from torchslim.models import create_model

    m = quantize(create_model("lenet5"), "kmeans", epochs=0)
    save_model(m, tmp_path / "k.safetensors")
    r = load_model(tmp_path / "k.safetensors")
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(r(x), m(x))


def test_kmeans_model_exports_no_larger_than_the_dense_one(tmp_path):
    """Deep Compression's shared-weight (and masked) layers export decoded: one dense float tensor per
    weight, not int64 indices + codebook + mask (which made the ONNX file 3x the dense one)."""
    from torchslim.models import create_model
    from torchslim.onnx_export import to_onnx, verify_onnx
    from torchslim.sparsity import sparsify

    torch.manual_seed(0)
    dense = create_model("lenet5").eval()
    x = torch.randn(4, 1, 28, 28)
    masked = sparsify(dense, "magnitude", sparsity=0.9)  # masks kept: the kmeans input of Deep Compression
    shared = kmeans_quantize(masked, KMeansConfig(bits={"conv": 8, "fc": 5}, epochs=0))
    sizes = {}
    for name, m in {"dense": dense, "masked": masked, "kmeans": shared}.items():
        path = to_onnx(m, x[:1], tmp_path / f"{name}.onnx")
        verify_onnx(m, path, x)  # same outputs as the coded model, at another batch size
        sizes[name] = path.stat().st_size
    assert sizes["kmeans"] <= sizes["dense"] and sizes["masked"] <= sizes["dense"], sizes
