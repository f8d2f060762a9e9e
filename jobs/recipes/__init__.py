"""One recipe per model (torchtune's shape): everything about training it in one module,
with a plain ``Recipe(config).step(batch) -> loss`` that runs without Ray.

    recipe = recipe_for("retriever")(config)   # config: jobs.config.TrainConfig
    loss = recipe.step(batch)

``jobs/train_loop.py`` runs a recipe on Ray Train workers; ``bench/train.py`` times the
same step in a plain loop and inside Ray Train.
"""

from __future__ import annotations

from importlib import import_module

RECIPES = ("retriever", "pitvqa")


def recipe_module(model: str):
    """The module of ``model``'s recipe (``Recipe``, ``METRIC``)."""
    if model not in RECIPES:
        raise ValueError(f"no recipe for {model!r} (choose from {', '.join(RECIPES)})")
    return import_module(f"jobs.recipes.{model}")


def recipe_for(model: str):
    """``model``'s ``Recipe`` class."""
    return recipe_module(model).Recipe
