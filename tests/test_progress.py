"""Progress when output goes to a log (pytest's captured stderr is not a terminal) (16.11)."""
import pytest

import torchslim.progress
from torchslim.cli.main import main
from torchslim.progress import Progress


@pytest.fixture
def lines_every_step(monkeypatch):
    monkeypatch.setattr(torchslim.progress, "EVERY_S", 0.0)


def test_a_log_gets_periodic_lines_and_short_work_stays_silent(capsys, lines_every_step):
    with Progress(total=3, desc="work", unit="batch") as bar:
        for _ in range(3):
            bar.update()
    err = capsys.readouterr().err
    assert "work: 1/3 batch" in err and "work: 3/3 batch done" in err
    with Progress(total=3, desc="quick", every_s=60) as bar:
        bar.update(3)
    assert capsys.readouterr().err == ""


def test_sparsify_phases_are_labelled(capsys, tmp_path):
    code = main(["sparsify", "digits_cnn", "--data", "digits", "--method", "dns", "--epochs", "2",
                 "--finetune-epochs", "1", "--max-steps", "2", "--limit", "200", "--sparsity", "0.5",
                 "-o", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 0
    assert "dns: surgery 1/2:" in err and "dns: surgery 2/2:" in err and "dns: fine-tuning 1/1:" in err
    assert "epoch 1/1" not in err


def test_train_prints_a_line_per_epoch(capsys, tmp_path):
    assert main(["train", "digits_cnn", "--data", "digits", "--epochs", "2", "--max-steps", "2", "--limit", "200",
                 "-o", str(tmp_path / "t")]) == 0
    err = capsys.readouterr().err
    assert "epoch 1/2: train_loss" in err and "epoch 2/2: train_loss" in err


def test_prune_evaluations_show_progress(capsys, tmp_path, lines_every_step):
    assert main(["prune", "digits_cnn", "--data", "digits", "--ratio", "0.25", "--limit", "200",
                 "-o", str(tmp_path / "p")]) == 0
    err = capsys.readouterr().err
    assert "test before: 1/1 batch" in err and "test after: 1/1 batch done" in err


def test_int8_quantization_says_what_it_measures(capsys, tmp_path):
    assert main(["quantize", "digits_cnn", "--method", "int8-ptq", "--data", "digits", "--path", "ort-qdq",
                 "--calib-images", "64", "--limit", "200", "-o", str(tmp_path / "q")]) == 0
    err = capsys.readouterr().err
    assert "int8: calibrating on 64 images" in err and "int8: measuring ort-qdq" in err
