"""`torchslim train`: seeded initial weights (16.7) and resumable runs that refuse mixed settings (16.8)."""
from torchslim.cli.main import main


def train(capsys, out, *extra):
    code = main(["train", "digits_cnn", "--data", "digits", "--epochs", "1", "--max-steps", "3", "--limit", "200", "-o", str(out),
                 *extra])
    _, err = capsys.readouterr()
    return code, err


def test_same_seed_gives_byte_identical_model_files(capsys, tmp_path):
    assert train(capsys, tmp_path / "a", "--seed", "3")[0] == 0
    assert train(capsys, tmp_path / "b", "--seed", "3")[0] == 0
    assert train(capsys, tmp_path / "c", "--seed", "4")[0] == 0
    a, b, c = ((tmp_path / d / "model.safetensors").read_bytes() for d in "abc")
    assert a == b and a != c
