"""The method table's done-when test (issue 15): every registered method runs through every surface
that applies to it — the Python verb, its CLI command, its recipe stage and, where one exists, auto's
action — on a tiny model and tiny data, and each surface gives the same model (same outputs on the
same images). A method registered tomorrow is a new case here the day it is added.

Among the cases: `sparsify --method energy-aware` (a KeyError once), `quantize --method int8` (an alias
the CLI once ignored) and a recipe prune stage with `criterion: apoz` (its adapter once passed a
DataLoader where the criteria read a DataBundle).
"""
import copy
import json

import pytest
import torch

import torchslim
from torchslim import methods
from torchslim.cli.main import main
from torchslim.data import get_data
from torchslim.io import load_model, save_model
from torchslim.models import create_model
from torchslim.train import FitConfig

LIMIT, BATCH = 64, 32  # images per split, batch size: two training batches
FIT = {"epochs": 1, "lr": 0.01, "max_steps_per_epoch": 1}  # = the CLI's training flags below
CLI_FIT = ["--epochs", "1", "--lr", "0.01", "--max-steps", "1"]
CLI_DATA = ["--data", "digits", "--limit", str(LIMIT), "--batch-size", str(BATCH)]
# int8: one execution path, timed once (the timings pick nothing here)
INT8 = {"path": "ort-qdq", "paths": ["ort-qdq"], "repeats": 1, "min_time_s": 0.0}
CLI_INT8 = ["--path", "ort-qdq", "--paths", '["ort-qdq"]', "--repeats", "1", "--min-time-s", "0"]


def _data():
    """A fresh bundle, as every surface builds it (the CLI from its flags, the recipe from its data:)."""
    return get_data("digits", batch_size=BATCH, limit_train=LIMIT, limit_eval=LIMIT)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A briefly trained digits_cnn (width 16) saved where the CLI and the recipe read it."""
    from torchslim.train import fit

    torch.manual_seed(0)
    model = create_model("digits_cnn", width=16)
    fit(model, _data().train, config=FitConfig(epochs=2, lr=0.1, progress=False))
    path = tmp_path_factory.mktemp("base") / "model.safetensors"
    save_model(model.eval(), path, input_size=(1, 8, 8))
    return path


@pytest.fixture(scope="module")
def images():
    return next(iter(_data().test))[0][:16]


def _same(a, b, images, what: str) -> None:
    for m in (a, b):
        try:
            m.eval()
        except NotImplementedError:  # an exported program (int8-pt2e) runs as exported
            pass
    with torch.no_grad():
        ya, yb = a(images), b(images)
    assert torch.allclose(ya, yb, atol=1e-4, rtol=1e-4), f"{what}: max diff {(ya - yb).abs().max():.2e}"


def _cli(argv, out) -> torch.nn.Module:
    assert main([*argv, "-o", str(out)]) == 0, argv
    return load_model(out / "model.safetensors")


def _stage(method: str, params: dict, base, tmp_path, model=None) -> torch.nn.Module:
    """The recipe surface: the stage parsed and validated as a recipe file is, then run by its own code."""
    from torchslim.recipe import STAGES, StageContext, parse_recipe
    from torchslim.recipe.inputs import build_model, load_data

    recipe = parse_recipe(f"name: t\nmodel: {{path: {base}}}\ndata: {{name: digits, batch_size: {BATCH}, "
                          f"limit_train: {LIMIT}, limit_eval: {LIMIT}}}\nstages:\n  - method: {method}\n"
                          f"    params: {json.dumps(params)}\n", "t.yaml")
    model = model if model is not None else build_model(recipe.model)[0]
    ctx = StageContext(recipe, 1, f"01-{method}", tmp_path / "stage", load_data(recipe), (1, 8, 8),
                       torch.device("cpu"), 1)
    torch.manual_seed(0)
    return STAGES.get(method).fn(model, recipe.stages[0].params, ctx)


def _verb(fn, *args, **kwargs):
    torch.manual_seed(0)
    return fn(*args, **kwargs)


def _cases(family: str, slow=()):
    return [pytest.param(s.name, marks=pytest.mark.slow) if s.name in slow else s.name
            for s in methods.methods(family)]


def test_the_table_has_every_family_and_each_method_once():
    keys = [s.key for s in methods.methods()]
    assert len(keys) == len(set(keys))
    assert {s.family for s in methods.methods()} == set(methods.FAMILIES)
    for s in methods.methods():
        assert s.code.startswith("torchslim/") and s.paper, s.key
    assert methods.get("quantize", "int8").name == "int8-ptq"


# ------------------------------------------------------------------ prune: verb, CLI, stage, auto
@pytest.mark.parametrize("name", _cases("prune", slow=("oracle",)))
def test_prune_method_through_every_surface(name, base, images, tmp_path):
    spec = methods.get("prune", name)
    model = load_model(base)
    ref = _verb(torchslim.prune, model, name, data=_data(), ratio=0.5, round_to=1)
    assert torchslim.report_of(ref)["method"] == name and ref[0].out_channels < model[0].out_channels
    _same(ref, _cli(["prune", str(base), "--criterion", name, "--ratio", "0.5", "--round-to", "1", *CLI_DATA],
                    tmp_path / "cli"), images, "cli")
    # apoz & co: the stage hands the criteria the data bundle (a DataLoader once broke them)
    _same(ref, _stage("prune", {"criterion": name, "ratio": 0.5, "round_to": 1}, base, tmp_path), images, "stage")
    if not spec.needs_data:  # auto's prune actions use weight criteria
        from torchslim.auto import prune_actions

        x = images[:1]
        action = prune_actions(model, x, ratios=(0.5,), criterion=name)[1]
        mine = _verb(torchslim.prune, model, name, example_input=x, layer_ratios={action.layer: 0.5},
                     allocation="layers", ratio=0.0)
        _same(mine, action.apply(copy.deepcopy(model)), images, "auto")


# ------------------------------------------------------------------ sparsify: verb, CLI, stage
@pytest.mark.parametrize("name", _cases("sparsify", slow=("ssl", "correlation")))
def test_sparsify_method_through_every_surface(name, base, images, tmp_path):
    from torchslim.sparsity import remove_masks
    from torchslim.sparsity.api import epochs_field

    spec = methods.get("sparsify", name)
    epochs = {epochs_field(name): 1}
    target = {"sparsity": 0.5} if "sparsity" in spec.option_names() else {}
    ref = _verb(torchslim.sparsify, load_model(base), name, data=_data(), fit=FitConfig(**FIT), **target, **epochs)
    assert torchslim.report_of(ref)["method"] == name
    remove_masks(ref)
    # energy-aware: a KeyError once, for want of a CLI table entry
    cli = _cli(["sparsify", str(base), "--method", name, *CLI_FIT, "--sparsity", "0.5", *CLI_DATA], tmp_path / "cli")
    _same(ref, cli, images, "cli")
    stage = _stage("sparsify", {"method": name, **target, "options": {"fit": FIT, **epochs}}, base, tmp_path)
    _same(ref, remove_masks(stage), images, "stage")


# ------------------------------------------------------------------ decompose: verb, CLI, stage, auto
@pytest.mark.parametrize("name", _cases("decompose", slow=("cp",)))
def test_decompose_method_through_every_surface(name, base, images, tmp_path):
    spec = methods.get("decompose", name)
    model = load_model(base)
    data = _data() if spec.needs_data else None
    ref = _verb(torchslim.decompose, model, name, rank={"compression": 2.0}, data=data, input_size=(1, 8, 8))
    assert torchslim.report_of(ref)["method"] == name
    _same(ref, _cli(["decompose", str(base), "--method", name, "--rank", "compression=2", "--no-latency", *CLI_DATA],
                    tmp_path / "cli"), images, "cli")
    _same(ref, _stage("decompose", {"method": name, "rank": {"compression": 2.0}}, base, tmp_path), images, "stage")
    if not spec.needs_data:  # auto's actions have no images to fit responses to
        from torchslim.auto import lowrank_actions

        action = next(a for a in lowrank_actions(model, (1, 8, 8), (2.0,), method=name) if a.layer == "3")
        try:
            got = action.apply(copy.deepcopy(model))
        except torchslim.errors.InvalidInputError as e:  # the layer stays whole: the verb must say the same
            with pytest.raises(torchslim.errors.InvalidInputError, match="not decomposed"):
                torchslim.decompose(model, name, rank={"3": {"compression": 2.0}}, strict=True)
            assert "3:" in str(e)
            return
        _same(_verb(torchslim.decompose, model, name, rank={"3": {"compression": 2.0}}, input_size=(1, 8, 8)),
              got, images, "auto")


def test_decompose_a_layer_it_cannot_shrink_is_one_clear_error_in_recipe_and_auto(base, tmp_path):
    from torchslim.auto.actions import apply_stages
    from torchslim.errors import InvalidInputError

    params = {"method": "tucker", "rank": {"3": 16}}  # full rank: the chain would be larger (once a bare
    # ValueError in auto, and silently skipped in a recipe)
    with pytest.raises(InvalidInputError, match="3: ranks .* would not reduce"):
        _stage("decompose", params, base, tmp_path)
    with pytest.raises(InvalidInputError, match="3: ranks .* would not reduce"):
        apply_stages(load_model(base), [{"method": "decompose", "params": params}], torch.zeros(1, 1, 8, 8))


# ------------------------------------------------------------------ quantize: verb, CLI, stage, auto
@pytest.mark.parametrize("name", _cases("quantize", slow=("int8-qat", "int8-pt2e")))
def test_quantize_method_through_every_surface(name, base, images, tmp_path):
    spec = methods.get("quantize", name)
    model = load_model(base)
    if name == "int8-ptq":
        for alias in ("int8-ptq", *spec.aliases):  # the CLI honours the alias (it once ignored it)
            ref = _verb(torchslim.quantize, model, alias, calib=_data().train, **INT8)
            _same(ref, _cli(["quantize", str(base), "--method", alias, *CLI_INT8, *CLI_DATA], tmp_path / alias),
                  images, f"cli {alias}")
        _same(ref, _stage("quantize", {"method": "int8", "calib_images": LIMIT, "options": INT8}, base, tmp_path),
              images, "stage")
        from torchslim.auto import quant_actions

        calib = _data().calibration_batches(LIMIT)
        action = quant_actions(calib, images[:1], "onnxruntime", calib_images=LIMIT, paths=["ort-qdq"])[0]
        mine = _verb(torchslim.quantize, model.eval(), "int8", calib=calib, calib_images=LIMIT, path="ort-qdq",
                     paths=["ort-qdq"], threads=1, observer="mse")
        _same(mine, action.apply(copy.deepcopy(model)), images, "auto")
        return
    if name == "int8-pt2e":
        pytest.importorskip("torchao")
        ref = _verb(torchslim.quantize, model, name, calib=_data(), calib_images=LIMIT)
        assert main(["quantize", str(base), "--method", name, "--calib-images", str(LIMIT), *CLI_DATA,
                     "-o", str(tmp_path / "cli")]) == 0
        _same(ref, torch.export.load(tmp_path / "cli" / "model.pt2").module(), images, "cli")
        _same(ref, _stage("quantize", {"method": name, "calib_images": LIMIT}, base, tmp_path), images, "stage")
        return
    if name == "int8-qat":
        options = {"epochs": 1, "fit": FIT, "int8": INT8}
        ref = _verb(torchslim.quantize, model, name, data=_data(), **spec.coerce(options))
        _same(ref, _stage("quantize", {"method": name, "options": options}, base, tmp_path), images, "stage")
        # the CLI's int8 flags go into QATConfig.int8 (the method table routes them)
        _same(ref, _cli(["quantize", str(base), "--method", name, *CLI_FIT, *CLI_INT8, *CLI_DATA], tmp_path / "cli"),
              images, "cli")
        return
    ref = _verb(torchslim.quantize, model, name, data=_data(), epochs=1, fit=FitConfig(**FIT))
    _same(ref, _cli(["quantize", str(base), "--method", name, *CLI_FIT, *CLI_DATA], tmp_path / "cli"), images, "cli")
    _same(ref, _stage("quantize", {"method": name, "options": {"epochs": 1, "fit": FIT}}, base, tmp_path),
          images, "stage")


# ------------------------------------------------------------------ distill: verb, CLI, recipe budget
@pytest.mark.parametrize("name", _cases("distill"))
def test_distill_method_through_every_surface(name, base, images, tmp_path):
    from torchslim.distill import DistillConfig

    teacher = load_model(base)
    student = create_model("digits_cnn", width=8)
    save_model(student, tmp_path / "student.safetensors", input_size=(1, 8, 8))
    ref = torchslim.distill(copy.deepcopy(student), name, data=_data(), teacher=teacher,
                            config=DistillConfig(fit=FitConfig(epochs=1, lr=0.05, max_steps_per_epoch=1)))
    assert torchslim.report_of(ref)["methods"] == [name]
    cli = _cli(["distill", "--teacher", str(base), "--student", str(tmp_path / "student.safetensors"),
                "--method", name, "--epochs", "1", "--max-steps", "1", *CLI_DATA[:2], "--limit", str(LIMIT),
                "--batch-size", str(BATCH)], tmp_path / "cli")
    _same(ref, cli, images, "cli")
    # the recipe: a distill budget with the same settings (its fit seed is the stage's)
    from torchslim.recipe.stages import run_distillation

    class Budget:  # what a recipe's `distill:` budget holds
        teacher, method, params = None, [name], {}

    class Ctx:
        data, callbacks = _data(), []

        @staticmethod
        def load_model(spec):
            return load_model(base)

    mine = torchslim.distill(copy.deepcopy(student), name, data=_data(), teacher=teacher,
                             config=DistillConfig(fit=FitConfig(epochs=1, lr=0.05, max_steps_per_epoch=1, seed=1)))
    got = run_distillation(copy.deepcopy(student), Budget, Ctx,
                           FitConfig(epochs=1, lr=0.05, max_steps_per_epoch=1, seed=1), tmp_path / "ckpt")
    _same(mine, got, images, "recipe")


# ------------------------------------------------------------------ encode: Python, CLI, stage
@pytest.mark.parametrize("name", _cases("encode"))
def test_encode_method_through_every_surface(name, base, images, tmp_path):
    from torchslim import encode

    k = torchslim.quantize(load_model(base), "kmeans", epochs=0)
    save_model(k, tmp_path / "k.safetensors", input_size=(1, 8, 8))
    encode.save(k, tmp_path / "py.slim", input_size=(1, 8, 8))
    ref = encode.load(tmp_path / "py.slim")
    assert main(["encode", str(tmp_path / "k.safetensors"), "-o", str(tmp_path / "cli.slim")]) == 0
    _same(ref, encode.load(tmp_path / "cli.slim"), images, "cli")
    _same(ref, _stage("encode", {"file": "m.slim"}, base, tmp_path, model=k), images, "stage")


# ------------------------------------------------------------------ the CLI and recipes read the table
def test_cli_method_choices_and_recipe_checks_come_from_the_table(capsys, base, tmp_path):
    from torchslim.recipe import RecipeError, parse_recipe

    for family in ("sparsify", "quantize"):
        with pytest.raises(SystemExit):  # argparse: usage and the choices, exit 2
            main([family, str(base), *CLI_DATA, "--method", "nope", "-o", str(tmp_path)])
        err = capsys.readouterr().err
        assert all(n in err for n in methods.names(family)), family
    # an option of another method: one line naming it
    assert main(["sparsify", str(base), *CLI_DATA, "--method", "dns", "--candidates", "3", "-o", str(tmp_path)]) == 2
    assert "--candidates does not apply to sparsify method 'dns'" in capsys.readouterr().err
    with pytest.raises(RecipeError, match=r"t\.yaml:6.*has no option"):
        parse_recipe(f"name: t\nmodel: {{path: {base}}}\ndata: {{name: digits}}\nstages:\n  - method: sparsify\n"
                     "    params: {method: dns, options: {candidates: 3}}\n", "t.yaml")


def _command(name: str):
    import argparse

    from torchslim.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("family", ["prune", "sparsify", "decompose", "quantize", "distill"])
def test_every_option_of_every_method_is_a_flag_of_its_command(family):
    """The commands' options are generated from the configs: a field added to a config is on the CLI."""
    from torchslim.cli.options import NOT_ON_CLI

    flags = set(_command(family)._option_string_actions)
    for s in methods.methods(family):
        for o in s.options():
            if o.name in NOT_ON_CLI or "FitConfig" in o.type:  # objects; the budget has FitConfig's own flags
                continue
            if (family, o.name) == ("distill", "checkpoint_dir"):  # the command's -o directory
                continue
            flag = "--" + o.name.replace("_", "-")
            assert flag in flags or "--method-" + flag[2:] in flags, f"{s.key}: {o.name} has no flag"


def test_prune_cli_reads_several_skip_patterns_and_a_layer_ratios_file(base, tmp_path):
    import argparse

    from torchslim.cli.options import given

    parse = _command("prune").parse_args
    for words in (["3", "4"], ["3,4"], ['["3", "4"]']):
        assert given(parse([str(base), "--ratio", "0.5", "--skip", *words, "-o", "x"]))["skip"] == ("3", "4")
    ratios = tmp_path / "ratios.json"
    ratios.write_text('{"0": 0.5}')
    args = parse([str(base), "--allocation", "layers", "--ratio", "0", "--layer-ratios", str(ratios), "-o", "x"])
    assert given(args)["layer_ratios"] == {"0": 0.5}
    with pytest.raises(SystemExit):  # choices come from PruneConfig's field metadata
        parse([str(base), "--ratio", "0.5", "--schedule", "nope", "-o", "x"])
    assert isinstance(args, argparse.Namespace)


def test_prune_cli_needs_one_target(base, capsys, tmp_path):
    assert main(["prune", str(base), "-o", str(tmp_path)]) == 2
    assert "give one of --ratio, --target-macs, --target-params" in capsys.readouterr().err


def test_quantize_cli_reports_and_saves_by_what_the_method_returns():
    """No quantize method is named in the CLI: it reports and saves by `MethodSpec.output`."""
    from torchslim.cli.quantize import SAVE

    assert {s.output for s in methods.methods("quantize")} <= set(SAVE)
    qat = methods.get("quantize", "int8-qat")
    routed = qat.route({"observer": "minmax", "epochs": 2, "bits": {"conv": 4}})
    assert routed["epochs"] == 2 and routed["int8"].observer == "minmax" and "bits" not in routed
    assert "observer" in qat.accepted_names() and "observer" not in qat.option_names()


def test_a_criterion_says_once_whether_it_reads_data(base):
    from torchslim.errors import InvalidInputError
    from torchslim.prune.criteria import CRITERIA, register_criterion

    @register_criterion("test_reads_data", needs_data=True)
    def reads_data(ctx):
        return torch.ones(ctx.graph.num_units)

    try:
        assert methods.get("prune", "test_reads_data").needs_data
        assert {s.name for s in methods.methods("prune") if s.needs_data} >= {"apoz", "taylor", "lda", "icc"}
        assert not methods.get("prune", "l1").needs_data
        with pytest.raises(InvalidInputError, match="reads data"):
            torchslim.prune(load_model(base), "test_reads_data", ratio=0.5)
    finally:
        CRITERIA._entries.pop("test_reads_data")


def test_docs_methods_md_is_the_table():
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "methods.md"
    assert doc.read_text() == methods.markdown() + "\n", \
        "docs/methods.md is stale: python -m torchslim.methods > docs/methods.md"
    for s in methods.methods():  # one hop from a name to its code
        assert (doc.parent.parent / s.code).is_file() and (doc.parent.parent / s.docs).is_file(), s.key


# ------------------------------------------------------------------ one shape for every verb
def test_old_verb_calls_still_work_and_name_the_new_call(base, images):
    from torchslim.distill import DistillConfig

    model, x = load_model(base), images[:1]
    with pytest.warns(DeprecationWarning, match=r"torchslim\.prune\(model, criterion, example_input=x"):
        old = torchslim.prune(model, x, "l1", 0.5, round_to=1)
    _same(old, torchslim.prune(model, "l1", example_input=x, ratio=0.5, round_to=1), images, "prune")
    cfg = DistillConfig(fit=FitConfig(epochs=1, max_steps_per_epoch=1, progress=False))
    student = create_model("digits_cnn", width=8)
    with pytest.warns(DeprecationWarning, match=r"torchslim\.distill\(student, method, data=data, teacher=teacher"):
        old = torchslim.distill(copy.deepcopy(student), model, _data(), method="kd", config=cfg)
    _same(old, torchslim.distill(copy.deepcopy(student), "kd", data=_data(), teacher=model, config=cfg), images,
          "distill")


def test_filter_fn_chooses_the_layers_of_every_family(base):
    only3 = lambda module, name: name == "3"  # noqa: E731
    model = load_model(base)
    pruned = torchslim.prune(model, "l1", ratio=0.5, round_to=1, filter_fn=only3)
    assert pruned[0].out_channels == model[0].out_channels and pruned[3].out_channels < model[3].out_channels
    sparse = torchslim.sparsify(model, "magnitude", sparsity=0.5, schedule="oneshot", epochs=0, filter_fn=only3)
    zeros = {n: float((m.weight == 0).float().mean()) for n, m in sparse.named_modules() if hasattr(m, "weight")
             and m.weight is not None and m.weight.dim() > 1}
    assert zeros["3"] >= 0.5 and zeros["0"] == 0.0
    small = torchslim.decompose(model, "tucker", rank=2, filter_fn=only3)
    assert [r.name for r in torchslim.report_of(small)["decomposition"].decomposed] == ["3"]
    with pytest.raises(torchslim.errors.InvalidInputError, match="filter_fn does not apply"):
        torchslim.distill(model, "kd", data=_data(), teacher=model, filter_fn=only3)
