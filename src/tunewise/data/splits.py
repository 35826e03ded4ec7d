"""Seeded, stratified hold-out splits that never crash on rare classes and never drop a row.

The split is computed from the labels alone (`held_out_positions`: an array of label codes in, row positions
out), so the data stage can carve a split of any size while the rows themselves stay on disk.
"""

from __future__ import annotations

import math

import numpy as np

from tunewise.artifacts.rows import Row


def stratified_split(rows: list[Row], fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """Split rows into (rest, held_out), with about `fraction` of them held out, class proportions kept.

    Classes with a single row cannot be stratified: they stay in `rest`, and the others are stratified as usual.
    When stratifying is impossible even then (more classes than held-out rows), the split is a plain seeded
    shuffle. The same rows, fraction and seed always give the same split; both lists keep the input order.
    """
    names = sorted({row.label for row in rows})
    code = {name: i for i, name in enumerate(names)}
    held = held_out_positions(np.array([code[row.label] for row in rows], dtype=np.int64), fraction, seed)
    is_held = np.zeros(len(rows), dtype=bool)
    is_held[held] = True
    return [row for row, h in zip(rows, is_held) if not h], [rows[i] for i in held.tolist()]


def held_out_positions(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted positions of the rows to hold out, given each row's label code. Codes must sort the way the label
    names do (the split is then the same as stratifying on the names). Empty when nothing can be held out."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be between 0 and 1 (exclusive), not {fraction}")
    labels = np.asarray(labels)
    if not len(labels):
        return np.zeros(0, dtype=np.int64)
    splittable = np.flatnonzero((np.bincount(labels) >= 2)[labels])
    held_count = math.ceil(fraction * len(splittable))
    if held_count == 0 or held_count >= len(splittable):
        return np.zeros(0, dtype=np.int64)
    return np.sort(stratified_held_out(splittable, labels[splittable], held_count, seed))


def stratified_held_out(indices: np.ndarray, labels: np.ndarray, held_count: int, seed: int) -> np.ndarray:
    """The test side of sklearn's `train_test_split(indices, test_size=held_count, random_state=seed,
    stratify=labels)`, drawing the very same random numbers (StratifiedShuffleSplit), with a plain seeded shuffle
    (ShuffleSplit) when there are too few held-out (or remaining) rows to give every class a place. Written out
    here because sklearn's collects the indices in Python lists (about 40 bytes a row) and its import alone takes
    150 MB; tests/test_streaming.py holds the two to the same result."""
    n_test = held_count
    n_train = len(indices) - n_test
    rng = np.random.RandomState(seed)
    counts = np.bincount(labels)  # label codes are small integers: count them instead of sorting them
    y = (np.cumsum(counts > 0) - 1).astype(np.int32)[labels]  # codes 0..k-1 of the classes present, in order
    counts = counts[counts > 0]
    if counts.min() < 2 or n_train < len(counts) or n_test < len(counts):
        return indices[rng.permutation(len(indices))[:n_test]]
    by_class = np.argsort(y, kind="stable")
    starts = np.cumsum(counts) - counts
    n_i = _approximate_mode(counts, n_train, rng)
    t_i = _approximate_mode(counts - n_i, n_test, rng)
    held = []
    for i, count in enumerate(counts.tolist()):
        members = by_class[starts[i]:starts[i] + count].take(rng.permutation(count), mode="clip")
        held.append(members[n_i[i]:n_i[i] + t_i[i]])
    return indices[np.concatenate(held)]


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Rows to draw from each class (sklearn.utils.extmath's, the same draws): the floor of each class's share,
    then one more for the classes with the largest remainders, ties broken at random."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            add_now = min(len(tied), need_to_add)
            floored[rng.choice(tied, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)
