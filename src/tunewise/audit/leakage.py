"""N-gram leakage for generation and chat: an eval prompt or target that shares a run of `audit.leak_ngram`
words (13 by default, as in the GPT-3 contamination study) with any train prompt or target.

Words are those of `normalize.words` (case-folded, punctuation dropped). Each word gets a 64-bit hash once; the
n-gram hashes are polynomial combinations computed with numpy over a whole batch, so no n-gram string is built.
N-grams that occur in many train rows (more than max(3, 1%) of them) are template text, such as a shared
instruction or system prompt, and are ignored; their number is reported.

The n-grams (16 bytes each for train, 25 for eval: several times the data's size) are not held in memory: they
are appended to temporary files, partitioned by hash, and `finish` reads one partition at a time.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

from tunewise.audit.normalize import key64, words

_MULT = np.uint64(0x9E3779B97F4A7C15)
_CACHE_LIMIT = 1 << 19  # word -> hash entries (~150 bytes each) kept before the cache starts again
_TRAIN = np.dtype([("h", "<u8"), ("row", "<i8")])
_EVAL = np.dtype([("h", "<u8"), ("row", "<i8"), ("seq", "<i8"), ("side", "i1")])
PARTITION_BYTES = 32 << 20  # data bytes per partition file: about 100 MiB of n-grams, read one at a time
MAX_PARTITIONS = 128


class NgramIndex:
    def __init__(self, n: int = 13, *, data_bytes: int = 0):
        self.n = n
        self._cache: dict[str, int] = {}
        self.partitions = max(1, min(MAX_PARTITIONS, math.ceil(data_bytes / PARTITION_BYTES)))
        self._dir = tempfile.TemporaryDirectory(prefix="tunewise-ngrams-")
        folder = Path(self._dir.name)
        self._files = {kind: [open(folder / f"{kind}{p}.bin", "wb") for p in range(self.partitions)]
                       for kind in ("train", "eval")}
        self._added = {"train": False, "eval": False}
        self._seq = 0  # order of the eval n-grams as they were added: the first hit of a row wins
        self.template_ngrams = 0
        self._n_train = 0

    def _word_hashes(self, text: str) -> list[int]:
        cache = self._cache
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        out = []
        for w in words(text):
            h = cache.get(w)
            if h is None:
                h = cache[w] = key64(w)
            out.append(h)
        return out

    def ngram_hashes(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(n-gram hashes, index of the text each came from) for a batch of texts; texts shorter than n words
        have none."""
        flat: list[int] = []
        lengths = np.empty(len(texts), dtype=np.int64)
        for i, text in enumerate(texts):
            hs = self._word_hashes(text)
            flat.extend(hs)
            lengths[i] = len(hs)
        w = np.array(flat, dtype=np.uint64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        count = np.maximum(lengths - self.n + 1, 0)
        if not count.sum():
            return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64)
        owner = np.repeat(np.arange(len(texts)), count)
        pos = np.repeat(starts - (np.cumsum(count) - count), count) + np.arange(int(count.sum()))
        h = np.zeros(len(pos), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(self.n):
                h = (h * _MULT) ^ w[pos + j]
            h ^= h >> np.uint64(29)
        return h, owner

    def _spill(self, kind: str, records: np.ndarray) -> None:
        part = (records["h"] % np.uint64(self.partitions)).astype(np.int64)
        for p in np.unique(part).tolist():
            self._files[kind][p].write(records[part == p].tobytes())
        self._added[kind] = True

    def add_train(self, rows: np.ndarray, prompts: list[str], targets: list[str]) -> None:
        for texts in (prompts, targets):
            h, owner = self.ngram_hashes(texts)
            records = np.empty(len(h), dtype=_TRAIN)
            records["h"], records["row"] = h, rows[owner]
            self._spill("train", records)
        self._n_train += len(rows)

    def add_eval(self, rows: np.ndarray, prompts: list[str], targets: list[str]) -> None:
        for side, texts in enumerate((prompts, targets)):
            h, owner = self.ngram_hashes(texts)
            records = np.empty(len(h), dtype=_EVAL)
            records["h"], records["row"], records["side"] = h, rows[owner], side
            records["seq"] = np.arange(self._seq, self._seq + len(h))
            self._seq += len(h)
            self._spill("eval", records)

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(eval rows, first train row sharing an n-gram with each, side), sorted by eval row; side 0 = prompt,
        1 = target. A row hit on both sides is reported for its target; on one side, for the first of its n-grams
        (in text order) that a train row shares."""
        empty = (np.empty(0, dtype=np.int64),) * 3
        for fh in [*self._files["train"], *self._files["eval"]]:
            fh.close()
        try:
            if not self._added["train"] or not self._added["eval"]:
                return empty
            limit = max(3, int(0.01 * self._n_train))
            hits = [self._partition_hits(p, limit) for p in range(self.partitions)]
            return _best_hit(*(np.concatenate(parts) for parts in zip(*hits)))
        finally:
            self._dir.cleanup()

    def _partition_hits(self, p: int, limit: int) -> tuple[np.ndarray, ...]:
        """(eval row, side, seq, train row) of this partition's hits, one (the best) per eval row."""
        folder = Path(self._dir.name)
        train = np.fromfile(folder / f"train{p}.bin", dtype=_TRAIN)
        order = np.lexsort((train["row"], train["h"]))
        h, rows = train["h"][order], train["row"][order]
        del train, order
        distinct = np.ones(len(h), dtype=bool)  # one (n-gram, row) pair each
        distinct[1:] = (h[1:] != h[:-1]) | (rows[1:] != rows[:-1])
        h, rows = h[distinct], rows[distinct]
        starts = np.flatnonzero(np.r_[True, h[1:] != h[:-1]]) if len(h) else np.empty(0, dtype=np.int64)
        df = np.diff(np.r_[starts, len(h)])
        common = df > limit
        self.template_ngrams += int(common.sum())
        uniq, first_row = h[starts][~common], rows[starts][~common]  # sorted n-grams, their first train row
        ev = np.fromfile(folder / f"eval{p}.bin", dtype=_EVAL)
        if not len(uniq) or not len(ev):
            return (np.empty(0, dtype=np.int64),) * 2 + (np.empty(0, dtype=np.int64),) * 2
        pos = np.minimum(np.searchsorted(uniq, ev["h"]), len(uniq) - 1)
        hit = uniq[pos] == ev["h"]
        return _best_hit(ev["row"][hit], ev["side"][hit].astype(np.int64), ev["seq"][hit], first_row[pos[hit]],
                         raw=True)


def _best_hit(rows: np.ndarray, sides: np.ndarray, seq: np.ndarray, train_rows: np.ndarray, *, raw: bool = False):
    """One hit per eval row: its highest side, and of those its first n-gram. `raw`: keep all four columns (to
    combine partitions); else (rows, train rows, sides)."""
    order = np.lexsort((seq, -sides, rows))
    rows, sides, seq, train_rows = rows[order], sides[order], seq[order], train_rows[order]
    first = np.r_[True, rows[1:] != rows[:-1]] if len(rows) else np.empty(0, dtype=bool)
    if raw:
        return rows[first], sides[first], seq[first], train_rows[first]
    return rows[first], train_rows[first], sides[first]
