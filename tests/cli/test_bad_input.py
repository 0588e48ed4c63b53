"""Bad input through the CLI: one line on stderr, exit 2, before any heavy work, no output folder left (16.9)."""
import pytest
from torch import nn

from torchslim.cli.main import main
from torchslim.io import save_model


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_exit_2(capsys, argv, needle):
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("typed, shown", [("1.5", "got 1.5"), ("-1", "got -1")])
def test_sparsity_out_of_range(capsys, tmp_path, typed, shown):
    out = tmp_path / "o"
    one_line_exit_2(capsys, ["sparsify", "lenet300", "--data", "digits", f"--sparsity={typed}", "-o", str(out)],
                    f"--sparsity must be a fraction in [0, 1), {shown}")
    assert not out.exists()


def test_layer_sparsity_out_of_range(capsys, tmp_path):
    one_line_exit_2(capsys, ["sparsify", "digits_cnn", "--data", "digits", "--layer-sparsity", '{"fc1": 2}',
                             "-o", str(tmp_path / "o")], "--layer-sparsity 'fc1' must be a fraction")


def test_library_sparsify_refuses_a_sparsity_above_one():
    import torchslim
    from torchslim.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="got 1.5"):
        torchslim.sparsify(nn.Sequential(nn.Linear(4, 4)), "magnitude", sparsity=1.5)


def test_prune_with_nothing_prunable(capsys, tmp_path):
    model = tmp_path / "lin.safetensors"
    save_model(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), model, input_size=(3, 2, 2))
    out = tmp_path / "o"
    one_line_exit_2(capsys, ["prune", str(model), "--ratio", "0.5", "-o", str(out)], "no channels that can be pruned")
    assert not out.exists()


def test_prune_skip_pattern_matching_nothing(capsys, tmp_path):
    out = tmp_path / "o"
    one_line_exit_2(capsys, ["prune", "resnet20", "--ratio", "0.3", "--skip", "layer9*", "-o", str(out)],
                    "--skip 'layer9*' matches no channel group of resnet20")
    assert not out.exists()


def test_prune_ratio_out_of_range(capsys, tmp_path):
    one_line_exit_2(capsys, ["prune", "resnet20", "--ratio", "1.2", "-o", str(tmp_path / "o")],
                    "--ratio must be a fraction in [0, 1), got 1.2")


def test_data_dir_that_does_not_exist(capsys, tmp_path):
    one_line_exit_2(capsys, ["evaluate", "lenet300", "--data", "digits", "--data-dir", "/nonexistent"],
                    "--data-dir '/nonexistent' is not a directory")
    one_line_exit_2(capsys, ["prune", "resnet20", "--pretrained", "--data-dir", "/nonexistent", "--ratio", "0.3",
                             "-o", str(tmp_path / "o")], "--data-dir '/nonexistent' is not a directory")


def test_model_path_that_does_not_exist(capsys):
    one_line_exit_2(capsys, ["analyze", "runs/nope/model.safetensors"],
                    "model file 'runs/nope/model.safetensors' does not exist")
    one_line_exit_2(capsys, ["analyze", "nope.slim"], "model file 'nope.slim' does not exist")


def test_failing_export(capsys, tmp_path, monkeypatch):
    import torchslim.onnx_export

    def broken(*a, **k):
        raise RuntimeError("Unsupported: ONNX export of operator foo\nmore detail\n")

    monkeypatch.setattr(torchslim.onnx_export, "to_onnx", broken)
    out = tmp_path / "new" / "m.onnx"
    one_line_exit_2(capsys, ["export", "lenet300", "-o", str(out)],
                    "lenet300 cannot be exported to ONNX: RuntimeError: Unsupported: ONNX export of operator foo")
    assert not out.parent.exists()


def test_quantize_with_bad_bits_leaves_no_folder(capsys, tmp_path):
    out = tmp_path / "q"
    one_line_exit_2(capsys, ["quantize", "digits_cnn", "--data", "digits", "--method", "kmeans", "--bits",
                             "conv=eight", "--limit", "100", "-o", str(out)], "conv=8,fc=5")
    assert not out.exists()
