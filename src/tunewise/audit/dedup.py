"""Exact and near-duplicate detection over all splits at once, streaming.

Texts are added in batches (`DuplicateIndex.add`), each tagged with its split; the index keeps per text only
a 64-bit key of its exact form, its LSH band keys (b × 8 bytes) and its set of 32-bit shingle hashes, never the
text itself. The band keys and the shingle sets, which grow with the data, are appended to temporary files
(under TMPDIR) and read back when `finish()` needs them (one band, or the sets of one chunk of pairs, at a
time), so in memory the index holds about 20 bytes a text, in numpy arrays. `finish()` then groups exact
duplicates by sorting the keys, finds near-duplicate candidates by sorting each band's keys (MinHash LSH, see
minhash.py; merged band by band, so memory follows the distinct candidates, not the raw hits), and verifies
every candidate pair by its exact Jaccard similarity. The result answers, per split: duplicates, near-duplicate
clusters, and eval rows leaked from train.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasketch.hashfunc import sha1_hash32

from tunewise.audit import minhash
from tunewise.audit.normalize import NON_WORD, exact_form, key64

NUM_PERM = 128
SHORT_TEXT_WORDS = 30  # median words at or below which shingles are single words
_CACHE_LIMIT = 1 << 19  # shingle -> hash entries (~150 bytes each) kept before the cache starts again


def shingle_words_for(median_words: float) -> int:
    """Words per shingle when the recipe leaves it open: 1 for short texts (a one-word edit of a 10-word text
    keeps a word-1-gram Jaccard of 0.82; with 3-grams it drops under 0.5), 3 for longer ones."""
    return 1 if median_words <= SHORT_TEXT_WORDS else 3


@dataclass
class Duplicates:
    """What `DuplicateIndex.finish` found. Row numbers are global: in the order rows were added."""

    groups: np.ndarray        # split code per row
    keys: np.ndarray          # exact-form key per row
    rep: np.ndarray           # first row (global order) with the same exact form
    empty: np.ndarray         # rows with no words at all (no shingles)
    edges: np.ndarray         # (m, 2) verified near-duplicate pairs of representative rows
    similarity: np.ndarray    # exact Jaccard of each edge
    candidates: int           # candidate pairs checked
    bands: int
    rows_per_band: int
    shingle_words: int

    # ---- per split

    def rows_of(self, group: int) -> np.ndarray:
        return np.flatnonzero(self.groups == group)

    def exact_duplicates(self, group: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, first): rows of `group` whose exact form already occurred earlier in the same group, and the
        earlier row each repeats."""
        rows = self.rows_of(group)
        _, first_pos, inverse = np.unique(self.keys[rows], return_index=True, return_inverse=True)
        first = rows[first_pos][inverse]
        dup = first != rows
        return rows[dup], first[dup]

    def near_clusters(self, group: int) -> list[np.ndarray]:
        """Clusters (single linkage over verified pairs) of rows of `group` that hold at least two different
        exact forms; each cluster lists its rows in global order."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        rows = self.rows_of(group)
        if not len(rows) or not len(self.edges):
            return []
        present = np.zeros(len(self.keys), dtype=bool)
        present[self.rep[rows]] = True
        keep = present[self.edges[:, 0]] & present[self.edges[:, 1]]
        if not keep.any():
            return []
        nodes = np.unique(self.edges[keep].ravel())
        index = np.searchsorted(nodes, self.edges[keep])
        graph = coo_matrix((np.ones(len(index)), (index[:, 0], index[:, 1])), shape=(len(nodes), len(nodes)))
        _, label = connected_components(graph, directed=False)
        reps = self.rep[rows]
        pos = np.minimum(np.searchsorted(nodes, reps), len(nodes) - 1)
        linked = nodes[pos] == reps  # rows whose exact form is in a verified pair
        comp, members = label[pos[linked]], rows[linked]
        order = np.argsort(comp, kind="stable")  # grouped by component, global order within each
        comp, members = comp[order], members[order]
        clusters = np.split(members, np.flatnonzero(comp[1:] != comp[:-1]) + 1)
        return sorted(clusters, key=lambda m: m[0])

    def leaks(self, source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Rows of `target` whose text is in `source` (exact) or a verified near-duplicate of a `source` text.
        Returns (rows, source row, jaccard, exact?) per leaked row; exact leaks have jaccard 1."""
        src_rows = self.rows_of(source)
        tgt_rows = self.rows_of(target)
        n = len(self.keys)
        first_src = np.full(n, -1, dtype=np.int64)  # per representative: its first row in `source`
        first_src[self.rep[src_rows][::-1]] = src_rows[::-1]
        exact_src = first_src[self.rep[tgt_rows]]
        is_exact = exact_src >= 0
        partner = exact_src.copy()
        sim = np.where(is_exact, 1.0, 0.0)
        if len(self.edges) and (~is_exact).any():
            # best verified neighbour in `source` of each representative: highest Jaccard, then earliest row
            u = np.concatenate([self.edges[:, 0], self.edges[:, 1]])
            v = np.concatenate([self.edges[:, 1], self.edges[:, 0]])
            s = np.concatenate([self.similarity, self.similarity])
            ok = first_src[u] >= 0
            v, s, p = v[ok], s[ok], first_src[u[ok]]
            order = np.lexsort((-p, s, v))
            v, s, p = v[order], s[order], p[order]
            last = np.flatnonzero(np.r_[v[1:] != v[:-1], True]) if len(v) else np.empty(0, dtype=np.int64)
            best_partner = np.full(n, -1, dtype=np.int64)
            best_sim = np.zeros(n)
            best_partner[v[last]] = p[last]
            best_sim[v[last]] = s[last]
            reps = self.rep[tgt_rows]
            near = ~is_exact & (best_partner[reps] >= 0)
            partner[near] = best_partner[reps[near]]
            sim[near] = best_sim[reps[near]]
        leaked = partner >= 0
        return tgt_rows[leaked], partner[leaked], sim[leaked], is_exact[leaked]


class DuplicateIndex:
    """Streams texts in; `finish()` returns `Duplicates`.

    A pair is a near-duplicate when the Jaccard similarity of its word shingles reaches the threshold. For short
    texts (single-word shingles) the Jaccard similarity of character 3-grams counts too: one substituted word or
    a typo in an 8-word text leaves only 7/9 = 0.78 of the words shared, but most of the characters. Candidates
    always come from MinHash LSH over the word shingles; the character similarity is computed only for
    candidates whose word similarity falls at most CHAR_MARGIN short."""

    CHAR_MARGIN = 0.15

    def __init__(self, threshold: float = 0.8, *, shingle_words: int = 1, num_perm: int = NUM_PERM, seed: int = 1):
        self.threshold = threshold
        self.shingle_words = shingle_words
        self.char_grams = 3 if shingle_words == 1 else 0
        self.hasher = minhash.MinHasher(num_perm, seed)
        self.bands, self.rows_per_band = minhash.lsh_bands(threshold, num_perm)
        self._cache: dict[str, int] = {}
        self._groups: list[np.ndarray] = []
        self._keys: list[np.ndarray] = []
        self._spill = _Spill(self.bands)  # band keys (one file per band) and shingle sets, on disk
        self._sizes: dict[str, list[np.ndarray]] = {"word": [], "char": []}

    def _hash(self, shingle: str) -> int:
        h = self._cache.get(shingle)
        if h is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            h = self._cache[shingle] = sha1_hash32(shingle.encode("utf-8", "surrogatepass"))
        return h

    def shingles(self, form: str) -> tuple[list[int], str]:
        """32-bit hashes of the word shingles of an exact form (neither unique nor sorted), and its words joined
        by single spaces (for character 3-grams)."""
        toks = NON_WORD.sub(" ", form.casefold()).split()
        joined = " ".join(toks) if self.char_grams else ""
        k = self.shingle_words
        if k > 1 and len(toks) > k:
            toks = [" ".join(toks[i:i + k]) for i in range(len(toks) - k + 1)]
        elif k > 1 and toks:
            toks = [" ".join(toks)]
        get, slow = self._cache.get, self._hash
        return [get(t) or slow(t) for t in toks], joined

    def add(self, group: int, texts: list[str]) -> None:
        """Add a batch of texts of one split (`group`: a small integer)."""
        keys = np.empty(len(texts), dtype=np.uint64)
        flat: list[int] = []
        lengths = np.empty(len(texts), dtype=np.int64)
        joined: list[str] = []
        for i, text in enumerate(texts):
            form = exact_form(text)
            keys[i] = key64(form)
            word, chars = self.shingles(form)
            flat.extend(word)
            lengths[i] = len(word)
            joined.append(chars)
        sets = {"word": _unique_sets(np.array(flat, dtype=np.uint32), lengths)}
        if self.char_grams:
            sets["char"] = _unique_sets(*_char_grams(joined, self.char_grams))
        signatures = self.hasher.signatures(sets["word"][1], sets["word"][0])
        self._groups.append(np.full(len(texts), group, dtype=np.int8))
        self._keys.append(keys)
        self._spill.add_bands(minhash.band_keys(signatures, self.bands, self.rows_per_band))
        for name, (sizes, data) in sets.items():
            self._sizes[name].append(sizes.astype(np.int32))
            self._spill.add_set(name, data)

    def finish(self) -> Duplicates:
        with self._spill as spill:
            return self._finish(spill)

    def _finish(self, spill: "_Spill") -> Duplicates:
        groups = _cat(self._groups, np.int8)
        keys = _cat(self._keys, np.uint64)
        csr = {name: (_offsets(sizes), spill.set_data(name)) for name, sizes in self._sizes.items() if sizes}
        self._groups = self._keys = []  # type: ignore[assignment]
        self._sizes = {"word": [], "char": []}
        n = len(keys)
        sizes = np.diff(csr["word"][0]) if "word" in csr else np.zeros(n, dtype=np.int64)

        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.ones(n, dtype=bool)
        starts[1:] = sorted_keys[1:] != sorted_keys[:-1]
        run = np.cumsum(starts) - 1
        rep = np.empty(n, dtype=np.int64)
        rep[order] = order[starts][run]
        del order, sorted_keys, starts, run  # 25 bytes a row not needed past this point

        nodes = np.flatnonzero((rep == np.arange(n)) & (sizes > 0))
        pairs = minhash.candidate_pairs(spill.band_columns(nodes), nodes)
        floor = self.threshold - (self.CHAR_MARGIN if "char" in csr else 0.0)
        if len(pairs):
            # Jaccard can be no higher than the ratio of the set sizes: skip hopeless pairs before verifying
            small = np.minimum(sizes[pairs[:, 0]], sizes[pairs[:, 1]])
            large = np.maximum(sizes[pairs[:, 0]], sizes[pairs[:, 1]])
            pairs = pairs[small >= floor * large - 1e-9]
            del small, large
        similarity = minhash.exact_jaccard(*csr["word"], pairs) if "word" in csr else np.zeros(0)
        if "char" in csr:
            close = np.flatnonzero((similarity < self.threshold) & (similarity >= floor))
            similarity[close] = np.maximum(similarity[close], minhash.exact_jaccard(*csr["char"], pairs[close]))
        keep = similarity >= self.threshold - 1e-12
        return Duplicates(groups=groups, keys=keys, rep=rep, empty=sizes == 0, edges=pairs[keep],
                          similarity=similarity[keep], candidates=len(pairs), bands=self.bands,
                          rows_per_band=self.rows_per_band, shingle_words=self.shingle_words)


class _Spill:
    """The parts of the index that grow with the data, appended to files in a temporary folder and read back
    memory-mapped: each band's keys (a file per band, so one band is one sequential read) and the shingle sets."""

    def __init__(self, bands: int):
        import tempfile

        self._dir = tempfile.TemporaryDirectory(prefix="tunewise-dedup-")
        self.folder = Path(self._dir.name)
        self._band_files = [open(self.folder / f"band{j}.u64", "wb") for j in range(bands)]
        self._set_files = {name: open(self.folder / f"{name}.u32", "wb") for name in ("word", "char")}

    def add_bands(self, keys: np.ndarray) -> None:
        for j, fh in enumerate(self._band_files):
            fh.write(np.ascontiguousarray(keys[:, j]).tobytes())

    def add_set(self, name: str, data: np.ndarray) -> None:
        self._set_files[name].write(data.astype(np.uint32).tobytes())

    def _read(self, path: Path, dtype) -> np.ndarray:
        return np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size else np.empty(0, dtype=dtype)

    def band_columns(self, rows: np.ndarray) -> list[np.ndarray]:
        """Each band's keys of `rows`, one band at a time (a lazy sequence: one column in memory at once)."""
        return _LazyColumns([self.folder / f"band{j}.u64" for j in range(len(self._band_files))], rows, self._read)

    def set_data(self, name: str) -> "_SetFile":
        return _SetFile(self.folder / f"{name}.u32")

    def __enter__(self) -> "_Spill":
        for fh in [*self._band_files, *self._set_files.values()]:
            fh.close()
        return self

    def __exit__(self, *exc) -> None:
        self._dir.cleanup()


class _SetFile:
    """The shingle sets on disk (uint32 hashes, row after row), read a few rows at a time with pread: never mapped
    whole, so the address space does not grow with the data either."""

    def __init__(self, path: Path):
        self.path = path

    def gather(self, indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(local indptr, values) of the sets of `rows` (sorted, unique); a run of consecutive rows is one read."""
        import os

        starts, ends = indptr[rows], indptr[rows + 1]
        cut = np.flatnonzero(rows[1:] != rows[:-1] + 1) + 1
        first, last = np.r_[0, cut], np.r_[cut, len(rows)] - 1
        with open(self.path, "rb") as fh:
            parts = [os.pread(fh.fileno(), int(ends[b] - starts[a]) * 4, int(starts[a]) * 4)
                     for a, b in zip(first.tolist(), last.tolist())]
        values = np.frombuffer(b"".join(parts), dtype=np.uint32)
        return np.r_[0, np.cumsum(ends - starts)].astype(np.int64), values


class _LazyColumns:
    """A sequence of band-key columns for minhash.candidate_pairs, each read from its file when asked for."""

    def __init__(self, paths: list[Path], rows: np.ndarray, read):
        self.paths, self.rows, self.read = paths, rows, read

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, j: int) -> np.ndarray:
        column = self.read(self.paths[j], np.uint64)
        return np.asarray(column[self.rows]) if len(column) else np.empty(0, dtype=np.uint64)


def _char_grams(texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(32-bit hashes of every character n-gram, n-grams per text), computed over the code points of the whole
    batch at once. A text shorter than n characters has none."""
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    points = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    count = np.maximum(lengths - n + 1, 0)
    total = int(count.sum())
    if not total:
        return np.empty(0, dtype=np.uint32), count
    starts = np.cumsum(lengths) - lengths
    pos = np.repeat(starts - (np.cumsum(count) - count), count) + np.arange(total)
    code = np.zeros(total, dtype=np.uint64)
    for j in range(n):
        code = (code << np.uint64(21)) | points[pos + j]  # 21 bits hold any code point
    return (minhash.fmix64(code) >> np.uint64(32)).astype(np.uint32), count


def _unique_sets(hashes: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sizes, data): each row's hashes made unique and sorted, back to back."""
    row = np.repeat(np.arange(len(lengths), dtype=np.uint64), lengths)
    unique = minhash.sorted_unique((row << np.uint64(32)) | hashes.astype(np.uint64))
    sizes = np.bincount((unique >> np.uint64(32)).astype(np.int64), minlength=len(lengths))
    return sizes, (unique & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def _offsets(sizes: list[np.ndarray]) -> np.ndarray:
    """CSR offsets (n + 1, int64) of batches of set sizes, built in place (no temporary copies per row)."""
    out = np.zeros(sum(len(s) for s in sizes) + 1, dtype=np.int64)
    at = 1
    for part in sizes:
        out[at:at + len(part)] = part
        at += len(part)
    np.cumsum(out, out=out)
    return out


def _cat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)
