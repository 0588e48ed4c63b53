"""The recipe schema: a YAML file checked completely before anything runs.

A recipe names a model, a data set and an ordered list of stages. Each stage applies one method
(`prune`, `sparsify`, `decompose`, `quantize`, `encode`, `distill`, `finetune`, `evaluate`, `export`,
or one a user registered) with its params, then optionally recovers with a `finetune` or `distill`
budget; `policies` ramp one param over the budget's epochs (AGP sparsity, Zhu & Gupta 2017, eq. 1).
Every mistake is reported with the file, the line and what is allowed, e.g.

    recipes/x.yaml:14: stages[1].finetune.optimizer: 'sgdd' is not allowed; allowed: 'sgd', 'adam', 'adamw'
"""
from __future__ import annotations

import hashlib
import json
import os
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from torchslim.errors import InvalidInputError


class RecipeError(InvalidInputError):
    """A recipe that does not validate; `.problems` lists (file, line, location, message)."""

    def __init__(self, problems: list[tuple[str, int | None, str, str]]):
        self.problems = problems
        lines = [f"{f}:{line}: {loc}: {msg}" if line else f"{f}: {loc}: {msg}" for f, line, loc, msg in problems]
        super().__init__(lines[0] if len(lines) == 1 else
                         f"{len(lines)} problems in the recipe:\n  " + "\n  ".join(lines))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    """The model to start from: a registry name (`digits_cnn`, `resnet56`, `torchvision:resnet18`,
    `timm:mixnet_s`), the user's own code (`net.py:build` or `package.module:build`, called with `kwargs`),
    or `path` to a model saved by torchslim, with `code` naming its user code again (relative paths are
    relative to the recipe file)."""

    name: str | None = None
    path: str | None = None
    code: str | None = None
    pretrained: bool = False
    weights: str | None = None
    num_classes: int | None = Field(default=None, gt=0)
    kwargs: dict[str, Any] = {}
    input_size: list[int] | None = Field(default=None, min_length=3, max_length=3)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.name is None) == (self.path is None):
            raise ValueError("give exactly one of `name` (a model name) or `path` (a saved torchslim model)")
        if self.name is not None:
            from torchslim.models import MODELS

            from torchslim.models.user import is_factory_spec

            if not self.name.startswith(("torchvision:", "timm:")) and self.name not in MODELS \
                    and not is_factory_spec(self.name):
                raise ValueError(f"unknown model {self.name!r}; allowed: {', '.join(MODELS.names())}, "
                                 "torchvision:<name>, timm:<name>, path/to/file.py:factory, package.module:factory")
        return self


class DataSpec(_Strict):
    """`name` of a data set (`cifar10`, `torchvision:CIFAR100` over `data_dir`) or `path` of a folder of
    images (train/ and val/ of class folders, or class folders; relative to the recipe file)."""

    name: str | None = None
    path: str | None = None
    cache: bool = False  # image folders: decoded, resized images in one memory-mapped uint8 file
    skip_bad_images: bool = False
    batch_size: int = Field(default=128, gt=0)
    eval_batch_size: int = Field(default=512, gt=0)
    limit_train: int | None = Field(default=None, gt=0)
    limit_eval: int | None = Field(default=None, gt=0)
    augment: bool = True
    data_dir: str | None = None
    workers: int | None = Field(default=None, ge=0)  # default: 0 for npz data, the cores for image files
    eval_split: Literal["val", "heldout", "test"] = "test"  # the split the report's accuracy is measured on
    # how `val` is chosen (torchslim.data.PROTOCOLS); default: the data set's own (cifar10: test-half)
    protocol: Literal["test-half", "train-split"] | None = None

    @model_validator(mode="after")
    def _known(self):
        from torchslim.data import DATASETS

        if (self.name is None) == (self.path is None):
            raise ValueError("give exactly one of `name` (a data set) or `path` (a folder of images)")
        if self.name is not None and self.name not in DATASETS and not self.name.startswith("torchvision:"):
            raise ValueError(f"unknown data set {self.name!r}; allowed: {', '.join(DATASETS.names())}")
        return self


def _fit_fields() -> dict:
    """`FitConfig`'s fields that a recipe budget sets, as pydantic fields with the same defaults, allowed
    values and bounds (the metadata FitConfig declares them with): one declaration of a training budget."""
    import dataclasses

    from torchslim.train.fit import FitConfig

    hints = typing.get_type_hints(FitConfig)
    out = {}
    for f in dataclasses.fields(FitConfig):
        meta = f.metadata
        if not meta.get("budget", True):
            continue
        kind = Literal[meta["choices"]] if meta.get("choices") else hints[f.name]
        bounds = {k: meta[k] for k in ("ge", "gt", "lt") if meta.get(k) is not None}
        out[f.name] = (kind, Field(default=f.default, description=meta.get("help"), **bounds))
    return out


_BudgetFields = create_model("_BudgetFields", __base__=_Strict, **_fit_fields())


class Budget(_BudgetFields):
    """A fine-tuning budget: the fields of `torchslim.train.FitConfig` (seed and device come from the
    recipe), generated from it, plus what a recipe decides about recovery."""

    # recovery after a compression stage: Hinton KD from the stage's input model besides the labels
    # (torchslim.distill.from_original); false: the labels alone
    distill_from_input: bool = True

    def fit_config(self, *, seed: int, device: str, progress: bool = True):
        from torchslim.train import FitConfig

        fields = self.model_dump(exclude={"teacher", "method", "params", "distill_from_input"})
        return FitConfig(**fields, seed=seed, device=device, progress=progress)


class DistillBudget(Budget):
    """Recovery by knowledge distillation from `teacher` (`torchslim.distill`)."""

    teacher: ModelSpec
    method: list[str] = ["kd"]
    params: dict[str, Any] = {}  # e.g. temperature, alpha: passed to torchslim.distill


class Policy(_Strict):
    """Ramp the stage param `param` from `initial` (epoch `start_epoch`) to `final` (epoch `end_epoch`),
    re-applying the stage's method every `every` epochs of its budget.

    `agp` is Zhu & Gupta's gradual schedule (2017, eq. 1): s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3.
    """

    param: str
    start_epoch: int = Field(default=0, ge=0)
    end_epoch: int = Field(ge=0)
    initial: float = 0.0
    final: float
    schedule: Literal["agp", "linear"] = "agp"
    every: int = Field(default=1, gt=0)

    @model_validator(mode="after")
    def _order(self):
        if self.end_epoch < self.start_epoch:
            raise ValueError(f"end_epoch {self.end_epoch} is before start_epoch {self.start_epoch}")
        return self

    def epochs(self) -> list[int]:
        """The epochs at which the method is (re)applied."""
        out = list(range(self.start_epoch, self.end_epoch + 1, self.every))
        return out if out[-1] == self.end_epoch else out + [self.end_epoch]

    def value(self, epoch: int) -> float:
        """The param's value from `epoch` on (the last application at or before it)."""
        applied = [e for e in self.epochs() if e <= epoch]
        if not applied:
            return self.initial
        t = applied[-1]
        if t >= self.end_epoch:  # also a ramp that starts and ends in one epoch: it applies `final` there
            return self.final
        frac = (t - self.start_epoch) / (self.end_epoch - self.start_epoch)
        if self.schedule == "agp":
            return self.final + (self.initial - self.final) * (1 - frac) ** 3
        return self.initial + (self.final - self.initial) * frac


class Stage(_Strict):
    method: str
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    params: dict[str, Any] = {}
    finetune: Budget | None = None
    distill: DistillBudget | None = None
    policies: list[Policy] = []

    @model_validator(mode="after")
    def _check(self):
        from torchslim.recipe.stages import STAGES

        if self.method not in STAGES:
            raise ValueError(f"unknown method {self.method!r}; allowed: {', '.join(STAGES.names())}")
        if self.finetune is not None and self.distill is not None:
            raise ValueError("give a `finetune` or a `distill` budget, not both")
        budget = self.budget
        if STAGES.get(self.method).needs_budget and budget is None:
            raise ValueError(f"method {self.method!r} needs a `finetune` or `distill` budget (epochs, lr, ...)")
        if self.policies and budget is None:
            raise ValueError("policies run during recovery: add a `finetune` or `distill` budget")
        return self

    @property
    def budget(self) -> Budget | None:
        return self.finetune if self.finetune is not None else self.distill


class Measure(_Strict):
    """What is measured after every stage (for the report)."""

    latency: bool = True
    runtimes: list[Literal["torch", "onnxruntime", "openvino"]] = ["torch", "onnxruntime", "openvino"]
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 where the runtime and the CPU run it, else fp32 (noted)
    batch_size: int = Field(default=1, gt=0)
    threads: int | None = Field(default=1, gt=0)
    repeats: int = Field(default=30, gt=0)
    min_time_s: float = Field(default=0.5, ge=0)
    per_layer: bool = True


class Recipe(_Strict):
    name: str
    description: str = ""
    seed: int = 0
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")  # auto: cuda:LOCAL_RANK or cpu
    model: ModelSpec
    data: DataSpec
    stages: list[Stage] = Field(min_length=1)
    measure: Measure = Measure()
    # Set by `torchslim.recipe.smoke` (never in a file): the cut-down budget of a smoke run. It enters the
    # fingerprint, so a smoke run and a real run never share a run folder's stages.
    smoke: dict[str, Any] | None = None
    source: str | None = Field(default=None, exclude=True)  # the file it was read from

    def stage_names(self) -> list[str]:
        """Unique directory names `NN-name` of the stages, NN from 01 (00 is the input model)."""
        out, seen = [], set()
        for i, s in enumerate(self.stages, 1):
            base = s.name or s.method
            name = base if base not in seen else f"{base}{i}"
            seen.add(name)
            out.append(f"{i:02d}-{name}")
        return out

    def fingerprint(self, upto: int) -> str:
        """Hash of everything that determines stage `upto`'s result (model, data, seed, stages[:upto+1])."""
        head = self.model_dump(include={"seed", "model", "data"} | ({"smoke"} if self.smoke else set()), mode="json")
        # fields added later, at their defaults, leave earlier run folders' fingerprints as they were
        for part, key, default in (("data", "path", None), ("data", "cache", False),
                                   ("data", "skip_bad_images", False), ("model", "code", None),
                                   ("data", "protocol", None)):
            if head[part].get(key) == default:
                head[part].pop(key, None)
        if head["data"].get("workers") is None:
            head["data"]["workers"] = 0
        body = [s.model_dump(mode="json") for s in self.stages[: max(upto + 1, 0)]]
        return hashlib.sha256(json.dumps([head, body], sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------ loading with line numbers
def _marks(node: yaml.Node, path: tuple = ()) -> dict[tuple, int]:
    """Line (1-based) of every key and item in a composed YAML tree, keyed by its path."""
    out = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out.update(_marks(v, path + (key,)))
            out[path + (key,)] = k.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out.update(_marks(v, path + (i,)))
    return out


def _line(marks: dict[tuple, int], loc: tuple) -> int | None:
    for n in range(len(loc), -1, -1):
        if tuple(loc[:n]) in marks:
            return marks[tuple(loc[:n])]
    return None


def _loc_text(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _model_at(loc: tuple, data: Any) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at `loc` (to list its allowed keys)."""
    cls: Any = Recipe
    for i, part in enumerate(loc):
        if isinstance(part, int):
            continue
        if cls is None or not (isinstance(cls, type) and issubclass(cls, BaseModel)) or part not in cls.model_fields:
            return None
        if part == "params" and cls is Stage:
            return _params_model(loc[:i], data)
        ann = cls.model_fields[part].annotation
        cls = _inner_model(ann)
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _inner_model(ann) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _params_model(stage_loc: tuple, data: Any):
    from torchslim.recipe.stages import STAGES

    try:
        node = data
        for part in stage_loc:
            node = node[part]
        return STAGES.get(node["method"]).params
    except Exception:
        return None


def _message(err: dict, loc: tuple, data: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1], data)
        allowed = f"; allowed: {', '.join(model.model_fields)}" if model is not None else ""
        return f"unknown key {loc[-1]!r}{allowed}"
    if kind == "missing":
        return "required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if kind in ("literal_error", "enum"):
        expected = err.get("ctx", {}).get("expected", "")
        return f"{err.get('input')!r} is not allowed; allowed: {expected.replace(' or ', ', ')}"
    if "input" in err and kind not in ("value_error", "assertion_error") and not isinstance(err["input"], (dict, list)):
        return f"{msg} (got {err['input']!r})"
    return msg


def _problems(e: ValidationError, prefix: tuple, marks, data, filename) -> list:
    out = []
    for err in e.errors():
        loc = prefix + tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        out.append((filename, _line(marks, loc), _loc_text(loc), _message(err, loc, data)))
    return out


def parse_recipe(text: str, filename: str = "<recipe>", base_dir: str | os.PathLike | None = None) -> Recipe:
    """Validate recipe text; raises `RecipeError` listing every problem with its line.

    With `base_dir`, relative model/teacher/weights paths are resolved against it and must exist.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise RecipeError([(filename, mark.line + 1 if mark else None, "YAML", str(e.problem or e))]) from None
    if not isinstance(data, dict):
        raise RecipeError([(filename, 1, "(top level)", "a recipe is a mapping with name, model, data and stages")])
    marks = _marks(node)
    if "smoke" in data:
        raise RecipeError([(filename, _line(marks, ("smoke",)), "smoke", "a smoke run is made from a recipe with "
                            "`torchslim compress RECIPE --smoke` (torchslim.recipe.smoke), not written in the file")])
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(_problems(e, (), marks, data, filename)) from None
    # Each method checks its own params (the stage registry holds a pydantic model per method).
    from torchslim.recipe.stages import STAGES

    problems = []
    for i, stage in enumerate(recipe.stages):
        model = STAGES.get(stage.method).params
        if model is None:
            continue
        try:
            stage.params = model.model_validate(stage.params).model_dump(exclude_unset=True)
        except ValidationError as e:
            problems += _problems(e, ("stages", i, "params"), marks, data, filename)
        for j, p in enumerate(stage.policies):
            if p.end_epoch >= max(stage.budget.epochs, 1):
                problems.append((filename, _line(marks, ("stages", i, "policies", j, "end_epoch")),
                                 f"stages[{i}].policies[{j}].end_epoch",
                                 f"policy on {p.param!r} ends at epoch {p.end_epoch} but the budget has "
                                 f"{stage.budget.epochs} epochs (0..{stage.budget.epochs - 1})"))
            if p.param not in model.model_fields:
                problems.append((filename, _line(marks, ("stages", i, "policies", j, "param")),
                                 f"stages[{i}].policies[{j}].param",
                                 f"{stage.method} has no param {p.param!r}; allowed: {', '.join(model.model_fields)}"))
    if base_dir is not None:
        specs = [(("model",), recipe.model)] + [(("stages", i, "distill", "teacher"), st.distill.teacher)
                                                 for i, st in enumerate(recipe.stages) if st.distill is not None]
        for loc, spec in specs:
            for key in ("path", "weights"):
                value = getattr(spec, key)
                if value is None:
                    continue
                full = Path(value) if Path(value).is_absolute() else (Path(base_dir) / value).resolve()
                if not full.is_file():
                    problems.append((filename, _line(marks, loc + (key,)), _loc_text(loc + (key,)),
                                     f"file {str(full)!r} does not exist"))
                setattr(spec, key, str(full))
        problems += _resolve_paths(recipe, Path(base_dir), marks, filename)
    if problems:
        raise RecipeError(problems)
    recipe.source = filename
    return recipe


def _resolve_paths(recipe: Recipe, base: Path, marks, filename) -> list:
    """The data folder and user-code files, made absolute against the recipe's folder; they must exist."""
    from torchslim.models.user import is_factory_spec

    problems = []

    def absolute(value: str) -> Path:
        return Path(value) if Path(value).is_absolute() else (base / value).resolve()

    if recipe.data.path is not None:
        full = absolute(recipe.data.path)
        if not full.is_dir():
            problems.append((filename, _line(marks, ("data", "path")), "data.path",
                             f"folder {str(full)!r} does not exist"))
        recipe.data.path = str(full)
    for key in ("name", "code"):
        spec = getattr(recipe.model, key)
        if spec and is_factory_spec(spec) and spec.rpartition(":")[0].endswith(".py"):
            where, _, func = spec.rpartition(":")
            if not absolute(where).is_file():
                problems.append((filename, _line(marks, ("model", key)), f"model.{key}",
                                 f"file {str(absolute(where))!r} does not exist"))
            setattr(recipe.model, key, f"{absolute(where)}:{func}")
    return problems


def shipped_recipes() -> dict[str, Path]:
    """The ready recipes that come with torchslim (`recipes/`), by name (file name without .yaml)."""
    from torchslim.paths import RECIPES_DIR

    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


def find_recipe(path: str | os.PathLike) -> Path:
    """`path` if it is a file, else the shipped recipe of that name (`demo_digits`, `demo_digits.yaml`)."""
    p = Path(path)
    if p.is_file():
        return p
    shipped = shipped_recipes()
    if p.parent == Path(".") and p.name.removesuffix(".yaml") in shipped:
        return shipped[p.name.removesuffix(".yaml")]
    raise FileNotFoundError(f"recipe file {str(p)!r} does not exist; shipped recipes: {', '.join(shipped) or 'none'}")


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read and validate a recipe file, or a shipped recipe by name. Relative model paths are resolved
    against the file's folder and must exist.

    Example:
        >>> recipe = load_recipe("recipes/demo_digits.yaml")   # or load_recipe("demo_digits")
        >>> [s.method for s in recipe.stages]
        ['finetune', 'evaluate', 'export']
    """
    path = find_recipe(path)
    return parse_recipe(path.read_text(), str(path), base_dir=path.parent)
