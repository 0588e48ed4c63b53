"""int8 through PT2E (torchao's X86InductorQuantizer): the result is a torch.export-able int8 program.

torch.compile of it takes minutes on these CPUs, so the tests check export and numerics; the compiled
int8 latency is in benchmarks/bench_quant_pt2e.py."""
import pytest
import torch

from torchslim.quant import quantize

pytest.importorskip("torchao")


@pytest.fixture(scope="module")
def program(trained_cnn, digits):
    return quantize(trained_cnn, "int8-pt2e", calib=digits, calib_images=64)


def test_pt2e_program_is_int8_and_agrees_with_fp32(program, trained_cnn, digits):
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert any("quantize_per_tensor" in o for o in ops) and any("dequantize_per_channel" in o for o in ops)
    assert any(t.dtype == torch.int8 for t in program.state_dict().values())  # weights stored as int8
    x = next(iter(digits.test))[0]  # a batch of 64: the batch dimension is dynamic
    with torch.no_grad():
        ref, out = trained_cnn(x), program(x)
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.9
    assert (out - ref).norm() / ref.norm() < 0.2


def test_pt2e_program_exports_saves_and_loads(program, digits, tmp_path):
    x = next(iter(digits.test))[0][:3]
    ep = torch.export.export(program, (x,))
    torch.export.save(ep, tmp_path / "int8.pt2")
    loaded = torch.export.load(tmp_path / "int8.pt2").module()
    with torch.no_grad():
        assert torch.equal(loaded(x), program(x))


def test_cli_quantize_int8_pt2e_writes_a_loadable_program(tmp_path):
    from torchslim.cli.main import main

    out = tmp_path / "q"
    assert main(["quantize", "digits_cnn", "--data", "digits", "--method", "int8-pt2e", "--calib-images", "32",
                 "-o", str(out)]) == 0
    program = torch.export.load(out / "model.pt2").module()
    assert program(torch.randn(5, 1, 8, 8)).shape == (5, 10)
