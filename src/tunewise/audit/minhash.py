"""MinHash signatures for many texts at once, and LSH banding by sorting.

The hashing is datasketch's own: shingles are hashed with `datasketch.hashfunc.sha1_hash32`, and the permutations
are those of `datasketch.MinHash(num_perm, seed)` (affine32 scheme: MurmurHash3 finaliser, then `a*h + b` modulo
2**32). What differs is only that the permutation and the minimum run as numpy operations over a whole batch of
texts instead of one MinHash object per text, so a signature here is bit-identical to datasketch's
(tests/test_audit.py checks it) at a fraction of the cost. Candidate pairs come from sorting each band's keys
(`bucket_pairs`, run by dedup.py on one hash partition of a band at a time) rather than from MinHashLSH's
dict-of-sets of every text.
"""

from __future__ import annotations

import numpy as np

MAX32 = np.uint32(0xFFFFFFFF)
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))
_FNV_PRIME = np.uint64(0x100000001B3)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
CHUNK_CELLS = 1 << 19  # shingles × permutations per numpy step (2 MiB of uint32)


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser (the pre-mix datasketch applies to every hash value)."""
    s1, m1, s2, m2, s3 = _FMIX32
    h = h ^ (h >> s1)
    h = h * m1
    h = h ^ (h >> s2)
    h = h * m2
    return h ^ (h >> s3)


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: a bijective mix of uint64 values."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(33))
        h = h * np.uint64(0xFF51AFD7ED558CCD)
        h = h ^ (h >> np.uint64(33))
        h = h * np.uint64(0xC4CEB9FE1A85EC53)
        return h ^ (h >> np.uint64(33))


def lsh_bands(threshold: float, num_perm: int, min_recall: float = 0.98) -> tuple[int, int]:
    """(bands, rows per band) for LSH: the most rows per band (fewest chance candidates) for which a pair at
    exactly `threshold` Jaccard still becomes a candidate with probability >= min_recall. Pairs above the
    threshold are caught more surely still; candidates are then verified by their exact Jaccard."""
    best = (num_perm, 1)
    for r in range(1, num_perm + 1):
        b = num_perm // r
        if b < 1:
            break
        if 1.0 - (1.0 - threshold ** r) ** b >= min_recall:
            best = (b, r)
    return best


class MinHasher:
    """datasketch-compatible MinHash signatures, vectorised over batches of shingle sets."""

    def __init__(self, num_perm: int = 128, seed: int = 1):
        from datasketch import MinHash

        a, b = MinHash(num_perm=num_perm, seed=seed).permutations
        self.num_perm = num_perm
        self.seed = seed
        self.a = np.asarray(a, dtype=np.uint32)
        self.b = np.asarray(b, dtype=np.uint32)

    def signatures(self, hashes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Signatures of len(lengths) sets whose 32-bit shingle hashes lie back to back in `hashes`.
        Returns (n, num_perm) uint32; an empty set gets the all-max signature, like an empty datasketch MinHash."""
        lengths = np.asarray(lengths, dtype=np.int64)
        n = len(lengths)
        out = np.full((n, self.num_perm), MAX32, dtype=np.uint32)
        if n == 0 or not len(hashes):
            return out
        mixed = fmix32(np.asarray(hashes, dtype=np.uint32))
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        rows_per_step = max(1, CHUNK_CELLS // (self.num_perm * max(1, int(lengths.mean()))))
        with np.errstate(over="ignore"):
            for lo in range(0, n, rows_per_step):
                hi = min(n, lo + rows_per_step)
                nonempty = np.flatnonzero(lengths[lo:hi] > 0) + lo
                if not len(nonempty):
                    continue
                start, stop = offsets[lo], offsets[hi]
                permuted = np.multiply(mixed[start:stop, None], self.a[None, :])
                permuted += self.b[None, :]  # in place: one (shingles × permutations) array, not two
                out[nonempty] = np.minimum.reduceat(permuted, offsets[nonempty] - start, axis=0)
        return out


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64: one FNV-1a style key per band of `rows` signature values."""
    n = signatures.shape[0]
    out = np.empty((n, bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(bands):
            key = np.full(n, _FNV_OFFSET, dtype=np.uint64)
            for c in range(j * rows, (j + 1) * rows):
                key = (key ^ signatures[:, c].astype(np.uint64)) * _FNV_PRIME
            out[:, j] = key ^ (key >> np.uint64(31))
    return out


def bucket_pairs(keys: np.ndarray, nodes: np.ndarray, max_distance: int = 32) -> np.ndarray:
    """The pairs of `nodes` (ascending) that share a key in one band, as (smaller << 32 | larger) codes, not yet
    unique. Within a bucket every pair is produced up to `max_distance` apart in node order; a bucket larger than
    that (dozens of variants of one text) yields each node's `max_distance` nearest neighbours, which still links
    the whole bucket into one cluster once the pairs are verified."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    found = []
    for d in range(1, max_distance + 1):
        same = sorted_keys[:-d] == sorted_keys[d:]
        if not same.any():
            break
        a, b = nodes[order[:-d][same]].astype(np.uint64), nodes[order[d:][same]].astype(np.uint64)
        found.append((np.minimum(a, b) << np.uint64(32)) | np.maximum(a, b))
    return np.concatenate(found) if found else np.empty(0, dtype=np.uint64)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique for uint64 by sorting (numpy's hash-based unique is several times slower on these arrays)."""
    values = np.sort(values)
    if len(values) < 2:
        return values
    keep = np.empty(len(values), dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def exact_jaccard(indptr: np.ndarray, data: np.ndarray, pairs: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Exact Jaccard of the shingle sets of each pair (sets stored CSR-style: row i is data[indptr[i]:indptr[i+1]],
    sorted and unique). `data` is an array, or an object on disk whose `gather(indptr, rows)` returns the sets of
    the sorted `rows` as (local indptr, values): then only the rows of one chunk of pairs are read at a time."""
    out = np.zeros(len(pairs), dtype=np.float64)
    if not len(pairs):
        return out
    u_all, v_all = pairs[:, 0], pairs[:, 1]
    # set sizes of the pairs' rows only (`indptr` may be a file-backed map over every row)
    size_u = np.asarray(indptr[u_all + 1] - indptr[u_all])
    size_v = np.asarray(indptr[v_all + 1] - indptr[v_all])
    cum = np.cumsum(size_u + size_v)
    lo = 0
    while lo < len(pairs):
        # take as many pairs as fit in `chunk` shingles
        done = int(cum[lo - 1]) if lo else 0
        hi = max(lo + 1, int(np.searchsorted(cum, done + chunk, side="right")))
        u, v = pairs[lo:hi, 0], pairs[lo:hi, 1]
        pair_ids = np.arange(hi - lo, dtype=np.uint64)
        if isinstance(data, np.ndarray):
            ptr, values, lu, lv = indptr, data, u, v
        else:
            rows = np.unique(np.concatenate([u, v]))
            ptr, values = data.gather(indptr, rows)
            lu, lv = np.searchsorted(rows, u), np.searchsorted(rows, v)
        keys = np.concatenate([_tagged(ptr, values, lu, pair_ids), _tagged(ptr, values, lv, pair_ids)])
        keys.sort()
        dup = keys[1:] == keys[:-1]
        inter = np.bincount((keys[1:][dup] >> np.uint64(32)).astype(np.int64), minlength=hi - lo)
        union = size_u[lo:hi] + size_v[lo:hi] - inter
        out[lo:hi] = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        lo = hi
    return out


def _tagged(indptr: np.ndarray, data: np.ndarray, rows: np.ndarray, tags: np.ndarray) -> np.ndarray:
    """The shingles of `rows`, each as (tag << 32 | shingle)."""
    lengths = (indptr[rows + 1] - indptr[rows]).astype(np.int64)
    total = int(lengths.sum())
    starts = np.repeat(indptr[rows] - (np.cumsum(lengths) - lengths), lengths)
    values = data[starts + np.arange(total)].astype(np.uint64)
    return (np.repeat(tags, lengths) << np.uint64(32)) | values
