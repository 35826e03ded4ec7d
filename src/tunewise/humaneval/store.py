"""The ratings database: SQLite in WAL mode in RUN/humaneval/ratings.sqlite (live state, not evidence).

Every rating is committed when it is submitted, so a closed tab or a killed server loses nothing: the annotator's
next page is the first item they have not rated. A rating is unique per (annotator, item): a double submit counts
once. Annotators' link tokens are stored only as their sha256.

Assignment: each annotator works through their own seeded order, the shared items (every annotator rates them,
for agreement) first, then the others, each of which goes to the first annotator who reaches it. The item an
annotator has open is claimed by them, so two annotators never rate the same unshared item.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewise.humaneval.items import FINE_TUNED, OTHER, HumanEvalError, Item, Sample, StudySettings

DB_FILE = "ratings.sqlite"
SCHEMA_VERSION = 1
BROWSER, LABELSTUDIO = "browser", "labelstudio"

SCHEMA = """
CREATE TABLE IF NOT EXISTS study (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    schema_version INTEGER NOT NULL,
    mode TEXT NOT NULL, n INTEGER NOT NULL, criteria TEXT NOT NULL, overlap REAL NOT NULL,
    against_arg TEXT NOT NULL, against TEXT NOT NULL, against_description TEXT NOT NULL,
    seed INTEGER NOT NULL, sources TEXT NOT NULL, n_rows INTEGER NOT NULL, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY, position INTEGER NOT NULL UNIQUE, row_id TEXT NOT NULL, model TEXT,
    shared INTEGER NOT NULL, context TEXT NOT NULL, outputs TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS annotators (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, token_sha256 TEXT UNIQUE, source TEXT NOT NULL,
    created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS assignments (
    annotator_id INTEGER NOT NULL REFERENCES annotators(id), item_id TEXT NOT NULL REFERENCES items(id),
    seq INTEGER NOT NULL, shared INTEGER NOT NULL, fine_tuned_side TEXT NOT NULL CHECK (fine_tuned_side IN ('A', 'B')),
    opened TEXT NOT NULL, PRIMARY KEY (annotator_id, item_id));
-- an unshared item is claimed by one annotator only
CREATE UNIQUE INDEX IF NOT EXISTS one_claim_per_unshared_item ON assignments(item_id) WHERE shared = 0;
CREATE TABLE IF NOT EXISTS ratings (
    annotator_id INTEGER NOT NULL REFERENCES annotators(id), item_id TEXT NOT NULL REFERENCES items(id),
    choice TEXT CHECK (choice IN ('A', 'B', 'tie')), fine_tuned_side TEXT CHECK (fine_tuned_side IN ('A', 'B')),
    verdict TEXT CHECK (verdict IN ('fine_tuned', 'other', 'tie')), scores TEXT, comment TEXT NOT NULL,
    seconds REAL, created TEXT NOT NULL,
    UNIQUE (annotator_id, item_id));
"""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Study:
    mode: str
    n: int
    criteria: list[str]
    overlap: float
    against_arg: str
    against: str
    against_description: str
    seed: int
    sources: dict[str, str]
    n_rows: int
    created: str


@dataclass(frozen=True)
class Annotator:
    id: int
    name: str
    source: str


@dataclass(frozen=True)
class Progress:
    done: int
    total: int         # done + what is still open to this annotator now


class Store:
    """One study's ratings database. Each call opens its own short connection (safe across server threads)."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / DB_FILE

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    @contextmanager
    def connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection; with `write`, one IMMEDIATE transaction committed on success (rolled back on error)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # a rating acknowledged is on disk, whatever kills us next
            conn.execute("PRAGMA foreign_keys=ON")
            if not write:
                yield conn
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    # ------------------------------------------------------------ the study

    def study(self) -> Study | None:
        if not self.exists:
            return None
        with self.connect() as conn:
            has = conn.execute("SELECT name FROM sqlite_master WHERE name='study'").fetchone()
            row = conn.execute("SELECT * FROM study WHERE id = 1").fetchone() if has else None
        if row is None:
            return None
        if row["schema_version"] != SCHEMA_VERSION:
            raise HumanEvalError(f"{self.path}: made by another tunewise (ratings schema {row['schema_version']}, "
                                 f"this one reads {SCHEMA_VERSION}); move it aside to start a new study")
        return Study(row["mode"], row["n"], json.loads(row["criteria"]), row["overlap"], row["against_arg"],
                     row["against"], row["against_description"], row["seed"], json.loads(row["sources"]),
                     row["n_rows"], row["created"])

    def create(self, settings: StudySettings, sample: Sample) -> Study:
        with self.connect() as conn:
            conn.executescript(SCHEMA)
        with self.connect(write=True) as conn:
            if conn.execute("SELECT 1 FROM study").fetchone():
                raise HumanEvalError(f"{self.path}: a study already exists")
            conn.execute("INSERT INTO study VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (SCHEMA_VERSION, settings.mode, settings.n, json.dumps(list(settings.criteria)),
                          settings.overlap, settings.against, sample.against, sample.against_description,
                          settings.seed, json.dumps(sample.sources), sample.n_rows, _now()))
            conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?)",
                             [(it.id, i, it.row_id, it.model, int(it.shared), json.dumps(it.context),
                               json.dumps(it.outputs)) for i, it in enumerate(sample.items)])
        study = self.study()
        assert study is not None
        return study

    def items(self) -> list[Item]:
        with self.connect() as conn:
            rows = conn.execute("SELECT * FROM items ORDER BY position").fetchall()
        return [_item(r) for r in rows]

    def item(self, item_id: str) -> Item | None:
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
        return _item(row) if row else None

    # ------------------------------------------------------------ annotators

    def invite(self, name: str) -> tuple[str, bool]:
        """A fresh link token for `name` (a new annotator, or a new link for one: the old link stops working);
        returns (token, is_new). Only the token's sha256 is stored."""
        name = name.strip()
        if not name or len(name) > 80 or any(c in name for c in "/\\\n\r\t"):
            raise HumanEvalError(f"annotator name {name!r}: give 1-80 characters without slashes or line breaks")
        token = secrets.token_urlsafe(18)
        with self.connect(write=True) as conn:
            row = conn.execute("SELECT id, source FROM annotators WHERE name = ?", (name,)).fetchone()
            if row is not None and row["source"] != BROWSER:
                raise HumanEvalError(f"annotator {name!r} holds ratings imported from Label Studio; pick another "
                                     f"name for a browser annotator")
            if row is None:
                conn.execute("INSERT INTO annotators (name, token_sha256, source, created) VALUES (?, ?, ?, ?)",
                             (name, token_hash(token), BROWSER, _now()))
            else:
                conn.execute("UPDATE annotators SET token_sha256 = ? WHERE id = ?", (token_hash(token), row["id"]))
        return token, row is None

    def annotator_for_token(self, token: str) -> Annotator | None:
        with self.connect() as conn:
            row = conn.execute("SELECT id, name, source FROM annotators WHERE token_sha256 = ?",
                               (token_hash(token),)).fetchone()
        return Annotator(row["id"], row["name"], row["source"]) if row else None

    def annotator(self, name: str, source: str, conn: sqlite3.Connection) -> Annotator:
        """The annotator called `name`, created (without a link) when new: for imported ratings."""
        row = conn.execute("SELECT id, name, source FROM annotators WHERE name = ?", (name,)).fetchone()
        if row is None:
            conn.execute("INSERT INTO annotators (name, token_sha256, source, created) VALUES (?, NULL, ?, ?)",
                         (name, source, _now()))
            row = conn.execute("SELECT id, name, source FROM annotators WHERE name = ?", (name,)).fetchone()
        return Annotator(row["id"], row["name"], row["source"])

    # ------------------------------------------------------------ the work queue

    def _order(self, study: Study, annotator: Annotator, items: list[sqlite3.Row]) -> list[sqlite3.Row]:
        """The annotator's own order: shared items first (agreement needs them from everyone), each group in a
        seeded shuffle of its own."""
        rng = random.Random(f"{study.seed}|order|{annotator.name}")
        shared = [r for r in items if r["shared"]]
        rest = [r for r in items if not r["shared"]]
        rng.shuffle(shared)
        rng.shuffle(rest)
        return shared + rest

    @staticmethod
    def fine_tuned_side(study: Study, annotator: Annotator, item_id: str) -> str:
        """Which side (A or B) shows the fine-tuned output: randomised per item AND per annotator (seeded, so a
        reload shows the same)."""
        digest = hashlib.sha256(f"{study.seed}|side|{annotator.name}|{item_id}".encode()).digest()
        return "A" if digest[0] % 2 == 0 else "B"

    def current(self, study: Study, annotator: Annotator) -> tuple[Item, str] | None:
        """The item the annotator should rate now, and the side of the fine-tuned output: the open one they left
        (resume), else the next in their order that is still theirs to take (claimed in the same transaction)."""
        with self.connect(write=True) as conn:
            open_row = conn.execute(
                "SELECT i.*, a.fine_tuned_side AS side FROM assignments a JOIN items i ON i.id = a.item_id "
                "LEFT JOIN ratings r ON r.annotator_id = a.annotator_id AND r.item_id = a.item_id "
                "WHERE a.annotator_id = ? AND r.item_id IS NULL ORDER BY a.seq LIMIT 1", (annotator.id,)).fetchone()
            if open_row is not None:
                return _item(open_row), open_row["side"]
            for row in self._available(conn, study, annotator):
                side = self.fine_tuned_side(study, annotator, row["id"])
                seq = conn.execute("SELECT COUNT(*) FROM assignments WHERE annotator_id = ?",
                                   (annotator.id,)).fetchone()[0]
                conn.execute("INSERT INTO assignments VALUES (?, ?, ?, ?, ?, ?)",
                             (annotator.id, row["id"], seq, row["shared"], side, _now()))
                return _item(row), side
        return None

    def _available(self, conn: sqlite3.Connection, study: Study, annotator: Annotator) -> list[sqlite3.Row]:
        """Items this annotator may still take, in their order: shared ones they have not had, unshared ones nobody
        has claimed."""
        items = conn.execute("SELECT * FROM items ORDER BY position").fetchall()
        mine = {r[0] for r in conn.execute("SELECT item_id FROM assignments WHERE annotator_id = ?", (annotator.id,))}
        mine |= {r[0] for r in conn.execute("SELECT item_id FROM ratings WHERE annotator_id = ?", (annotator.id,))}
        claimed = {r[0] for r in conn.execute("SELECT item_id FROM assignments WHERE shared = 0")}
        claimed |= {r[0] for r in conn.execute("SELECT r.item_id FROM ratings r JOIN items i ON i.id = r.item_id "
                                               "WHERE i.shared = 0")}
        return [r for r in self._order(study, annotator, items)
                if r["id"] not in mine and (r["shared"] or r["id"] not in claimed)]

    def progress(self, study: Study, annotator: Annotator) -> Progress:
        with self.connect() as conn:
            done = conn.execute("SELECT COUNT(*) FROM ratings WHERE annotator_id = ?", (annotator.id,)).fetchone()[0]
            open_ = conn.execute("SELECT COUNT(*) FROM assignments a LEFT JOIN ratings r ON r.annotator_id = "
                                 "a.annotator_id AND r.item_id = a.item_id WHERE a.annotator_id = ? AND "
                                 "r.item_id IS NULL", (annotator.id,)).fetchone()[0]
            left = len(self._available(conn, study, annotator))
        return Progress(done, done + open_ + left)

    def submit(self, study: Study, annotator: Annotator, item_id: str, *, choice: str | None = None,
               scores: dict[str, int] | None = None, comment: str = "", seconds: float | None = None) -> bool:
        """Record a rating of an item assigned to the annotator. Returns False when it was already rated (a double
        submit, or a resubmitted form): the first rating stands."""
        with self.connect(write=True) as conn:
            assigned = conn.execute("SELECT fine_tuned_side FROM assignments WHERE annotator_id = ? AND item_id = ?",
                                    (annotator.id, item_id)).fetchone()
            if assigned is None:
                raise HumanEvalError(f"item {item_id} is not assigned to annotator {annotator.name!r}")
            side = assigned[0]
            verdict = None
            if study.mode == "pairwise":
                if choice not in ("A", "B", "tie"):
                    raise HumanEvalError("choose A, B or tie")
                verdict = "tie" if choice == "tie" else (FINE_TUNED if choice == side else OTHER)
            else:
                check_scores(scores, study.criteria)
            cur = conn.execute(
                "INSERT INTO ratings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (annotator_id, item_id) DO NOTHING",
                (annotator.id, item_id, choice, side if study.mode == "pairwise" else None, verdict,
                 json.dumps(scores, sort_keys=True) if scores is not None else None, comment.strip()[:2000],
                 seconds, _now()))
            return cur.rowcount == 1

    def add_imported(self, conn: sqlite3.Connection, study: Study, annotator: Annotator, item_id: str,
                     side: str | None, *, choice: str | None, scores: dict[str, int] | None, comment: str,
                     created: str) -> bool:
        """One imported rating (Label Studio), with the side its tool showed; False when already there."""
        verdict = None
        if study.mode == "pairwise":
            verdict = "tie" if choice == "tie" else (FINE_TUNED if choice == side else OTHER)
        # imported work is outside the browser's queue: recorded as shared (shared = 1) so it claims nothing
        conn.execute("INSERT OR IGNORE INTO assignments VALUES (?, ?, (SELECT COUNT(*) FROM assignments WHERE "
                     "annotator_id = ?), 1, ?, ?)", (annotator.id, item_id, annotator.id, side or "A", created))
        cur = conn.execute(
            "INSERT INTO ratings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (annotator_id, item_id) DO NOTHING",
            (annotator.id, item_id, choice, side if study.mode == "pairwise" else None, verdict,
             json.dumps(scores, sort_keys=True) if scores is not None else None, comment.strip()[:2000], None,
             created))
        return cur.rowcount == 1

    # ------------------------------------------------------------ reading the ratings back

    def ratings(self) -> list[dict[str, Any]]:
        """Every rating, self-describing, in a stable order (annotator name, item position)."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT an.name AS annotator, an.source AS source, i.id AS item_id, i.row_id AS row_id, "
                "i.model AS model, i.shared AS shared, r.choice, r.fine_tuned_side, r.verdict, r.scores, r.comment, "
                "r.seconds, r.created FROM ratings r JOIN annotators an ON an.id = r.annotator_id "
                "JOIN items i ON i.id = r.item_id ORDER BY an.name, i.position").fetchall()
        out = []
        for r in rows:
            out.append({"annotator": r["annotator"], "source": r["source"], "item": r["item_id"],
                        "row_id": r["row_id"], "model": r["model"], "shared": bool(r["shared"]),
                        "choice": r["choice"], "fine_tuned_side": r["fine_tuned_side"], "verdict": r["verdict"],
                        "scores": json.loads(r["scores"]) if r["scores"] else None, "comment": r["comment"],
                        "seconds": r["seconds"], "created": r["created"]})
        return out

    def annotator_overview(self) -> list[dict[str, Any]]:
        with self.connect() as conn:
            rows = conn.execute("SELECT an.name, an.source, COUNT(r.item_id) AS rated FROM annotators an LEFT JOIN "
                                "ratings r ON r.annotator_id = an.id GROUP BY an.id ORDER BY an.id").fetchall()
        return [dict(r) for r in rows]


def check_scores(scores: dict[str, int] | None, criteria: list[str]) -> None:
    if scores is None or set(scores) != set(criteria):
        missing = [c for c in criteria if not scores or c not in scores]
        raise HumanEvalError(f"score every criterion 1-5; missing: {', '.join(missing) or 'none'}"
                             + (f"; unknown: {', '.join(sorted(set(scores) - set(criteria)))}"
                                if scores and set(scores) - set(criteria) else ""))
    bad = {c: v for c, v in scores.items() if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 5}
    if bad:
        raise HumanEvalError(f"scores must be whole numbers 1-5; got {bad}")


def _item(row: sqlite3.Row) -> Item:
    return Item(row["id"], row["row_id"], row["model"], bool(row["shared"]), json.loads(row["context"]),
                json.loads(row["outputs"]))
