"""Every shipped recipe (recipes/*.yaml) runs end to end in smoke mode: a recipe is tested the day it is added.

The smoke run is the same stages on a tiny budget (torchslim.recipe.smoke); latency measurement is off
here to keep the whole set within a couple of minutes on one core (`compress --smoke` measures it).
"""
import json

import pytest
import torch

import torchslim
from torchslim.paths import RECIPES_DIR, data_dir_candidates
from torchslim.recipe import load_recipe, run_recipe, smoke
from torchslim.data import DATASETS
from torchslim.recipe.runner import INPUT_STAGE
from tests.conftest import needs_cifar, needs_mnist

RECIPES = sorted(RECIPES_DIR.glob("*.yaml"))
IMAGES = 32  # train images, and images per eval split


def _weights_present(recipe) -> bool:
    from torchslim.models import MODELS

    specs = [recipe.model] + [s.distill.teacher for s in recipe.stages if s.distill is not None]
    for spec in specs:
        if spec.pretrained:
            pattern = MODELS.get(spec.name).pretrained
            if not any(sorted((d / "weights").glob(pattern)) for d in data_dir_candidates()):
                return False
    return True


def _param(path):
    recipe = load_recipe(path)
    marks = [pytest.mark.slow]
    marks += {"cifar10": [needs_cifar], "mnist": [needs_mnist]}.get(recipe.data.name, [])
    marks.append(pytest.mark.skipif(not _weights_present(recipe), reason="pretrained weights not present"))
    return pytest.param(path, marks=marks, id=path.stem)


def test_recipes_are_shipped():
    assert len(RECIPES) >= 7 and (RECIPES_DIR / "demo_digits_full.yaml").is_file()


@pytest.mark.parametrize("path", [_param(p) for p in RECIPES])
def test_shipped_recipe_runs_end_to_end_in_smoke_mode(path, tmp_path):
    recipe = smoke(load_recipe(path), images=IMAGES)
    recipe = recipe.model_copy(update={"measure": recipe.measure.model_copy(update={"latency": False})})
    run_recipe(recipe, tmp_path, progress=False, report=False, log=lambda *a: None)

    for stage, name in zip([None] + recipe.stages, [INPUT_STAGE] + recipe.stage_names()):
        d = tmp_path / "stages" / name
        assert (d / "model.safetensors").is_file(), name
        info = json.loads((d / "metrics.json").read_text())
        assert 0 < info["measure"]["accuracy"]["n"] <= IMAGES and info["measure"]["params"] > 0, name
        if stage is None:
            continue
        if stage.budget is not None:  # the smoke budget ran: one epoch, with the policy at its final value
            assert len(info["history"]) == stage.budget.epochs == 1, name
            for p in stage.policies:
                assert info["policy"][-1][p.param] == pytest.approx(p.final), name
        if stage.method == "export":
            onnx = d / info["artifacts"]["onnx"]
            assert onnx.is_file() and onnx.stat().st_size > 0, name
            assert "max_abs_diff" in info["metrics"]["onnx"], name  # checked in ONNX Runtime (raises if off)
        if "sensitivity" in stage.params:
            assert (d / "sensitivity.png").is_file() and "skipped" in info["metrics"]["sensitivity"]

    assert any(s.method == "export" for s in recipe.stages)
    final = torchslim.load(tmp_path / "model.safetensors")
    again = torchslim.io.load_model(tmp_path / "model.safetensors")
    size = json.loads((tmp_path / "stages" / INPUT_STAGE / "metrics.json").read_text())["input_size"]
    x = torch.randn(4, *size)
    with torch.no_grad():
        out, out2 = final.eval()(x), again.eval()(x)
    assert out.shape == (4, DATASETS.get(recipe.data.name).num_classes) and torch.isfinite(out).all()
    torch.testing.assert_close(out, out2)
