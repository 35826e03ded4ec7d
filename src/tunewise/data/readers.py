"""Read labeled files (JSONL, CSV, TSV, Parquet, `hf:` datasets) into Rows, validating every row.

Each bad row is described once, as a `Quarantined` record naming file, line, field, what is wrong and what was
expected. With on_error="fail" the first bad row raises DataError; with "quarantine" bad rows are collected and the
file fails only when too large a share of it is bad. Problems with the file as a whole (missing, empty, no header
column for the text) always raise.

Line numbers are physical, 1-based lines of the file (the line where a CSV record starts; the header is line 1).
Parquet files and `hf:` datasets have no lines: there the number is the 1-based row number.

Files are read as a stream (a line, a CSV record or a Parquet row batch at a time; `hf:` datasets are memory-mapped
Arrow), so `stream_records` holds one record at a time whatever the file's size; `read_records` collects them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tunewise.artifacts.rows import Example, Row
from tunewise.errors import DataError
from tunewise.recipe import template_fields

FORMATS_BY_SUFFIX = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
FORMATS = ("jsonl", "csv", "tsv", "parquet")
ID_FIELD = "id"
RAW_LIMIT = 500
MAX_LISTED_LABELS = 20
PROBLEMS_SHOWN = 3
UTF8_BOM = b"\xef\xbb\xbf"
PARQUET_BATCH = 8192
FAIL_HINT = " (set data.on_error=quarantine to set bad rows aside instead)"
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class Quarantined:
    file: str
    line: int
    field: str | None
    reason: str  # "{what is wrong}; {what is expected}"
    raw: str  # the offending line or row, truncated to RAW_LIMIT characters

    @property
    def message(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: field '{self.field}': {self.reason}" if self.field else f"{where}: {self.reason}"


class BadRow(Exception):
    """One row is invalid. Raised by the row checks; the reader turns it into a Quarantined record."""

    def __init__(self, reason: str, field: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.field = field


# A record as the format readers yield it: (line, values or the problem found while parsing, raw text).
# raw is the line's text, or the values dict itself (Parquet, hf:), rendered only when the row is bad.
Record = tuple[int, "dict[str, Any] | BadRow", "str | dict[str, Any]"]


# ---------------------------------------------------------------- the public reader


def read_labeled_file(path: str | Path, *, fmt: str = "auto", text_field: str, label_field: str,
                      text_pair_field: str | None = None, slice_fields: Iterable[str] = (), labels: list[str] | None = None,
                      on_error: Literal["fail", "quarantine"] = "fail",
                      max_quarantine_fraction: float = 0.05,
                      labels_from: Literal["declared", "train"] = "declared") -> tuple[list[Row], list[Quarantined]]:
    """Read one labeled file. Returns (rows, quarantined); raises DataError as described in the module docstring.

    labels: the allowed label set (None allows any). labels_from says where that set came from, for the message
    about a row whose label is not in it: "declared" (data.labels) or "train" (derived from the training data).
    text_pair_field: a second text column read as a sentence pair with text_field (None: single-text rows).
    """
    checker = RowChecker(text_field, label_field, list(slice_fields), labels, labels_from, id_prefix(str(path)),
                         text_pair_field=text_pair_field)
    return read_records(path, checker, fmt=fmt, on_error=on_error, max_quarantine_fraction=max_quarantine_fraction)


def read_records(path: str | Path, checker: Any, *, fmt: str = "auto", on_error: Literal["fail", "quarantine"] = "fail",
                 max_quarantine_fraction: float = 0.05) -> tuple[list[Any], list[Quarantined]]:
    """Read one file with any checker (RowChecker, ExampleChecker): its `make_row` builds each record or raises
    BadRow. Returns (records, quarantined) under the same rules as read_labeled_file."""
    rows: list[Any] = []
    quarantined: list[Quarantined] = []
    tally = Tally(str(path), max_quarantine_fraction)
    for item in stream_records(path, checker, fmt=fmt, on_error=on_error):
        (quarantined if isinstance(item, Quarantined) else rows).append(item)
        tally.count(item)
    tally.check()
    return rows, quarantined


def stream_records(path: str | Path, checker: Any, *, fmt: str = "auto",
                   on_error: Literal["fail", "quarantine"] = "fail") -> Iterator[Any]:
    """Each record of one file in file order: what `checker.make_row` built, or a Quarantined record for a bad row
    (on_error="fail" raises DataError at the first instead). Holds one record at a time; the caller counts them
    with a Tally and calls its `check()` at the end (the share-quarantined and no-valid-row rules)."""
    if on_error not in ("fail", "quarantine"):
        raise ValueError(f"on_error must be 'fail' or 'quarantine', not {on_error!r}")
    name = str(path)
    for line, values, raw in _records(name, fmt, checker):
        try:
            if isinstance(values, BadRow):
                raise values
            yield checker.make_row(values, line, f"{name}:{line}")
        except BadRow as bad:
            problem = Quarantined(name, line, bad.field, bad.reason, _render_raw(raw)[:RAW_LIMIT])
            if on_error == "fail":
                raise DataError(problem.message + FAIL_HINT) from None
            yield problem


class Tally:
    """Counts one file's good and quarantined records as they stream by (keeping only the first few problems),
    and applies the file-level rules at the end: no data rows, too large a share quarantined, no valid row."""

    def __init__(self, name: str, max_fraction: float):
        self.name, self.max_fraction = name, max_fraction
        self.good = 0
        self.bad = 0
        self.first: list[Quarantined] = []

    def count(self, item: Any) -> None:
        if isinstance(item, Quarantined):
            self.bad += 1
            if len(self.first) < PROBLEMS_SHOWN:
                self.first.append(item)
        else:
            self.good += 1

    def check(self) -> None:
        name, total = self.name, self.good + self.bad
        if total == 0:
            raise DataError(f"{name}: the file has no data rows; expected at least one labeled row")
        first = "\n  - ".join(q.message for q in self.first)
        if self.bad / total > self.max_fraction:
            raise DataError(f"{name}: {self.bad:,} of {total:,} rows ({self.bad / total:.1%}) were "
                            f"quarantined, more than data.max_quarantine_fraction={self.max_fraction}; "
                            f"first problems:\n  - {first}")
        if self.good == 0:
            raise DataError(f"{name}: none of its {total:,} rows is valid; first problems:\n  - {first}")


def id_prefix(name: str) -> str:
    if name.startswith("hf:"):
        return name[3:]
    return Path(name).stem


def _render_raw(raw: str | dict[str, Any]) -> str:
    """The bad row as text that is valid UTF-8, so the quarantine file can always be written."""
    text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=str)
    try:
        # CSV text keeps undecodable bytes as lone surrogates (surrogateescape): show them as U+FFFD
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


# ---------------------------------------------------------------- checking one row


class RowChecker:
    """Turns one record's values into a Row, or raises BadRow saying which field is wrong and why."""

    def __init__(self, text_field: str, label_field: str, slice_fields: list[str], labels: list[str] | None,
                 labels_from: str, id_prefix: str, *, text_pair_field: str | None = None):
        self.text_field = text_field
        self.text_pair_field = text_pair_field
        self.label_field = label_field
        self.slice_fields = slice_fields
        self.labels = labels
        self.allowed = set(labels) if labels is not None else None
        self.labels_from = labels_from
        self.id_prefix = id_prefix

    @property
    def required(self) -> list[str]:
        pair = [self.text_pair_field] if self.text_pair_field is not None else []
        return [self.text_field, *pair, self.label_field]

    column_hint = "Set data.text_field=COLUMN and data.label_field=COLUMN to use other columns"

    def make_row(self, values: dict[str, Any], line: int, origin: str) -> Row:
        text = self._text(values, self.text_field, "data.text_field")
        pair = (self._text(values, self.text_pair_field, "data.text_pair_field")
                if self.text_pair_field is not None else None)
        label = self._label(values)
        meta = {name: _meta_value(values.get(name)) for name in self.slice_fields}
        return Row(self._row_id(values, line), text, label, meta, origin, text_pair=pair)

    def _missing(self, values: dict[str, Any], field: str, setting: str) -> BadRow:
        found = ", ".join(f"'{k}'" for k in list(values)[:10]) or "none"
        return BadRow(f"missing; expected every row to have a '{field}' key (keys found: {found}; "
                      f"set {setting}= to read another key)", field)

    def _text(self, values: dict[str, Any], field: str, setting: str) -> str:
        if field not in values:
            raise self._missing(values, field, setting)
        text = values[field]
        if not isinstance(text, str):
            raise BadRow(f"is {_describe(text)}; expected the input text as a non-empty string", field)
        if not text.strip():
            what = "empty" if not text else "whitespace only"
            raise BadRow(f"is {what}; expected non-empty text", field)
        _check_unicode(text, field)
        return text

    def _label(self, values: dict[str, Any]) -> str:
        field = self.label_field
        if field not in values:
            raise self._missing(values, field, "data.label_field")
        value = values[field]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise BadRow(f"is {_describe(value)}; expected a string or an integer label", field)
        label = str(value)
        if not label.strip():
            raise BadRow("is empty; expected a label", field)
        _check_unicode(label, field)
        if self.allowed is not None and label not in self.allowed:
            raise BadRow(self._unknown_label(label), field)
        return label

    def _unknown_label(self, label: str) -> str:
        allowed = _list_labels(self.labels or [])
        if self.labels_from == "train":
            return (f"'{label}' was not in the training data; expected one of the labels seen in train: {allowed} "
                    f"(or declare the full label set in data.labels)")
        return f"'{label}' is not one of the declared labels (data.labels); expected one of: {allowed}"

    def _row_id(self, values: dict[str, Any], line: int) -> str:
        own = values.get(ID_FIELD)
        if own is not None and not isinstance(own, (dict, list)) and str(own).strip():
            return _without_surrogates(str(own))
        return f"{self.id_prefix}:{line}"


CHAT_ROLES = ("system", "user", "assistant")


class ExampleChecker:
    """Turns one record into an Example for the generation or chat task, or raises BadRow naming the field."""

    def __init__(self, task: str, *, prompt_field: str = "prompt", prompt_template: str | None = None,
                 completion_field: str = "completion", system_prompt: str | None = None,
                 messages_field: str = "messages", reference_fields: Iterable[str] = (),
                 slice_fields: Iterable[str] = (), id_prefix: str = "row"):
        if task not in ("generation", "chat"):
            raise ValueError(f"task must be 'generation' or 'chat', not {task!r}")
        self.task = task
        self.prompt_field = prompt_field
        self.prompt_template = prompt_template
        self.template_fields = template_fields(prompt_template) if prompt_template else []
        self.completion_field = completion_field
        self.system_prompt = system_prompt
        self.messages_field = messages_field
        self.reference_fields = list(reference_fields)
        self.slice_fields = list(slice_fields)
        self.id_prefix = id_prefix

    @property
    def from_messages(self) -> bool:
        """Chat rows are OpenAI-style messages, unless a prompt template builds the user turn from columns."""
        return self.task == "chat" and not self.prompt_template

    @property
    def required(self) -> list[str]:
        if self.from_messages:
            return [self.messages_field]
        prompt = self.template_fields if self.prompt_template else [self.prompt_field]
        return list(dict.fromkeys([*prompt, self.completion_field, *self.reference_fields]))

    @property
    def column_hint(self) -> str:
        if self.from_messages:
            return "Set data.messages_field=COLUMN to read another column"
        if self.prompt_template:
            return ("data.prompt_template names these columns; fix the template, or set data.completion_field="
                    "COLUMN (or the file's own completion_field) for the completion")
        return "Set data.prompt_field=COLUMN and data.completion_field=COLUMN to use other columns"

    def make_row(self, values: dict[str, Any], line: int, origin: str) -> Example:
        meta = {name: _meta_value(values.get(name)) for name in self.slice_fields}
        row_id = RowChecker._row_id(self, values, line)  # type: ignore[arg-type]  # same id rule
        if self.from_messages:
            return Example(row_id, self._messages(values), meta, origin)
        prompt = self._prompt(values)
        completion = self._string(values, self.completion_field, "the completion", "data.completion_field")
        messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else [])
        messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
        references = [self._string(values, f, "a reference", "data.<split>.reference_fields")
                      for f in self.reference_fields]
        return Example(row_id, messages, meta, origin, references)

    def _string(self, values: dict[str, Any], field: str, what: str, setting: str) -> str:
        if field not in values:
            raise RowChecker._missing(self, values, field, setting)  # type: ignore[arg-type]
        value = values[field]
        if not isinstance(value, str):
            raise BadRow(f"is {_describe(value)}; expected {what} as a non-empty string", field)
        if not value.strip():
            raise BadRow(f"is {'empty' if not value else 'whitespace only'}; expected {what} as non-empty text", field)
        _check_unicode(value, field)
        return value

    def _prompt(self, values: dict[str, Any]) -> str:
        if not self.prompt_template:
            return self._string(values, self.prompt_field, "the prompt", "data.prompt_field")
        for name in self.template_fields:  # a column may be empty (e.g. an instruction's optional input)
            if name not in values:
                raise RowChecker._missing(self, values, name, "data.prompt_template")  # type: ignore[arg-type]
            if not isinstance(values[name], str):
                raise BadRow(f"is {_describe(values[name])}; expected text for {{{name}}} in data.prompt_template",
                             name)
            _check_unicode(values[name], name)
        prompt = self.prompt_template.format_map({k: values[k] for k in self.template_fields}).strip()
        if not prompt:
            raise BadRow(f"every column of data.prompt_template is empty ({', '.join(self.template_fields)}); "
                         f"expected a non-empty prompt", self.template_fields[0])
        return prompt

    def _messages(self, values: dict[str, Any]) -> list[dict[str, Any]]:
        field_name = self.messages_field
        if field_name not in values:
            raise RowChecker._missing(self, values, field_name, "data.messages_field")  # type: ignore[arg-type]
        raw = values[field_name]
        if isinstance(raw, str):  # CSV cells hold JSON text
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError:
                raise BadRow("is a string that is not JSON; expected a list of {role, content} objects",
                             field_name) from None
        if not isinstance(raw, list) or not raw:
            raise BadRow(f"is {_describe(raw) if raw != [] else 'an empty list'}; expected a non-empty list of "
                         f'{{"role": ..., "content": ...}} objects', field_name)
        messages = []
        for i, m in enumerate(raw):
            where = f"{field_name}[{i}]"
            if not isinstance(m, dict):
                raise BadRow(f"is {_describe(m)}; expected an object with 'role' and 'content'", where)
            role = m.get("role")
            if not isinstance(role, str) or role not in CHAT_ROLES:
                shown = "missing" if role is None else f"'{role}'" if isinstance(role, str) else _describe(role)
                raise BadRow(f"role is {shown}; expected one of: {', '.join(CHAT_ROLES)}", f"{where}.role")
            if role == "system" and i > 0:  # chat templates put the system prompt first, or fail on it
                raise BadRow(f"is a system message at position {i + 1}; expected the system message to be the "
                             f"first message (at most one)", f"{where}.role")
            content = m.get("content")
            if not isinstance(content, str) or not content.strip():
                got = "missing" if content is None else ("empty" if isinstance(content, str) else _describe(content))
                raise BadRow(f"content is {got}; expected non-empty text", f"{where}.content")
            _check_unicode(content, f"{where}.content")
            message: dict[str, Any] = {"role": role, "content": content}
            if "weight" in m:
                weight = m["weight"]
                if role != "assistant":
                    raise BadRow(f"has a weight on a {role} message; only assistant messages carry a weight",
                                 f"{where}.weight")
                if isinstance(weight, bool) or weight not in (0, 1):
                    raise BadRow(f"weight is {weight!r}; expected 0 (not trained) or 1 (trained)", f"{where}.weight")
                message["weight"] = int(weight)
            messages.append(message)
        roles = [m["role"] for m in messages]
        if "assistant" not in roles:
            raise BadRow(f"has no assistant message (roles: {', '.join(roles)}); expected at least one assistant "
                         f"turn to learn from", field_name)
        if all(m.get("weight", 1) == 0 for m in messages if m["role"] == "assistant"):
            raise BadRow("has weight 0 on every assistant message; expected at least one trained assistant turn",
                         field_name)
        if messages[-1]["role"] != "assistant":
            raise BadRow(f"ends with a {messages[-1]['role']} message; expected the last message to be the "
                         f"assistant's reply", field_name)
        return messages


def _check_unicode(value: str, field: str) -> None:
    if _SURROGATE.search(value):
        raise BadRow("contains an unpaired surrogate escape (like \\ud83d) that is not valid Unicode; "
                     "expected valid text (an escaped emoji needs both halves of its surrogate pair)", field)


def _without_surrogates(value: str) -> str:
    """Lone surrogates (from JSON escapes) cannot be written as UTF-8: replace them with U+FFFD."""
    return _SURROGATE.sub("\ufffd", value) if _SURROGATE.search(value) else value


def _describe(value: Any) -> str:
    """A value's type in JSON words, for messages: 'null', 'a boolean (true)', 'a float (0.5)', ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({value})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _list_labels(labels: list[str]) -> str:
    shown = ", ".join(f"'{x}'" for x in labels[:MAX_LISTED_LABELS])
    if len(labels) > MAX_LISTED_LABELS:
        shown += f", ... ({len(labels)} labels in all)"
    return shown


def _meta_value(value: Any) -> Any:
    """Slice values as JSON-friendly Python: empty and NaN mean missing (None); exotic types become strings."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return _without_surrogates(value)
    if isinstance(value, (int, float, bool, list, dict)):
        return value
    return str(value)


# ---------------------------------------------------------------- choosing and opening the source


def _records(name: str, fmt: str, checker: RowChecker) -> Iterator[Record]:
    if name.startswith("hf:"):
        return _hf_records(name, checker)
    path = Path(name)
    if not path.exists():
        raise DataError(f"{name}: file does not exist; check the data paths in the recipe "
                        f"(relative paths are relative to the recipe file)")
    if not path.is_file():
        raise DataError(f"{name}: is a directory, not a data file")
    fmt = _resolve_format(path, fmt)
    if path.stat().st_size == 0:
        raise DataError(f"{name}: the file is empty (0 bytes); expected labeled rows")
    if fmt == "parquet":
        return _parquet_records(name, checker)
    with open(path, "rb") as fh:
        head = fh.read(3)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel's "Unicode text", Notepad's "Unicode"
        raise DataError(f"{name}: the file is UTF-16 encoded (it starts with a UTF-16 byte order mark); expected "
                        f"UTF-8: re-save it as UTF-8 (in Excel: 'CSV UTF-8')")
    skip = len(UTF8_BOM) if head == UTF8_BOM else 0  # written by Excel and Notepad; not part of the first field
    if fmt == "jsonl":
        return _jsonl_records(path, skip)
    return _csv_records(path, skip, "," if fmt == "csv" else "\t", name, checker)


def _resolve_format(path: Path, fmt: str) -> str:
    if fmt in FORMATS:
        return fmt
    allowed = ", ".join(FORMATS_BY_SUFFIX)
    if fmt != "auto":
        raise DataError(f"{path}: unknown data format '{fmt}'; expected one of: auto, {', '.join(FORMATS)}")
    suffix = path.suffix.lower()
    if suffix not in FORMATS_BY_SUFFIX:
        raise DataError(f"{path}: cannot tell the format from the extension '{suffix or '(none)'}'; expected one of "
                        f"{allowed} (or set data.format=jsonl|csv|tsv|parquet)")
    return FORMATS_BY_SUFFIX[suffix]


# ---------------------------------------------------------------- JSON Lines


def _jsonl_records(path: Path, skip: int) -> Iterator[Record]:
    # Binary lines end at b"\n" only: str.splitlines would also break at U+2028 and friends, which JSON allows.
    with open(path, "rb") as fh:
        fh.seek(skip)
        yield from _jsonl_lines(fh)


def _jsonl_lines(lines: Iterable[bytes]) -> Iterator[Record]:
    for number, line_bytes in enumerate(lines, start=1):
        if line_bytes.endswith(b"\n"):
            line_bytes = line_bytes[:-1]
        if line_bytes.endswith(b"\r"):
            line_bytes = line_bytes[:-1]
        if not line_bytes.strip():
            continue  # blank lines are not rows
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, BadRow(_utf8_reason(line_bytes, exc.start)), line_bytes.decode("utf-8", "replace")
            continue
        try:
            value = json.loads(line, object_pairs_hook=_object_without_repeats)
        except json.JSONDecodeError as exc:
            yield number, BadRow(_json_reason(exc, number, line)), line
            continue
        except _RepeatedKey as exc:
            yield number, BadRow(f"the key '{exc.key}' appears {exc.count} times in one object; expected each key "
                                 f"once (JSON keeps only the last value, so the others would be lost)",
                                 exc.key), line
            continue
        if not isinstance(value, dict):
            yield number, BadRow(f"the line is {_describe(value)}, not a JSON object; expected one object per line, "
                                 'like {"text": "...", "label": "..."}'), line
            continue
        yield number, value, line


class _RepeatedKey(Exception):
    def __init__(self, key: str, count: int):
        super().__init__(key)
        self.key, self.count = key, count


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        key = next(k for k in value if sum(1 for p, _ in pairs if p == k) > 1)
        raise _RepeatedKey(key, sum(1 for p, _ in pairs if p == key))
    return value


def _utf8_reason(line_bytes: bytes, start: int) -> str:
    column = len(line_bytes[:start].decode("utf-8")) + 1
    return (f"invalid UTF-8: byte 0x{line_bytes[start]:02X} at byte offset {start} of the line (column {column}); "
            f"expected UTF-8 text (re-save the file as UTF-8)")


def _json_reason(exc: json.JSONDecodeError, number: int, line: str) -> str:
    reason = f"not valid JSON ({exc.msg} at column {exc.colno}); expected one JSON object per line"
    if number == 1 and line.lstrip().startswith("["):
        reason += " (this looks like a JSON array; write JSON Lines instead: one object per line)"
    return reason


# ---------------------------------------------------------------- CSV and TSV


class _RecentLines:
    """The file's physical lines, one at a time, for csv.reader; keeps the lines of the record being read (and
    any after the last one dropped) so a bad row can be shown as its raw text."""

    def __init__(self, fh):
        self._fh = fh
        self.first = 1  # line number of self.kept[0]
        self.kept: list[str] = []

    def __iter__(self):
        for line in self._fh:
            self.kept.append(line)
            yield line

    def raw(self, start: int, end: int) -> str:
        return "".join(self.kept[start - self.first:end - self.first + 1]).rstrip("\r\n")

    def drop_before(self, line: int) -> None:
        del self.kept[:max(0, line - self.first)]
        self.first = max(self.first, line)


def _csv_records(path: Path, skip: int, delimiter: str, name: str, checker: RowChecker) -> Iterator[Record]:
    # surrogateescape keeps undecodable bytes as lone surrogates, so one bad row does not sink the whole file;
    # newline="" splits physical lines the way the csv module splits them
    with open(path, "rb") as raw_fh:
        raw_fh.seek(skip)
        with io.TextIOWrapper(raw_fh, encoding="utf-8", errors="surrogateescape", newline="") as fh:
            yield from _csv_rows(_RecentLines(fh), delimiter, name, checker)


def _csv_rows(lines: _RecentLines, delimiter: str, name: str, checker: RowChecker) -> Iterator[Record]:
    reader = csv.reader(lines, delimiter=delimiter)
    _allow_long_fields()
    header: list[str] | None = None
    while True:
        start = reader.line_num + 1
        lines.drop_before(start)
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raw = lines.raw(start, reader.line_num)
            yield start, BadRow(f"cannot be parsed as {_format_name(delimiter)} ({exc}); expected a well-formed row"), raw
            continue
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue  # blank line
        raw = lines.raw(start, reader.line_num)
        if header is None:
            header = _check_header(cells, name, start, delimiter, checker)
            continue
        yield start, _csv_values(header, cells, raw, start, reader.line_num, delimiter), raw


def _check_header(cells: list[str], name: str, line: int, delimiter: str, checker: RowChecker) -> list[str]:
    header = [c.strip() for c in cells]
    if _first_surrogate(cells) is not None:
        raise DataError(f"{name}:{line}: the header row is not valid UTF-8; expected a UTF-8 encoded file")
    repeated = repeated_names(header)
    if repeated:
        column, positions = next(iter(repeated.items()))
        raise DataError(f"{name}:{line}: the header row names column '{column}' {len(positions)} times (columns "
                        f"{_and(positions)}); expected each column name once, since a repeated column would "
                        f"replace the values of the earlier one. Rename or remove the extra column")
    missing = [f for f in checker.required if f not in header]
    if missing:
        found = ", ".join(f"'{h}'" for h in header[:20])
        raise DataError(
            f"{name}: the header row (line {line}) has no {_missing_columns(missing)}; columns found: {found}. "
            f"{checker.column_hint}; if the file has no "
            f"header row, add one (the first line of a {_format_name(delimiter)} file is read as the header)")
    return header


def _csv_values(header: list[str], cells: list[str], raw: str, start: int, end: int,
                delimiter: str) -> dict[str, str] | BadRow:
    cell_index = _first_surrogate(cells)
    if cell_index is not None:
        field = header[cell_index] if cell_index < len(header) else None
        return BadRow(_csv_utf8_reason(raw, start), field)
    if len(cells) != len(header):
        reason = (f"the row has {_columns(len(cells))} but the header has {len(header)}; expected one value per "
                  f"header column (quote values that contain {_delimiter_name(delimiter)})")
        if end > start:
            reason += f"; the row spans lines {start}-{end}, so a quote may be left open"
        return BadRow(reason)
    return dict(zip(header, cells))


def _csv_utf8_reason(raw: str, start: int) -> str:
    index = _SURROGATE.search(raw).start()  # type: ignore[union-attr]  # the caller found one
    line = start + raw.count("\n", 0, index)
    column = index - (raw.rfind("\n", 0, index) + 1) + 1
    byte = ord(raw[index]) - 0xDC00
    return (f"invalid UTF-8: byte 0x{byte:02X} at line {line}, column {column}; "
            f"expected UTF-8 text (re-save the file as UTF-8)")


def repeated_names(names: list[str]) -> dict[str, list[int]]:
    """{name: its 1-based positions} for every non-empty name that occurs more than once, in order of first use."""
    positions: dict[str, list[int]] = {}
    for i, n in enumerate(names, start=1):
        if n:
            positions.setdefault(n, []).append(i)
    return {n: where for n, where in positions.items() if len(where) > 1}


def _and(numbers: list[int]) -> str:
    shown = [str(n) for n in numbers]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"


def _columns(count: int) -> str:
    return f"{count} column" if count == 1 else f"{count} columns"


def _first_surrogate(cells: list[str]) -> int | None:
    """Index of the first cell holding an undecodable byte (a lone surrogate after surrogateescape)."""
    return next((i for i, cell in enumerate(cells) if _SURROGATE.search(cell)), None)


def _allow_long_fields() -> None:
    # The csv default (128 KiB per field) would reject long documents; allow up to 1 GiB.
    if csv.field_size_limit() < 1 << 30:
        csv.field_size_limit(1 << 30)


def _format_name(delimiter: str) -> str:
    return "CSV" if delimiter == "," else "TSV"


def _delimiter_name(delimiter: str) -> str:
    return "a comma" if delimiter == "," else "a tab"


# ---------------------------------------------------------------- Parquet and Hugging Face datasets


def _parquet_records(name: str, checker: RowChecker) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def unreadable(exc: Exception) -> DataError:
        return DataError(f"{name}: not a readable Parquet file ({exc}); expected a Parquet file "
                         f"(or give the right extension / data.format)")

    try:
        parquet = pq.ParquetFile(name)
        columns = _present_columns(parquet.schema_arrow.names, name, checker, "Parquet file")
        batches = parquet.iter_batches(batch_size=PARQUET_BATCH, columns=columns)  # one row batch in memory
        number = 0
        for batch in batches:
            for values in batch.to_pylist():
                number += 1
                yield number, values, values
    except (pa.ArrowException, OSError) as exc:
        raise unreadable(exc) from None


def _hf_records(name: str, checker: RowChecker) -> Iterator[Record]:
    dataset_name, _, split = name[3:].partition(":")
    split = split or "train"
    try:
        import datasets

        dataset = datasets.load_dataset(dataset_name, split=split)
    except Exception as exc:  # datasets raises many kinds (connection, offline, not found, bad split)
        detail = str(exc).splitlines()[0][:300] if str(exc) else ""
        raise DataError(
            f"{name}: the Hugging Face dataset '{dataset_name}' (split '{split}') could not be loaded "
            f"({type(exc).__name__}: {detail}). tunewise runs offline by default: `hf:` data needs a network "
            f"connection with HF_HUB_OFFLINE and HF_DATASETS_OFFLINE unset; or download it once and point the "
            f"recipe at a local .jsonl/.csv/.parquet file") from None
    columns = _present_columns(list(dataset.column_names), name, checker, "dataset")
    for i, values in enumerate(dataset.select_columns(columns), start=1):
        yield i, values, values


def _present_columns(names: list[str], name: str, checker: RowChecker, what: str) -> list[str]:
    """The columns to load (text, label, id, slices that exist); DataError when text or label is absent."""
    missing = [f for f in checker.required if f not in names]
    if missing:
        found = ", ".join(f"'{n}'" for n in names[:20])
        raise DataError(f"{name}: the {what} has no {_missing_columns(missing)}; columns found: {found}. "
                        f"{checker.column_hint}")
    wanted_columns = [*checker.required, ID_FIELD, *checker.slice_fields]
    repeated = {n: where for n, where in repeated_names(names).items() if n in wanted_columns}
    if repeated:
        column, positions = next(iter(repeated.items()))
        raise DataError(f"{name}: the {what} has column '{column}' {len(positions)} times (columns "
                        f"{_and(positions)}); expected each column name once. Rename or remove the extra column")
    return [c for c in dict.fromkeys(wanted_columns) if c in names]


def _missing_columns(missing: list[str]) -> str:
    """For messages: column 'text', or columns 'text' and 'label'."""
    names = " and ".join(f"'{f}'" for f in missing)
    return f"column {names}" if len(missing) == 1 else f"columns {names}"
