"""The "data" stage: read train/validation/test, settle the label set, carve missing splits, write data/.

data/
  train.jsonl, validation.jsonl (when there is one), test.jsonl   one record per line:
                    classification {"id","text","label","meta","origin"};
                    generation/chat {"id","messages","meta","origin","references"}
  labels.json       classification only: {"labels": [...], "derived": bool}
  quarantine.jsonl  every bad row set aside (possibly empty), with its split
  summary.json      per split: rows, quarantined, label counts, source file and its sha256; provenance; carving
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tunewise.artifacts.data import DataSummary, Labels
from tunewise.artifacts.rows import SPLITS, Example, Row
from tunewise.data.readers import ExampleChecker, Quarantined, id_prefix, read_labeled_file, read_records
from tunewise.data.splits import stratified_split
from tunewise.errors import DataError
from tunewise.recipe import DataConfig, DataFile, Recipe
from tunewise.rundir import atomic_write_jsonl, sha256_file
from tunewise.tasks import task_for

QUARANTINE_FILE = "quarantine.jsonl"
_INTEGER = re.compile(r"[+-]?[0-9]+")


def prepare_data(recipe: Recipe, out: Path) -> str:
    """Run the data stage into the folder `out`. Returns a one-line summary."""
    cfg = recipe.data
    out = Path(out)
    if not task_for(recipe).has_labels:  # the readers differ: messages for causal LMs, labelled rows otherwise
        return _prepare_examples(recipe, out)
    quarantine: list[dict[str, Any]] = []

    train, problems = _read(cfg, cfg.train, "train", cfg.labels, "declared")
    train = train[:cfg.train.max_rows]
    quarantine += _tagged(problems, "train")
    labels = cfg.labels or derive_labels(train)
    if len(labels) < 2:
        raise DataError(f"{cfg.train.path}: every valid training row has the label '{labels[0]}'; a classifier "
                        f"needs at least 2 labels")
    splits: dict[str, list[Row]] = {"train": train}
    for name in ("validation", "test"):
        data_file: DataFile | None = getattr(cfg, name)
        if data_file is not None:
            splits[name], problems = _read(cfg, data_file, name, labels, "declared" if cfg.labels else "train")
            splits[name] = splits[name][:data_file.max_rows]
            quarantine += _tagged(problems, name)

    renamed = {name: make_ids_unique(rows) for name, rows in splits.items()}  # before carving: unique per file
    carved = _carve_missing_splits(splits, cfg, recipe.seed)
    renamed.update({name: 0 for name in carved})

    Labels(labels=labels, derived=cfg.labels is None).write(out)
    _write_splits(out, splits, _row_record, quarantine, _summary(cfg, splits, labels, quarantine, carved, renamed))

    sizes = " · ".join(f"{name} {len(splits[name]):,}" for name in SPLITS if name in splits)
    return f"data: {sizes} rows, {len(labels)} labels, {len(quarantine):,} quarantined"


def _prepare_examples(recipe: Recipe, out: Path) -> str:
    """The data stage for generation and chat: every row becomes messages; no label set."""
    cfg = recipe.data
    quarantine: list[dict[str, Any]] = []
    splits: dict[str, list[Any]] = {}
    for name in SPLITS:
        data_file: DataFile | None = getattr(cfg, name)
        if data_file is None:
            continue
        splits[name], problems = read_records(source_name(data_file, name), example_checker(recipe, data_file, name),
                                              fmt=cfg.format, on_error=cfg.on_error,
                                              max_quarantine_fraction=cfg.max_quarantine_fraction)
        splits[name] = splits[name][:data_file.max_rows]
        quarantine += _tagged(problems, name)
    renamed = {name: make_ids_unique(rows) for name, rows in splits.items()}  # before carving: unique per file
    carved = _carve_missing_splits(splits, cfg, recipe.seed)
    renamed.update({name: 0 for name in carved})
    _write_splits(out, splits, _example_record, quarantine, _summary(cfg, splits, None, quarantine, carved, renamed))
    sizes = " · ".join(f"{name} {len(splits[name]):,}" for name in SPLITS if name in splits)
    return f"data: {sizes} examples ({recipe.task}), {len(quarantine):,} quarantined"


def example_checker(recipe: Recipe, data_file: DataFile, split: str) -> ExampleChecker:
    """How the rows of one generation or chat file become messages (also used by `tunewise data show-mask`)."""
    cfg = recipe.data
    return ExampleChecker(
        recipe.task, prompt_field=cfg.prompt_field, prompt_template=cfg.prompt_template,
        completion_field=data_file.completion_field or cfg.completion_field, system_prompt=cfg.system_prompt,
        messages_field=cfg.messages_field, reference_fields=data_file.reference_fields,
        slice_fields=cfg.slice_fields, id_prefix=id_prefix(source_name(data_file, split)))


def _write_splits(out: Path, splits: dict[str, list[Any]], record, quarantine: list[dict[str, Any]],
                  summary: DataSummary) -> None:
    for name in SPLITS:
        if name in splits:
            atomic_write_jsonl(out / f"{name}.jsonl", (record(row) for row in splits[name]))
    atomic_write_jsonl(out / QUARANTINE_FILE, quarantine)
    summary.write(out)


def _example_record(ex: Example) -> dict[str, Any]:
    return {"id": ex.id, "messages": ex.messages, "meta": ex.meta, "origin": ex.origin, "references": ex.references}


def data_files(recipe: Recipe) -> list[Path]:
    """The local input files of the data stage (for hashing); `hf:` datasets are skipped."""
    files = [getattr(recipe.data, name) for name in SPLITS]
    return [Path(f.path) for f in files if f is not None and not f.path.startswith("hf:")]


def derive_labels(rows: list[Row]) -> list[str]:
    """Sorted unique labels: numerically when every label is an integer ("2" before "10"), else as strings."""
    unique = set(row.label for row in rows)
    if unique and all(_INTEGER.fullmatch(label) for label in unique):
        return sorted(unique, key=lambda label: (int(label), label))
    return sorted(unique)


def make_ids_unique(rows: list[Row]) -> int:
    """Suffix repeated ids with #2, #3, ... in place. Returns how many ids were changed."""
    seen = set(row.id for row in rows)
    if len(seen) == len(rows):
        return 0
    taken: set[str] = set()
    changed = 0
    counts: Counter[str] = Counter()
    for row in rows:
        if row.id not in taken:
            taken.add(row.id)
            continue
        base = row.id
        candidate = base
        while candidate in taken or candidate in seen:
            counts[base] += 1
            candidate = f"{base}#{counts[base] + 1}"
        row.id = candidate
        taken.add(candidate)
        changed += 1
    return changed


# ---------------------------------------------------------------- helpers


def _read(cfg: DataConfig, data_file: DataFile, split: str, labels: list[str] | None,
          labels_from: str) -> tuple[list[Row], list[Quarantined]]:
    return read_labeled_file(
        source_name(data_file, split), fmt=cfg.format, text_field=cfg.text_field, label_field=cfg.label_field,
        text_pair_field=cfg.text_pair_field, slice_fields=cfg.slice_fields, labels=labels, on_error=cfg.on_error,
        max_quarantine_fraction=cfg.max_quarantine_fraction, labels_from=labels_from)  # type: ignore[arg-type]


def source_name(data_file: DataFile, split: str) -> str:
    """`hf:NAME` without a split reads the split of the same name as the slot it fills."""
    path = data_file.path
    if path.startswith("hf:") and ":" not in path[3:]:
        return f"{path}:{split}"
    return path


def _tagged(problems: list[Quarantined], split: str) -> list[dict[str, Any]]:
    return [{**asdict(q), "split": split} for q in problems]


def _carve_missing_splits(splits: dict[str, list[Row]], cfg: DataConfig, seed: int) -> dict[str, dict[str, Any]]:
    """Carve test (then validation) out of train when no file was given. Returns what was carved, for the summary."""
    carved: dict[str, dict[str, Any]] = {}
    wanted = [("test", cfg.test_fraction)]
    if cfg.validation_fraction > 0:
        wanted.append(("validation", cfg.validation_fraction))
    for name, fraction in wanted:
        if name in splits:
            continue
        rest, held = stratified_split(splits["train"], fraction, seed)
        if not held or not rest:
            raise DataError(f"{cfg.train.path}: {len(splits['train']):,} valid training rows are too few to carve a "
                            f"{name} split of data.{name}_fraction={fraction}; give data.{name} a file or add rows")
        splits["train"], splits[name] = rest, held
        carved[name] = {"from": "train", "fraction": fraction, "seed": seed, "rows": len(held)}
    return carved


def _row_record(row: Row) -> dict[str, Any]:
    record = {"id": row.id, "text": row.text, "label": row.label, "meta": row.meta, "origin": row.origin}
    if row.text_pair is not None:  # single-text files stay as they were
        record["text_pair"] = row.text_pair
    return record


def _summary(cfg: DataConfig, splits: dict[str, list[Any]], labels: list[str] | None, quarantine: list[dict[str, Any]],
             carved: dict[str, dict[str, Any]], renamed: dict[str, int]) -> DataSummary:
    files = {name: _file_facts(f) for name in SPLITS if (f := getattr(cfg, name)) is not None}
    quarantined = Counter(q["split"] for q in quarantine)
    per_split = {}
    for name in SPLITS:
        if name not in splits:
            continue
        source = "train" if name in carved else name
        counts = Counter(row.label for row in splits[name])
        per_split[name] = {
            "rows": len(splits[name]),
            "quarantined": quarantined[name],
            "label_counts": {label: counts[label] for label in labels} if labels is not None else None,
            "duplicate_ids_renamed": renamed[name],
            "source_file": files[source]["path"],
            "sha256": files[source]["sha256"],
            "carved_from": "train" if name in carved else None,
        }
    return DataSummary(
        splits=per_split,
        files=files,
        carved=carved,
        labels={"count": len(labels), "derived": cfg.labels is None} if labels is not None else None,
        on_error=cfg.on_error,
        max_quarantine_fraction=cfg.max_quarantine_fraction,
        quarantined_total=len(quarantine),
    )


def _file_facts(data_file: DataFile) -> dict[str, Any]:
    local = not data_file.path.startswith("hf:")
    return {
        "path": data_file.path,
        "sha256": sha256_file(Path(data_file.path)) if local else None,
        "source": data_file.source,
        "license": data_file.license,
        "contains_personal_data": data_file.contains_personal_data,
        "max_rows": data_file.max_rows,
    }
