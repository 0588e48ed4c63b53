import numpy as np
import pytest
import torch

import torchslim
from torchslim.errors import InvalidInputError
from torchslim.models import create_model


def test_verbs_are_reachable_at_top_level():
    for verb in ("analyze", "load", "save", "export"):
        assert callable(getattr(torchslim, verb))
    with pytest.raises(AttributeError):
        torchslim.no_such_verb  # noqa: B018


def test_save_load_export_round_trip_runs_in_onnxruntime(tmp_path):
    import onnxruntime as ort

    model = create_model("resnet20").eval()
    loaded = torchslim.load(torchslim.save(model, tmp_path / "m.safetensors"))
    onnx_path = torchslim.export(loaded, tmp_path / "m.onnx")  # input size recorded by create_model
    x = torch.randn(3, 3, 32, 32)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(InvalidInputError, match="input_size"):
        torchslim.export(torch.nn.Linear(2, 2), tmp_path / "l.onnx")
    xml = torchslim.export(loaded, tmp_path / "m.xml", format="openvino")
    from torchslim.openvino_export import verify_openvino

    assert xml.suffix == ".xml" and verify_openvino(model, xml, x)["max_abs_diff"] < 1e-3
    with pytest.raises(InvalidInputError, match="'tflite'"):
        torchslim.export(loaded, tmp_path / "m.tflite", format="tflite")
