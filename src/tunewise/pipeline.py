"""Composes the stages: recipe -> data -> audit -> train -> evaluate -> card. Each stage is a plain function over a
RunDir."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tunewise.errors import RecipeError
from tunewise.recipe import Recipe, load_recipe
from tunewise.rundir import RunDir, StageOutcome

STAGES = ("data", "audit", "train", "evaluate", "card")


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


def audit(rd: RunDir, *, force: bool = False, even_if_disabled: bool = False) -> StageOutcome:
    """Stage 1b (audit): duplicates, leakage, labels, PII, licences. Reads data/, writes audit/. Not run when
    `audit.enabled` is false (unless asked for explicitly, as `tunewise audit` does). Blocking findings are
    enforced by the train stage (`check_gate`), not here, so audit/ is always written for the user to read."""
    from tunewise.audit import run_audit

    if not rd.recipe.audit.enabled and not even_if_disabled:
        return StageOutcome("audit", False, 0.0, "audit: disabled (audit.enabled=false); training is not gated")
    return rd.run_stage("audit", lambda out: run_audit(rd.recipe, rd.stage_dir("data"), out), upstream=["data"],
                        force=force)


def audit_recipe(recipe: str | Path | Recipe, overrides: list[str] | None = None, *, force: bool = False,
                 echo: Callable[[str], None] = print) -> Path:
    """`tunewise audit`: the data and audit stages of a recipe (or of an existing run directory), with the
    summary printed; raises AuditBlocked on a blocking finding. Returns the run directory."""
    from tunewise.audit import check_gate, load_findings
    from tunewise.audit.findings import summary_lines

    if not isinstance(recipe, Recipe) and Path(recipe).is_dir():
        if overrides:
            raise RecipeError(f"{recipe} is a run directory, whose recipe is fixed; give overrides with a recipe "
                              f"file instead (e.g. `tunewise audit {Path(recipe) / 'recipe.yaml'} key=value`)")
        rd = RunDir.open(recipe)
    else:
        rd = open_run(recipe, overrides)
    echo(f"run directory: {rd.root}")
    echo(prepare(rd, force=force).message)
    outcome = audit(rd, force=force, even_if_disabled=True)
    echo(outcome.message)
    if not outcome.ran:  # unchanged inputs: show the recorded findings again
        echo("\n".join(summary_lines(load_findings(rd))))
    check_gate(rd, by="audit")
    return rd.root


def export(rd: RunDir, *, merge: bool = True, force: bool = False) -> StageOutcome:
    """A standalone Hugging Face folder of the fine-tuned model (LoRA merged). Reads model/, writes export/."""
    from tunewise.models import resolve_base_model, weight_files
    from tunewise.release.export import export_model

    base = resolve_base_model(rd.recipe.model.base)
    adapter = (rd.stage_dir("train") / "adapter_config.json").is_file()
    previous = rd.stage_dir("export") / "EXPORT.json"
    if previous.is_file() and adapter and json.loads(previous.read_text(encoding="utf-8")).get("merged") != merge:
        force = True  # the other kind of export was asked for
    return rd.run_stage("export", lambda out: export_model(rd.recipe, base, rd.stage_dir("train"), out, merge=merge),
                        external_inputs=weight_files(base.path) if adapter and merge else (),
                        upstream=["train"], force=force)


def run(recipe: str | Path | Recipe, overrides: list[str] | None = None, *, resume: bool = False,
        force: bool = False, echo: Callable[[str], None] = print) -> Path:
    """Run every stage in order, skipping those whose inputs are unchanged. Returns the run directory."""
    from tunewise.evaluate import evaluate
    from tunewise.release import card
    from tunewise.train import train

    rd = open_run(recipe, overrides)
    echo(f"run directory: {rd.root}")
    steps = [lambda: prepare(rd, force=force), lambda: audit(rd, force=force),
             lambda: train(rd, resume=resume, force=force),  # stops here on blocking audit findings
             lambda: evaluate(rd, force=force), lambda: card(rd, force=force)]
    if rd.recipe.causal:  # a standalone merged folder, loadable by plain transformers and vLLM
        steps.append(lambda: export(rd, force=force))
    for step in steps:
        echo(step().message)
    return rd.root
