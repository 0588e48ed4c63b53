"""Smoke mode: the same stages on a tiny budget, labelled as such, never mixed with a real run."""
import json

import pytest

from torchslim.cli.main import main
from torchslim.errors import InvalidInputError
from torchslim.paths import RECIPES_DIR
from torchslim.recipe import Policy, RecipeError, load_recipe, parse_recipe, smoke
from tests.recipe.test_schema import GOOD


def test_smoke_caps_data_and_budgets_and_squeezes_policies():
    real = parse_recipe(GOOD.replace("finetune: {epochs: 3}", "finetune: {epochs: 12, warmup_epochs: 2}")
                        .replace("end_epoch: 2", "end_epoch: 6"), "good.yaml")
    quick = smoke(real, images=100, epochs=2, steps=3)
    assert quick.name == "t-smoke" and quick.description.startswith("[smoke run")
    assert (quick.data.limit_train, quick.data.limit_eval) == (100, 100)
    assert [s.budget.epochs for s in quick.stages] == [1, 2]
    assert all(s.budget.max_steps_per_epoch == 3 for s in quick.stages)
    assert quick.stages[1].budget.warmup_epochs == 2
    (p,) = quick.stages[1].policies
    assert (p.start_epoch, p.end_epoch) == (0, 1) and p.value(1) == pytest.approx(0.8)
    assert quick.smoke == {"images": 100, "epochs": 2, "steps": 3}
    assert real.stages[1].budget.epochs == 12  # the original is untouched
    with pytest.raises(InvalidInputError, match="already a smoke run"):
        smoke(quick)
    with pytest.raises(InvalidInputError, match="positive"):
        smoke(real, images=0)


def test_one_epoch_ramp_applies_its_final_value():
    # a smoke budget of one epoch squeezes the ramp into epoch 0: it must still reach `final`
    assert Policy(param="s", start_epoch=0, end_epoch=0, final=0.9).value(0) == pytest.approx(0.9)
    (p,) = smoke(parse_recipe(GOOD, "good.yaml")).stages[1].policies
    assert (p.start_epoch, p.end_epoch) == (0, 0) and p.value(0) == pytest.approx(0.8)


def test_smoke_run_has_its_own_fingerprint():
    real = load_recipe(RECIPES_DIR / "demo_digits.yaml")
    quick = smoke(real)
    assert quick.fingerprint(-1) != real.fingerprint(-1)
    # even when the cuts change nothing (the recipe's own limits are smaller and it has no budget)
    tiny = parse_recipe(GOOD.replace("batch_size: 32", "batch_size: 32, limit_train: 10, limit_eval: 10")
                        .split("  - method: finetune")[0] + "  - method: evaluate\n", "t.yaml")
    assert smoke(tiny).fingerprint(0) != tiny.fingerprint(0)


def test_expensive_method_options_shrink_through_the_params_hook():
    r56 = smoke(load_recipe(RECIPES_DIR / "filter_pruning_resnet56.yaml"))
    (prune,) = [s for s in r56.stages if s.method == "prune"]
    assert prune.params["sensitivity"] == {"ratios": [0.1], "max_batches": 1, "max_groups": 3, "max_drop": 1.0}
    assert prune.params["target_macs"] == 0.72  # the method itself is unchanged
    int8 = smoke(load_recipe(RECIPES_DIR / "int8_resnet18.yaml"))
    (q,) = [s for s in int8.stages if s.method == "quantize"]
    assert q.params["options"]["repeats"] <= 3 and q.params["calib_images"] == 512


def test_smoke_is_not_written_in_a_recipe_and_shipped_names_resolve(tmp_path):
    with pytest.raises(RecipeError, match="bad.yaml:1: smoke: .*--smoke"):
        parse_recipe("smoke: {images: 3}\n" + GOOD, "bad.yaml")
    assert load_recipe("demo_digits").source == str(RECIPES_DIR / "demo_digits.yaml")
    with pytest.raises(FileNotFoundError, match="shipped recipes: .*demo_digits_full"):
        load_recipe("demo_digitz")


def test_cli_smoke_run_says_so_and_does_not_mix_with_a_real_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["compress", "demo_digits", "--smoke", "--smoke-images", "64", "-o", str(run_dir),
                 "--no-progress"]) == 0
    assert json.loads((run_dir / "recipe.json").read_text())["smoke"]["images"] == 64
    report = (run_dir / "report.md").read_text()
    assert report.startswith("# Compression report: demo-digits-smoke") and "Smoke run: 64 train / 64 eval" in report
    assert "Smoke run" in (run_dir / "report.html").read_text()
    assert (run_dir / "recipe.yaml").read_text().startswith("# SMOKE RUN")
    info = json.loads((run_dir / "stages/01-train/metrics.json").read_text())
    assert len(info["history"]) == 1 and info["measure"]["accuracy"]["n"] == 64
    capsys.readouterr()
    assert main(["compress", "demo_digits", "-o", str(run_dir)]) == 2
    assert "00-input was computed from a different recipe" in capsys.readouterr().err
