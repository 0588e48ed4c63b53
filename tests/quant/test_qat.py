import torch

from torchslim.quant import quantize
from torchslim.quant.fakequant import FakeQuantLayer
from torchslim.quant.qat import QATConfig, fake_quant_train


def test_qat_trains_fake_quant_model_and_converts_to_int8(trained_cnn, digits):
    from torchslim.quant import Int8Config
    from torchslim.train import FitConfig

    fit = FitConfig(lr=1e-3, progress=False, max_steps_per_epoch=4)
    qat = fake_quant_train(trained_cnn, digits.train, config=QATConfig(epochs=1, fit=fit))
    assert any(isinstance(m, FakeQuantLayer) for m in qat.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in qat.modules())  # folded
    q = quantize(trained_cnn, "int8-qat", data=digits, fit=fit,
                 int8=Int8Config(paths=("ort-qdq",), calib_images=64, repeats=2, min_time_s=0.0))
    assert q.quant_report["chosen"] == "ort-qdq"
    x = next(iter(digits.test))[0]
    with torch.no_grad():
        assert (q(x).argmax(1) == trained_cnn(x).argmax(1)).float().mean() > 0.85


def _qdq_input_scale(q) -> float:
    """Scale of the QuantizeLinear on the model input of an ort-qdq int8 model."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load_from_string(q.onnx_bytes()).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    node = next(n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] == g.input[0].name)
    return float(inits[node.input[1]])


def test_int8_conversion_uses_the_ranges_qat_learned(trained_cnn, digits):
    from torchslim.quant import Int8Config
    from torchslim.train import FitConfig

    cfg = Int8Config(paths=("ort-qdq",), calib_images=64, repeats=2, min_time_s=0.0, compare=True)  # builds the reference
    fit = FitConfig(lr=1e-3, progress=False, max_steps_per_epoch=4)
    q = quantize(trained_cnn, "int8-qat", data=digits, fit=fit, int8=cfg)
    layers = [m for m in q.qat_reference.modules() if isinstance(m, FakeQuantLayer)]
    assert q.quant_report["given_input_ranges"] == {"given": len(layers), "used": len(layers)}
    first = layers[0]  # the model input: its scale is the learned range's, (hi - lo) / 255
    assert abs(_qdq_input_scale(q) - float(first.hi - first.lo) / 255) < 1e-6
    assert abs(q.reference[0].lo - first.lo) < 1e-6  # the fake-quant reference models the same ranges
