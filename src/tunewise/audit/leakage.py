"""N-gram leakage for generation and chat: an eval prompt or target that shares a run of `audit.leak_ngram`
words (13 by default, as in the GPT-3 contamination study) with any train prompt or target.

Words are those of `normalize.words` (case-folded, punctuation dropped). Each word gets a 64-bit hash once; the
n-gram hashes are polynomial combinations computed with numpy over a whole batch, so no n-gram string is built.
N-grams that occur in many train rows (more than max(3, 1%) of them) are template text, such as a shared
instruction or system prompt, and are ignored; their number is reported.
"""

from __future__ import annotations

import numpy as np

from tunewise.audit.normalize import key64, words

_MULT = np.uint64(0x9E3779B97F4A7C15)
_CACHE_LIMIT = 2_000_000


class NgramIndex:
    def __init__(self, n: int = 13):
        self.n = n
        self._cache: dict[str, int] = {}
        self._train_hashes: list[np.ndarray] = []
        self._train_rows: list[np.ndarray] = []
        self._eval: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (hashes, global row, side)
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

    def add_train(self, rows: np.ndarray, prompts: list[str], targets: list[str]) -> None:
        for texts in (prompts, targets):
            h, owner = self.ngram_hashes(texts)
            self._train_hashes.append(h)
            self._train_rows.append(rows[owner])
        self._n_train += len(rows)

    def add_eval(self, rows: np.ndarray, prompts: list[str], targets: list[str]) -> None:
        for side, texts in enumerate((prompts, targets)):
            h, owner = self.ngram_hashes(texts)
            self._eval.append((h, rows[owner], np.full(len(h), side, dtype=np.int8)))

    def finish(self) -> dict[int, tuple[int, int]]:
        """{eval row: (first train row sharing an n-gram, side)}; side 0 = prompt, 1 = target."""
        if not self._train_hashes or not self._eval:
            return {}
        h = np.concatenate(self._train_hashes)
        rows = np.concatenate(self._train_rows)
        pairs = np.unique(np.stack([h, rows.astype(np.uint64)], axis=1), axis=0)  # one (n-gram, row) each
        uniq, first, df = np.unique(pairs[:, 0], return_index=True, return_counts=True)
        limit = max(3, int(0.01 * self._n_train))
        common = df > limit
        self.template_ngrams = int(common.sum())
        keep = ~common
        uniq, first_row = uniq[keep], pairs[first[keep], 1].astype(np.int64)
        out: dict[int, tuple[int, int]] = {}
        for eh, erows, side in self._eval:
            pos = np.searchsorted(uniq, eh)
            pos = np.minimum(pos, max(0, len(uniq) - 1))
            hit = (uniq[pos] == eh) if len(uniq) else np.zeros(len(eh), dtype=bool)
            for row, train_row, s in zip(erows[hit].tolist(), first_row[pos[hit]].tolist(), side[hit].tolist()):
                if row not in out or s > out[row][1]:
                    out[row] = (train_row, s)
        return out
