"""Distillation from the uncompressed model is the default recovery loss after compression."""
import importlib
import json

import torch

import torchslim
from torchslim.data import get_data
from torchslim.distill import DistillLoss, from_original
from torchslim.models import create_model
from torchslim.train import FitConfig


def test_from_original_teaches_with_a_frozen_copy():
    model = create_model("digits_cnn").eval()
    loss = from_original(model)
    assert isinstance(loss, DistillLoss) and loss.teacher is not model
    assert not any(p.requires_grad for p in loss.teacher.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_prune_fine_tunes_with_kd_from_the_unpruned_model_unless_told_not_to(monkeypatch):
    api = importlib.import_module("torchslim.prune.api")

    seen = []
    real_fit = api.fit
    monkeypatch.setattr(api, "fit", lambda *a, **k: seen.append(k.get("loss_fn")) or real_fit(*a, **k))
    model, data = create_model("digits_cnn"), get_data("digits", limit_train=64)
    x = torch.zeros(1, 1, 8, 8)
    one_step = FitConfig(epochs=1, max_steps_per_epoch=1, progress=False)
    torchslim.prune(model, x, "l1", 0.5, data=data, final_finetune=one_step)
    torchslim.prune(model, x, "l1", 0.5, data=data, final_finetune=one_step, distill=False)
    assert isinstance(seen[0], DistillLoss) and seen[1] is None
    with torch.no_grad():  # the teacher is the model as it was before pruning
        torch.testing.assert_close(seen[0].teacher(torch.ones(2, 1, 8, 8)), model.eval()(torch.ones(2, 1, 8, 8)))


def test_recipe_recovery_distils_from_the_stage_input_by_default(tmp_path):
    from torchslim.recipe import run_recipe

    text = ("name: r\nmodel: {name: digits_cnn}\ndata: {name: digits, limit_train: 64, limit_eval: 64}\n"
            "measure: {latency: false}\nstages:\n  - method: prune\n    params: {ratio: 0.5}\n"
            "    finetune: {epochs: 1, max_steps_per_epoch: 1%s}\n")
    for name, extra in (("kd", ""), ("labels", ", distill_from_input: false")):
        (tmp_path / f"{name}.yaml").write_text(text % extra)
        run_recipe(tmp_path / f"{name}.yaml", tmp_path / name, progress=False, report=False, log=lambda *a: None)
    info = lambda n: json.loads((tmp_path / n / "stages/01-prune/metrics.json").read_text())  # noqa: E731
    assert info("kd")["recovery_loss"].startswith("kd") and "recovery_loss" not in info("labels")
