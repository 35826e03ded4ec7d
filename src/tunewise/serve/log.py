"""The prediction log's writer: a request is acknowledged only once its row is committed, with group commit.

One writer thread owns the database connection. Requests hand it their rows (`await log.record(row)`); it takes
every row waiting, writes them in ONE transaction, commits (SQLite: WAL, synchronous=FULL, so the commit is on disk),
then wakes each request, which only then sends its response. While one commit is in flight the next rows pile up
and go in the next one, so under load each fsync carries many requests and durability costs little throughput.
A batch that fails is retried row by row, so one bad row cannot fail its neighbours.

The tables are declared in `tunewise.artifacts.prediction_log` (shared with the monitor); its docstring is the
layout reference.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunewise.artifacts import prediction_log as schema
from tunewise.serve.errors import ServeError

log = logging.getLogger("tunewise.serve.log")
MAX_ROWS_PER_COMMIT = 1024


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


@dataclass
class Prediction:
    """One classified text (a tunewise_predictions row)."""

    input_text: str | None      # as logged (policy applied)
    label: str
    max_prob: float
    probabilities: dict[str, float]


@dataclass
class LogRow:
    """One request (a tunewise_requests row), with its classified texts when it is a classify request."""

    request_id: str
    endpoint: str                       # classify | guard | chat | completions
    key_name: str
    model: str
    run_id: str
    ts: dt.datetime = field(default_factory=utcnow)
    status: int = 200
    latency_ms: float = 0.0
    n_inputs: int = 1
    input: Any = None                   # JSON-able, already redacted/hashed by policy (Redactor.for_log)
    output: Any = None                  # JSON-able, already redacted/hashed by policy
    guard: list[dict[str, Any]] | None = None   # one {injection, score, rules} per screened text; None: not screened
    pii: list[list[str]] | None = None          # PII kinds found per input
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    predictions: list[Prediction] = field(default_factory=list)

    def request_values(self) -> dict[str, Any]:
        guard = self.guard
        return {"request_id": self.request_id, "ts": self.ts, "endpoint": self.endpoint, "key_name": self.key_name,
                "status": self.status, "latency_ms": round(self.latency_ms, 3), "model": self.model,
                "run_id": self.run_id, "n_inputs": self.n_inputs,
                "input": None if self.input is None else json.dumps(self.input, ensure_ascii=False),
                "output": None if self.output is None else json.dumps(self.output, ensure_ascii=False),
                "guard_injection": None if guard is None else any(v["injection"] for v in guard),
                "guard_score": None if not guard else max(float(v["score"]) for v in guard),
                "guard_json": None if guard is None else json.dumps(guard, ensure_ascii=False),
                "pii_json": None if self.pii is None else json.dumps(self.pii),
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}

    def prediction_values(self) -> list[dict[str, Any]]:
        return [{"request_id": self.request_id, "idx": i, "ts": self.ts, "input_text": p.input_text,
                 "label": p.label, "max_prob": float(p.max_prob),
                 "probabilities_json": json.dumps({k: round(float(v), 6) for k, v in p.probabilities.items()})}
                for i, p in enumerate(self.predictions)]


@dataclass
class _Op:
    run: Callable[[Any], Any]           # fn(connection) -> result, inside the group's transaction
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    rows: int = 1
    # a plain insert (record): its tunewise_requests values and tunewise_predictions values, so a group's inserts
    # go to the database as one executemany per table instead of two statements per request
    insert: tuple[dict[str, Any], list[dict[str, Any]]] | None = None


class PredictionLog:
    """`await log.record(row)` returns once the row is committed; `await log.feedback(...)` likewise."""

    def __init__(self, url: str):
        self.url = url
        self.engine = schema.open_log(url, create=True)
        self._ops: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._writer, name="tunewise-log-writer", daemon=True)
        self._thread.start()
        self.on_commit: Callable[[int], None] | None = None   # metrics hook: rows per commit

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def display_url(self) -> str:
        return schema.safe_url(self.url)

    # -- the API the routes use
    async def record(self, row: LogRow) -> str:
        """Write one request's row (and its predictions); returns the request id once it is committed."""
        requests_values, prediction_values = row.request_values(), row.prediction_values()

        def insert(conn):  # noqa: ANN001  # alone (a failed group is retried row by row)
            conn.execute(schema.requests.insert(), [requests_values])
            if prediction_values:
                conn.execute(schema.predictions.insert(), prediction_values)
            return row.request_id
        return await self._submit(insert, insert=(requests_values, prediction_values))

    async def feedback(self, request_id: str, *, index: int | None, label: str | None,
                       rating: float | None) -> dict[str, Any]:
        """Attach a true label (to one classified text) and/or a rating (to the request). Raises 404 for an
        unknown request id or index. Returns what the request was (endpoint, n_inputs)."""
        import sqlalchemy as sa

        now = utcnow()

        def update(conn):  # noqa: ANN001
            req = conn.execute(sa.select(schema.requests.c.endpoint, schema.requests.c.n_inputs)
                               .where(schema.requests.c.request_id == request_id)).first()
            if req is None:
                return None
            if label is not None:
                idx = index if index is not None else 0
                n = conn.execute(schema.predictions.update()
                                 .where(schema.predictions.c.request_id == request_id,
                                        schema.predictions.c.idx == idx)
                                 .values(feedback_label=label, feedback_at=now)).rowcount
                if n == 0:
                    return {"endpoint": req.endpoint, "n_inputs": req.n_inputs, "missing_index": idx}
            values: dict[str, Any] = {"feedback_at": now}
            if rating is not None:
                values["feedback_rating"] = rating
            conn.execute(schema.requests.update().where(schema.requests.c.request_id == request_id).values(**values))
            return {"endpoint": req.endpoint, "n_inputs": req.n_inputs}
        result = await self._submit(update)
        if result is None:
            raise ServeError(404, "not_found", f"no logged request with id {request_id!r}", param="request_id")
        if "missing_index" in result:
            raise ServeError(404, "not_found", f"request {request_id} has no classified input at index "
                                               f"{result['missing_index']} (it had {result['n_inputs']} input(s) "
                                               f"at endpoint {result['endpoint']})", param="index")
        return result

    def close(self, timeout: float = 10.0) -> None:
        self._ops.put(None)
        self._thread.join(timeout)
        self.engine.dispose()

    # -- the writer thread
    async def _submit(self, fn: Callable[[Any], Any], insert=None) -> Any:  # noqa: ANN001
        loop = asyncio.get_running_loop()
        op = _Op(fn, loop.create_future(), loop, insert=insert)
        if not self.alive:
            raise ServeError(503, "log_unavailable", "the prediction log writer has stopped; the request was not "
                                                     "recorded, so it is refused")
        self._ops.put(op)
        return await asyncio.shield(op.future)  # a cancelled caller never leaves a half-acknowledged row

    def _writer(self) -> None:
        while True:
            first = self._ops.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_ROWS_PER_COMMIT:
                try:
                    op = self._ops.get_nowait()
                except queue.Empty:
                    break
                if op is None:
                    stop = True
                    break
                batch.append(op)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Op]) -> None:
        try:
            with self.engine.begin() as conn:  # one transaction, one fsync, for the whole group
                results = _run_group(conn, batch)
        except Exception:  # noqa: BLE001  # retry alone, so one bad row fails only itself
            log.exception("group commit of %d rows failed; retrying them one by one", len(batch))
            for op in batch:
                try:
                    with self.engine.begin() as conn:
                        result = op.run(conn)
                except Exception as exc:  # noqa: BLE001
                    log.error("prediction log write failed: %s", exc)
                    _resolve(op, error=ServeError(503, "log_unavailable", "the prediction log could not record "
                                                                          "this request, so it is refused"))
                else:
                    _resolve(op, result=result)
            return
        if self.on_commit is not None:
            self.on_commit(len(batch))
        _resolve_group(batch, results)


def _run_group(conn, batch: list[_Op]) -> list[Any]:  # noqa: ANN001
    """Run a group's ops in order in one transaction; consecutive inserts go as one executemany per table."""
    results: list[Any] = []
    requests_values: list[dict[str, Any]] = []
    prediction_values: list[dict[str, Any]] = []

    def flush() -> None:
        if requests_values:
            conn.execute(schema.requests.insert(), requests_values)
        if prediction_values:
            conn.execute(schema.predictions.insert(), prediction_values)
        requests_values.clear()
        prediction_values.clear()
    for op in batch:
        if op.insert is not None:
            requests_values.append(op.insert[0])
            prediction_values.extend(op.insert[1])
            results.append(op.insert[0]["request_id"])
        else:
            flush()
            results.append(op.run(conn))
    flush()
    return results


def _resolve_group(batch: list[_Op], results: list[Any]) -> None:
    """Settle a committed group's futures with one wake-up of each event loop (not one per request)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Op, Any]]] = {}
    for op, result in zip(batch, results):
        by_loop.setdefault(op.loop, []).append((op, result))

    def settle(pairs: list[tuple[_Op, Any]]) -> None:
        for op, result in pairs:
            if not op.future.done():
                op.future.set_result(result)
    for loop, pairs in by_loop.items():
        try:
            loop.call_soon_threadsafe(settle, pairs)
        except RuntimeError:  # the loop has closed (server shutting down)
            pass


def _resolve(op: _Op, *, result: Any = None, error: Exception | None = None) -> None:
    def settle():
        if op.future.done():
            return
        if error is not None:
            op.future.set_exception(error)
        else:
            op.future.set_result(result)
    try:
        op.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop has closed (server shutting down)
        pass
