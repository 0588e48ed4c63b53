"""`torchslim export`: any model (names, saved files, pruned and decomposed shapes) to ONNX, checked in ONNX Runtime."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from torchslim.cli.main import main
from torchslim.errors import InvalidInputError
from torchslim.onnx_export import to_onnx, verify_onnx
from torchslim.io import load_model, save_model
from torchslim.models import create_model


def pruned_shaped() -> nn.Module:
    """What filter pruning leaves of digits_cnn(width=16): odd, uneven channel counts."""
    return nn.Sequential(
        nn.Conv2d(1, 11, 3, padding=1, bias=False), nn.BatchNorm2d(11), nn.ReLU(),
        nn.Conv2d(11, 7, 3, padding=1, bias=False), nn.BatchNorm2d(7), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(7, 13, 3, padding=1, bias=False), nn.BatchNorm2d(13), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(13, 10))


def decomposed_shaped() -> nn.Module:
    """What Tucker-2 (1x1 -> kxk core -> 1x1) and SVD (Linear -> Linear) leave."""
    def tucker(cin, cout, r1, r2):
        return nn.Sequential(nn.Conv2d(cin, r1, 1, bias=False), nn.Conv2d(r1, r2, 3, padding=1, bias=False),
                             nn.Conv2d(r2, cout, 1, bias=True))

    return nn.Sequential(
        tucker(1, 16, 1, 4), nn.BatchNorm2d(16), nn.ReLU(), tucker(16, 32, 5, 6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Sequential(nn.Linear(32 * 4 * 4, 8, bias=False), nn.Linear(8, 10)))


def _randomise_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


@pytest.mark.parametrize("build", [pruned_shaped, decomposed_shaped])
def test_export_command_on_saved_compressed_shapes(build, tmp_path, capsys):
    torch.manual_seed(0)
    model = _randomise_bn(build())
    path = save_model(model, tmp_path / "m.safetensors", input_size=(1, 8, 8))
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(load_model(path)(x), model(x))  # the file round-trips first
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", str(path), "--format", "onnx", "-o", str(onnx_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["check"]["max_abs_diff"] < 1e-4 and out["check"]["batch"] == 4 and out["input_size"] == [1, 8, 8]
    # independently of the command: ONNX Runtime on new inputs, another batch size, agrees with PyTorch
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_export_by_model_name(tmp_path, capsys):
    assert main(["export", "resnet20", "-o", str(tmp_path / "r.onnx")]) == 0
    assert "ONNX Runtime matches PyTorch" in capsys.readouterr().out and (tmp_path / "r.onnx").stat().st_size > 1e6


@pytest.mark.parametrize("build", [pruned_shaped, decomposed_shaped])
def test_openvino_export_of_compressed_shapes_matches_pytorch(build, tmp_path, capsys):
    torch.manual_seed(0)
    model = _randomise_bn(build())
    path = save_model(model, tmp_path / "m.safetensors", input_size=(1, 8, 8))
    xml = tmp_path / "m.xml"
    assert main(["export", str(path), "--format", "openvino", "-o", str(xml), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "openvino" and out["check"]["max_abs_diff"] < 1e-4 and out["check"]["batch"] == 4
    assert xml.exists() and xml.with_suffix(".bin").stat().st_size > 0 and not list(tmp_path.glob("tmp*"))
    # independently of the command: the IR in OpenVINO, another batch size, agrees with PyTorch
    import openvino as ov

    x = torch.randn(3, 1, 8, 8)
    got = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x.numpy())[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_openvino_export_of_an_int8_model_runs_it_in_int8(tmp_path, capsys):
    from torchslim.quant import quantize

    torch.manual_seed(0)
    model = _randomise_bn(pruned_shaped())
    q = quantize(model, "int8-ptq", calib=torch.rand(64, 1, 8, 8), path="ort-qdq", repeats=2, min_time_s=0.0)
    path = save_model(q, tmp_path / "q.safetensors", input_size=(1, 8, 8))
    xml = tmp_path / "q.xml"
    assert main(["export", str(path), "--format", "openvino", "-o", str(xml), "--atol", "0.05", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["check"]["max_abs_diff"] < 0.05
    import openvino as ov

    # OpenVINO's compiled graph runs every convolution and the linear layer on int8 data (u8 activations)
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    layers = [(op.get_rt_info()["layerType"].astype(str), op.get_rt_info()["runtimePrecision"].astype(str))
              for op in compiled.get_runtime_model().get_ops()]
    assert {p for t, p in layers if t in ("Convolution", "FullyConnected")} <= {"u8", "i8"}
    assert sum(t == "Convolution" for t, _ in layers) == 3
    # the IR is smaller than the fp32 model's: its weights are int8
    fp32 = to_openvino_bytes(model, tmp_path)
    assert xml.with_suffix(".bin").stat().st_size < 0.5 * fp32


def to_openvino_bytes(model, tmp_path) -> int:
    from torchslim.openvino_export import to_openvino

    return to_openvino(model, torch.randn(1, 1, 8, 8), tmp_path / "fp32.xml").with_suffix(".bin").stat().st_size


def test_verify_openvino_fails_when_outputs_differ(tmp_path):
    from torchslim.openvino_export import to_openvino, verify_openvino

    model = create_model("digits_cnn", width=4).eval()
    x = torch.randn(2, 1, 8, 8)
    path = to_openvino(model, x[:1], tmp_path / "d.xml")
    assert verify_openvino(model, path, x)["argmax_agreement"] == 1.0
    with torch.no_grad():
        model[-1].bias.add_(1.0)
    with pytest.raises(InvalidInputError, match="OpenVINO outputs differ from PyTorch"):
        verify_openvino(model, path, x)


def test_verify_fails_when_outputs_differ(tmp_path):
    model = create_model("digits_cnn", width=4).eval()
    x = torch.randn(2, 1, 8, 8)
    path = to_onnx(model, x[:1], tmp_path / "d.onnx")
    assert verify_onnx(model, path, x)["argmax_agreement"] == 1.0
    with torch.no_grad():
        model[-1].bias.add_(1.0)  # the PyTorch model changes after export: the check must notice
    with pytest.raises(InvalidInputError, match="differ from PyTorch"):
        verify_onnx(model, path, x)
