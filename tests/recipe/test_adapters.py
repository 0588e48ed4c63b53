"""The method adapters call the verbs with the shared verb shape (model, method, *, data=, ...); shape-changing
results flow through saving, measuring, resuming and reporting. The verbs are stand-ins here; the real ones
run through every surface in tests/test_methods.py."""
import json
import sys
import types

import pytest
import torch
from torch import nn

import torchslim
from torchslim.io import load_model, save_model
from torchslim.recipe import parse_recipe, run_recipe

RECIPE = """\
name: adapters
model: {name: digits_cnn, kwargs: {width: 8}}
data: {name: digits, batch_size: 64, limit_train: 128, limit_eval: 64, augment: false}
measure: {latency: false}
stages:
  - method: prune
    params: {criterion: l1, ratio: 0.5, options: {min_keep: 0.1}}
    finetune: {epochs: 1, lr: 0.05}
  - method: sparsify
    params: {method: magnitude}
    policies: [{param: sparsity, start_epoch: 0, end_epoch: 1, final: 0.5}]
    finetune: {epochs: 2, lr: 0.05}
  - method: decompose
    params: {method: svd, rank: 4, layers: ["15"]}
  - method: quantize
    params: {method: int8, calib_images: 100}
  - method: encode
    params: {file: m.slim}
  - method: export
"""


def _prune_first_conv(model: nn.Sequential, keep: int) -> nn.Sequential:
    """What filter pruning does to digits_cnn: conv0 keeps `keep` filters, bn0 and conv1's inputs follow."""
    idx = model[0].weight.detach().abs().sum((1, 2, 3)).argsort(descending=True)[:keep].sort().values
    conv0, bn0, conv1 = nn.Conv2d(1, keep, 3, padding=1, bias=False), nn.BatchNorm2d(keep), \
        nn.Conv2d(keep, model[3].out_channels, 3, padding=1, bias=False)
    with torch.no_grad():
        conv0.weight.copy_(model[0].weight[idx])
        for n in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn0, n).copy_(getattr(model[1], n)[idx])
        conv1.weight.copy_(model[3].weight[:, idx])
    model[0], model[1], model[3] = conv0, bn0, conv1
    return model


@pytest.fixture
def verbs(monkeypatch, tmp_path):
    calls = {}

    def prune(model, criterion, *, example_input, ratio=None, target_macs=None, data=None, inplace=False, **kw):
        calls["prune"] = dict(criterion=criterion, ratio=ratio, shape=tuple(example_input.shape),
                              data=type(data).__name__, kw=kw)
        return _prune_first_conv(model, int(model[0].out_channels * (1 - ratio)))

    def sparsify(model, method, *, sparsity, data=None, inplace=False):
        assert inplace  # a policy re-applies it to the model being fine-tuned
        calls.setdefault("sparsify", []).append(round(sparsity, 4))
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    k = int(m.weight.numel() * sparsity)
                    if k:
                        thr = m.weight.abs().flatten().kthvalue(k).values
                        m.weight[m.weight.abs() <= thr] = 0
        return model

    def decompose(model, method, *, rank, layers, data=None, inplace=False, strict=False, input_size=None):
        assert strict and data is None  # a rank per named layer must be met; svd reads no data
        calls["decompose"] = dict(method=method, rank=rank, layers=layers)
        fc = model[int(layers[0])]
        u, s, vh = torch.linalg.svd(fc.weight.detach(), full_matrices=False)
        a, b = nn.Linear(fc.in_features, rank, bias=False), nn.Linear(rank, fc.out_features)
        with torch.no_grad():
            a.weight.copy_(vh[:rank] * s[:rank, None])
            b.weight.copy_(u[:, :rank])
            b.bias.copy_(fc.bias)
        model[int(layers[0])] = nn.Sequential(a, b)
        return model

    def quantize(model, method, *, calib, data=None, calib_images=None):
        calls["quantize"] = dict(method=method, images=sum(len(x) for x in calib), calib_images=calib_images)
        return model  # a stand-in: the real int8 modules come with the quantization issue

    encode = types.ModuleType("torchslim.encode")
    encode.save = lambda model, path: save_model(model, path.with_suffix(".safetensors")) and \
        path.write_bytes(path.with_suffix(".safetensors").read_bytes())
    encode.load = lambda path: load_model(path.with_suffix(".safetensors"))
    for name, fn in dict(prune=prune, sparsify=sparsify, decompose=decompose, quantize=quantize).items():
        monkeypatch.setattr(torchslim, name, fn, raising=False)
    monkeypatch.setattr(torchslim, "encode", encode, raising=False)
    monkeypatch.setitem(sys.modules, "torchslim.encode", encode)
    return calls


def test_every_adapter_through_a_run(verbs, tmp_path):
    summary = run_recipe(parse_recipe(RECIPE, "adapters.yaml"), tmp_path / "run", progress=False, log=lambda *a: None)
    assert verbs["prune"] == {"criterion": "l1", "ratio": 0.5, "shape": (1, 1, 8, 8), "data": "DataBundle",
                              "kw": {"min_keep": 0.1}}
    assert verbs["sparsify"] == [0.0, 0.5]  # AGP: epoch 0 -> initial, epoch 1 -> final
    assert verbs["decompose"] == {"method": "svd", "rank": 4, "layers": ["15"]}
    assert verbs["quantize"] == {"method": "int8", "images": 100, "calib_images": 100}  # int8: told the number too
    st = {s["stage"]: s for s in summary["stages"]}
    assert st["01-prune"]["params_count"] < st["00-input"]["params_count"]
    assert st["01-prune"]["before_recovery"]["n"] == 64
    assert st["02-sparsify"]["nonzero_params"] < 0.6 * st["02-sparsify"]["params_count"]
    assert st["03-decompose"]["params_count"] < st["02-sparsify"]["params_count"]
    assert st["05-encode"]["metrics"]["slim_bytes"] > 0
    assert st["06-export"]["metrics"]["onnx"]["max_abs_diff"] < 1e-4
    # the final file holds the pruned and decomposed shapes and reloads to an equal model
    final = load_model(tmp_path / "run/model.safetensors")
    assert final[0].out_channels == 4 and isinstance(final[15], nn.Sequential)
    # a rerun loads every finished stage (shape-changed ones included) without calling a verb again
    verbs.clear()
    run_recipe(parse_recipe(RECIPE, "adapters.yaml"), tmp_path / "run", progress=False, report=False,
               log=lambda *a: None)
    assert verbs == {}


def test_distill_budget_calls_the_distill_verb_with_a_teacher(monkeypatch, tmp_path):
    import torch.nn.functional as F

    from torchslim.train import fit

    seen = {}

    def distill(student, method, *, data, teacher, config, checkpoint_dir, callbacks, temperature=1.0):
        seen.update(method=method, teacher=type(teacher).__name__, epochs=config.epochs, t=temperature,
                    ckpt=checkpoint_dir.name, teacher_eval=not teacher.training)

        def kd(model, x, y):  # Hinton et al. 2015: soft targets at temperature T plus the hard labels
            logits = model(x)
            with torch.no_grad():
                soft = F.softmax(teacher(x) / temperature, 1)
            loss = F.kl_div(F.log_softmax(logits / temperature, 1), soft, reduction="batchmean") * temperature ** 2
            return loss + F.cross_entropy(logits, y), logits

        fit(student, data.train, config=config, loss_fn=kd, callbacks=callbacks, checkpoint_dir=checkpoint_dir)
        return student

    monkeypatch.setattr(torchslim, "distill", distill, raising=False)
    teacher = tmp_path / "teacher.safetensors"
    save_model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), teacher, input_size=(1, 8, 8))
    recipe = tmp_path / "kd.yaml"
    recipe.write_text("""\
name: kd
model: {name: digits_cnn, kwargs: {width: 4}}
data: {name: digits, batch_size: 64, limit_train: 128, limit_eval: 64, augment: false}
measure: {latency: false}
stages:
  - method: distill
    distill: {teacher: {path: teacher.safetensors}, method: [kd], params: {temperature: 4.0}, epochs: 2, lr: 0.05}
""")
    from torchslim.recipe import load_recipe

    summary = run_recipe(load_recipe(recipe), tmp_path / "run", progress=False, report=False, log=lambda *a: None)
    assert seen == {"method": ["kd"], "teacher": "Sequential", "epochs": 2, "t": 4.0, "ckpt": "distill",
                    "teacher_eval": True}
    assert (tmp_path / "run/stages/01-distill/distill/checkpoint.pt").is_file()
    info = json.loads((tmp_path / "run/stages/01-distill/metrics.json").read_text())
    assert [h["epoch"] for h in info["history"]] == [1, 2]  # the distillation's epochs are in the report
    assert summary == {}


def test_prune_stage_with_a_data_criterion_runs_the_real_verb(tmp_path):
    from torchslim.io import load_model
    from torchslim.recipe import load_recipe, run_recipe

    recipe = tmp_path / "apoz.yaml"
    recipe.write_text("""\
name: apoz
model: {name: digits_cnn, kwargs: {width: 8}}
data: {name: digits, batch_size: 64, limit_train: 128, limit_eval: 64, augment: false}
measure: {latency: false}
stages:
  - method: prune
    params: {criterion: apoz, ratio: 0.5, round_to: 1, options: {batches: 1}}
""")
    run_recipe(load_recipe(recipe), tmp_path / "run", progress=False, report=False, log=lambda *a: None)
    pruned = load_model(tmp_path / "run/model.safetensors")
    assert pruned[0].out_channels < 8 and pruned(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
def test_prune_stage_passes_round_to(verbs, tmp_path):
    text = RECIPE.split("  - method: sparsify")[0].replace("options: {min_keep: 0.1}", "round_to: 4")
    run_recipe(parse_recipe(text, "r.yaml"), tmp_path / "run", progress=False, report=False, log=lambda *a: None)
    assert verbs["prune"]["kw"] == {"round_to": 4}
    with pytest.raises(Exception, match="round_to"):
        parse_recipe(text.replace("round_to: 4", "round_to: 0"), "r.yaml")
