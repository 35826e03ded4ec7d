"""Slice gaps: per-group scores with intervals, the largest gap between groups with its own interval, and the
groups too small to judge.

fairlearn's MetricFrame gives the point values per group (and the between-groups difference, which the gap must
equal). The intervals come from one seeded stratified bootstrap per field: each group's rows are resampled with
replacement (its size fixed), every metric is recomputed per group on each resample, and the gap is the max-minus-min
over the judged groups of that same resample. Scoring takes index batches of shape (B, m), so a whole bootstrap is
a few numpy calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tunewise.artifacts.metrics import METRIC_RANGE

MISSING_SLICE_VALUE = "(missing)"

# metric name -> score(rows) where rows is an int array (m,) or (B, m) of test-row indices; returns float or (B,)
Scorer = Callable[[np.ndarray], Any]


def group_rows(meta: Sequence[dict[str, Any]], field: str) -> dict[str, np.ndarray]:
    """Test-row indices per value of `field`, in sorted value order; rows without the field are `(missing)`."""
    groups: dict[str, list[int]] = {}
    for i, m in enumerate(meta):
        value = m.get(field)
        groups.setdefault(MISSING_SLICE_VALUE if value is None else str(value), []).append(i)
    return {value: np.asarray(idx, dtype=np.int64) for value, idx in sorted(groups.items())}


def classification_scorers(y: np.ndarray, preds: np.ndarray, n_classes: int) -> dict[str, Scorer]:
    from tunewise.evaluate.stats import accuracy, macro_f1

    return {"accuracy": lambda rows: accuracy(y[rows], preds[rows]),
            "macro_f1": lambda rows: macro_f1(y[rows], preds[rows], n_classes)}


def mean_scorers(per_row: dict[str, np.ndarray]) -> dict[str, Scorer]:
    """Sentence-level scores (ROUGE-L, chrF per row): a group's score is their mean."""
    return {name: (lambda rows, x=np.asarray(x, dtype=float): x[rows].mean(axis=-1)) for name, x in per_row.items()}


def _percentile(dist: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(dist, [tail, 100 - tail])
    return float(low), float(high)


def _metric_frame_check(groups: dict[str, np.ndarray], scorers: dict[str, Scorer], n_rows: int,
                        points: dict[str, dict[str, float]]) -> None:
    """fairlearn's MetricFrame over the same rows: the per-group values must agree with ours (a cheap guard that the
    grouping and the scorers mean what fairlearn means)."""
    from fairlearn.metrics import MetricFrame

    feature = np.empty(n_rows, dtype=object)
    for value, idx in groups.items():
        feature[idx] = value
    rows = np.arange(n_rows)
    frame = MetricFrame(metrics={name: (lambda _t, p, s=s: float(s(np.asarray(p, dtype=np.int64))))
                                 for name, s in scorers.items()},
                        y_true=rows, y_pred=rows, sensitive_features=feature)
    for name in scorers:
        for value in groups:
            theirs, ours = float(frame.by_group[name][value]), points[value][name]
            if not np.isclose(theirs, ours, atol=1e-9):
                raise AssertionError(f"slice {value!r} {name}: fairlearn {theirs} != {ours}")


def slice_field(groups: dict[str, np.ndarray], scorers: dict[str, Scorer], *, n_rows: int, min_size: int,
                n_resamples: int, confidence: float, seed: int) -> dict[str, Any]:
    """One field's SliceField (as a dict): per-group scores with CIs, too-small groups, per-metric gap with CI."""
    rng = np.random.default_rng(seed)
    points = {value: {name: float(score(idx)) for name, score in scorers.items()} for value, idx in groups.items()}
    _metric_frame_check(groups, scorers, n_rows, points)
    out_groups: dict[str, Any] = {}
    dists: dict[str, dict[str, np.ndarray]] = {}
    for value, idx in groups.items():
        n = len(idx)
        judged = n >= min_size
        scores: dict[str, Any] = {}
        if n >= 2:
            draws = idx[rng.integers(0, n, size=(n_resamples, n))]  # this group's rows, resampled
            dists[value] = {name: np.asarray(score(draws), dtype=float) for name, score in scorers.items()}
        for name in scorers:
            ci = _percentile(dists[value][name], confidence) if n >= 2 else (None, None)
            scores[name] = {"value": points[value][name], "ci_low": ci[0], "ci_high": ci[1]}
        out_groups[value] = {"n": n, "judged": judged, "scores": scores}
    judged = [v for v, g in out_groups.items() if g["judged"]]
    gaps: dict[str, Any] = {}
    for name in scorers:
        if len(judged) < 2:
            gaps[name] = None
            continue
        values = {v: points[v][name] for v in judged}
        highest, lowest = max(values, key=values.get), min(values, key=values.get)
        stacked = np.stack([dists[v][name] for v in judged])  # (groups, B): the same resample in each column
        low, high = _percentile(stacked.max(axis=0) - stacked.min(axis=0), confidence)
        gap = values[highest] - values[lowest]
        gaps[name] = {"value": gap, "ci_low": min(low, gap), "ci_high": max(high, gap), "highest": highest,
                      "lowest": lowest, "metric_range": METRIC_RANGE.get(name, 1.0)}
    return {"metrics": list(scorers), "min_size": min_size, "groups": out_groups,
            "too_small": [v for v, g in out_groups.items() if not g["judged"]], "gaps": gaps,
            "n_resamples": n_resamples, "confidence": confidence}


def slice_fields(meta: Sequence[dict[str, Any]], fields: Sequence[str], scorers: dict[str, Scorer], *,
                 min_size: int, n_resamples: int, confidence: float, seed: int) -> dict[str, Any]:
    """metrics.json `slices`: one SliceField per data.slice_fields column."""
    return slice_fields_of_groups({field: group_rows(meta, field) for field in fields}, len(meta), scorers,
                                  min_size=min_size, n_resamples=n_resamples, confidence=confidence, seed=seed)


def slice_fields_of_groups(groups: dict[str, dict[str, np.ndarray]], n_rows: int, scorers: dict[str, Scorer], *,
                           min_size: int, n_resamples: int, confidence: float, seed: int) -> dict[str, Any]:
    """`slice_fields` from the rows already grouped per field (as `group_rows` groups them, e.g. a batch at a
    time by `RowGroups`), in field order."""
    return {field: slice_field(by_value, scorers, n_rows=n_rows, min_size=min_size, n_resamples=n_resamples,
                               confidence=confidence, seed=seed + i)
            for i, (field, by_value) in enumerate(groups.items())}


class RowGroups:
    """`group_rows` for every slice field, fed one row's meta at a time: each group's row indices are kept in an
    int64 array (8 bytes a row per field), not in the rows themselves."""

    def __init__(self, fields: Sequence[str]):
        import array

        self._array = array.array
        self.fields = list(fields)
        self._groups: dict[str, dict[str, Any]] = {field: {} for field in self.fields}
        self.rows = 0

    def add(self, meta: dict[str, Any]) -> None:
        for field in self.fields:
            value = meta.get(field)
            key = MISSING_SLICE_VALUE if value is None else str(value)
            groups = self._groups[field]
            if key not in groups:
                groups[key] = self._array("q")
            groups[key].append(self.rows)
        self.rows += 1

    def groups(self) -> dict[str, dict[str, np.ndarray]]:
        return {field: {value: np.array(idx, dtype=np.int64) for value, idx in sorted(by_value.items())}
                for field, by_value in self._groups.items()}
