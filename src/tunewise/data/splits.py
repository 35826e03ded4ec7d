"""Seeded, stratified hold-out splits that never crash on rare classes and never drop a row."""

from __future__ import annotations

import math
from collections import Counter

from tunewise.artifacts.rows import Row


def stratified_split(rows: list[Row], fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """Split rows into (rest, held_out), with about `fraction` of them held out, class proportions kept.

    Classes with a single row cannot be stratified: they stay in `rest`, and the others are stratified as usual.
    When stratifying is impossible even then (more classes than held-out rows), the split is a plain seeded
    shuffle. The same rows, fraction and seed always give the same split; both lists keep the input order.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be between 0 and 1 (exclusive), not {fraction}")
    counts = Counter(row.label for row in rows)
    splittable = [i for i, row in enumerate(rows) if counts[row.label] >= 2]
    held_count = math.ceil(fraction * len(splittable))
    if held_count == 0 or held_count >= len(splittable):
        return list(rows), []
    held = set(_held_out_indices(splittable, [rows[i].label for i in splittable], held_count, seed))
    rest_rows = [row for i, row in enumerate(rows) if i not in held]
    held_rows = [rows[i] for i in sorted(held)]
    return rest_rows, held_rows


def _held_out_indices(indices: list[int], labels: list[str], held_count: int, seed: int) -> list[int]:
    from sklearn.model_selection import train_test_split  # imported here: sklearn is slow to import

    try:
        _, held = train_test_split(indices, test_size=held_count, random_state=seed, stratify=labels)
    except ValueError:
        # Too few held-out (or remaining) rows to give every class a place: fall back to a seeded shuffle.
        _, held = train_test_split(indices, test_size=held_count, random_state=seed, shuffle=True)
    return list(held)
