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
