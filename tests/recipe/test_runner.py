"""The runner: stages in order, everything checkpointed, resume after SIGKILL reaches the same weights."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from torchslim.errors import InvalidInputError, UnsupportedModelError
from torchslim.recipe import STAGES, StageParams, parse_recipe, register_stage, run_recipe
from torchslim.train import Callback

ROOT = Path(__file__).resolve().parents[2]

TINY = """\
name: tiny
seed: 3
model: {{name: digits_cnn, kwargs: {{width: 8}}}}
data: {{name: digits, batch_size: 32, limit_train: 256, limit_eval: 128, augment: false}}
measure: {{latency: false}}
stages:
  - method: finetune
    finetune: {{epochs: 3, lr: 0.2}}
  - method: jitter
    params: {{scale: 0.02}}
    finetune: {{epochs: 3, lr: 0.02, checkpoint_every_steps: 3}}
{extra}"""


def _write(tmp_path, extra="") -> Path:
    f = tmp_path / "tiny.yaml"
    f.write_text(TINY.format(extra=extra))
    return f


def _job(recipe: Path, run_dir: Path, kill_at: int = -1) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), KILL_AT=str(kill_at), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(ROOT / "tests/recipe/recipe_job.py"), str(recipe), str(run_dir)],
                          env=env, capture_output=True, text=True, timeout=120)


def test_kill_mid_finetuning_then_rerun_gives_the_same_model(tmp_path):
    from tests.recipe import recipe_job  # noqa: F401  registers `jitter`

    recipe = _write(tmp_path)
    run_recipe(recipe, tmp_path / "full", progress=False, report=False, log=lambda *a: None)  # uninterrupted, here
    # stage 2 fine-tunes 3 epochs x 8 steps; die at global step 12 (mid epoch 1, after a step checkpoint at 9)
    killed = _job(recipe, tmp_path / "resumed", kill_at=12)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (tmp_path / "resumed/killed.marker").is_file()
    stage2 = tmp_path / "resumed/stages/02-jitter"
    assert (tmp_path / "resumed/stages/01-finetune/metrics.json").is_file()  # stage 1 done and kept
    assert (stage2 / "finetune/checkpoint.pt").is_file() and not (stage2 / "metrics.json").exists()
    resumed = _job(recipe, tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    info = json.loads((stage2 / "metrics.json").read_text())
    assert info["resumed_from"] == "epoch 1 step 3"
    a = load_file(tmp_path / "full/model.safetensors")
    b = load_file(tmp_path / "resumed/model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


class Count(StageParams):
    by: int = 1


CALLS = []


@pytest.fixture(scope="module", autouse=True)
def _test_stages():
    @register_stage("count_calls", params=Count, overwrite=True)
    def count_calls(model, params, ctx):
        CALLS.append(params["by"])
        ctx.metrics["calls"] = len(CALLS)
        return model

    class Ramp(StageParams):
        level: float = 0.0

    class Recorder(Callback):
        def __init__(self, level):
            self.level, self.steps = level, 0

        def after_step(self, model, step):
            self.steps += 1

    @register_stage("ramp_inplace", params=Ramp, overwrite=True)
    def ramp(model, params, ctx):
        ctx.callbacks.append(Recorder(params["level"]))
        ctx.metrics.setdefault("levels", []).append(round(params["level"], 6))
        return model

    @register_stage("replace_model", params=Ramp, overwrite=True)
    def replace(model, params, ctx):
        return torch.nn.Sequential(model)

    yield
    for name in ("count_calls", "ramp_inplace", "replace_model"):
        STAGES._entries.pop(name, None)


def test_run_writes_every_stage_and_rerun_skips_finished_stages(tmp_path):
    from tests.recipe import recipe_job  # noqa: F401  registers `jitter`

    recipe = _write(tmp_path, "  - method: count_calls\n    params: {by: 2}\n  - method: evaluate\n")
    CALLS.clear()
    summary = run_recipe(recipe, tmp_path / "run", progress=False, log=lambda *a: None)
    names = [s["stage"] for s in summary["stages"]]
    assert names == ["00-input", "01-finetune", "02-jitter", "03-count_calls", "04-evaluate"]
    assert CALLS == [2]
    for n in names:
        d = tmp_path / "run/stages" / n
        assert (d / "model.safetensors").is_file() and (d / "metrics.json").is_file()
    s = summary["stages"]
    assert s[1]["accuracy"]["top1"] > s[0]["accuracy"]["top1"]  # training happened
    assert s[2]["before_recovery"] is not None and s[3]["metrics"]["calls"] == 1
    assert s[-1]["metrics"]["test_eval"]["n"] == 128
    # rerun: nothing recomputed
    run_recipe(recipe, tmp_path / "run", progress=False, log=lambda *a: None)
    assert CALLS == [2]
    # a changed recipe must not reuse the old stages silently
    changed = _write(tmp_path, "  - method: count_calls\n    params: {by: 3}\n  - method: evaluate\n")
    with pytest.raises(InvalidInputError, match="03-count_calls was computed from a different recipe"):
        run_recipe(changed, tmp_path / "run", progress=False, log=lambda *a: None)
    run_recipe(changed, tmp_path / "run", restart=True, progress=False, report=False, log=lambda *a: None)
    assert CALLS == [2, 3]
    other_model = changed.read_text().replace("width: 8", "width: 6")
    changed.write_text(other_model)
    with pytest.raises(InvalidInputError, match="00-input was computed from a different recipe"):
        run_recipe(changed, tmp_path / "run", progress=False, log=lambda *a: None)


def test_policy_reapplies_the_method_each_scheduled_epoch(tmp_path):
    from tests.recipe import recipe_job  # noqa: F401

    text = TINY.format(extra="") .replace("""  - method: jitter
    params: {scale: 0.02}
    finetune: {epochs: 3, lr: 0.02, checkpoint_every_steps: 3}
""", """  - method: ramp_inplace
    policies: [{param: level, start_epoch: 0, end_epoch: 2, initial: 0.0, final: 0.9, schedule: agp}]
    finetune: {epochs: 4, lr: 0.02, max_steps_per_epoch: 2}
""")
    recipe = parse_recipe(text, "policy.yaml")
    summary = run_recipe(recipe, tmp_path / "run", progress=False, report=False, log=lambda *a: None)
    info = json.loads((tmp_path / "run/stages/02-ramp_inplace/metrics.json").read_text())
    levels = [h["level"] for h in info["policy"]]
    assert [h["epoch"] for h in info["policy"]] == [0, 1, 2]
    assert levels == pytest.approx([0.0, 0.9 * (1 - (1 / 2) ** 3), 0.9])
    assert [h["policy_level"] for h in info["history"]] == pytest.approx(levels + [0.9])
    assert summary == {}


def test_policy_needs_an_in_place_method(tmp_path):
    text = TINY.format(extra="").split("  - method: jitter")[0] + """  - method: replace_model
    policies: [{param: level, end_epoch: 0, final: 1.0}]
    finetune: {epochs: 1, lr: 0.02, max_steps_per_epoch: 1}
"""
    with pytest.raises(UnsupportedModelError, match="in place"):
        run_recipe(parse_recipe(text, "p.yaml"), tmp_path / "run", progress=False, report=False, log=lambda *a: None)


def test_missing_method_verb_fails_clearly_when_run(tmp_path, monkeypatch):
    import torchslim

    monkeypatch.delattr(torchslim, "decompose", raising=False)
    text = TINY.format(extra="").split("  - method: finetune")[0] + "  - method: decompose\n    params: {rank: 4}\n"
    with pytest.raises(UnsupportedModelError, match="torchslim.decompose"):
        run_recipe(parse_recipe(text, "d.yaml"), tmp_path / "run", progress=False, report=False, log=lambda *a: None)


def test_method_result_is_kept_when_its_finetuning_is_interrupted(tmp_path, monkeypatch):
    import torchslim.recipe.runner as runner

    text = TINY.format(extra="").split("  - method: finetune")[0] + \
        "  - method: count_calls\n    params: {by: 5}\n    finetune: {epochs: 1, lr: 0.05}\n"
    recipe = parse_recipe(text, "c.yaml")
    real_fit = runner.fit

    def interrupted(*a, **k):
        raise KeyboardInterrupt  # as if stopped right after the method

    CALLS.clear()
    monkeypatch.setattr(runner, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, tmp_path / "run", progress=False, report=False, log=lambda *a: None)
    assert CALLS == [5] and (tmp_path / "run/stages/01-count_calls/applied.safetensors").is_file()
    monkeypatch.setattr(runner, "fit", real_fit)
    run_recipe(recipe, tmp_path / "run", progress=False, report=False, log=lambda *a: None)
    assert CALLS == [5]  # not recomputed
    info = json.loads((tmp_path / "run/stages/01-count_calls/metrics.json").read_text())
    assert info["metrics"] == {"calls": 1} and len(info["history"]) == 1
