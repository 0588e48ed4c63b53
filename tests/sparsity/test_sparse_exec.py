import torch
from torch import nn

from torchslim.analysis import profile
from torchslim.io import load_model, save_model
from torchslim.models import create_model
from torchslim.sparsity import (SparseConv2d, SparseLinear, density_summary, prune_by_magnitude, to_dense,
                                to_sparse)


def test_sparse_layers_compute_what_the_masked_ones_do(tmp_path):
    m = create_model("lenet5").eval()
    prune_by_magnitude(m, 0.9)
    x = torch.randn(3, 1, 28, 28)
    ref = m(x)
    names = to_sparse(m, min_sparsity=0.5)
    assert names == ["0", "2", "5", "7"]
    assert isinstance(m[0], SparseConv2d) and isinstance(m[5], SparseLinear)
    assert torch.allclose(m(x), ref, atol=1e-5)
    assert torch.allclose(m(x[:1]), ref[:1], atol=1e-5)
    m2 = load_model(save_model(m, tmp_path / "sparse.safetensors"))
    assert torch.allclose(m2(x), ref, atol=1e-5)
    d = density_summary(m2)
    assert abs(d["density"] - 0.1) < 0.01
    # the analysis table counts the dense shape and the stored nonzeros
    p = profile(m2, (1, 28, 28))
    row = {r.name: r for r in p.layers}["5"]
    assert row.params == 800 * 500 + 500 and 0.09 < row.density < 0.12
    assert row.macs == m2[5].nnz
    dense = to_dense(m2)
    assert type(dense[5]) is nn.Linear and torch.allclose(dense(x), ref, atol=1e-5)


def test_min_sparsity_leaves_dense_layers_alone():
    m = create_model("lenet300")
    prune_by_magnitude(m, {"1": 0.95})
    assert to_sparse(m, min_sparsity=0.9) == ["1"]
