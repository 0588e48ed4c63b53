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


def test_rerun_with_other_settings_is_refused_naming_the_difference(capsys, tmp_path):
    out = tmp_path / "run"
    assert train(capsys, out)[0] == 0
    code, err = train(capsys, out)
    assert code == 0 and "finished already" in err
    code, err = train(capsys, out, "--lr", "0.01")
    assert code == 2 and "lr=0.05 there, 0.01 now" in err and len(err.strip().splitlines()) == 1


def test_another_model_into_the_same_folder_is_a_clear_error(capsys, tmp_path):
    from torchslim.io import save_model
    from torchslim.models import create_model

    out = tmp_path / "run"
    assert train(capsys, out)[0] == 0
    other = save_model(create_model("digits_cnn", width=4), tmp_path / "narrow.safetensors")
    code = main(["train", str(other), "--data", "digits", "--epochs", "1", "--max-steps", "3", "--limit", "200",
                 "-o", str(out)])
    _, err = capsys.readouterr()
    assert code == 2 and "model='digits_cnn' there" in err and "narrow.safetensors" in err
    assert len(err.strip().splitlines()) == 1
