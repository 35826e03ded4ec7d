"""Calibration of predicted class probabilities: expected calibration error and Brier score.

A model that says "90% sure" should be right about 90% of the time; these numbers (and the bins
behind a reliability diagram) show whether the tuned model's probabilities can be trusted as scores.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np

__all__ = ["brier_score", "expected_calibration_error"]

_ROW_SUM_ATOL = 1e-3  # float32 softmax rows sum to 1 within ~1e-6; anything far off is not a distribution


def _check_inputs(y_true, probs, func: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate (n,) labels against an (n, K) probability matrix; raise ValueError naming the parameter."""
    try:
        p = np.asarray(probs, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"The 'probs' parameter of {func} must be a float array of shape (n, K); {exc}") from None
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(
            f"The 'probs' parameter of {func} must be a non-empty float array of shape (n, K); got shape {p.shape}."
        )
    if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
        raise ValueError(f"The 'probs' parameter of {func} must hold finite probabilities in [0, 1].")
    row_sums = p.sum(axis=1)
    bad = np.flatnonzero(np.abs(row_sums - 1.0) > _ROW_SUM_ATOL)
    if bad.size:
        raise ValueError(
            f"The 'probs' parameter of {func} must have rows that sum to 1; row {int(bad[0])} sums to "
            f"{row_sums[bad[0]]:.6g}."
        )
    y = np.asarray(y_true)
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise ValueError(
            f"The 'y_true' parameter of {func} must be a 1-D array of integer class indices; "
            f"got dtype {y.dtype}, shape {y.shape}."
        )
    if y.shape[0] != p.shape[0]:
        raise ValueError(
            f"The 'y_true' parameter of {func} must have one label per row of 'probs' ({p.shape[0]}); got {y.shape[0]}."
        )
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(
            f"The 'y_true' parameter of {func} must hold class indices in [0, {p.shape[1] - 1}]; "
            f"got range [{int(y.min())}, {int(y.max())}]."
        )
    return y.astype(np.int64, copy=False), p


def expected_calibration_error(y_true, probs, n_bins: int = 15) -> tuple[float, list[dict]]:
    """Top-label ECE with equal-width confidence bins; also returns the bins for a reliability diagram.

    Confidence is the largest probability in a row and the prediction its argmax (ties: lowest index).
    Bins split [0, 1] into `n_bins` equal parts; each bin is (lo, hi] except the first, which also
    holds confidence 0. ECE = sum over bins of |accuracy - mean confidence| * count / n.
    Each bin is {"lo", "hi", "count", "accuracy", "confidence"}; accuracy/confidence are None when empty.
    """
    func = "expected_calibration_error"
    if isinstance(n_bins, bool) or not isinstance(n_bins, Integral) or n_bins < 1:
        raise ValueError(f"The 'n_bins' parameter of {func} must be an int >= 1; got {n_bins!r}.")
    y, p = _check_inputs(y_true, probs, func)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    # searchsorted(side="left") puts c into bin i with edges[i] < c <= edges[i+1]; c == 0 lands in bin 0.
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    correct_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    n = conf.shape[0]
    ece = 0.0
    bins = []
    for i in range(n_bins):
        count = int(counts[i])
        acc = float(correct_sum[i] / count) if count else None
        mean_conf = float(conf_sum[i] / count) if count else None
        if count:
            ece += abs(acc - mean_conf) * count / n
        bins.append({"lo": float(edges[i]), "hi": float(edges[i + 1]), "count": count,
                     "accuracy": acc, "confidence": mean_conf})
    return float(ece), bins


def brier_score(y_true, probs) -> float:
    """Multi-class Brier score: mean over rows of sum over classes of (p_k - 1[y == k])^2.

    Ranges from 0 (perfect) to 2; unlike ECE it also rewards sharpness, so the two are reported together.
    """
    y, p = _check_inputs(y_true, probs, "brier_score")
    sq = np.square(p).sum(axis=1)
    p_true = p[np.arange(y.shape[0]), y]
    # sum_k (p_k - onehot_k)^2 = sum_k p_k^2 - 2 p_y + 1, without materialising the one-hot matrix
    return float(np.mean(sq - 2.0 * p_true + 1.0))
