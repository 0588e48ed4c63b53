import copy

import pytest
import torch

from torchslim.quant import OBSERVERS, Int8Config, OnnxRuntimeModule, fold_bn, quantize
from torchslim.quant.fakequant import fake_quant_weight
from torchslim.quant.nncf_ptq import nncf_available


def test_bn_folding_keeps_outputs():
    from torchslim.models import create_model

    m = create_model("resnet20").eval()
    for mod in m.modules():  # non-trivial BN statistics
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2)
            mod.weight.data.uniform_(0.5, 1.5)
    f = fold_bn(m)
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in f.modules())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(f(x), m(x), atol=1e-4, rtol=1e-4)


def test_weight_fake_quant_is_symmetric_per_channel_int8():
    w = torch.randn(4, 3, 3, 3) * torch.tensor([1, 10, 100, 0.01]).view(4, 1, 1, 1)
    q = fake_quant_weight(w)
    for c in range(4):
        scale = w[c].abs().max() / 127
        levels = torch.round(q[c] / scale)
        assert levels.abs().max() <= 127
        torch.testing.assert_close(levels * scale, q[c])


def test_int8_ptq_builds_measures_and_returns_a_correct_fast_path(trained_cnn, digits):
    q = quantize(trained_cnn, "int8-ptq", calib=digits.train, eval_loader=digits.test, calib_images=128,
                 repeats=3, min_time_s=0.0, compare=True)
    rep = q.quant_report
    for name in ("fp32-torch", "fp32-ort", "fp32-ov", "ort-qdq", "ort-qoperator", "torch-x86", "ov-qdq", "fake-quant"):
        assert name in rep["paths"], name
        assert "top1" in rep["paths"][name]
    assert rep["chosen"] in ("ort-qdq", "ort-qoperator", "torch-x86", "ov-qdq")
    row = rep["paths"][rep["chosen"]]
    assert row["correct"] and row["median_ms"] > 0
    assert rep["paths"]["fp32-torch"]["top1"] - row["top1"] < 3.0
    # the int8 ONNX model is smaller than the fp32 one (weights in int8; graph overhead dominates this tiny net)
    assert rep["paths"]["ort-qdq"]["size_bytes"] < 0.8 * rep["paths"]["fp32-ort"]["size_bytes"]
    x = next(iter(digits.test))[0]
    with torch.no_grad():
        assert (q(x).argmax(1) == trained_cnn(x).argmax(1)).float().mean() > 0.9
        assert (q.reference(x).argmax(1) == q.fp32(x).argmax(1)).float().mean() > 0.9


def test_int8_default_is_quick_one_qdq_model_in_openvino_and_onnx_runtime(trained_cnn, digits):
    q = quantize(trained_cnn, "int8-ptq", calib=digits.train, eval_loader=digits.test, calib_images=64,
                 repeats=2, min_time_s=0.0)
    rep = q.quant_report
    assert set(rep["paths"]) == {"fp32-torch", "fp32-ort", "fp32-ov", "ort-qdq", "ov-qdq"}
    assert rep["chosen"] in ("ort-qdq", "ov-qdq") and q.reference is None
    # only fp32 and the chosen path are evaluated: that is what makes the default quick
    assert {n for n, r in rep["paths"].items() if "top1" in r} == {"fp32-torch", rep["chosen"]}
    assert rep["paths"]["ov-qdq"]["correct"] and rep["paths"]["ov-qdq"]["size_bytes"] == rep["paths"]["ort-qdq"]["size_bytes"]


@pytest.mark.parametrize("path", ["ort-qdq", "ov-qdq", pytest.param("ov-nncf", marks=pytest.mark.skipif(
    not nncf_available(), reason="NNCF not installed"))])
def test_ort_module_roundtrips_through_model_files(trained_cnn, digits, tmp_path, path):
    from torchslim.io import load_model, save_model
    from torchslim.openvino_export import OpenVinoModule

    q = quantize(trained_cnn, "int8-ptq", calib=digits.train, path=path, calib_images=64,
                 repeats=2, min_time_s=0.0)
    assert set(q.quant_report["paths"]) == {"fp32-torch", "fp32-ort", path} | ({"fp32-ov"} if "ov" in path else set())
    assert type(q) is (OpenVinoModule if path.startswith("ov") else OnnxRuntimeModule)
    assert q.quant_report["paths"][path]["rel_l2_error"] < (0.05 if path != "ov-nncf" else 0.5)  # NNCF ranges clip more here (0.2 vs 0.01 measured)
    save_model(q, tmp_path / "q.safetensors")
    r = load_model(tmp_path / "q.safetensors")
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(r(x), q(x))
    assert torch.equal(copy.deepcopy(q)(x), q(x))
    from torchslim import encode

    encode.save(q, tmp_path / "q.slim")  # the int8 ONNX bytes travel raw inside a .slim file too
    assert torch.equal(encode.load(tmp_path / "q.slim")(x), q(x))


def test_a_failed_qdq_model_fails_its_openvino_path_too(trained_cnn, digits, monkeypatch):
    import torchslim.quant.int8_ptq as int8_ptq
    from torchslim.errors import UnsupportedModelError

    def broken(*args, **kwargs):
        raise RuntimeError("quantize_static failed")

    monkeypatch.setattr(int8_ptq, "_ort_quantize", broken)
    with pytest.raises(UnsupportedModelError, match="no int8 path is correct") as e:
        quantize(trained_cnn, "int8-ptq", calib=digits.train, calib_images=32, repeats=2, min_time_s=0.0)
    assert str(e.value).count("quantize_static failed") == 2  # ort-qdq and ov-qdq each say why
    with pytest.raises(UnsupportedModelError, match="int8 path 'ov-qdq' failed: RuntimeError"):
        quantize(trained_cnn, "int8-ptq", calib=digits.train, path="ov-qdq", calib_images=32, repeats=2,
                 min_time_s=0.0)


def test_int8_without_calibration_data_is_a_clear_error(trained_cnn):
    from torchslim.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="calibration"):
        quantize(trained_cnn, "int8-ptq")
    with pytest.raises(InvalidInputError, match="int8 path"):
        quantize(trained_cnn, "int8-ptq", calib=torch.randn(4, 1, 8, 8), config=Int8Config(path="tensorrt"))


@pytest.mark.parametrize("observer", OBSERVERS.names())
def test_every_observer_calibrates_correct_ort_and_torch_int8_paths(trained_cnn, digits, observer):
    q = quantize(trained_cnn, "int8-ptq", calib=digits.train, observer=observer, paths=("ort-qdq", "torch-x86"),
                 calib_images=64, repeats=2, min_time_s=0.0)
    rep = q.quant_report
    assert rep["observer"] == observer
    for path in ("ort-qdq", "torch-x86"):
        assert rep["paths"][path]["correct"], (path, rep["paths"][path])


def test_the_nncf_path_says_how_to_get_nncf_when_it_is_missing(trained_cnn, digits, monkeypatch):
    import torchslim.quant.nncf_ptq as nncf_ptq
    from torchslim.errors import InvalidInputError

    monkeypatch.setattr(nncf_ptq, "nncf_available", lambda: False)
    with pytest.raises(InvalidInputError, match="pip install nncf"):
        quantize(trained_cnn, "int8-ptq", calib=digits.train, path="ov-nncf", calib_images=32, repeats=2,
                 min_time_s=0.0)
