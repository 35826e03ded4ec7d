"""The rows the data stage writes (data/{train,validation,test}.jsonl, labels.json) and their readers.

Every later stage reads its data through these functions, never by parsing the files itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.errors import DataError
from tunewise.kit.jsonl import UTF8_BOM, read_jsonl

SPLITS = ("train", "validation", "test")
LABELS_FILE = "labels.json"


@dataclass
class Row:
    id: str  # the file's own `id` value when present and non-empty, else "{file_stem}:{line}"
    text: str
    label: str  # always a string: integer labels 0/1 become "0"/"1"
    meta: dict[str, Any]  # the configured slice_fields; missing or empty values are None
    origin: str  # "path/to/file.jsonl:12"
    text_pair: str | None = None  # the second text of a sentence pair (data.text_pair_field); None: single text


@dataclass
class Example:
    """One generation or chat example, as messages. A generation row becomes [system?, user(prompt),
    assistant(completion)]; a chat row keeps its messages. Assistant messages may carry "weight": 0 (not trained)."""

    id: str
    messages: list[dict[str, Any]]
    meta: dict[str, Any]
    origin: str
    references: list[str] = field(default_factory=list)  # further references for evaluation (generation)

    @property
    def label(self) -> str:
        return ""  # causal examples have no class: splits treat them as one stratum

    @property
    def target(self) -> str:
        """The last assistant message: what evaluation compares generations against."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "assistant")

    @property
    def prompt_messages(self) -> list[dict[str, Any]]:
        """The messages before the last assistant turn: what the model is asked at evaluation time."""
        last = max(i for i, m in enumerate(self.messages) if m["role"] == "assistant")
        return [{"role": m["role"], "content": m["content"]} for m in self.messages[:last]]

    @property
    def text(self) -> str:
        """The input side as one string (non-assistant messages), for audits and drift."""
        return "\n".join(m["content"] for m in self.messages if m["role"] != "assistant")


def load_examples(folder: Path, split: str) -> list[Example]:
    """Read back `{folder}/{split}.jsonl` of a generation or chat run, as written by prepare_data."""
    return list(iter_split(folder, split, kind="example"))


def available_splits(folder: Path) -> list[str]:
    """The splits the data stage wrote into `folder`, in train/validation/test order."""
    return [name for name in SPLITS if (Path(folder) / f"{name}.jsonl").is_file()]


def load_split(folder: Path, split: str) -> list[Row]:
    """Read back `{folder}/{split}.jsonl` as written by prepare_data (classification)."""
    return list(iter_split(folder, split, kind="row"))


def iter_split(folder: Path, split: str, *, kind: str) -> Iterator[Any]:
    """The records of `{folder}/{split}.jsonl` one line at a time, checked as `load_split` ("row") or
    `load_examples` ("example") check them: what a stage reads when the split may not fit in memory."""
    if kind not in _RECORDS:
        raise ValueError(f"kind must be one of {sorted(_RECORDS)}, not {kind!r}")
    path = _split_path(folder, split)  # checked now, not at the first next()
    return _records(path, _RECORDS[kind], kind)


def _records(path: Path, record: type, what: str) -> Iterator[Any]:
    written = f"{'an' if what[0] in 'aeiou' else 'a'} {what} written by the data stage"
    damaged = "; the file was damaged: run the data stage again"
    for number, value in read_jsonl(path, what=written, advice=damaged):
        try:
            yield record(**value)
        except TypeError as exc:  # not an object, or other keys than the record's
            raise DataError(f"{path}:{number}: not {written} ({exc}){damaged}") from None


def sample_split(folder: Path, split: str, cap: int | None, rng, *, kind: str,
                 n: int | None = None) -> tuple[list[Any], int]:
    """(rows, rows in the split): at most `cap` records of the split, held in memory, the rest only read past.
    Beyond `cap`, the records at `sorted(rng.choice(n, cap, replace=False))` in file order: exactly what that
    choice over the whole list gave, read in two passes (count the lines, then keep the chosen) so that the
    sample is all that is held (plus the choice's index array, 8 bytes a row when cap > n/50). Up to `cap` (or
    cap None): every record in order, and `rng` (a numpy Generator) is not drawn from. `n`: the split's
    count_split, when the caller has it already (the first pass is then skipped)."""
    if n is None:
        n = count_split(folder, split)
    if cap is None or n <= cap:
        return list(iter_split(folder, split, kind=kind)), n
    import numpy as np

    chosen = np.sort(rng.choice(n, cap, replace=False))
    rows, at = [], 0
    for i, record in enumerate(iter_split(folder, split, kind=kind)):  # every line still checked
        if at < cap and i == chosen[at]:
            rows.append(record)
            at += 1
    return rows, n


def count_split(folder: Path, split: str) -> int:
    """Records in `{folder}/{split}.jsonl` (its non-blank lines, as `read_jsonl` counts them), without parsing."""
    n = 0
    with open(_split_path(folder, split), "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if number == 1 and raw.startswith(UTF8_BOM):
                raw = raw[len(UTF8_BOM):]
            n += bool(raw.strip())
    return n


def rows_dataset(folder: Path, split: str, cache_dir: Path):
    """`{folder}/{split}.jsonl` (classification) as a memory-mapped Arrow table (datasets.Dataset) with columns
    id, text, text_pair, label: converted a batch at a time into an Arrow file under `cache_dir`, so a split
    larger than memory is never held whole. The same file (size and mtime) is converted once."""
    import datasets
    from datasets import Dataset, Features, Value

    path = Path(folder) / f"{split}.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: no {split} split here; run the data stage first (it writes "
                        f"{', '.join(available_splits(folder)) or 'nothing yet'} in this folder)")
    stat = path.stat()
    features = Features({"id": Value("string"), "text": Value("string"), "text_pair": Value("string"),
                         "label": Value("string")})
    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        return Dataset.from_generator(_row_fields, features=features, cache_dir=str(cache_dir),
                                      gen_kwargs={"path": str(path), "stamp": (stat.st_size, stat.st_mtime_ns)})
    finally:
        if shown:
            datasets.enable_progress_bars()


def _row_fields(path: str, stamp: tuple[int, int]):
    """The Arrow columns of each row of a data/ split, read a line at a time (`stamp` keys the cache)."""
    for number, value in read_jsonl(Path(path), what="a row written by the data stage",
                                    advice="; the file was damaged: run the data stage again"):
        try:
            row = Row(**value)
        except TypeError as exc:
            raise DataError(f"{path}:{number}: not a row written by the data stage ({exc}); the file was damaged: "
                            f"run the data stage again") from None
        yield {"id": row.id, "text": row.text, "text_pair": row.text_pair, "label": row.label}


def load_labels(folder: Path) -> list[str]:
    """The label set, in order, as the data stage wrote it (labels.json, a typed artifact)."""
    from tunewise.artifacts.data import Labels

    return list(Labels.read(Path(folder) / LABELS_FILE).labels)




def _quiet_datasets():
    """Silence datasets' progress bars for the duration (its own bars for internal Arrow conversions are noise)."""
    import contextlib

    import datasets

    @contextlib.contextmanager
    def quiet():
        shown = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        try:
            yield
        finally:
            if shown:
                datasets.enable_progress_bars()

    return quiet()


def _split_path(folder: Path, split: str) -> Path:
    path = Path(folder) / f"{split}.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: no {split} split here; run the data stage first (it writes "
                        f"{', '.join(available_splits(folder)) or 'nothing yet'} in this folder)")
    return path


def records_dataset(folder: Path, split: str, cache_dir: Path, *, kind: str):
    """`{folder}/{split}.jsonl` as a memory-mapped Arrow table (datasets.Dataset) with columns id, origin, label and
    record (the whole row as its JSON line; decode it with `row_from_record` or `example_from_record`). `kind`:
    "row" (classification) or "example" (generation, chat); each line is checked as `load_split` /
    `load_examples` check it. Converted a batch at a time under `cache_dir`, so a split larger than memory is
    never held whole; every field survives the round trip exactly. The same file (size, mtime) is converted once."""
    from datasets import Dataset, Features, Value

    if kind not in _RECORDS:
        raise ValueError(f"kind must be one of {sorted(_RECORDS)}, not {kind!r}")
    path = _split_path(folder, split)
    stat = path.stat()
    features = Features({"id": Value("string"), "origin": Value("string"), "label": Value("string"),
                         "record": Value("string")})
    with _quiet_datasets():
        return Dataset.from_generator(_record_fields, features=features, cache_dir=str(cache_dir),
                                      gen_kwargs={"path": str(path), "kind": kind,
                                                  "stamp": (stat.st_size, stat.st_mtime_ns)})


_RECORDS = {"row": Row, "example": Example}


def _record_fields(path: str, kind: str, stamp: tuple[int, int]):
    """Each line of a data/ split as Arrow columns, read and checked a line at a time (`stamp` keys the cache)."""
    import json

    written = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} written by the data stage"
    damaged = "; the file was damaged: run the data stage again"
    for number, value in read_jsonl(Path(path), what=written, advice=damaged):
        try:
            record = _RECORDS[kind](**value)
        except TypeError as exc:  # not an object, or other keys than the record's
            raise DataError(f"{path}:{number}: not {written} ({exc}){damaged}") from None
        yield {"id": record.id, "origin": record.origin, "label": record.label,
               "record": json.dumps(value, ensure_ascii=False)}


def row_from_record(record: str) -> Row:
    """A classification Row from the `record` column of `records_dataset`."""
    import json

    return Row(**json.loads(record))


def example_from_record(record: str) -> Example:
    """A generation or chat Example from the `record` column of `records_dataset`."""
    import json

    return Example(**json.loads(record))
