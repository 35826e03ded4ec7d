"""The items of a human-evaluation study: test rows sampled (seeded) from eval/predictions*.jsonl, with the
fine-tuned output and the other side's output (the base model zero-shot from the same run, or another run's
fine-tuned model on the same test rows), and the prompt or conversation the outputs answer."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.artifacts import Metrics
from tunewise.errors import RunDirError, TunewiseError
from tunewise.kit.jsonl import read_jsonl
from tunewise.rundir import RunDir, sha256_file

BASE = "base"              # `--against base`: the base model zero-shot, from this run's eval/
BASE_MODEL = "base_model"  # its name in metrics.json
FINE_TUNED = "fine_tuned"
OTHER = "other"


class HumanEvalError(TunewiseError):
    """A human-evaluation study cannot be set up or read as asked."""


@dataclass(frozen=True)
class StudySettings:
    """What a study samples and how it is rated (the recipe's `humaneval:` section, overridden by the command)."""

    mode: str                 # pairwise | likert
    n: int                    # test rows sampled
    criteria: tuple[str, ...]  # likert criteria
    overlap: float            # share of items every annotator rates
    against: str              # `base` or another run directory
    seed: int


@dataclass(frozen=True)
class Item:
    """One thing an annotator rates: a prompt and two outputs (pairwise) or one output (likert), blind."""

    id: str                       # opaque: never names the model
    row_id: str                   # the test row (eval/predictions*.jsonl `id`)
    model: str | None             # likert: whose output this is (fine_tuned | other); pairwise: None
    shared: bool                  # every annotator gets it
    context: list[dict[str, str]]  # the prompt messages (role, content)
    outputs: dict[str, str] = field(default_factory=dict)  # fine_tuned / other -> text (likert: one of them)


@dataclass(frozen=True)
class Sample:
    items: list[Item]
    against: str                  # base_model, or the other run's id
    against_description: str
    sources: dict[str, str]       # predictions files (path) -> sha256
    n_rows: int
    available_rows: int


def _read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    """id -> row of a predictions file; a malformed line is an error naming the file and line."""
    if not path.is_file():
        raise RunDirError(f"{path}: missing; the evaluate stage writes it (`tunewise evaluate {path.parent.parent} "
                          f"--force`)")
    rows: dict[str, dict[str, Any]] = {}
    for line_no, row in read_jsonl(path, error=RunDirError):
        for key in ("id", "prompt", "prediction"):
            if not isinstance(row, dict) or not isinstance(row.get(key), str):
                raise RunDirError(f"{path}:{line_no}: field `{key}` missing or not a string; a generation "
                                  f"predictions row holds id, prompt and prediction")
        rows[row["id"]] = row
    return rows


def _require_generation(rd: RunDir) -> None:
    from tunewise.tasks import task_for

    if task_for(rd.recipe).has_labels:
        raise HumanEvalError(
            f"{rd.root} is a {rd.recipe.task} run: its outputs are labels, which eval/metrics.json already scores "
            f"exactly against the test set's gold labels (accuracy and macro-F1 with CIs). Human evaluation rates "
            f"generated text; run it on a generation or chat run.")


def _predictions_file(rd: RunDir, model: str) -> Path:
    metrics = Metrics.read(rd.stage_dir("evaluate") / Metrics.FILE)
    if model not in metrics.models:
        raise HumanEvalError(
            f"{rd.root}: eval/metrics.json has no {model!r} outputs (models: {', '.join(metrics.models)}); "
            + ("evaluate the base model too (`evaluate.baselines=[base_model]`, then `tunewise evaluate RUN "
               "--force`), or compare against another run: `--against OTHER_RUN`" if model == BASE_MODEL else
               "rerun its evaluate stage"))
    return (rd.root / metrics.models[model].predictions).resolve()


def _contexts(rd: RunDir) -> dict[str, list[dict[str, str]]]:
    """Test row id -> its prompt messages (with the system prompt and earlier chat turns, which the predictions
    file's `prompt` leaves out)."""
    from tunewise.tasks import task_for

    try:
        examples = task_for(rd.recipe).read_split(rd.stage_dir("data"), "test")
    except (OSError, TunewiseError):
        return {}
    return {ex.id: ex.prompt_messages for ex in examples}


def _opaque_id(seed: int, row_id: str, model: str | None) -> str:
    return hashlib.sha256(f"{seed}|{row_id}|{model}".encode()).hexdigest()[:12]


def sample_items(rd: RunDir, settings: StudySettings) -> Sample:
    """The study's items, sampled with the recipe's seed from the test rows that both sides answered."""
    _require_generation(rd)
    rd.require("evaluate", "human-eval")
    ft_path = _predictions_file(rd, FINE_TUNED)
    ours = _read_predictions(ft_path)
    if settings.against == BASE:
        other_path = _predictions_file(rd, BASE_MODEL)
        theirs = _read_predictions(other_path)
        against, described = BASE_MODEL, f"{rd.recipe.model.base} zero-shot on the same prompts (this run's eval/)"
        rows = [r for r in ours if r in theirs]
    else:
        other = RunDir.open(settings.against)
        if other.root.resolve() == rd.root.resolve():
            raise HumanEvalError(f"--against {settings.against} is the run itself; give another run directory, "
                                 f"or `--against base`")
        _require_generation(other)
        other.require("evaluate", "human-eval")
        other_path = _predictions_file(other, FINE_TUNED)
        theirs = _read_predictions(other_path)
        against, described = other.root.name, f"the fine-tuned model of run {other.root.name} on the same prompts"
        # the same test rows: same id AND the same prompt (ids like test:1 repeat across unrelated test sets)
        rows = [r for r in ours if r in theirs and theirs[r]["prompt"] == ours[r]["prompt"]]
        if not rows:
            raise HumanEvalError(f"{other.root} answered none of the test prompts of {rd.root} (no row with the "
                                 f"same id and prompt in both eval/predictions.jsonl): compare runs evaluated on "
                                 f"the same test file")
    if not rows:
        raise HumanEvalError(f"{ft_path}: no test rows to rate")
    rng = random.Random(settings.seed)
    picked = sorted(rng.sample(rows, min(settings.n, len(rows))), key=rows.index)
    contexts = _contexts(rd)
    items: list[Item] = []
    for row_id in picked:
        context = contexts.get(row_id) or [{"role": "user", "content": ours[row_id]["prompt"]}]
        both = {FINE_TUNED: ours[row_id]["prediction"], OTHER: theirs[row_id]["prediction"]}
        if settings.mode == "pairwise":
            items.append(Item(_opaque_id(settings.seed, row_id, None), row_id, None, False, context, both))
        else:
            for model in (FINE_TUNED, OTHER):
                items.append(Item(_opaque_id(settings.seed, row_id, model), row_id, model, False, context,
                                  {model: both[model]}))
    # shared by test row: in a Likert study both outputs of a shared row go to everyone, so each annotator's
    # paired difference (fine-tuned - other) covers the agreement set
    shared = set(rng.sample(picked, round(settings.overlap * len(picked))))
    items = [Item(it.id, it.row_id, it.model, it.row_id in shared, it.context, it.outputs) for it in items]
    sources = {str(p): sha256_file(p) for p in (ft_path, other_path)}
    return Sample(items, against, described, sources, len(picked), len(rows))
