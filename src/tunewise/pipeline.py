"""Composes the stages: recipe -> data -> train -> evaluate -> card. Each stage is a plain function over a RunDir."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tunewise.recipe import Recipe, load_recipe
from tunewise.rundir import RunDir, StageOutcome

STAGES = ("data", "train", "evaluate", "card")


def open_run(recipe: str | Path | Recipe, overrides: list[str] | None = None) -> RunDir:
    """The run directory for a recipe (created on first use; reopened when the resolved recipe is the same)."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides or [])
    elif overrides:
        raise TypeError("overrides apply to a recipe file; pass a path, or change the Recipe object instead")
    return RunDir.for_recipe(recipe)


def prepare(rd: RunDir, *, force: bool = False) -> StageOutcome:
    """Stage 1 (data): read, validate, quarantine and split. Writes data/."""
    from tunewise.data.prepare import data_files, prepare_data

    return rd.run_stage("data", lambda out: prepare_data(rd.recipe, out), external_inputs=data_files(rd.recipe),
                        force=force)


def run(recipe: str | Path | Recipe, overrides: list[str] | None = None, *, resume: bool = False,
        force: bool = False, echo: Callable[[str], None] = print) -> Path:
    """Run every stage in order, skipping those whose inputs are unchanged. Returns the run directory."""
    from tunewise.evaluate import evaluate
    from tunewise.release import card
    from tunewise.train import train

    rd = open_run(recipe, overrides)
    echo(f"run directory: {rd.root}")
    for step in (lambda: prepare(rd, force=force), lambda: train(rd, resume=resume, force=force),
                 lambda: evaluate(rd, force=force), lambda: card(rd, force=force)):
        outcome = step()
        echo(outcome.message)
    return rd.root
