"""Smoke runs: the same recipe, the same stages, a tiny budget, to find out in a minute whether a
recipe runs end to end before committing hours to it.

    torchslim compress recipes/filter_pruning_resnet56.yaml --smoke -o runs/r56-smoke

A smoke run trains on a few hundred images for at most one epoch per budget, so its accuracies are
not the recipe's results: its name ends in `-smoke`, its report says so at the top, and its settings
enter the recipe's fingerprint, so its stages never mix with a real run's in one folder.
"""
from __future__ import annotations

import yaml

from torchslim.errors import InvalidInputError
from torchslim.recipe.schema import Policy, Recipe, parse_recipe
from torchslim.recipe.stages import STAGES


def _rescale(p: Policy, old: int, new: int) -> Policy:
    """The policy's ramp moved from `old` budget epochs into `new` (it still ends on `final`)."""
    def at(epoch: int) -> int:
        return min(epoch * new // max(old, 1), new - 1)

    start, end = at(p.start_epoch), at(p.end_epoch)
    every = max(1, min(p.every * new // max(old, 1), end - start or 1))
    return p.model_copy(update={"start_epoch": start, "end_epoch": end, "every": every})


def smoke(recipe: Recipe, *, images: int = 256, epochs: int = 1, steps: int | None = None) -> Recipe:
    """A copy of `recipe` that runs the same stages on a tiny budget.

    Args:
        recipe: a validated recipe (`load_recipe`).
        images: train images, and images per eval split (`data.limit_train` / `limit_eval`).
        epochs: the most epochs of any `finetune` / `distill` budget (policies are squeezed into them).
        steps: the most optimizer steps per epoch (`max_steps_per_epoch`), None for no cap.

    Each method may shrink an expensive option of its own through its params' `smoke` hook
    (`StageParams.smoke`; the prune stage's sensitivity scan keeps one ratio and one batch).
    Latency is measured briefly: a smoke run's figures are not reference figures.

    Example:
        >>> quick = smoke(load_recipe("recipes/filter_pruning_resnet56.yaml"), images=128)
        >>> run_recipe(quick, "runs/r56-smoke")
    """
    if recipe.smoke:
        raise InvalidInputError(f"recipe {recipe.name!r} is already a smoke run")
    if images < 1 or epochs < 1 or (steps is not None and steps < 1):
        raise InvalidInputError(f"smoke budget must be positive (images={images}, epochs={epochs}, steps={steps})")

    def cap(value: int | None, limit: int | None) -> int | None:
        return limit if value is None else (value if limit is None else min(value, limit))

    stages = []
    for stage in recipe.stages:
        update: dict = {}
        spec = STAGES.get(stage.method)
        hook = getattr(spec.params, "smoke", None)
        if hook is not None:
            update["params"] = hook(dict(stage.params))
        budget = stage.budget
        if budget is not None:
            new = min(budget.epochs, epochs)
            small = budget.model_copy(update={
                "epochs": new, "max_steps_per_epoch": cap(budget.max_steps_per_epoch, steps),
                "warmup_epochs": min(budget.warmup_epochs, new), "step_epochs": max(1, min(budget.step_epochs, new))})
            update["finetune" if stage.finetune is not None else "distill"] = small
            update["policies"] = [_rescale(p, budget.epochs, max(new, 1)) for p in stage.policies]
        stages.append(stage.model_copy(update=update))
    d = recipe.data
    data = d.model_copy(update={"limit_train": cap(d.limit_train, images), "limit_eval": cap(d.limit_eval, images)})
    m = recipe.measure
    measure = m.model_copy(update={"repeats": min(m.repeats, 5), "min_time_s": min(m.min_time_s, 0.05)})
    settings = {"images": images, "epochs": epochs, "steps": steps}
    note = "[smoke run: tiny budget, not the recipe's results]"
    out = recipe.model_copy(update={
        "name": f"{recipe.name}-smoke", "description": f"{note} {recipe.description}".strip(),
        "stages": stages, "data": data, "measure": measure})
    # the whole file's checks again (method params, policies within their budgets)
    text = yaml.safe_dump(out.model_dump(mode="json", exclude={"smoke"}), sort_keys=False)
    checked = parse_recipe(text, f"{recipe.source or recipe.name} (smoke)")
    checked.smoke, checked.source = settings, recipe.source
    return checked
