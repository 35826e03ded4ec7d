"""The audit's one streaming pass over data/: everything the checks need, collected batch by batch.

Per row the pass keeps a few integers in compact arrays (label, token length, an 8-byte offset) and nothing else in
memory: ids and origins, PII matches and the like go to temporary files (spill.py), and so does everything the
duplicate index keeps (dedup.py), so the audit finishes on data larger than memory. Rows are numbered globally in split order
(train, validation, test): the duplicate index, the n-gram index and the findings all name rows by that number,
and `Scan.ref` turns one back into (id, split, origin). What a row holds comes from the task (`task.sides`, `task.token_lengths`), so the pass does
not branch on the task; the label and prompt indexes are built when the task has labels or prompts.
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from tunewise.artifacts.data import DataSummary
from tunewise.artifacts.rows import SPLITS, available_splits, load_labels
from tunewise.audit import dedup, leakage, length
from tunewise.audit.normalize import content_chars, exact_form, key64, snippet, words
from tunewise.audit.spill import JsonLog, StringStore
from tunewise.errors import DataError
from tunewise.kit.jsonl import batched, read_jsonl
from tunewise.recipe import Recipe
from tunewise.rundir import AtomicJsonlWriter
from tunewise.safety import pii
from tunewise.tasks import Task, task_for

BATCH = 2048  # rows read, hashed and tokenised at a time: the pass's working set (~10 MiB), whatever the data's size
LABEL_NOISE_MAX_ROWS = 20_000
MEDIAN_WORDS_ROWS = 8192
PLACEHOLDERS = {"na", "n a", "null", "none", "nan", "undefined", "todo", "tbd", "test", "xxx", "lorem ipsum"}
SPLIT_CODES = {name: i for i, name in enumerate(SPLITS)}  # the duplicate index's group of each split


@dataclass
class Split:
    """What the audit keeps of one split while streaming it. Local row numbers count from the split's start."""

    name: str
    start: int  # global row number of its first row
    path: Path
    refs: StringStore = field(default_factory=StringStore)  # [id, origin] of each row, as JSON, on disk
    labels: array = field(default_factory=lambda: array("i"))  # label index per row (tasks with labels)
    label_counts: Counter = field(default_factory=Counter)
    length_batches: list[np.ndarray] = field(default_factory=list)
    near_empty: array = field(default_factory=lambda: array("q"))  # local row numbers
    pii: JsonLog = field(default_factory=JsonLog)  # [local row, [[kind, masked value], ...]] per row with PII
    pii_by_kind: Counter = field(default_factory=Counter)  # matches per kind, in order of first appearance
    prompt_keys: array = field(default_factory=lambda: array("Q"))  # exact-form key of each prompt (prompt tasks)

    @property
    def n(self) -> int:
        return len(self.refs)

    @property
    def code(self) -> int:
        return SPLIT_CODES[self.name]

    @cached_property
    def lengths(self) -> np.ndarray:
        """Token length per row; read once the pass is over."""
        lengths = np.concatenate(self.length_batches) if self.length_batches else np.empty(0, dtype=np.int32)
        self.length_batches.clear()  # held once, not twice
        return lengths

    def row(self, local: int) -> dict[str, Any]:
        row_id, origin = json.loads(self.refs[local])
        return {"id": row_id, "split": self.name, "origin": origin}

    def pii_rows(self) -> Iterator[tuple[int, list[tuple[str, str]]]]:
        """(local row, [(kind, masked value), ...]) of each row with PII, in row order, read back from disk."""
        for local, matches in self.pii:
            yield local, [(kind, masked) for kind, masked in matches]


@dataclass
class Scan:
    """What the streaming pass collected: the input of every check."""

    recipe: Recipe
    task: Task
    data_summary: DataSummary
    label_names: list[str]  # empty for a task without labels
    splits: list[Split]
    dups: dedup.Duplicates
    median_words: float
    ngram_hits: tuple[np.ndarray, np.ndarray, np.ndarray]  # (eval rows, train row, side): NgramIndex.finish
    template_ngrams: int | None  # n-grams ignored as template text; None when the task has no prompts
    length_unit: str
    noise_texts: dict[int, str]  # train rows given to the label-noise model -> their text

    @property
    def shingle_words(self) -> int:
        return self.dups.shingle_words

    def split(self, name: str) -> Split:
        return next(sp for sp in self.splits if sp.name == name)

    def locate(self, g: int) -> tuple[Split, int]:
        """(split, local row) of a global row number."""
        for sp in self.splits:
            if sp.start <= g < sp.start + sp.n:
                return sp, g - sp.start
        raise IndexError(g)

    def ref(self, g: int) -> dict[str, Any]:
        """{id, split, origin} of a global row number."""
        sp, local = self.locate(g)
        return sp.row(local)

    @cached_property
    def label_counts_by_split(self) -> dict[str, dict[str, int]]:
        """Rows per label per split, labels in label order; empty for a task without labels."""
        if not self.task.has_labels:
            return {}
        return {sp.name: {name: sp.label_counts.get(name, 0) for name in self.label_names} for sp in self.splits}

    @property
    def label_array(self) -> np.ndarray:
        """Label index per global row."""
        parts = [np.frombuffer(sp.labels, dtype=np.int32) for sp in self.splits if len(sp.labels)]
        return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, dtype=np.int64)


# ---------------------------------------------------------------- reading data/


def read_batches(path: Path) -> Iterator[list[dict[str, Any]]]:
    """The records of one data/ split, BATCH at a time."""
    rows = read_jsonl(path, what="a row written by the data stage",
                      advice="; the file was damaged: run the data stage again (`tunewise run RECIPE --force`)")
    return batched((row for _, row in rows), BATCH)


def read_data_summary(data_dir: Path) -> DataSummary:
    return DataSummary.read(data_dir / DataSummary.FILE)


def data_quarantine(data_dir: Path) -> JsonLog:
    """The data stage's quarantined rows, as lines of audit/quarantine.jsonl (stage "data"), on disk."""
    out = JsonLog()
    path = data_dir / "quarantine.jsonl"
    if not path.is_file():
        return out
    for number, q in read_jsonl(path, what="a line written by the data stage", advice="; run the data stage again"):
        if not isinstance(q, dict):
            raise DataError(f"{path}:{number}: not a quarantined row (a JSON object); run the data stage again")
        out.append({"stage": "data", "check": "invalid_row", "split": q.get("split"), "id": None,
                    "origin": f"{q.get('file')}:{q.get('line')}", "field": q.get("field"),
                    "reason": q.get("reason"), "raw": q.get("raw")})
    return out


def is_near_empty(text: str) -> bool:
    """Under 2 letters or digits, or a placeholder such as 'N/A'."""
    return content_chars(text) < 2 or " ".join(words(text)) in PLACEHOLDERS


# ---------------------------------------------------------------- the pass


def scan(recipe: Recipe, data_dir: Path, redacted_dir: Path | None = None) -> Scan:
    """Stream every split of data_dir once. With `redacted_dir`, also write each split there with PII redacted."""
    cfg = recipe.audit
    task = task_for(recipe)
    data_summary = read_data_summary(data_dir)
    label_names = load_labels(data_dir) if task.has_labels else []
    label_index = {name: i for i, name in enumerate(label_names)}
    splits = [Split(name, 0, data_dir / f"{name}.jsonl") for name in available_splits(data_dir)]
    median = median_words(splits[0].path, task)
    index = dedup.DuplicateIndex(cfg.near_duplicate_threshold,
                                 shingle_words=cfg.shingle_words or dedup.shingle_words_for(median),
                                 seed=recipe.seed % (2**32 - 1) or 1)
    data_bytes = sum(sp.path.stat().st_size for sp in splits)
    ngrams = leakage.NgramIndex(cfg.leak_ngram, data_bytes=data_bytes) if task.has_prompts else None
    tokenizer, length_unit = length.load_tokenizer(recipe.model.base)
    counter = length.LengthCounter(tokenizer)
    noise_rows = noise_sample(splits[0].path, recipe.seed) if task.has_labels and cfg.label_noise else set()
    noise_texts: dict[int, str] = {}

    start = 0
    for sp in splits:
        sp.start = start
        redacted = AtomicJsonlWriter(redacted_dir / f"{sp.name}.jsonl") if redacted_dir else nullcontext()
        with redacted:
            for batch in read_batches(sp.path):
                base = sp.start + sp.n
                sides = [task.sides(r) for r in batch]
                sp.refs.extend(json.dumps([str(r.get("id")), str(r.get("origin"))], ensure_ascii=False)
                               for r in batch)
                index.add(sp.code, [s.whole for s in sides])
                sp.length_batches.append(task.token_lengths(counter, batch).astype(np.int32))
                if ngrams is not None:
                    rows = np.arange(base, base + len(batch))
                    add = ngrams.add_train if sp.name == "train" else ngrams.add_eval
                    add(rows, [s.prompt for s in sides], [s.target for s in sides])
                    sp.prompt_keys.extend(key64(exact_form(s.prompt)) for s in sides)
                if task.has_labels:
                    for r in batch:
                        sp.labels.append(label_index.get(r["label"], -1))
                        sp.label_counts[r["label"]] += 1
                for i, (r, s) in enumerate(zip(batch, sides)):
                    local = base - sp.start + i
                    # a prompt -> reply row is near-empty when either side is; a plain text is its own prompt
                    if is_near_empty(s.target) or (s.prompt != s.target and is_near_empty(s.prompt)):
                        sp.near_empty.append(local)
                    if sp.name == "train" and base + i in noise_rows:
                        noise_texts[base + i] = s.whole
                    hits = pii.find_pii(s.whole)
                    if hits:
                        sp.pii.append([local, [[m.kind, m.masked] for m in hits]])
                        sp.pii_by_kind.update(m.kind for m in hits)
                    if redacted_dir:
                        redacted.write(task.map_texts(r, pii.redact_text) if hits else r)
        start += sp.n

    no_hits = (np.empty(0, dtype=np.int64),) * 3
    return Scan(recipe=recipe, task=task, data_summary=data_summary, label_names=label_names, splits=splits,
                dups=index.finish(), median_words=median, ngram_hits=ngrams.finish() if ngrams is not None else no_hits,
                template_ngrams=ngrams.template_ngrams if ngrams is not None else None, length_unit=length_unit,
                noise_texts=noise_texts)


def median_words(path: Path, task: Task, limit: int = MEDIAN_WORDS_ROWS) -> float:
    """Median words per example over the first `limit` rows of train: picks the shingle size when not set."""
    counts: list[int] = []
    for batch in read_batches(path):
        counts.extend(len(task.sides(r).whole.split()) for r in batch[:limit - len(counts)])
        if len(counts) >= limit:
            break
    return float(np.median(counts)) if counts else 0.0


def noise_sample(train_path: Path, seed: int) -> set[int]:
    """Global row numbers of the train rows given to the label-noise model (train is global rows 0..n-1)."""
    with open(train_path, encoding="utf-8") as fh:
        n = sum(1 for line in fh if line.strip())
    if n <= LABEL_NOISE_MAX_ROWS:
        return set(range(n))
    rng = np.random.default_rng(seed)
    return set(rng.choice(n, LABEL_NOISE_MAX_ROWS, replace=False).tolist())


@dataclass
class Excerpts:
    """500-character excerpts of the rows the audit recommends removing, by global row number, on disk."""

    rows: np.ndarray  # sorted global row numbers
    texts: StringStore

    def get(self, g: int) -> str | None:
        i = int(np.searchsorted(self.rows, g))
        return self.texts[i] if i < len(self.rows) and self.rows[i] == g else None


def attach_texts(scan: Scan, rows: list[dict[str, Any]], quarantined: np.ndarray) -> Excerpts:
    """Second pass: give each finding example (a row reference: id + split) a 160-character `text` excerpt, and
    return the 500-character excerpts of the `quarantined` global rows (quarantine.jsonl is written from disk)."""
    wanted: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("id") is not None and row.get("split"):
            wanted.setdefault((row["split"], row["id"]), []).append(row)
    keys = np.unique(np.asarray(quarantined, dtype=np.int64))
    keys = keys[keys >= 0]
    excerpts = Excerpts(keys, StringStore())
    next_key = 0  # the next quarantined row to find (rows and keys both ascend)
    for sp in scan.splits:
        pending = next_key < len(keys) and keys[next_key] < sp.start + sp.n
        if not pending and not any(key[0] == sp.name for key in wanted):
            continue
        g = sp.start
        for batch in read_batches(sp.path):
            for r in batch:
                for row in wanted.get((sp.name, str(r.get("id"))), ()):
                    row["text"] = snippet(scan.task.sides(r).whole, 160)
                if next_key < len(keys) and keys[next_key] == g:
                    excerpts.texts.append(snippet(scan.task.sides(r).whole, 500))
                    next_key += 1
                g += 1
    return excerpts
