"""YAML compression recipes: validated before they run, executed stage by stage, resumable after a kill.

    recipe = load_recipe("recipes/demo_digits.yaml")
    run_recipe(recipe, "runs/demo")          # or: torchslim compress recipes/demo_digits.yaml -o runs/demo
    run_recipe(smoke(recipe), "runs/quick")  # the same stages on a tiny budget (compress --smoke)

New methods plug in through `register_stage` (see torchslim/recipe/stages.py).
"""
from torchslim.recipe.schema import Budget, DistillBudget, ModelSpec, Policy, Recipe, RecipeError, Stage, load_recipe, parse_recipe
from torchslim.recipe.stages import STAGES, StageContext, StageParams, register_stage
from torchslim.recipe.runner import run_recipe
from torchslim.recipe.smoke import smoke

__all__ = ["Budget", "DistillBudget", "ModelSpec", "Policy", "Recipe", "RecipeError", "Stage", "STAGES",
           "StageContext", "StageParams", "load_recipe", "parse_recipe", "register_stage", "run_recipe",
           "smoke"]
