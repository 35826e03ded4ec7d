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
    onnx: bool = False        # export: also build an ONNX Runtime backend of an encoder classifier (export/onnx/)
    int8: bool = False        # export --onnx: quantize its weights to int8
    explicit: bool = False    # asked for by name (`tunewise audit`), so it runs even when the recipe disables it
    nproc: int = 1            # train: processes to train on (DDP; `tunewise run --nproc N`)


def _always(recipe: "Recipe") -> bool:
    return True


def _audit_enabled(recipe: "Recipe") -> bool:
    return recipe.audit.enabled


def _guard_recipe(recipe: "Recipe") -> bool:
    return recipe.guard.enabled


def _probes_enabled(recipe: "Recipe") -> bool:
    return recipe.probes.enabled


def _faithfulness_enabled(recipe: "Recipe") -> bool:
    from tunewise.faithfulness import enabled  # light: the package imports its heavy parts when it runs

    return enabled(recipe)


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
    state: tuple[str, ...] = ()                 # glob patterns (relative to its folder) of live state kept there,
                                                # e.g. a ratings database: not evidence, so neither hashed into the
                                                # manifest nor reported by `verify` as unrecorded
    live_inputs: bool = False                   # its external inputs are live files (a serving log that grows
                                                # and rotates): recorded for provenance, not required to stay

    def is_state(self, rel: str) -> bool:
        """Whether a path relative to the stage's folder is live state (see `state`)."""
        import fnmatch

        return any(fnmatch.fnmatch(rel, pattern) for pattern in self.state)

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
          "fine-tune the base model (full or LoRA)", cli=("resume", "nproc")),
    Stage("reference", "reference", ("data", "train"), "tunewise.monitor.reference:run",
          "profile the held-out test split (texts, tokens, vocabulary, predictions, confidence, embeddings) for "
          "monitoring"),
    Stage("evaluate", "eval", ("data", "audit", "train"), "tunewise.evaluate:run",
          "score the model and its baselines on the test split, with bootstrap CIs and slice gaps"),
    Stage("probes", "probes", ("data", "train"), "tunewise.probes:run",
          "bias and robustness probes: identity-term swaps, noise, CrowS-Pairs (probes/probes.json)",
          enabled=_probes_enabled),
    Stage("faithfulness", "faithfulness", ("data", "evaluate"), "tunewise.faithfulness:run",
          "score each generated output for content its source does not support, fine-tuned and base side by side "
          "(faithfulness/faithfulness.json)", enabled=_faithfulness_enabled),
    Stage("guard", "guard", ("data", "train"), "tunewise.guard:run",
          "injection-guard recipes: choose the threshold on validation for a target FPR; detection at fixed FPRs "
          "on test, with CIs (guard/guard.json)", enabled=_guard_recipe),
    Stage("gate", "gate", ("evaluate", "audit", "probes"), "tunewise.gate:run",
          "the release gate: check the recipe's gate rules against the run's evidence (gate/gate.json)",
          cli=None),
    Stage("card", "card", ("data", "audit", "train", "evaluate", "probes", "faithfulness", "guard", "gate"), "tunewise.card:run",
          "the model card and the run's report.html", extra_outputs=("report.html",)),
    Stage("export", "export", ("data", "train"), "tunewise.export:run",
          "a standalone Hugging Face folder of the model (LoRA merged); --onnx: an ONNX Runtime backend of a "
          "classifier, checked against torch on the test split", enabled=_exports_in_run,
          cli=("merge", "onnx", "int8")),
    Stage("monitor", "monitor", ("reference",), "tunewise.monitor:run",
          "drift of logged traffic against the reference profile, accuracy from feedback, a costed retrain signal "
          "(`tunewise monitor RUN --log ...`)", enabled=lambda r: False, cli=None,
          live_inputs=True),
    Stage("humaneval", "humaneval", ("data", "evaluate"), "tunewise.humaneval:run",
          "human ratings of test outputs (win rate, Likert means, agreement) from `tunewise human-eval`",
          enabled=lambda r: False, cli=None, state=("ratings.sqlite*",)),
    Stage("serve", "serve", ("train", "export"), "tunewise.serve:run",
          "serve the model over HTTP behind keys, limits, the injection guard and PII redaction, with a prediction "
          "log (`tunewise serve RUN`; serve/serve.json records what is served)", enabled=lambda r: False, cli=None),
    Stage("servebench", "servebench", ("train", "export"), "tunewise.serve.bench:run",
          "load /v1/classify as served at 1, 8, 32 concurrent clients: throughput, p50/p95/p99, CPU-s per 1k "
          "requests, the guard's measured detection (`tunewise serve-bench RUN`; servebench/bench.json, read by the "
          "release gate)", enabled=lambda r: False, cli=None),
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
