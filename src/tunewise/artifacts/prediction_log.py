"""The prediction log's tables: written by `tunewise serve`, read by the monitor (issue 11) and by anyone with SQL.

The log is live state, not evidence, so it is a database rather than a hashed file: SQLite in WAL mode by default
(RUN/logs/predictions.sqlite), or any SQLAlchemy URL (PostgreSQL: `postgresql+psycopg://user@host:port/db`).
The tables are declared here, in shared ground, so the writer (serve) and the readers (monitor) use one definition:

    from tunewise.artifacts.prediction_log import open_log, requests, predictions
    engine = open_log("sqlite:///runs/helpdesk-1a2b3c4d/logs/predictions.sqlite")
    with engine.connect() as conn:
        for row in conn.execute(select(predictions).order_by(predictions.c.ts)):
            row.input_text, row.label, row.max_prob, row.ts, row.feedback_label

Layout (LOG_SCHEMA_VERSION 1; `tunewise_log_meta` holds it under the key `schema_version`):

tunewise_requests: one row per request that passed the key check and reached the model or the guard
  request_id        str(32), primary key   uuid4 hex; returned to the client as `request_id` and `X-Request-Id`
  ts                datetime (UTC, naive)  arrival time
  endpoint          str(32)                classify | guard | chat | completions
  key_name          str(128)               the API key's NAME (never the key)
  status            int                    HTTP status answered (200, or 400 when the guard blocked it)
  latency_ms        float                  arrival to the response (streams: to the last token)
  model             str(256)               the model id served
  run_id            str(256)               the run directory's id (runs/<run_id>/)
  n_inputs          int                    texts in the request (1 for chat and completions)
  input             text | null            JSON: the logged inputs, as `serve.redaction.<endpoint>.log_input` says
                                           (plain / redacted / "sha256:<hex>" / null)
  output            text | null            JSON: what was answered (classify: labels; chat: the text, per log_output)
  guard_injection   bool | null            any input flagged by the injection guard; null: not screened
  guard_score       float | null           the highest guard score over the inputs
  guard_json        text | null            JSON list, one per input: {injection, score, rules}
  pii_json          text | null            JSON list of PII kinds found per input, e.g. [["email"], []]
  prompt_tokens     int | null             chat and completions
  completion_tokens int | null             chat and completions
  feedback_rating   float | null           set by POST /v1/feedback {"request_id", "rating"}
  feedback_at       datetime | null        when feedback last arrived (UTC, naive)

tunewise_predictions: one row per classified text (classify requests only)
  request_id        str(32)  \\ primary key (request_id, idx); request_id refers to tunewise_requests
  idx               int      /  position of the text in the request's `inputs`
  ts                datetime (UTC, naive)  the request's arrival time (copied, so drift reads one table)
  input_text        text | null            as logged (log_input policy: plain, redacted, "sha256:<hex>" or null)
  label             str(256)               the predicted label
  max_prob          float                  its probability (the model's confidence)
  probabilities_json text                  JSON object label -> probability
  feedback_label    str(256) | null        the true label, set by POST /v1/feedback {"request_id", "index", "label"}
  feedback_at       datetime | null
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

LOG_SCHEMA_VERSION = 1
DEFAULT_LOG_PATH = "logs/predictions.sqlite"  # relative to the run directory

metadata = sa.MetaData()

meta = sa.Table(
    "tunewise_log_meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

requests = sa.Table(
    "tunewise_requests", metadata,
    sa.Column("request_id", sa.String(32), primary_key=True),
    sa.Column("ts", sa.DateTime(), nullable=False, index=True),
    sa.Column("endpoint", sa.String(32), nullable=False),
    sa.Column("key_name", sa.String(128), nullable=False),
    sa.Column("status", sa.Integer(), nullable=False),
    sa.Column("latency_ms", sa.Float(), nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("run_id", sa.String(256), nullable=False),
    sa.Column("n_inputs", sa.Integer(), nullable=False),
    sa.Column("input", sa.Text()),
    sa.Column("output", sa.Text()),
    sa.Column("guard_injection", sa.Boolean()),
    sa.Column("guard_score", sa.Float()),
    sa.Column("guard_json", sa.Text()),
    sa.Column("pii_json", sa.Text()),
    sa.Column("prompt_tokens", sa.Integer()),
    sa.Column("completion_tokens", sa.Integer()),
    sa.Column("feedback_rating", sa.Float()),
    sa.Column("feedback_at", sa.DateTime()),
)

predictions = sa.Table(
    "tunewise_predictions", metadata,
    sa.Column("request_id", sa.String(32), sa.ForeignKey("tunewise_requests.request_id"), primary_key=True),
    sa.Column("idx", sa.Integer(), primary_key=True),
    sa.Column("ts", sa.DateTime(), nullable=False, index=True),
    sa.Column("input_text", sa.Text()),
    sa.Column("label", sa.String(256), nullable=False),
    sa.Column("max_prob", sa.Float(), nullable=False),
    sa.Column("probabilities_json", sa.Text(), nullable=False),
    sa.Column("feedback_label", sa.String(256)),
    sa.Column("feedback_at", sa.DateTime()),
)


def sqlite_url(path) -> str:  # noqa: ANN001  # str or Path
    return f"sqlite:///{path}"


def open_log(url: str, *, create: bool = False) -> "Engine":
    """A SQLAlchemy engine on the log. SQLite gets WAL mode, full fsync on commit and a busy timeout on every
    connection (so several server processes and a reader can share the file). `create`: make the tables (the
    server does; readers should not)."""
    from tunewise.errors import TunewiseError

    try:
        engine = sa.create_engine(url, pool_pre_ping=True)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise TunewiseError(f"prediction log URL {_safe(url)!r} is not usable: {exc}") from None
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    if create:
        try:
            metadata.create_all(engine)
            with engine.begin() as conn:
                if conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).first() is None:
                    conn.execute(meta.insert().values(key="schema_version", value=str(LOG_SCHEMA_VERSION)))
        except sa.exc.SQLAlchemyError as exc:
            raise TunewiseError(f"prediction log {_safe(url)}: cannot create its tables "
                                f"({type(exc.orig or exc).__name__}: {str(exc.orig or exc).splitlines()[0]})") from None
    return engine


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")      # readers never block the writer
    cur.execute("PRAGMA synchronous=FULL")      # a commit is on disk before the request is acknowledged
    cur.execute("PRAGMA busy_timeout=30000")    # several worker processes write the same file
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001  # an unparseable URL: show only its scheme
        return url.split(":", 1)[0] + ":..."


def safe_url(url: str) -> str:
    """The URL as it may be written down (password hidden)."""
    return _safe(url)
