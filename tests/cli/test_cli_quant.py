import json
import subprocess
import sys

import pytest
import torch

from torchslim.cli.main import main


def test_quantize_kmeans_then_encode_and_load(tmp_path):
    out = tmp_path / "k"
    rc = main(["quantize", "digits_cnn", "--method", "kmeans", "--bits", "conv=6,fc=4", "--data", "digits",
               "--epochs", "1", "--max-steps", "2", "-o", str(out)])
    assert rc == 0
    figs = json.loads((out / "quantize.json").read_text())
    assert figs["storage"]["compression"] > 3
    rc = main(["encode", str(out / "model.safetensors"), "-o", str(tmp_path / "m.slim")])
    assert rc == 0
    import torchslim

    a, b = torchslim.load(tmp_path / "m.slim"), torchslim.load(out / "model.slim")
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("method", ["binary", "ternary"])
def test_quantize_low_bit_writes_a_bit_packed_slim_and_encode_prints_it(method, tmp_path, capsys):
    out = tmp_path / method
    rc = main(["quantize", "digits_cnn", "--method", method, "--data", "digits", "--epochs", "1", "--max-steps", "2",
               "-o", str(out)])
    assert rc == 0
    figs = json.loads((out / "quantize.json").read_text())
    layers = figs["storage"]["layers"]
    assert layers and {L["mode"] for L in layers.values()} == {method}
    assert all(L["code_bits_per_weight"] <= 1.6 + 8 / L["numel"] for L in layers.values())  # + a padded byte
    capsys.readouterr()
    assert main(["encode", str(out / "model.safetensors"), "-o", str(tmp_path / "m.slim")]) == 0
    assert f"({method}," in capsys.readouterr().out
    import torchslim
    from torchslim.io import load_model

    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(torchslim.load(out / "model.slim")(x), load_model(out / "model.safetensors")(x))


@pytest.mark.parametrize("method", ["int8-ptq", "int8"])  # int8: the alias torchslim.quant accepts
def test_quantize_int8_writes_runnable_model(tmp_path, method):
    out = tmp_path / "q"
    rc = main(["quantize", "digits_cnn", "--method", method, "--data", "digits", "--path", "ort-qdq",
               "--calib-images", "64", "-o", str(out)])
    assert rc == 0
    figs = json.loads((out / "quantize.json").read_text())
    assert figs["int8"]["chosen"] == "ort-qdq"
    from torchslim.io import load_model

    assert load_model(out / "model.safetensors")(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_quantize_int8_default_is_quick_and_compare_tries_every_path(tmp_path):
    from torchslim.io import load_model

    out = tmp_path / "q"
    assert main(["quantize", "digits_cnn", "--method", "int8-ptq", "--data", "digits", "--calib-images", "32",
                 "-o", str(out)]) == 0
    rep = json.loads((out / "quantize.json").read_text())["int8"]
    assert set(rep["paths"]) == {"fp32-torch", "fp32-ort", "fp32-ov", "ort-qdq", "ov-qdq"} and not rep["compare"]
    assert load_model(out / "model.safetensors")(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    out = tmp_path / "c"
    assert main(["quantize", "digits_cnn", "--method", "int8-ptq", "--data", "digits", "--calib-images", "32",
                 "--compare", "-o", str(out)]) == 0
    rep = json.loads((out / "quantize.json").read_text())["int8"]
    assert {"ort-qoperator", "torch-x86", "ov-qdq", "fake-quant"} <= set(rep["paths"]) and rep["compare"]


def test_deep_compression_pipeline(tmp_path):
    out = tmp_path / "dc"
    rc = main(["deep-compression", "digits_cnn", "--data", "digits", "--sparsity", "0.5", "--rounds", "1",
               "--epochs", "1", "--max-steps", "2", "--kmeans-epochs", "1", "--bits", "conv=5,fc=5", "-o", str(out)])
    assert rc == 0
    rep = json.loads((out / "deep_compression.json").read_text())
    assert set(rep["stages"]) >= {"baseline", "pruned", "quantized", "slim_reloaded"}
    assert rep["stages"]["slim_reloaded"]["top1"] == rep["stages"]["quantized"]["top1"]
    assert (out / "model.slim").stat().st_size < 0.5 * rep["storage"]["fp32_param_bytes"]


def test_bad_bits_and_corrupt_slim_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.slim"
    bad.write_bytes(b"TSLIM\x00\r\n garbage")
    from torchslim.quant import parse_bits
    from torchslim.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="conv=8,fc=5"):
        parse_bits("conv=eight")
    r = subprocess.run([sys.executable, "-m", "torchslim.cli.main", "encode", str(bad), "-o", str(tmp_path / "x.slim")],
                       capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
