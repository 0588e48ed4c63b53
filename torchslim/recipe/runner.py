"""Run a recipe into a run folder, stage by stage, resumable after a kill at any point.

    RUN_DIR/
      recipe.yaml, recipe.json          the recipe as given and as validated
      stages/00-input/                  the starting model, measured
      stages/01-finetune/
        stage.json                      fingerprint of what this stage depends on (written at start)
        finetune/checkpoint.pt          fit's checkpoint, rewritten atomically every epoch
        cache/*.json                    expensive intermediate results (StageContext.cached)
        applied.safetensors             the model right after the method, before its fine-tuning
        model.safetensors               the stage's model (torchslim.io.save_model)
        metrics.json                    its measurements; written last: the stage's "done" mark
      model.safetensors                 the final model
      report.md, report.html, report.json

A rerun skips every finished stage (loading its model), resumes a stage's fine-tuning from its
checkpoint, and refuses to mix results of a different recipe. Every stage starts from its
predecessor's model *as loaded from disk* and from seeds derived from (recipe seed, stage index), so
an interrupted and resumed run computes what an uninterrupted one does.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import time
from pathlib import Path

import torch
from torch import nn

from torchslim.data.folder import link_model
from torchslim.errors import InvalidInputError, UnsupportedModelError
from torchslim.recipe.inputs import build_model, load_data  # noqa: F401  (build_model: imported from here before)
from torchslim.recipe.schema import Recipe, load_recipe
from torchslim.recipe.stages import STAGES, StageContext, run_distillation, write_json
from torchslim.train import Callback, evaluate, fit, seed_everything
from torchslim.train import distributed as D

INPUT_STAGE = "00-input"


class PolicyCallback(Callback):
    """Re-applies a stage's method during its recovery with the params its policies give at each epoch.

    Callbacks the method hands over (masks...) are forwarded until the next application. On resume the
    latest scheduled value is re-applied once, so the method's callbacks exist again.
    """

    def __init__(self, fn, params: dict, policies, ctx: StageContext):
        self.fn, self.params, self.policies, self.ctx = fn, params, policies, ctx
        self.inner: list[Callback] = []
        self.applied = False
        self.history: list[dict] = []

    def on_epoch_begin(self, model, epoch):
        scheduled = any(epoch in p.epochs() for p in self.policies)
        if not scheduled and (self.applied or all(epoch < p.start_epoch for p in self.policies)):
            for cb in self.inner:
                cb.on_epoch_begin(model, epoch)
            return
        params = dict(self.params) | {p.param: p.value(epoch) for p in self.policies}
        self.ctx.callbacks = []
        out = self.fn(model, params, self.ctx)
        if out is not model:
            raise UnsupportedModelError(f"stage {self.ctx.name}: a policy re-applies {self.ctx.recipe.stages[self.ctx.index - 1].method!r} "
                                        "during training, which needs a method that changes the model in place")
        self.inner, self.applied = list(self.ctx.callbacks), True
        # a resume inside epoch `epoch` re-applies what the checkpointed history already holds
        self.history = [h for h in self.history if h["epoch"] != epoch]
        self.history.append({"epoch": epoch, **{p.param: params[p.param] for p in self.policies}})
        for cb in self.inner:
            cb.on_fit_begin(model, self._opt)
            cb.on_epoch_begin(model, epoch)

    def on_fit_begin(self, model, optimizer):
        self._opt = optimizer

    def after_backward(self, model, step):
        for cb in self.inner:
            cb.after_backward(model, step)

    def after_step(self, model, step):
        for cb in self.inner:
            cb.after_step(model, step)

    def on_epoch_end(self, model, epoch, metrics):
        for cb in self.inner:
            cb.on_epoch_end(model, epoch, metrics)
        metrics.update({f"policy_{p.param}": p.value(epoch) for p in self.policies})

    def state_dict(self):
        return {"history": self.history}

    def load_state_dict(self, state):
        self.history = list(state.get("history", []))


class _History(Callback):
    """Each epoch's figures of a fit run inside a method verb (kept in fit's checkpoint: survives a resume)."""

    def __init__(self):
        self.history: list[dict] = []

    def on_epoch_end(self, model, epoch, metrics):
        self.history.append(metrics)  # fit's own dict: later callbacks' keys appear in it too

    def state_dict(self):
        return {"history": self.history}

    def load_state_dict(self, state):
        self.history = list(state.get("history", []))


def measure(model: nn.Module, data, recipe: Recipe, input_size, model_path: Path, device) -> dict:
    """Accuracy, parameters, MACs, size on disk, latency per runtime, and the per-layer profile."""
    from torchslim.analysis import measure_latency, profile

    m = recipe.measure
    out: dict = {"accuracy": evaluate(model, data.split(recipe.data.eval_split), device=device),
                 "eval_split": recipe.data.eval_split, "size_bytes": model_path.stat().st_size,
                 "protocol": data.protocol, "protocol_note": data.protocol_note}
    if recipe.data.eval_split == "test" and data.protocol == "test-half":
        # the full test set is the papers' protocol; the half no decision saw is ours: both, side by side
        out["accuracy_heldout"] = evaluate(model, data.heldout, device=device)
    cpu_model = model.cpu().eval()
    prof = profile(cpu_model, input_size)
    out.update(params=prof.params, nonzero_params=prof.nonzero_params, macs=prof.macs)
    if m.per_layer:
        out["layers"] = prof.to_dict()["layers"]
    out["latency"] = {}
    if m.latency:
        for runtime in m.runtimes:
            try:
                r = measure_latency(cpu_model, input_size=input_size, batch_size=m.batch_size, runtime=runtime,
                                    precision=m.precision, threads=m.threads, repeats=m.repeats,
                                    min_time_s=m.min_time_s)
                out["latency"][runtime] = {k: v for k, v in r.to_dict().items() if k != "machine"}
                out.setdefault("machine", r.machine)
            except Exception as e:  # e.g. an op ONNX cannot export: recorded, the run goes on
                out["latency"][runtime] = {"error": f"{type(e).__name__}: {e}"}
    model.to(device)
    return out


def _save_stage(model, stage_dir: Path, input_size, metadata: dict, name: str = "model.safetensors") -> Path:
    from torchslim.io import save_model

    try:
        return save_model(model, stage_dir / name, input_size=input_size, metadata=metadata)
    except Exception as e:
        raise UnsupportedModelError(f"{stage_dir.name}: cannot save the stage's model as a torchslim file: {e}") from e


def _finish_stage(model, stage_dir, recipe, data, input_size, device, info: dict, log) -> nn.Module:
    """Save, measure, write metrics.json (the done mark); every rank continues from the saved file."""
    from torchslim.io import load_model

    if D.is_main():
        path = _save_stage(model, stage_dir, input_size, {"recipe": recipe.name, "stage": stage_dir.name})
        info["measure"] = measure(model, data, recipe, input_size, path, device)
        write_json(stage_dir / "metrics.json", info)
        acc = info["measure"]["accuracy"]["top1"]
        log(f"  {stage_dir.name}: top-1 {acc:.2f}%  params {info['measure']['params']:,}  "
            f"MACs {info['measure']['macs']:,}  file {info['measure']['size_bytes']:,} B")
    D.barrier()
    return load_model(stage_dir / "model.safetensors").to(device)


APPLIED = "applied.safetensors"


def _apply_once(fn, model, stage, ctx: StageContext, input_size, device) -> nn.Module:
    """The stage's method, before its recovery, computed once per run: its model is kept in the stage
    folder, so a run killed during the fine-tuning does not redo the method (e.g. a long decomposition).

    Not kept when the method hands callbacks, a loss or regularizers to the fine-tuning (those live
    in memory only: the method runs again, seeded as before). Both paths continue from the model as
    loaded from disk, so they compute the same thing.
    """
    from torchslim.io import load_model

    path, extra = ctx.stage_dir / APPLIED, ctx.stage_dir / "applied.json"
    if path.is_file() and extra.is_file():
        saved = json.loads(extra.read_text())
        ctx.metrics.update(saved["metrics"])
        ctx.artifacts.update(saved["artifacts"])
        return load_model(path).to(device)
    model = fn(model, dict(stage.params), ctx)
    if ctx.callbacks or ctx.loss_fn is not None or ctx.regularizers:
        return model.to(device)
    if D.is_main():
        try:
            _save_stage(model, ctx.stage_dir, input_size, {"stage": ctx.name, "applied": True}, APPLIED)
        except UnsupportedModelError:
            pass  # not savable here: the method reruns on resume; the stage end reports the problem
        else:
            write_json(extra, {"metrics": ctx.metrics, "artifacts": ctx.artifacts})
    D.barrier()
    return load_model(path).to(device) if extra.is_file() else model.to(device)


def _check_run_dir(run_dir: Path, recipe: Recipe, restart: bool) -> None:
    stages = run_dir / "stages"
    if restart and stages.exists() and D.is_main():
        shutil.rmtree(stages)
    D.barrier()
    for i, name in enumerate([INPUT_STAGE] + recipe.stage_names(), -1):
        f = stages / name / "stage.json"
        if f.is_file() and json.loads(f.read_text()).get("fingerprint") != recipe.fingerprint(i):
            raise InvalidInputError(
                f"{run_dir}: stage {name} was computed from a different recipe (this stage or an earlier one, "
                "the model, data or seed changed); use a new -o directory, or --restart to discard it")


def run_recipe(recipe: Recipe | str | os.PathLike, run_dir: str | os.PathLike, *, restart: bool = False,
               progress: bool = True, report: bool = True, log=print) -> dict:
    """Run (or resume) `recipe` into `run_dir`; returns the summary that report.json holds.

    Args:
        recipe: a validated `Recipe` or the path of a recipe file.
        run_dir: the run folder; an existing one is resumed.
        restart: discard finished stages of an earlier run in `run_dir`.
        progress: progress bars for fine-tuning.
        report: write report.md / report.html / report.json at the end.

    Example:
        >>> run_recipe("recipes/demo_digits.yaml", "runs/demo")["stages"][-1]["accuracy"]["top1"]
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    run_dir = Path(run_dir)
    if not D.is_main():
        log = lambda *a, **k: None  # noqa: E731
    data = load_data(recipe)  # before the run folder exists: bad data leaves nothing behind
    if data.classes:
        d = data.describe()
        log(f"data: {d['data']} ({d['layout']}; {d['classes']} classes; "
            + ", ".join(f"{k} {v}" for k, v in d["sizes"].items()) + f"); preprocessing: {d['preprocessing']}")
    if D.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "data.json", data.describe())
        if recipe.source and Path(recipe.source).is_file():
            text = Path(recipe.source).read_text()
            if recipe.smoke:
                text = (f"# SMOKE RUN of this recipe ({json.dumps(recipe.smoke)}): the budgets that ran are "
                        "in recipe.json\n") + text
            tmp = run_dir / "recipe.yaml.tmp"
            tmp.write_text(text)
            os.replace(tmp, run_dir / "recipe.yaml")
        write_json(run_dir / "recipe.json", recipe.model_dump(mode="json"))
    _check_run_dir(run_dir, recipe, restart)
    device = D.default_device() if recipe.device == "auto" else torch.device(recipe.device)
    names = recipe.stage_names()
    t_run = time.perf_counter()

    # Stage 0: the starting model, measured like every other.
    in_dir = run_dir / "stages" / INPUT_STAGE
    if (in_dir / "metrics.json").is_file():
        from torchslim.io import load_model

        model = load_model(in_dir / "model.safetensors").to(device)
        input_size = tuple(json.loads((in_dir / "metrics.json").read_text())["input_size"])
    else:
        if D.is_main():
            in_dir.mkdir(parents=True, exist_ok=True)
            write_json(in_dir / "stage.json", {"fingerprint": recipe.fingerprint(-1)})
        seed_everything(recipe.seed)
        model, input_size = build_model(recipe.model, recipe.data)
        link_model(model, data, f"model {recipe.model.name or recipe.model.path}",
                   f"set `num_classes: {data.num_classes}` in the recipe's model")
        model.to(device)
        log(f"[0/{len(names)}] input model {recipe.model.name or recipe.model.path}")
        model = _finish_stage(model, in_dir, recipe, data, input_size, device,
                              {"stage": INPUT_STAGE, "method": "input", "input_size": list(input_size)}, log)

    for i, (stage, name) in enumerate(zip(recipe.stages, names), 1):
        stage_dir = run_dir / "stages" / name
        if (stage_dir / "metrics.json").is_file():
            from torchslim.io import load_model

            model = load_model(stage_dir / "model.safetensors").to(device)
            log(f"[{i}/{len(names)}] {name}: done earlier, loaded")
            continue
        log(f"[{i}/{len(names)}] {name}: {stage.method} {json.dumps(stage.params) if stage.params else ''}")
        t0 = time.perf_counter()
        if D.is_main():
            stage_dir.mkdir(parents=True, exist_ok=True)
            write_json(stage_dir / "stage.json", {"fingerprint": recipe.fingerprint(i - 1), "stage": stage.model_dump(mode="json")})
        D.barrier()
        stage_seed = recipe.seed * 1000 + i
        seed_everything(stage_seed)
        ctx = StageContext(recipe=recipe, index=i, name=name, stage_dir=stage_dir, data=data, input_size=input_size,
                           device=device, seed=stage_seed)
        spec = STAGES.get(stage.method)
        info: dict = {"stage": name, "method": stage.method, "params": stage.params, "input_size": list(input_size)}
        budget = stage.budget
        # the uncompressed model teaches its compressed copy during recovery (unless the budget says no)
        teacher = copy.deepcopy(model).eval() if (stage.finetune is not None and stage.finetune.distill_from_input
                                                  and stage.method not in ("finetune", "distill")) else None
        policy_cb = None
        if stage.policies:
            policy_cb = PolicyCallback(spec.fn, stage.params, stage.policies, ctx)
        elif budget is not None and stage.method not in ("finetune", "distill"):
            model = _apply_once(spec.fn, model, stage, ctx, input_size, device)
        else:
            model = spec.fn(model, dict(stage.params), ctx)
            model.to(device)
        if budget is not None:
            if not stage.policies and stage.method not in ("finetune", "distill"):
                # Accuracy right after the method, before recovery: kept, so a resume does not redo it.
                info["before_recovery"] = ctx.cached("before_recovery", lambda: evaluate(
                    model, data.split(recipe.data.eval_split), device=device))
            config = budget.fit_config(seed=stage_seed, device=str(device), progress=progress)
            kind = "finetune" if stage.finetune is not None else "distill"
            config.label = f"{name}: {kind}"  # progress lines name the stage
            ckpt = stage_dir / kind
            callbacks = list(ctx.callbacks) + ([policy_cb] if policy_cb else [])
            if kind == "finetune":
                loss_fn = ctx.loss_fn
                if loss_fn is None and teacher is not None:
                    from torchslim.distill import from_original

                    loss_fn = from_original(teacher)
                    info["recovery_loss"] = "kd from the stage's input model"
                result = fit(model, data.train, val_loader=data.val, config=config, loss_fn=loss_fn,
                             regularizers=ctx.regularizers, callbacks=callbacks, checkpoint_dir=ckpt)
                info["history"] = result.history
                if result.resumed_from:
                    info["resumed_from"] = result.resumed_from
            else:
                history = _History()  # the distill verb returns the student only: record its epochs here
                ctx.callbacks = callbacks + [history]
                model = run_distillation(model, budget, ctx, config, ckpt)
                info["history"] = history.history
            if policy_cb is not None:
                info["policy"] = policy_cb.history
        info["metrics"] = ctx.metrics
        info["artifacts"] = ctx.artifacts
        info["time_s"] = round(time.perf_counter() - t0, 2)
        model = _finish_stage(model, stage_dir, recipe, data, input_size, device, info, log)

    if D.is_main():
        final = run_dir / "model.safetensors"
        tmp = final.with_name("model.safetensors.tmp")
        shutil.copyfile(run_dir / "stages" / names[-1] / "model.safetensors", tmp)
        os.replace(tmp, final)
    summary = {}
    if report and D.is_main():
        from torchslim.report import write_report

        summary = write_report(run_dir)
        log(f"report: {run_dir / 'report.html'}  ({time.perf_counter() - t_run:.1f} s)")
    D.barrier()
    return summary
