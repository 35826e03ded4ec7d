"""The stage registry: every stage declared once.

A stage is a package under `tunewise/` with one run function, `run(rd, options) -> StageOutcome`. It owns one
folder of the run directory, reads only the folders of the stages it `needs`, and writes only its own folder
(plus `extra_outputs` at the run root). The pipeline, the run directory (folders, upstream hashes), `verify` and
the CLI all read this table; nothing else names a stage's folder.

Adding a stage means adding its package and one `Stage(...)` line here (docs/architecture.md shows how).
This module imports nothing heavy: run functions are named by dotted path and imported when the stage runs.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunewise.errors import RunDirError

if TYPE_CHECKING:
    from tunewise.recipe import Recipe
    from tunewise.rundir import RunDir, StageOutcome


@dataclass(frozen=True)
class RunOptions:
    """What a caller may ask of any stage run."""

    force: bool = False       # rerun even when the inputs are unchanged
    resume: bool = False      # train: continue an interrupted training from its last checkpoint
    merge: bool = True        # export: merge LoRA adapters into the base weights (else export the adapter alone)
    explicit: bool = False    # asked for by name (`tunewise audit`), so it runs even when the recipe disables it


def _always(recipe: "Recipe") -> bool:
    return True


def _audit_enabled(recipe: "Recipe") -> bool:
    return recipe.audit.enabled


def _exports_in_run(recipe: "Recipe") -> bool:
    from tunewise.tasks import task_for

    return task_for(recipe).export_in_run


@dataclass(frozen=True)
class Stage:
    name: str                                   # the CLI verb and the manifest key
    folder: str                                 # the run-directory folder it owns
    needs: tuple[str, ...]                      # stages whose outputs it reads (those enabled for the recipe)
    run_path: str                               # "module:function", run(rd, options) -> StageOutcome
    summary: str                                # one line, for `--help` and the docs
    enabled: Callable[["Recipe"], bool] = _always  # whether `tunewise run` runs it for this recipe
    extra_outputs: tuple[str, ...] = ()         # files outside its folder, relative to the run root
    cli: tuple[str, ...] | None = ()            # RunOptions flags its `tunewise NAME RUN` command offers besides
                                                # --force; None: no such command (run through `run` or `audit`)

    def upstream(self, recipe: "Recipe") -> list[str]:
        """The stages whose recorded outputs are this stage's inputs, for this recipe."""
        return [n for n in self.needs if get(n).enabled(recipe)]

    def run(self, rd: "RunDir", options: RunOptions = RunOptions()) -> "StageOutcome":
        return load(self.run_path)(rd, options)


def load(path: str) -> Callable:
    """The function a "module:function" path names, imported when first asked for (keeps start-up light)."""
    module, _, func = path.partition(":")
    return getattr(importlib.import_module(module), func)


STAGES: tuple[Stage, ...] = (
    Stage("data", "data", (), "tunewise.data.stage:run",
          "read, validate, quarantine and split the data files", cli=None),
    Stage("audit", "audit", ("data",), "tunewise.audit:run",
          "duplicates, leakage, label noise, PII and licences; the datasheet", enabled=_audit_enabled, cli=None),
    Stage("train", "model", ("data", "audit"), "tunewise.train:run",
          "fine-tune the base model (full or LoRA)", cli=("resume",)),
    Stage("evaluate", "eval", ("data", "train"), "tunewise.evaluate:run",
          "score the model and its baselines on the test split, with bootstrap CIs"),
    Stage("card", "card", ("data", "audit", "train", "evaluate"), "tunewise.card:run",
          "the model card and the run's report.html", extra_outputs=("report.html",)),
    Stage("export", "export", ("train",), "tunewise.export:run",
          "a standalone Hugging Face folder of the model (LoRA merged)", enabled=_exports_in_run,
          cli=("merge",)),
)
_BY_NAME = {s.name: s for s in STAGES}


def get(name: str) -> Stage:
    """The stage called `name`; an unknown name is an error (never a new folder)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        hint = difflib.get_close_matches(name, _BY_NAME, n=1)
        raise RunDirError(f"unknown stage {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f"; stages: {', '.join(_BY_NAME)}") from None


def names() -> list[str]:
    return [s.name for s in STAGES]


def by_folder(folder: str) -> Stage | None:
    return next((s for s in STAGES if s.folder == folder), None)
