"""Recipes are checked completely before anything runs; errors name the file, the line and what is allowed."""
from pathlib import Path

import pytest

from torchslim.recipe import Policy, RecipeError, load_recipe, parse_recipe
from torchslim.recipe.stages import STAGES

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))

GOOD = """\
name: t
model: {name: digits_cnn}
data: {name: digits, batch_size: 32}
stages:
  - method: finetune
    finetune: {epochs: 1, lr: 0.05}
  - method: sparsify
    params: {method: magnitude}
    policies:
      - {param: sparsity, start_epoch: 0, end_epoch: 2, final: 0.8}
    finetune: {epochs: 3}
"""


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipes_validate(path):
    recipe = load_recipe(path)
    assert recipe.stages and all(s.method in STAGES for s in recipe.stages)


def test_there_are_the_promised_recipes():
    names = {p.stem for p in RECIPES}
    assert {"demo_digits", "deep_compression_lenet5", "filter_pruning_resnet56", "tucker_svd_vgg16",
            "int8_resnet18", "kd_resnet20_from_resnet56"} <= names


def test_good_recipe_parses():
    r = parse_recipe(GOOD, "good.yaml")
    assert r.stage_names() == ["01-finetune", "02-sparsify"]
    assert r.stages[0].finetune.fit_config(seed=0, device="cpu").lr == 0.05
    fast = parse_recipe(GOOD.replace("lr: 0.05}", "lr: 0.05, precision: bf16, channels_last: true}"), "fast.yaml")
    cfg = fast.stages[0].finetune.fit_config(seed=0, device="cpu")
    assert (cfg.precision, cfg.channels_last) == ("bf16", True)
    err = _error(GOOD.replace("lr: 0.05}", "lr: 0.05, precision: fp16}"))
    assert "'fp16'" in err.problems[0][3] and "'bf16'" in err.problems[0][3]


def _error(text: str) -> RecipeError:
    with pytest.raises(RecipeError) as e:
        parse_recipe(text, "bad.yaml")
    return e.value


def test_unknown_key_names_line_and_allowed_keys():
    err = _error(GOOD.replace("lr: 0.05}", "lr: 0.05, epoch: 3}"))
    ((f, line, loc, msg),) = err.problems
    assert (f, line, loc) == ("bad.yaml", 6, "stages[0].finetune.epoch")
    assert "unknown key 'epoch'" in msg and "epochs" in msg and "optimizer" in msg
    assert str(err).startswith("bad.yaml:6: stages[0].finetune.epoch")


def test_wrong_value_lists_allowed_values():
    err = _error(GOOD.replace("lr: 0.05}", "lr: 0.05, optimizer: sgdd}"))
    ((_, line, loc, msg),) = err.problems
    assert line == 6 and loc == "stages[0].finetune.optimizer"
    assert "'sgdd'" in msg and "'adam'" in msg


def test_wrong_type_names_the_value():
    err = _error(GOOD.replace("batch_size: 32", "batch_size: many"))
    ((_, line, loc, msg),) = err.problems
    assert line == 3 and loc == "data.batch_size" and "'many'" in msg


def test_unknown_method_and_dataset_list_the_known_ones():
    err = _error(GOOD.replace("method: finetune", "method: prunee").replace("name: digits,", "name: digitz,"))
    by_loc = {loc: (line, msg) for _, line, loc, msg in err.problems}
    assert by_loc["data"][0] == 3 and "digits" in by_loc["data"][1] and "cifar10" in by_loc["data"][1]
    assert by_loc["stages[0]"][0] == 5 and "'prunee'" in by_loc["stages[0]"][1] and "prune" in by_loc["stages[0]"][1]


def test_method_params_are_checked_by_the_method_schema():
    err = _error(GOOD.replace("params: {method: magnitude}", "params: {method: magnitude, sparsty: 0.5}"))
    ((_, line, loc, msg),) = err.problems
    assert line == 8 and loc == "stages[1].params.sparsty" and "sparsity" in msg


def test_policy_must_fit_the_budget_and_name_a_param():
    err = _error(GOOD.replace("end_epoch: 2", "end_epoch: 5"))
    assert str(err).startswith("bad.yaml:10: stages[1].policies[0].end_epoch: policy on 'sparsity' ends at epoch 5")
    err = _error(GOOD.replace("param: sparsity", "param: density"))
    assert "no param 'density'" in str(err) and "bad.yaml:10" in str(err)


def test_budget_needed_and_yaml_syntax_error_has_a_line():
    err = _error(GOOD.replace("    finetune: {epochs: 1, lr: 0.05}\n", ""))
    assert "needs a `finetune` or `distill` budget" in str(err)
    err = _error(GOOD.replace("stages:", "stages: [\n"))
    assert err.problems[0][1] is not None and err.problems[0][2] == "YAML"


def test_agp_schedule_follows_zhu_gupta():
    p = Policy(param="sparsity", start_epoch=0, end_epoch=3, initial=0.0, final=0.8)
    assert p.epochs() == [0, 1, 2, 3]
    assert p.value(0) == pytest.approx(0.0) and p.value(3) == pytest.approx(0.8) and p.value(9) == pytest.approx(0.8)
    assert p.value(1) == pytest.approx(0.8 * (1 - (2 / 3) ** 3))
    lin = Policy(param="x", start_epoch=2, end_epoch=6, every=2, initial=1, final=3, schedule="linear")
    assert lin.epochs() == [2, 4, 6] and lin.value(5) == pytest.approx(2.0) and lin.value(1) == 1


def test_missing_file_and_relative_model_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_recipe(tmp_path / "nope.yaml")
    f = tmp_path / "r.yaml"
    f.write_text(GOOD.replace("model: {name: digits_cnn}", "model: {path: m.safetensors}"))
    with pytest.raises(RecipeError, match=r"r.yaml:2: model.path: file .*m.safetensors' does not exist"):
        load_recipe(f)
    (tmp_path / "m.safetensors").write_bytes(b"")
    assert load_recipe(f).model.path == str(tmp_path / "m.safetensors")
