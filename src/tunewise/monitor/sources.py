"""Where logged traffic comes from, read in chunks so memory stays bounded whatever the log's size:

- a JSONL file of {"text": ...} records (or "prompt"), optionally with "label" (feedback), "timestamp" (ISO 8601 or
  Unix seconds), "prediction" and "confidence" (when a server already predicted), "response" (a causal LM's reply).
  A line that is not such a record is quarantined with file:line and the field at fault, and counted.
- the serving stage's prediction log (tables in tunewise.artifacts.prediction_log): a SQLite file or any SQLAlchemy
  URL (sqlite:///..., postgresql+psycopg://...), streamed with a server-side cursor in time order. A classifier's
  rows are `tunewise_predictions` (input_text, label -> prediction, max_prob -> confidence, feedback_label ->
  label, ts); a causal LM's are its chat and completions requests (prompt and reply from input and output).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tunewise.errors import DataError

DURATION = re.compile(r"^\s*(\d+)\s*(s|sec|m|min|h|d|w)\s*$")
UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass
class LogRecord:
    text: str
    where: str                      # file:line, or table:id
    timestamp: float | None = None  # Unix seconds
    label: str | None = None
    prediction: str | None = None
    confidence: float | None = None
    response: str | None = None


@dataclass
class Quarantined:
    where: str
    field: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"where": self.where, "field": self.field, "reason": self.reason}


def parse_duration(text: str) -> int | None:
    """Seconds of a duration such as `30min`, `1h`, `7d`; None when `text` is not one."""
    m = DURATION.match(str(text))
    return int(m.group(1)) * UNIT_SECONDS[m.group(2)] if m else None


def parse_time(value: Any) -> float:
    """Unix seconds from an ISO 8601 string (naive means UTC) or a number; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        return float(value)
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    else:
        raise ValueError(f"expected an ISO 8601 string or Unix seconds, got {type(value).__name__}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def parse_since(text: str | None, now: float | None = None) -> float | None:
    """--since: an ISO date/time, or a duration back from now (`7d`)."""
    if text is None:
        return None
    seconds = parse_duration(text)
    if seconds is not None:
        return (now if now is not None else datetime.now(timezone.utc).timestamp()) - seconds
    try:
        return parse_time(text)
    except ValueError:
        raise DataError(f"--since {text!r}: expected an ISO date or time (2025-01-31, 2025-01-31T12:00) or a "
                        f"duration back from now (30min, 12h, 7d)") from None


def format_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _as_text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def record_from(obj: Any, where: str) -> LogRecord | Quarantined:
    """One JSON object as a LogRecord, or why not (naming the field)."""
    if not isinstance(obj, dict):
        return Quarantined(where, "(line)", f"expected a JSON object, got {type(obj).__name__}")
    text_key = "text" if "text" in obj else "prompt" if "prompt" in obj else None
    if text_key is None:
        return Quarantined(where, "text", "missing: every record needs a `text` (or `prompt`) string")
    text = obj[text_key]
    if not isinstance(text, str):
        return Quarantined(where, text_key, f"expected a string, got {type(text).__name__}")
    rec = LogRecord(text=text, where=where)
    for key in ("label", "prediction"):
        value = obj.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            return Quarantined(where, key, f"expected a string or integer label, got {type(value).__name__}")
        setattr(rec, key, str(value))
    if obj.get("confidence") is not None:
        c = obj["confidence"]
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 <= c <= 1:
            return Quarantined(where, "confidence", f"expected a probability in [0, 1], got {c!r}")
        rec.confidence = float(c)
    if obj.get("response") is not None:
        if not isinstance(obj["response"], str):
            return Quarantined(where, "response", f"expected a string, got {type(obj['response']).__name__}")
        rec.response = obj["response"]
    if obj.get("timestamp") is not None:
        try:
            rec.timestamp = parse_time(obj["timestamp"])
        except (ValueError, OverflowError, OSError) as exc:
            return Quarantined(where, "timestamp", f"not a time ({exc}): expected ISO 8601 or Unix seconds")
    return rec


def is_sql(log: str) -> bool:
    return "://" in log or Path(log).suffix.lower() in (".db", ".sqlite", ".sqlite3")


def describe(log: str) -> str:
    """The log's name for reports: a URL with its password hidden."""
    if "://" in log:
        from sqlalchemy.engine import make_url

        return make_url(log).render_as_string(hide_password=True)
    return str(log)


def read_jsonl(path: Path, chunk_rows: int) -> Iterator[list[LogRecord | Quarantined]]:
    """Chunks of records in file order, one line in memory at a time besides the chunk (tunewise.kit.jsonl): a
    line that is not JSON, or not a record, comes back as Quarantined with file:line and the field at fault; a
    line that is not UTF-8 stops the read (the file's encoding is wrong, not one row)."""
    from tunewise.kit.jsonl import read_jsonl as read_lines

    if not path.is_file():
        raise DataError(f"--log {path}: no such file (give a JSONL file of {{\"text\": ...}} records, a SQLite "
                        f"file, or a database URL)")
    chunk: list[LogRecord | Quarantined] = []

    def bad_line(number: int, detail: str) -> None:
        if detail.startswith("not UTF-8"):
            raise DataError(f"{path}:{number}: {detail}; convert the file to UTF-8")
        chunk.append(Quarantined(f"{path}:{number}", "(line)", detail))

    for number, obj in read_lines(path, on_bad_line=bad_line):
        chunk.append(record_from(obj, f"{path}:{number}"))
        if len(chunk) >= chunk_rows:
            yield chunk
            chunk = []  # bad_line appends to the new chunk: it reads `chunk` from this scope at call time
    if chunk:
        yield chunk


def count_jsonl(path: Path) -> int:
    """Non-blank lines (for the progress bar's total): one fast pass over the bytes."""
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


# ---------------------------------------------------------------- the serving log (SQLAlchemy)


def sql_url(log: str) -> str:
    return log if "://" in log else f"sqlite:///{Path(log).resolve()}"


def _log_tables(log: str, kind: str):
    """(engine, select query, table name) over the serving stage's prediction log (tunewise.artifacts.
    prediction_log): a classifier's `tunewise_predictions` rows, or a causal LM's chat/completions requests."""
    import sqlalchemy as sa

    from tunewise.artifacts import prediction_log as schema

    if "://" not in log and not Path(log).is_file():
        raise DataError(f"--log {log}: no such SQLite file")
    engine = schema.open_log(sql_url(log))
    names = sa.inspect(engine).get_table_names()
    wanted = schema.predictions if kind == "classifier" else schema.requests
    if wanted.name not in names:
        engine.dispose()
        raise DataError(f"--log {describe(log)}: not a tunewise prediction log (no {wanted.name} table; tables: "
                        f"{', '.join(names) or 'none'}); `tunewise serve` writes one")
    if kind == "classifier":
        t = schema.predictions
        query = sa.select(t.c.request_id, t.c.idx, t.c.ts, t.c.input_text, t.c.label, t.c.max_prob,
                          t.c.feedback_label).order_by(t.c.ts, t.c.request_id, t.c.idx)
    else:
        t = schema.requests
        query = (sa.select(t.c.request_id, t.c.ts, t.c.input, t.c.output, t.c.guard_score)
                 .where(t.c.endpoint.in_(("chat", "completions"))).order_by(t.c.ts, t.c.request_id))
    return engine, query, wanted.name


def _logged_text(value: Any) -> str | None:
    """A logged input as text: None when the log policy kept no text (null, or a sha256 digest)."""
    if value is None or (isinstance(value, str) and value.startswith("sha256:")):
        return None
    return value if isinstance(value, str) else None


def _chat_text(raw: str | None, side: str) -> str | None:
    """The prompt (non-assistant messages, or a completion prompt) or the reply of a logged chat request."""
    if raw is None:
        return None
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError:
        return _logged_text(raw)
    if isinstance(obj, str):
        return _logged_text(obj)
    if isinstance(obj, dict):
        if "messages" in obj and side == "input":
            obj = obj["messages"]
        else:
            for key in ("prompt", "text", "content"):
                if isinstance(obj.get(key), str):
                    return _logged_text(obj[key])
            return None
    if isinstance(obj, list):
        parts = [m.get("content") for m in obj if isinstance(m, dict) and m.get("role") != "assistant"]
        return "\n".join(p for p in parts if isinstance(p, str)) or None
    return None


def read_sql(log: str, chunk_rows: int, kind: str = "classifier") -> Iterator[list[LogRecord | Quarantined]]:
    """Chunks of records from the serving log in time order, through a streaming cursor (memory stays bounded)."""
    engine, query, table = _log_tables(log, kind)
    try:
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(query)
            for part in result.partitions(chunk_rows):
                chunk: list[LogRecord | Quarantined] = []
                for row in part:
                    if kind == "classifier":
                        where = f"{table}:{row.request_id}/{row.idx}"
                        text = _logged_text(row.input_text)
                        obj = {"text": text, "prediction": row.label, "confidence": row.max_prob,
                               "label": row.feedback_label, "timestamp": row.ts}
                    else:
                        where = f"{table}:{row.request_id}"
                        text = _chat_text(row.input, "input")
                        obj = {"text": text, "response": _chat_text(row.output, "output"), "timestamp": row.ts}
                    if text is None:
                        chunk.append(Quarantined(where, "input_text", "no text logged (the serve log_input policy "
                                                                      "stored it hashed or not at all): only "
                                                                      "plain or redacted inputs can be monitored"))
                        continue
                    chunk.append(record_from({k: v for k, v in obj.items() if v is not None}, where))
                yield chunk
    finally:
        engine.dispose()


def count_sql(log: str, kind: str = "classifier") -> int:
    import sqlalchemy as sa

    engine, query, _ = _log_tables(log, kind)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(query.subquery())).scalar_one())
    finally:
        engine.dispose()
