import json

import pytest
import torch

import torchslim
from torchslim.cli.main import main
from torchslim.data import get_data
from torchslim.distill import DistillConfig, Hint, TeacherCache, build_loss, distill_fit
from torchslim.errors import InvalidInputError
from torchslim.io import load_model, save_model
from torchslim.models import create_model
from torchslim.train import FitConfig


def test_hint_adapters_are_built_and_trained(digits, digits_teacher):
    torch.manual_seed(0)
    student = create_model("digits_cnn", width=8)
    r = distill_fit(student, digits_teacher, digits, ["kd", "hint"], DistillConfig(
        hint_pairs="all", fit=FitConfig(epochs=1, lr=0.05, progress=False, eval_every=0, max_steps_per_epoch=5)))
    hint = r.loss.terms[1]
    assert [tuple(a.weight.shape[:2]) for a in hint.adapters] == [(16, 8), (32, 16)]  # student C -> teacher C
    fresh = Hint(pairs="all")
    fresh.setup(create_model("digits_cnn", width=8), digits_teacher, torch.randn(2, 1, 8, 8))
    assert not torch.equal(hint.adapters[0].weight, fresh.adapters[0].weight.to(hint.adapters[0].weight))
    assert hint.adapters[0].weight.grad is not None  # the optimizer saw the adapters
    with pytest.raises(InvalidInputError, match="same H x W"):
        Hint(pairs=[("5", "12")]).setup(create_model("digits_cnn", width=8), digits_teacher, torch.randn(2, 1, 8, 8))


def test_teacher_cache_matches_live_teacher_and_refuses_augmented_inputs(digits_teacher):
    plain = get_data("digits", batch_size=64, augment=False, limit_train=200)
    student = create_model("digits_cnn", width=8)
    loss = build_loss(digits_teacher, ["kd", "at"], DistillConfig(beta=10.0))
    x, y = next(iter(plain.train))
    loss.setup(student, x)
    cache = TeacherCache(loss, plain.train)
    assert cache.n == 200
    live, cached = loss.teacher_targets(x, y), cache.lookup(x, y)
    assert live.keys() == cached.keys()
    for k in live:
        assert torch.allclose(live[k], cached[k], atol=1e-6)
    with pytest.raises(InvalidInputError, match="augment"):
        cache.lookup(x + 0.01, y)


def test_verb_is_top_level_and_returns_the_student(digits, digits_teacher):
    student = create_model("digits_cnn", width=8)
    out = torchslim.distill(student, digits_teacher, digits, method=["kd", "at"], config=DistillConfig(
        beta=10.0, fit=FitConfig(epochs=1, lr=0.05, progress=False, eval_every=0, max_steps_per_epoch=3)))
    assert out is student


def test_cli_distill_writes_model_and_figures(tmp_path, digits_teacher):
    teacher_file = save_model(digits_teacher, tmp_path / "teacher.safetensors", input_size=(1, 8, 8))
    rc = main(["distill", "--teacher", str(teacher_file), "--student", "digits_cnn", "--data", "digits",
               "--epochs", "1", "--max-steps", "3", "--method", "kd", "at", "--beta", "10", "--cache-teacher", "--limit", "200",
               "-o", str(tmp_path / "out")])
    assert rc == 0
    figures = json.loads((tmp_path / "out" / "distill.json").read_text())
    assert figures["methods"] == ["kd", "at"] and figures["student_macs"] > figures["teacher_macs"] > 0
    assert load_model(tmp_path / "out" / "model.safetensors")(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    # a student with another class count: one line, exit 2
    assert main(["distill", "--teacher", str(teacher_file), "--student", "digits_cnn", "--data", "digits",
                 "--epochs", "1", "--max-steps", "1", "-o", str(tmp_path / "ok"), "--limit", "64"]) == 0
    bad = create_model("digits_cnn", num_classes=4)
    save_model(bad, tmp_path / "four.safetensors", input_size=(1, 8, 8))
    assert main(["distill", "--teacher", str(teacher_file), "--student", str(tmp_path / "four.safetensors"),
                 "--data", "digits", "--epochs", "1", "--limit", "64", "-o", str(tmp_path / "bad")]) == 2


def test_recipe_distill_stage_runs_the_real_verb(tmp_path, digits_teacher):
    from torchslim.recipe import load_recipe, run_recipe

    save_model(digits_teacher, tmp_path / "teacher.safetensors", input_size=(1, 8, 8))
    recipe = tmp_path / "kd.yaml"
    recipe.write_text("""\
name: kd
model: {name: digits_cnn, kwargs: {width: 4}}
data: {name: digits, batch_size: 64, limit_train: 128, limit_eval: 64, augment: false}
measure: {latency: false}
stages:
  - method: distill
    distill: {teacher: {path: teacher.safetensors}, method: [kd, at], params: {temperature: 2.0, beta: 10.0,
              cache_teacher: true}, epochs: 1, lr: 0.05}
""")
    run_recipe(load_recipe(recipe), tmp_path / "run", progress=False, report=False, log=lambda *a: None)
    assert (tmp_path / "run/stages/01-distill/distill/checkpoint.pt").is_file()
    assert load_model(tmp_path / "run/model.safetensors")(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    with pytest.raises(InvalidInputError, match="unknown distillation setting"):
        torchslim.distill(create_model("digits_cnn", width=4), digits_teacher, get_data("digits"), tempurature=3)


def test_cli_distill_refuses_a_teacher_at_chance_accuracy(tmp_path, capsys):
    untrained = create_model("digits_cnn")
    for p in untrained.parameters():
        torch.nn.init.zeros_(p)  # constant logits: always class 0, chance accuracy
    teacher_file = save_model(untrained, tmp_path / "untrained.safetensors", input_size=(1, 8, 8))
    rc = main(["distill", "--teacher", str(teacher_file), "--student", "digits_cnn", "--data", "digits",
               "--epochs", "1", "--max-steps", "1", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "chance is 10.0 %" in err and "--teacher-pretrained" in err
    assert not (tmp_path / "out").exists()
