import json

import pytest

from torchslim.cli.main import main


def test_decompose_cli_writes_model_and_table(tmp_path, capsys):
    rc = main(["decompose", "digits_cnn", "--rank", "compression=2", "--no-latency", "-o", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "total" in out and "MACs" in out
    res = json.loads((tmp_path / "decompose.json").read_text())
    skipped = [l for l in res["report"]["layers"] if l["status"] == "skipped"]
    assert res["report"]["totals"]["decomposed"] == 3 and res["size_ratio"] > 1.2
    assert ["input layer" in skipped[0]["reason"], "final classifier" in skipped[1]["reason"]] == [True, True]
    assert "[1/5]" in out  # progress, one line per layer
    assert main(["decompose", "digits_cnn", "--rank", "compression=2", "--no-latency", "--include-ends",
                 "-o", str(tmp_path / "all")]) == 0
    assert json.loads((tmp_path / "all" / "decompose.json").read_text())["report"]["totals"]["decomposed"] == 5
    from torchslim.io import load_model

    load_model(tmp_path / "model.safetensors")


@pytest.mark.parametrize("rank", ["1.5", "abc", "0"])
def test_decompose_cli_bad_rank_exits_2(rank, capsys):
    assert main(["decompose", "digits_cnn", "--rank", rank]) == 2
    assert "rank" in capsys.readouterr().err


def test_decompose_cli_channel_with_data_and_finetuning(tmp_path, capsys):
    rc = main(["decompose", "digits_cnn", "--method", "channel", "--rank", "0.9", "--data", "digits",
               "--calibration", "64", "--finetune-epochs", "1", "--max-steps", "2", "--no-latency",
               "-o", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "decompose.json").read_text())
    assert {"before", "after", "after_finetune", "finetune"} <= set(res)
    assert res["finetune"]["max_steps"] == 2
    assert any(l["response_error"] is not None for l in res["report"]["layers"])


def test_decompose_cli_measures_layers_on_the_fastest_runtime_and_says_which(tmp_path, capsys):
    from torchslim.runtimes import installed_runtimes

    rc = main(["decompose", "digits_cnn", "--rank", "compression=2", "-o", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "decompose.json").read_text())
    runtime = res["latency_runtime"]
    assert runtime in installed_runtimes() and res["report"]["latency_runtime"] == runtime
    assert all(l["latency_before_ms"] for l in res["report"]["layers"])
    assert main(["decompose", "digits_cnn", "--rank", "compression=2", "--latency-runtime", "onnxruntime",
                 "-o", str(tmp_path / "ort")]) == 0
    assert json.loads((tmp_path / "ort" / "decompose.json").read_text())["report"]["latency_runtime"] == "onnxruntime"
