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

import hashlib
import json
import re
import tempfile
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from tunewise.artifacts.data import DataSummary, Labels
from tunewise.artifacts.rows import SPLITS, Example, Row
from tunewise.data.readers import ExampleChecker, Quarantined, RowChecker, Tally, id_prefix, stream_records
from tunewise.data.splits import held_out_positions
from tunewise.errors import DataError
from tunewise.recipe import DataConfig, DataFile, Recipe
from tunewise.rundir import AtomicJsonlWriter, sha256_file
from tunewise.tasks import task_for

QUARANTINE_FILE = "quarantine.jsonl"
_INTEGER = re.compile(r"[+-]?[0-9]+")


def prepare_data(recipe: Recipe, out: Path) -> str:
    """Run the data stage into the folder `out`. Returns a one-line summary.

    Bounded memory, whatever the size of the files: each file is read as a stream and its valid rows go to a
    spool file on disk as they come; in memory the stage keeps per row only a label code and a 64-bit hash of its
    id (12 bytes), which is all that settling the label set, making ids unique and carving splits need. Quarantined
    rows go straight to quarantine.jsonl. The splits are then written by streaming the spools once more."""
    cfg = recipe.data
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    has_labels = task_for(recipe).has_labels  # the readers differ: messages for causal LMs, labelled rows otherwise
    with tempfile.TemporaryDirectory(prefix=".spool-", dir=out) as tmp, \
            AtomicJsonlWriter(out / QUARANTINE_FILE) as quarantine:
        spools: dict[str, Spool] = {}
        labels: list[str] | None = None
        for name in SPLITS:
            data_file: DataFile | None = getattr(cfg, name)
            if data_file is None:
                continue
            if has_labels:
                declared = cfg.labels if name == "train" else labels
                checker: Any = RowChecker(cfg.text_field, cfg.label_field, list(cfg.slice_fields), declared,
                                          "declared" if cfg.labels or name == "train" else "train",
                                          id_prefix(source_name(data_file, name)), text_pair_field=cfg.text_pair_field)
            else:
                checker = example_checker(recipe, data_file, name)
            spools[name] = _spool(source_name(data_file, name), checker, cfg, data_file, name, Path(tmp), quarantine,
                                  _row_record if has_labels else _example_record)
            if has_labels and name == "train":
                labels = cfg.labels or derive_labels(spools["train"].label_names)
                if len(labels) < 2:
                    raise DataError(f"{cfg.train.path}: every valid training row has the label '{labels[0]}'; a "
                                    f"classifier needs at least 2 labels")
        renamed = {name: spool.rename_repeated_ids() for name, spool in spools.items()}  # before carving
        route, carved = _carve_missing_splits(spools, cfg, recipe.seed)
        renamed.update({name: 0 for name in carved})
        counts = _write_splits(out, spools, route, [*spools, *carved])
    if labels is not None:
        Labels(labels=labels, derived=cfg.labels is None).write(out)
    quarantined = Counter({name: spool.quarantined for name, spool in spools.items()})
    _summary(cfg, counts, labels, quarantined, carved, renamed).write(out)
    sizes = " · ".join(f"{name} {sum(counts[name].values()):,}" for name in SPLITS if name in counts)
    total = sum(quarantined.values())
    if labels is not None:
        return f"data: {sizes} rows, {len(labels)} labels, {total:,} quarantined"
    return f"data: {sizes} examples ({recipe.task}), {total:,} quarantined"


class Spool:
    """One input file's valid records, on disk (one JSON line each, in file order), with what the stage keeps of
    each in memory: its label and a hash of its id."""

    def __init__(self, path: Path):
        self.path = path
        self.rows = 0
        self.quarantined = 0
        self._codes = array("i")         # label code per row, in order of first appearance
        self._id_hashes = array("Q")     # 64-bit hash of each row's id
        self._code_of: dict[str, int] = {}
        self.renames: dict[int, str] = {}  # row position -> its new id (a repeated id made unique)

    @property
    def label_names(self) -> list[str]:
        """Labels seen, in order of first appearance."""
        return list(self._code_of)

    def add(self, label: str, row_id: str) -> None:
        code = self._code_of.setdefault(label, len(self._code_of))
        self._codes.append(code)
        self._id_hashes.append(_id_hash(row_id))
        self.rows += 1

    def labels(self) -> np.ndarray:
        """Label code per row, codes ranked by label name (so they sort as the names do)."""
        if not self.rows:
            return np.zeros(0, dtype=np.int32)
        rank = np.argsort(np.argsort(np.array(self.label_names, dtype=object))).astype(np.int32)
        return rank[np.frombuffer(self._codes, dtype=np.int32)]

    def lines(self) -> Iterator[tuple[int, str]]:
        with open(self.path, encoding="utf-8") as fh:
            yield from enumerate(fh)

    def rename_repeated_ids(self) -> int:
        """make_ids_unique over the spool: the same new ids, found without holding the ids. Only rows whose id
        hash occurs twice are read back (and only their ids kept). Returns how many ids were changed."""
        if not self.rows:
            return 0
        hashes = np.frombuffer(self._id_hashes, dtype=np.uint64)
        unique = np.sort(hashes)
        again = unique[1:] == unique[:-1]
        if not again.any():
            return 0
        wanted = set(np.flatnonzero(np.isin(hashes, unique[1:][again])).tolist())  # rows sharing an id hash
        unique = unique[np.r_[True, ~again]]
        taken: set[str] = set()
        suffixes: Counter[str] = Counter()

        def seen(candidate: str) -> bool:  # is it the id of any row of the file?
            h = np.uint64(_id_hash(candidate))
            at = np.searchsorted(unique, h)
            return bool(at < len(unique) and unique[at] == h)

        for position, line in self.lines():
            if position not in wanted:
                continue  # an id that occurs once can never be taken by an earlier row or a suffixed id
            base = json.loads(line)["id"]
            if base not in taken:
                taken.add(base)
                continue
            candidate = base
            while candidate in taken or seen(candidate):
                suffixes[base] += 1
                candidate = f"{base}#{suffixes[base] + 1}"
            self.renames[position] = candidate
            taken.add(candidate)
        return len(self.renames)


def _id_hash(row_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(row_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def _spool(source: str, checker: Any, cfg: DataConfig, data_file: DataFile, split: str, folder: Path,
           quarantine: AtomicJsonlWriter, record) -> Spool:
    """Stream one file: valid rows (the first data.<split>.max_rows of them) to a spool, bad ones to quarantine."""
    spool = Spool(folder / f"{split}.jsonl")
    tally = Tally(source, cfg.max_quarantine_fraction)
    limit = data_file.max_rows
    with open(spool.path, "w", encoding="utf-8") as fh:
        for item in stream_records(source, checker, fmt=cfg.format, on_error=cfg.on_error):
            tally.count(item)
            if isinstance(item, Quarantined):
                quarantine.write({**asdict(item), "split": split})
                spool.quarantined += 1
            elif limit is None or spool.rows < limit:
                fh.write(json.dumps(record(item), ensure_ascii=False) + "\n")
                spool.add(item.label, item.id)
    tally.check()
    return spool


def _write_splits(out: Path, spools: dict[str, Spool], train_route: np.ndarray | None,
                  names: list[str]) -> dict[str, Counter]:
    """Stream the spools into data/<split>.jsonl, ids renamed, each train row to the split `train_route` gives it
    (an index into SPLITS; None: all stay in train). Returns the rows per label of each split written."""
    written = [name for name in SPLITS if name in names]
    counts: dict[str, Counter] = {name: Counter() for name in written}
    writers = {name: AtomicJsonlWriter(out / f"{name}.jsonl") for name in written}
    try:
        for name, spool in spools.items():
            route = train_route if name == "train" else None
            for position, line in spool.lines():
                record = json.loads(line)
                if position in spool.renames:
                    record["id"] = spool.renames[position]
                target = SPLITS[route[position]] if route is not None else name
                writers[target].write(record)
                counts[target][record.get("label", "")] += 1
    except BaseException as exc:
        for writer in writers.values():
            writer.__exit__(type(exc), exc, exc.__traceback__)
        raise
    for writer in writers.values():
        writer.__exit__(None, None, None)
    return counts


def example_checker(recipe: Recipe, data_file: DataFile, split: str) -> ExampleChecker:
    """How the rows of one generation or chat file become messages (also used by `tunewise data show-mask`)."""
    cfg = recipe.data
    return ExampleChecker(
        recipe.task, prompt_field=cfg.prompt_field, prompt_template=cfg.prompt_template,
        completion_field=data_file.completion_field or cfg.completion_field, system_prompt=cfg.system_prompt,
        messages_field=cfg.messages_field, reference_fields=data_file.reference_fields,
        slice_fields=cfg.slice_fields, id_prefix=id_prefix(source_name(data_file, split)))


def _example_record(ex: Example) -> dict[str, Any]:
    return {"id": ex.id, "messages": ex.messages, "meta": ex.meta, "origin": ex.origin, "references": ex.references}


def data_files(recipe: Recipe) -> list[Path]:
    """The local input files of the data stage (for hashing); `hf:` datasets are skipped."""
    files = [getattr(recipe.data, name) for name in SPLITS]
    return [Path(f.path) for f in files if f is not None and not f.path.startswith("hf:")]


def derive_labels(rows: Iterable[Row] | Iterable[str]) -> list[str]:
    """Sorted unique labels (of rows, or label names): numerically when every label is an integer ("2" before
    "10"), else as strings."""
    unique = set(row if isinstance(row, str) else row.label for row in rows)
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


def source_name(data_file: DataFile, split: str) -> str:
    """`hf:NAME` without a split reads the split of the same name as the slot it fills."""
    path = data_file.path
    if path.startswith("hf:") and ":" not in path[3:]:
        return f"{path}:{split}"
    return path


def _carve_missing_splits(spools: dict[str, Spool], cfg: DataConfig,
                          seed: int) -> tuple[np.ndarray | None, dict[str, dict[str, Any]]]:
    """Carve test (then validation) out of train when no file was given, from the train labels alone. Returns
    (the split of each train row as an index into SPLITS, or None when nothing was carved; what was carved)."""
    carved: dict[str, dict[str, Any]] = {}
    train = spools["train"]
    labels = train.labels()
    remaining = np.arange(train.rows)  # train rows still in train
    route = np.zeros(train.rows, dtype=np.int8)  # index into SPLITS; 0: train
    wanted = [("test", cfg.test_fraction)]
    if cfg.validation_fraction > 0:
        wanted.append(("validation", cfg.validation_fraction))
    for name, fraction in wanted:
        if name in spools:
            continue
        held = remaining[held_out_positions(labels[remaining], fraction, seed)]
        if not len(held) or len(held) == len(remaining):
            raise DataError(f"{cfg.train.path}: {len(remaining):,} valid training rows are too few to carve a "
                            f"{name} split of data.{name}_fraction={fraction}; give data.{name} a file or add rows")
        route[held] = SPLITS.index(name)
        keep = np.ones(len(remaining), dtype=bool)
        keep[np.searchsorted(remaining, held)] = False
        remaining = remaining[keep]
        carved[name] = {"from": "train", "fraction": fraction, "seed": seed, "rows": len(held)}
    return (route if carved else None), carved


def _row_record(row: Row) -> dict[str, Any]:
    record = {"id": row.id, "text": row.text, "label": row.label, "meta": row.meta, "origin": row.origin}
    if row.text_pair is not None:  # single-text files stay as they were
        record["text_pair"] = row.text_pair
    return record


def _summary(cfg: DataConfig, counts: dict[str, Counter], labels: list[str] | None, quarantined: Counter,
             carved: dict[str, dict[str, Any]], renamed: dict[str, int]) -> DataSummary:
    files = {name: _file_facts(f) for name in SPLITS if (f := getattr(cfg, name)) is not None}
    per_split = {}
    for name in SPLITS:
        if name not in counts:
            continue
        source = "train" if name in carved else name
        per_split[name] = {
            "rows": sum(counts[name].values()),
            "quarantined": quarantined[name],
            "label_counts": {label: counts[name][label] for label in labels} if labels is not None else None,
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
        quarantined_total=sum(quarantined.values()),
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
