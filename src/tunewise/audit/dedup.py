"""Exact and near-duplicate detection over all splits at once, streaming.

Texts are added in batches (`DuplicateIndex.add`), each tagged with its split; the index keeps per text only
its split, a 64-bit key of its exact form, its LSH band keys (b × 8 bytes) and its set of 32-bit shingle hashes,
never the text itself, and all of them in temporary files (under TMPDIR), not in memory. `finish()` works on
those files a part at a time, so its memory does not follow the number of texts either: exact duplicates are
grouped one hash partition of the keys at a time (a partition holds every row of each of its keys), and so are
each band's keys for the near-duplicate candidates (MinHash LSH, see minhash.py); the candidate pairs go to a file
per range of rows and each range is made unique and verified alone (exact Jaccard similarity, the sets of one
chunk of pairs read at a time). The per-row results (split, key, first row of each exact form) are file-backed
arrays. The result answers, per split: duplicates, near-duplicate clusters, and eval rows leaked from train.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasketch.hashfunc import sha1_hash32

from tunewise.audit import minhash
from tunewise.audit.normalize import NON_WORD, exact_form, key64

NUM_PERM = 128
SHORT_TEXT_WORDS = 30  # median words at or below which shingles are single words
_CACHE_LIMIT = 1 << 19  # shingle -> hash entries (~150 bytes each) kept before the cache starts again
# texts hashed at a time: the arrays of a step (shingles, character grams, signatures) take ~3 MiB; larger steps
# are no faster, and their short-lived arrays of varying size fragment the heap by several times that
_ADD_ROWS = 512


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
        self._spill = _Spill(self.bands)  # everything kept per row, on disk

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
        for lo in range(0, len(texts), _ADD_ROWS):
            self._add(group, texts[lo:lo + _ADD_ROWS])

    def _add(self, group: int, texts: list[str]) -> None:
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
        self._spill.add_rows(np.full(len(texts), group, dtype=np.int8), keys)
        self._spill.add_bands(minhash.band_keys(signatures, self.bands, self.rows_per_band))
        for name, (sizes, data) in sets.items():
            self._spill.add_set(name, sizes, data)

    def finish(self) -> Duplicates:
        with self._spill as spill:
            return self._finish(spill)

    def _finish(self, spill: "_Spill") -> Duplicates:
        # every per-row array is a file mapped read-only or a file-backed map (np.memmap): the kernel can write
        # its pages back and drop them, so none of them is the process's own memory (RssAnon, RLIMIT_DATA)
        n = spill.rows
        groups, keys = spill.mapped("groups", np.int8), spill.mapped("keys", np.uint64)
        csr = {name: (spill.offsets(name), spill.set_data(name)) for name in spill.set_names()}
        word_ptr = csr["word"][0] if "word" in csr else spill.new("zero", np.int64, n + 1)
        rep = spill.new("rep", np.int64, n)
        for rows, part_keys in _partitions(keys, n):
            # the rows of one key partition hold every row of their keys: each exact form's first row is here
            order = np.argsort(part_keys, kind="stable")
            rows, part_keys = rows[order], part_keys[order]
            starts = np.ones(len(rows), dtype=bool)
            starts[1:] = part_keys[1:] != part_keys[:-1]
            rep[rows] = rows[starts][np.cumsum(starts) - 1]
            del order, part_keys, starts
        empty = spill.new("empty", np.bool_, n)
        node_file = spill.new("nodes", np.bool_, n)  # representatives with at least one shingle
        for lo in range(0, n, _CHUNK):
            hi = min(n, lo + _CHUNK)
            sizes = np.diff(word_ptr[lo:hi + 1])
            empty[lo:hi] = sizes == 0
            node_file[lo:hi] = (rep[lo:hi] == np.arange(lo, hi)) & (sizes > 0)
        floor = self.threshold - (self.CHAR_MARGIN if "char" in csr else 0.0)
        edges, similarity, candidates = [], [], 0
        for pairs in _candidate_pairs(spill, node_file, n, self.bands):
            if len(pairs):
                # Jaccard can be no higher than the ratio of the set sizes: skip hopeless pairs before verifying
                su = word_ptr[pairs[:, 0] + 1] - word_ptr[pairs[:, 0]]
                sv = word_ptr[pairs[:, 1] + 1] - word_ptr[pairs[:, 1]]
                pairs = pairs[np.minimum(su, sv) >= floor * np.maximum(su, sv) - 1e-9]
                del su, sv
            sim = minhash.exact_jaccard(*csr["word"], pairs) if "word" in csr else np.zeros(0)
            if "char" in csr:
                close = np.flatnonzero((sim < self.threshold) & (sim >= floor))
                sim[close] = np.maximum(sim[close], minhash.exact_jaccard(*csr["char"], pairs[close]))
            keep = sim >= self.threshold - 1e-12
            candidates += len(pairs)
            edges.append(pairs[keep])
            similarity.append(sim[keep])
        return Duplicates(groups=groups, keys=keys, rep=rep, empty=empty,
                          edges=np.concatenate(edges) if edges else np.empty((0, 2), dtype=np.int64),
                          similarity=np.concatenate(similarity) if similarity else np.zeros(0),
                          candidates=candidates, bands=self.bands, rows_per_band=self.rows_per_band,
                          shingle_words=self.shingle_words)


_CHUNK = 1 << 16  # rows of a per-row file read at a time
_PART_ROWS = 1 << 15  # rows (keys) per partition when grouping by key: the partitions' memory is about 40 B each
_PAIR_ROWS = 1 << 14  # rows per range of first pair members: each range's pairs are made unique and verified alone
_PAIR_BYTES = 1 << 20  # raw pair codes (8 bytes each) made unique at once; a larger range is split further


def _partitions(keys: np.ndarray, n: int, select: np.ndarray | None = None):
    """(rows, keys) of each hash partition of `keys` (a per-row file): rows whose key's top bits are p, in row
    order, one partition at a time. `select`: a per-row bool file of the rows to take (None: all).
    Keys are hashes, so the top bits split them evenly; a partition holds every row of each of its keys."""
    bits = (max(1, -(-n // _PART_ROWS)) - 1).bit_length()  # 2**bits partitions of at most ~_PART_ROWS keys
    for p in range(1 << bits):
        rows, values = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.uint64)]
        for lo in range(0, n, _CHUNK):
            chunk = np.asarray(keys[lo:lo + _CHUNK])
            take = (chunk >> np.uint64(64 - bits)) == p if bits else np.ones(len(chunk), dtype=bool)
            if select is not None:
                take &= np.asarray(select[lo:lo + _CHUNK])
            where = np.flatnonzero(take)
            rows.append(where + lo)
            values.append(chunk[where])
        yield np.concatenate(rows), np.concatenate(values)


def _candidate_pairs(spill: "_Spill", nodes, n: int, bands: int, max_distance: int = 32):
    """Pairs of `nodes` (a per-row bool file) that share a key in any band, as (m, 2) int64 arrays with the
    smaller row first, unique and sorted: one array per range of first members, in order, so their concatenation
    is sorted. Each band is grouped a hash partition at a time (minhash.bucket_pairs); the pairs go to a file per
    range of first members, which is then read back and made unique alone (in narrower ranges if it is large), so
    memory follows one range's pairs, not all of them."""
    ranges = max(1, -(-n // _PAIR_ROWS))
    files = [open(spill.folder / f"pairs{r}.u64", "wb") for r in range(ranges)]
    with_keys = spill.band_columns()
    for j in range(bands):
        for rows, part_keys in _partitions(with_keys[j], n, select=nodes):
            codes = minhash.bucket_pairs(part_keys, rows, max_distance)
            if not len(codes):
                continue
            where = (codes >> np.uint64(32)).astype(np.int64) // _PAIR_ROWS
            order = np.argsort(where, kind="stable")
            codes, bounds = codes[order], np.searchsorted(where[order], np.arange(ranges + 1))
            for r in np.flatnonzero(bounds[1:] > bounds[:-1]).tolist():
                files[r].write(codes[bounds[r]:bounds[r + 1]].tobytes())
            del codes, where, order
    for fh in files:
        fh.close()
    for r in range(ranges):
        path = spill.folder / f"pairs{r}.u64"
        raw = spill.mapped(path.name, np.uint64)
        # a range whose pairs (not yet unique: a pair found in several bands is there several times) exceed
        # _PAIR_BYTES is read in as many narrower ranges, each a pass over its file
        steps = max(1, -(-raw.nbytes // _PAIR_BYTES))
        lo, hi = r * _PAIR_ROWS, min(n, (r + 1) * _PAIR_ROWS)
        cuts = np.linspace(lo, hi, steps + 1).astype(np.int64)
        for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
            parts = [np.empty(0, dtype=np.uint64)]
            for at in range(0, len(raw), _CHUNK):
                chunk = np.asarray(raw[at:at + _CHUNK])
                first = chunk >> np.uint64(32)
                parts.append(chunk[(first >= a) & (first < b)] if steps > 1 else chunk)
            codes = minhash.sorted_unique(np.concatenate(parts))
            del parts
            yield np.stack([codes >> np.uint64(32), codes & np.uint64(0xFFFFFFFF)], axis=1).view(np.int64)
        del raw
        path.unlink()


class _Spill:
    """What the index keeps per row, appended to files in a temporary folder and read back memory-mapped (or with
    pread): split codes and exact-form keys, each band's keys (a file per band, so one band is one sequential
    read), the shingle sets and their sizes. `finish()` adds its own per-row results there (file-backed maps)."""

    def __init__(self, bands: int):
        import tempfile

        self._dir = tempfile.TemporaryDirectory(prefix="tunewise-dedup-")
        self.folder = Path(self._dir.name)
        self.rows = 0
        self._bands = bands
        self._files: dict[str, Any] = {}

    def _write(self, name: str, values: np.ndarray) -> None:
        fh = self._files.get(name)
        if fh is None:
            fh = self._files[name] = open(self.folder / name, "wb")
        fh.write(np.ascontiguousarray(values).tobytes())

    def add_rows(self, groups: np.ndarray, keys: np.ndarray) -> None:
        self._write("groups", groups)
        self._write("keys", keys)
        self.rows += len(keys)

    def add_bands(self, keys: np.ndarray) -> None:
        for j in range(self._bands):
            self._write(f"band{j}", keys[:, j])

    def add_set(self, name: str, sizes: np.ndarray, data: np.ndarray) -> None:
        self._write(f"{name}.sizes", sizes.astype(np.int32))
        self._write(f"{name}.u32", data.astype(np.uint32))

    def set_names(self) -> list[str]:
        return [name for name in ("word", "char") if f"{name}.sizes" in self._files]

    def mapped(self, name: str, dtype) -> np.ndarray:
        path = self.folder / name
        if not path.is_file() or not path.stat().st_size:
            return np.empty(0, dtype=dtype)
        return np.memmap(path, dtype=dtype, mode="r")

    def new(self, name: str, dtype, n: int) -> np.ndarray:
        """A zeroed per-row array in a new file, mapped for writing (its pages are the file's, not the heap's)."""
        if not n:
            return np.zeros(0, dtype=dtype)
        return np.memmap(self.folder / name, dtype=dtype, mode="w+", shape=(n,))

    def offsets(self, name: str) -> np.ndarray:
        """CSR offsets (n + 1, int64) of a set file's sizes, summed a chunk at a time into a mapped file."""
        sizes = self.mapped(f"{name}.sizes", np.int32)
        out = self.new(f"{name}.offsets", np.int64, self.rows + 1)
        total = 0
        for lo in range(0, self.rows, _CHUNK):
            part = np.cumsum(sizes[lo:lo + _CHUNK], dtype=np.int64) + total
            out[lo + 1:lo + 1 + len(part)] = part
            total = int(part[-1]) if len(part) else total
        return out

    def band_columns(self) -> list[np.ndarray]:
        return [self.mapped(f"band{j}", np.uint64) for j in range(self._bands)]

    def set_data(self, name: str) -> "_SetFile":
        return _SetFile(self.folder / f"{name}.u32")

    def __enter__(self) -> "_Spill":
        for fh in self._files.values():
            fh.close()
        return self

    def __exit__(self, *exc) -> None:
        # the files are unlinked; the maps `finish()` returns keep their pages until the arrays are dropped
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
