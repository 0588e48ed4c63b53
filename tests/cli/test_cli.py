import argparse
import json

import pytest

from torchslim.cli.main import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_analyze_json(capsys):
    code, out, _ = run(capsys, "analyze", "resnet20", "--json")
    assert code == 0
    totals = json.loads(out)["totals"]
    assert totals["params"] == 269_722 and 40e6 < totals["macs"] < 42e6  # He et al.: 41 M MACs


def test_analyze_latency_measures_every_installed_runtime(capsys):
    from torchslim.runtimes import installed_runtimes

    code, out, _ = run(capsys, "analyze", "digits_cnn", "--latency", "--precision", "bf16", "--json")
    assert code == 0
    lat = json.loads(out)["latency"]
    assert [r["runtime"] for r in lat] == list(installed_runtimes()) and "openvino" in installed_runtimes()
    onnx = next(r for r in lat if r["runtime"] == "onnxruntime")
    assert onnx["precision"] == "fp32" and "bf16" in onnx["note"]  # never reported as bf16 when it was not
    assert all(r["median_ms"] > 0 and r["precision"] in ("fp32", "bf16") for r in lat)


def test_analyze_table_and_input_size(capsys):
    code, out, _ = run(capsys, "analyze", "torchvision:mobilenet_v2", "--input-size", "3,96,96", "--max-rows", "5")
    assert code == 0 and "total" in out and "more" in out


@pytest.mark.parametrize("argv, needle", [
    (["analyze", "resnet21"], "unknown model 'resnet21'"),
    (["analyze", "resnet20", "--input-size", "3,32"], "--input-size must be C,H,W"),
    (["analyze", "resnet20", "--input-size", "1,32,32"], "does not run on input size (1, 32, 32)"),
    (["evaluate", "resnet20", "--data", "imagenet"], "unknown dataset 'imagenet'"),
    (["analyze", "resnet20", "--weights", "/nonexistent.pt"], "/nonexistent.pt"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_train_then_evaluate_then_analyze_the_saved_model(capsys, tmp_path):
    code, out, err = run(capsys, "train", "digits_cnn", "--data", "digits", "--epochs", "2", "--max-steps", "10",
                         "--precision", "bf16", "--channels-last", "-o", str(tmp_path / "run"))
    assert code == 0, err
    saved = tmp_path / "run" / "model.safetensors"
    assert saved.is_file() and json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    code, out, _ = run(capsys, "evaluate", str(saved), "--data", "digits", "--json")
    assert code == 0 and json.loads(out)["n"] == 360
    code, out, _ = run(capsys, "analyze", str(saved), "--json")
    assert code == 0 and json.loads(out)["input_shape"] == [1, 8, 8]


def test_models_lists_names(capsys):
    code, out, _ = run(capsys, "models", "resnet*")
    assert code == 0 and "resnet56" in out and "torchvision:resnet18" in out  # the zoo matches too


@pytest.mark.parametrize("command", ["train", "prune", "decompose", "sparsify", "quantize", "distill",
                                     "deep-compression", "auto"])
def test_every_fine_tuning_command_takes_the_training_speed_flags(command):
    from torchslim.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    flags = {s for a in sub._actions for s in a.option_strings}
    assert {"--precision", "--channels-last"} <= flags, command


def test_prune_fine_tunes_in_bf16_channels_last_from_the_cli(tmp_path, monkeypatch):
    import importlib

    from torchslim.cli.main import main

    api = importlib.import_module("torchslim.prune.api")
    configs = []
    real_fit = api.fit
    monkeypatch.setattr(api, "fit", lambda *a, **k: configs.append(k["config"]) or real_fit(*a, **k))
    assert main(["prune", "digits_cnn", "--ratio", "0.3", "--data", "digits", "--finetune-epochs", "1",
                 "--max-steps", "1", "--precision", "bf16", "--channels-last", "-o", str(tmp_path / "p")]) == 0
    assert [(c.precision, c.channels_last) for c in configs] == [("bf16", True)]


@pytest.mark.parametrize("flags, distilled", [([], True), (["--no-distill"], False)])
def test_auto_fine_tunes_with_kd_from_the_original_unless_told_not_to(tmp_path, monkeypatch, flags, distilled):
    import yaml

    import torchslim.train as train
    from torchslim.distill import DistillLoss

    losses = []
    real_fit = train.fit
    monkeypatch.setattr(train, "fit", lambda *a, **k: losses.append(k.get("loss_fn")) or real_fit(*a, **k))
    out = tmp_path / "a"
    assert main(["auto", "digits_cnn", "--data", "digits", "--target", "macs=0.9x", "--actions", "prune",
                 "--max-drop", "100", "--epochs", "1", "--max-steps", "1", "--eval-images", "16", *flags,
                 "-o", str(out)]) == 0
    assert len(losses) == 1 and isinstance(losses[0], DistillLoss) == distilled
    stage = next(s for s in yaml.safe_load((out / "recipe.yaml").read_text())["stages"] if "finetune" in s)
    assert stage["finetune"]["distill_from_input"] is distilled  # the written recipe recovers the same way
    from torchslim.recipe import load_recipe

    load_recipe(out / "recipe.yaml")  # and is a valid recipe
