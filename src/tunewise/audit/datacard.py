"""audit/datacard.md: a datasheet for the dataset, after Gebru et al., "Datasheets for Datasets" (CACM 2021).

Every answer comes from the recipe, the data stage's summary.json or the audit's own statistics; where none of
them knows (who funded the data, how consent was obtained) the card says "not stated in the recipe" instead of
guessing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jinja2

import tunewise
from tunewise.artifacts.data import DataSummary
from tunewise.artifacts.findings import CHECK_TITLES
from tunewise.kit.identity_terms import load_families, mention_counts
from tunewise.kit.jsonl import batched, read_jsonl
from tunewise.recipe import Recipe
from tunewise.safety.pii import KIND_WORDS
from tunewise.tasks import task_for

TEMPLATES = Path(__file__).resolve().parent / "templates"
NOT_STATED = "_Not stated in the recipe._"
# what a row is, in the card's words: by task name, since generation and chat share one Task implementation
TASK_WORDS = {
    "classification": "a text and its label (text classification)",
    "generation": "a prompt and the completion the model should learn to write (generation)",
    "chat": "a conversation in OpenAI messages format, whose assistant turns the model learns (chat)",
}


def _md(value: Any) -> str:
    return " ".join(str(value).split()).replace("|", r"\|")


MISSING_VALUE = "(missing)"
REPRESENTATION_SPLITS = ("train", "test")


def _share(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "—"


def slice_counts(recipe: Recipe, rows: Iterable[dict[str, Any]]) -> tuple[dict[str, Counter], int]:
    """({slice field: rows per group}, rows) of one split's records, counted as they stream past."""
    counts: dict[str, Counter] = {field: Counter() for field in recipe.data.slice_fields}
    total = 0
    for r in rows:
        total += 1
        meta = r.get("meta") or {}
        for field, counter in counts.items():
            counter[MISSING_VALUE if meta.get(field) is None else str(meta.get(field))] += 1
    return counts, total


def slice_representation(recipe: Recipe, counted: dict[str, tuple[dict[str, Counter], int]]) -> list[dict[str, Any]]:
    """Per data.slice_fields column: each group's rows and share in train and in test, the test-to-train share
    ratio, and whether the group has too few test rows to judge (evaluate.min_slice_size). `counted`: split ->
    `slice_counts` of its rows."""
    out = []
    minimum = recipe.evaluate.min_slice_size
    rows_by_split = counted  # the splits, in order
    for field in recipe.data.slice_fields:
        counts = {split: per_field[field] for split, (per_field, _) in counted.items()}
        totals = {split: total for split, (_, total) in counted.items()}
        groups = sorted(set().union(*counts.values()), key=lambda g: (-counts.get("train", Counter())[g], g))
        rows = []
        for g in groups:
            cells = {split: {"n": counts[split][g], "share": _share(counts[split][g], totals[split])}
                     for split in rows_by_split}
            train_share = counts["train"][g] / totals["train"] if totals.get("train") else 0.0
            test_share = counts["test"][g] / totals["test"] if totals.get("test") else 0.0
            rows.append({"group": g, "cells": cells,
                         "ratio": f"{test_share / train_share:.2f}" if train_share else "—",
                         "thin": "test" in counts and counts["test"][g] < minimum})
        out.append({"field": field, "groups": rows})
    return out


def identity_mentions(recipe: Recipe, train_rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per identity-term family (kit/terms): the share of training rows whose text mentions it, and per group.
    The rows (data/ records) stream past a batch at a time."""
    task = task_for(recipe)
    families = load_families()
    counts: dict[str, Counter] = {fam.name: Counter() for fam in families}
    total = 0
    for batch in batched(train_rows, 4096):
        total += len(batch)
        for name, found in mention_counts([task.sides(r).whole for r in batch], families).items():
            counts[name].update(found)
    return [{"family": fam.name, "title": fam.title, "rows": counts[fam.name]["any"],
             "share": _share(counts[fam.name]["any"], total),
             "groups": [{"group": g, "rows": counts[fam.name][g], "share": _share(counts[fam.name][g], total)}
                        for g in fam.groups]}
            for fam in families]


def representation(recipe: Recipe, data_dir: Path) -> dict[str, Any]:
    """What the datacard's representation section shows: slice groups in train against test, and identity-term
    mentions in the training text."""
    splits = [split for split in REPRESENTATION_SPLITS if (Path(data_dir) / f"{split}.jsonl").is_file()]
    counted = {split: slice_counts(recipe, _records(data_dir, split)) for split in splits}
    train_rows = counted["train"][1] if "train" in counted else 0
    return {"slices": slice_representation(recipe, counted) if "train" in counted else [],
            "identity": identity_mentions(recipe, _records(data_dir, "train") if "train" in counted else []),
            "train_rows": train_rows, "splits": splits, "min_slice_size": recipe.evaluate.min_slice_size}


def _records(data_dir: Path, split: str) -> Iterator[dict[str, Any]]:
    """The records of a data/ split, a line at a time (never the whole split in memory)."""
    written = "a record written by the data stage"
    for _, value in read_jsonl(Path(data_dir) / f"{split}.jsonl", what=written,
                               advice="; the file was damaged: run the data stage again"):
        yield value


def render_datacard(recipe: Recipe, data_summary: DataSummary, doc: dict[str, Any],
                    data_dir: Path | None = None) -> str:
    """The datasheet; with `data_dir` (the data stage's folder) it also shows how slice groups and identity terms
    are represented."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=False, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["md"] = _md
    env.filters["sentence"] = lambda text: text[:1].upper() + text[1:]
    stats = doc["stats"]
    splits = []
    for name, s in stats["splits"].items():
        info = data_summary.splits[name]
        facts = data_summary.source_of(name)
        splits.append({
            "name": name, "rows": s["rows"], "file": Path(facts.path).name,
            "carved_from": info.carved_from, "sha256": (facts.sha256 or "")[:12] or "—",
            "quarantined": info.quarantined, "length": s["length"], "pii_rows": s["pii_rows"],
            "pii_by_kind": s["pii_by_kind"], "duplicates": s["exact_duplicates"], "near_empty": s["near_empty"],
            "label_counts": s["label_counts"],
        })
    findings = doc["findings"]
    by_check = doc["summary"]["by_check"]
    labels = list((splits[0]["label_counts"] or {}).keys()) if splits else []
    pii_kinds = sorted({k for s in splits for k in s["pii_by_kind"]})
    ctx = {
        "recipe": recipe,
        "task": task_for(recipe),  # the facts that decide which sentences apply (has_prompts)
        "name": recipe.card.model_name or recipe.name,
        "task_words": TASK_WORDS[recipe.task],
        "files": [{"split": k, **v.model_dump(), "file": Path(v.path).name} for k, v in data_summary.files.items()],
        "splits": splits,
        "labels": labels,
        "findings": findings,
        "of": lambda check: [f for f in findings if f["check"] == check],
        "by_check": by_check,
        "titles": CHECK_TITLES,
        "summary": doc["summary"],
        "policy": doc["policy"],
        "stats": stats,
        "pii_kinds": pii_kinds,
        "pii_words": KIND_WORDS,
        "data_quarantined": stats["data_quarantined"],
        "carved": data_summary.carved,
        "on_error": data_summary.on_error,
        "signature": doc["signature"],
        "version": tunewise.__version__,
        "not_stated": NOT_STATED,
        "run_id": f"{recipe.name}-{recipe.fingerprint()}",
        "representation": representation(recipe, data_dir) if data_dir is not None else None,
    }
    return env.get_template("datacard.md.j2").render(**ctx)
