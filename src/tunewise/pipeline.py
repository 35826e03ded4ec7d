"""Composes the stages of the registry (stages.py) over one run directory. Each stage is a plain function
`run(rd, options)`; this module only opens the run and calls them in order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tunewise import stages
from tunewise.errors import RecipeError
from tunewise.recipe import Recipe, load_recipe
from tunewise.rundir import RunDir, StageOutcome
from tunewise.stages import RunOptions


def open_run(recipe: str | Path | Recipe, overrides: list[str] | None = None, *, fresh: bool = False) -> RunDir:
    """The run directory for a recipe (created on first use; reopened when the resolved recipe is the same).
    `fresh`: start a new manifest over a run directory made by an older tunewise."""
    recipe_dir = None
    if not isinstance(recipe, Recipe):
        recipe_dir = str(Path(recipe).resolve().parent)
        recipe = load_recipe(recipe, overrides or [])
    elif overrides:
        raise TypeError("overrides apply to a recipe file; pass a path, or change the Recipe object instead")
    rd = RunDir.for_recipe(recipe, fresh=fresh)
    if recipe_dir and rd.manifest.get("recipe_dir") is None:  # cards show local paths relative to it
        rd.manifest["recipe_dir"] = recipe_dir
        rd.save_manifest()
    return rd


def run_stage(rd: RunDir, name: str, options: RunOptions = RunOptions()) -> StageOutcome:
    """Run one stage of the registry by name (an unknown name raises)."""
    return stages.get(name).run(rd, options)


def run(recipe: str | Path | Recipe, overrides: list[str] | None = None, *, resume: bool = False,
        force: bool = False, nproc: int = 1, echo: Callable[[str], None] = print) -> Path | None:
    """Run every stage the recipe enables, in registry order, skipping those whose inputs are unchanged.
    Returns the run directory. Blocking audit findings stop the run at the train stage.

    `nproc` > 1 trains on that many processes (DDP). Started by torchrun or accelerate launch (WORLD_SIZE set),
    every rank calls this: rank 0 runs the stages, the other ranks only train beside it (they return None)."""
    from tunewise.hardware import refuse_silent_single_process, world_from_env
    from tunewise.train.distributed import check_parallel_config

    refuse_silent_single_process()
    world = world_from_env()
    resolved = recipe if isinstance(recipe, Recipe) else load_recipe(recipe, overrides or [])
    check_parallel_config(resolved, max(nproc, world.size))  # refuse what cannot work before anything runs
    if world.size > 1:
        return _run_launched(recipe, overrides, resolved, resume=resume, force=force, echo=echo)
    return _run_stages(recipe, overrides, resume=resume, force=force, nproc=nproc, echo=echo)


def _run_stages(recipe, overrides, *, resume: bool, force: bool, nproc: int, echo: Callable[[str], None]) -> Path:
    rd = open_run(recipe, overrides, fresh=force)
    echo(f"run directory: {rd.root}")
    options = RunOptions(force=force, resume=resume, nproc=nproc)
    for stage in stages.STAGES:
        if stage.enabled(rd.recipe):
            echo(stage.run(rd, options).message)
    if stages.get("gate").enabled(rd.recipe):
        from tunewise.artifacts.gate import require_gate_passed

        require_gate_passed(rd)  # after everything is written: GateFailed (exit 3) when a rule failed
    return rd.root


def _run_launched(recipe, overrides, resolved: Recipe, *, resume: bool, force: bool,
                  echo: Callable[[str], None]) -> Path | None:
    """Under torchrun / accelerate launch: rank 0 runs every stage (data and audit once, while the other ranks
    wait); the train stage announces itself and all ranks train; then rank 0 evaluates and writes the card alone."""
    from tunewise.hardware import (announce_training, await_training, choose_placement, join_launched_group,
                                   world_from_env)

    world = world_from_env()
    join_launched_group(world, choose_placement(resolved.train.device, resolved.train.precision).device)
    if not world.is_main:
        from tunewise.train import train_as_follower

        job = await_training()
        if job is not None:
            train_as_follower(job)
        return None  # rank 0 reports the run
    try:
        return _run_stages(recipe, overrides, resume=resume, force=force, nproc=1, echo=echo)
    finally:  # a failure before training (e.g. a blocking audit finding) must not leave the other ranks waiting
        announce_training(None)


def audit_recipe(recipe: str | Path | Recipe, overrides: list[str] | None = None, *, force: bool = False,
                 echo: Callable[[str], None] = print) -> Path:
    """`tunewise audit`: the data and audit stages of a recipe (or of an existing run directory), with the
    summary printed; raises AuditBlocked on a blocking finding. Returns the run directory."""
    from tunewise.artifacts.findings import read_findings, require_audit_passed
    from tunewise.audit.findings import summary_lines

    if not isinstance(recipe, Recipe) and Path(recipe).is_dir():
        if overrides:
            raise RecipeError(f"{recipe} is a run directory, whose recipe is fixed; give overrides with a recipe "
                              f"file instead (e.g. `tunewise audit {Path(recipe) / 'recipe.yaml'} key=value`)")
        rd = RunDir.open(recipe)
    else:
        rd = open_run(recipe, overrides, fresh=force)
    echo(f"run directory: {rd.root}")
    echo(run_stage(rd, "data", RunOptions(force=force)).message)
    outcome = run_stage(rd, "audit", RunOptions(force=force, explicit=True))
    echo(outcome.message)
    if not outcome.ran:  # unchanged inputs: show the recorded findings again
        echo("\n".join(summary_lines(read_findings(rd).to_json())))
    require_audit_passed(rd, by="audit")
    return rd.root
