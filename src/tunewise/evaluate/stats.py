"""Classification metrics with bootstrap confidence intervals and a paired significance test.

The metrics are vectorized over a leading batch axis so that `scipy.stats.bootstrap(vectorized=True)`
can score a whole batch of resamples in one numpy call: per-row class counts come from a single
`np.bincount` over offset labels, never from a (B, n, K) one-hot array, which keeps memory at a few
arrays of shape (B, n).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from numbers import Integral, Real

import numpy as np
from scipy import stats as _sstats

__all__ = [
    "METRICS",
    "accuracy",
    "bootstrap_ci",
    "macro_f1",
    "paired_bootstrap",
    "signature",
]

# Upper bound on labels held per bootstrap batch (batch * n); ~8 arrays of this many int64 stay < 300 MB.
_MAX_BATCH_ELEMENTS = 4_000_000


# ----------------------------------------------------------------------------------------------
# input checks (done once per public call, not inside the hot bootstrap loop)


def check_int(value, name: str, func: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"The '{name}' parameter of {func} must be an int >= {minimum}; got {value!r}.")
    return int(value)


def check_confidence(value, func: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"The 'confidence' parameter of {func} must be a float in (0, 1); got {value!r}.")
    return float(value)


def _check_labels(y, name: str, func: str, n_classes: int | None, *, batched: bool = False) -> np.ndarray:
    """Return `y` as an int64 array of class indices, or raise ValueError naming the parameter."""
    arr = np.asarray(y)
    integral = np.issubdtype(arr.dtype, np.integer) or (
        # integral floats (e.g. a pandas column that passed through NaN handling) are accepted
        np.issubdtype(arr.dtype, np.floating) and bool(np.all(np.isfinite(arr) & (arr == np.round(arr))))
    )
    if arr.dtype == bool or not (integral or arr.size == 0):
        raise ValueError(f"The '{name}' parameter of {func} must hold integer class indices; got dtype {arr.dtype}.")
    allowed_ndim = (1, 2) if batched else (1,)
    if arr.ndim not in allowed_ndim:
        shapes = "(n,) or (B, n)" if batched else "(n,)"
        raise ValueError(f"The '{name}' parameter of {func} must have shape {shapes}; got shape {arr.shape}.")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        raise ValueError(f"The '{name}' parameter of {func} must hold class indices >= 0; got {int(arr.min())}.")
    if n_classes is not None and arr.size and arr.max() >= n_classes:
        raise ValueError(
            f"The '{name}' parameter of {func} must hold class indices < n_classes={n_classes}; "
            f"got {int(arr.max())}."
        )
    return arr


def _check_pair(y_true, y_pred, func: str, n_classes: int | None, *, batched: bool, pred_name: str = "y_pred"):
    t = _check_labels(y_true, "y_true", func, n_classes, batched=batched)
    p = _check_labels(y_pred, pred_name, func, n_classes, batched=batched)
    if t.shape != p.shape:
        raise ValueError(
            f"The '{pred_name}' parameter of {func} must have the same shape as 'y_true' {t.shape}; got {p.shape}."
        )
    if t.shape[-1] == 0:
        raise ValueError(f"The 'y_true' parameter of {func} must hold at least one example; got 0.")
    return t, p


# ----------------------------------------------------------------------------------------------
# vectorized metric kernels: inputs are validated int64 arrays of shape (..., n)


def _accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    return np.mean(y_true == y_pred, axis=-1)


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-row macro F1 over the classes present in that row's y_true or y_pred (sklearn's default labels)."""
    lead = y_true.shape[:-1]
    rows = int(np.prod(lead, dtype=np.int64))
    t = y_true.reshape(rows, -1)
    p = y_pred.reshape(rows, -1)
    offset = (np.arange(rows, dtype=np.int64) * n_classes)[:, None]
    size = rows * n_classes
    t_idx = (t + offset).ravel()
    n_true = np.bincount(t_idx, minlength=size)
    n_pred = np.bincount((p + offset).ravel(), minlength=size)
    tp = np.bincount(t_idx, weights=(t == p).ravel(), minlength=size)
    # F1 = 2tp / (2tp + fp + fn) = 2tp / (n_true + n_pred); classes absent from both are left out.
    denom = (n_true + n_pred).reshape(rows, n_classes)
    present = denom > 0
    f1 = np.divide(2.0 * tp.reshape(rows, n_classes), denom, out=np.zeros(denom.shape), where=present)
    out = f1.sum(axis=1) / present.sum(axis=1)
    return out.reshape(lead)


def _as_output(value: np.ndarray):
    return float(value) if np.ndim(value) == 0 else value


# ----------------------------------------------------------------------------------------------
# public metrics


def accuracy(y_true, y_pred, n_classes: int | None = None):
    """Fraction of exact matches per row. Shapes (n,) -> float, (B, n) -> array (B,).

    `n_classes` is accepted (and only used to range-check labels) so that every entry of METRICS
    has the same call signature.
    """
    if n_classes is not None:
        n_classes = check_int(n_classes, "n_classes", "accuracy", 1)
    t, p = _check_pair(y_true, y_pred, "accuracy", n_classes, batched=True)
    return _as_output(_accuracy(t, p))


def macro_f1(y_true, y_pred, n_classes: int):
    """Unweighted mean F1 over classes present in y_true or y_pred, per row.

    Equals sklearn `f1_score(average="macro")` on each row (whose default labels are the union of the
    classes present), computed with bincount so a (B, n) batch of bootstrap resamples costs one pass.
    """
    n_classes = check_int(n_classes, "n_classes", "macro_f1", 1)
    t, p = _check_pair(y_true, y_pred, "macro_f1", n_classes, batched=True)
    return _as_output(_macro_f1(t, p, n_classes))


METRICS: dict[str, Callable] = {"accuracy": accuracy, "macro_f1": macro_f1}
_KERNELS: dict[str, Callable] = {"accuracy": _accuracy, "macro_f1": _macro_f1}


# ----------------------------------------------------------------------------------------------
# bootstrap


def _check_common(func: str, metric: str, n_classes, n_resamples, confidence, seed):
    if metric not in _KERNELS:
        raise ValueError(
            f"The 'metric' parameter of {func} must be one of {sorted(_KERNELS)}; got {metric!r}."
        )
    n_classes = check_int(n_classes, "n_classes", func, 1)
    n_resamples = check_int(n_resamples, "n_resamples", func, 100)
    confidence = check_confidence(confidence, func)
    seed = check_int(seed, "seed", func, 0)
    return n_classes, n_resamples, confidence, seed


def bootstrap_batch_size(n: int, n_resamples: int) -> int:
    return max(1, min(n_resamples, _MAX_BATCH_ELEMENTS // max(n, 1)))


def _run_bootstrap(data: tuple, statistic: Callable, n_resamples: int, confidence: float, seed: int):
    """scipy percentile bootstrap over paired samples; returns (low, high, bootstrap distribution)."""
    with warnings.catch_warnings():
        # A constant bootstrap distribution is a legitimate outcome here (e.g. all predictions equal);
        # scipy may warn about degenerate data, which we resolve below instead of leaking it.
        warnings.simplefilter("ignore", category=RuntimeWarning)
        warnings.simplefilter("ignore", category=getattr(_sstats, "DegenerateDataWarning", RuntimeWarning))
        res = _sstats.bootstrap(
            data,
            statistic,
            paired=True,
            vectorized=True,
            method="percentile",
            n_resamples=n_resamples,
            batch=bootstrap_batch_size(len(data[0]), n_resamples),
            confidence_level=confidence,
            rng=np.random.default_rng(seed),
        )
    return float(res.confidence_interval.low), float(res.confidence_interval.high), res.bootstrap_distribution


def finite_or(x: float, fallback: float) -> float:
    return float(x) if np.isfinite(x) else float(fallback)


def bootstrap_ci(
    y_true,
    y_pred,
    metric: str,
    *,
    n_classes: int,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Percentile bootstrap CI of `metric`, resampling examples with replacement.

    `value` is the metric on the full sample (not the bootstrap mean). When the bootstrap
    distribution is constant (e.g. every prediction equal to every label), both bounds equal `value`.
    """
    func = "bootstrap_ci"
    n_classes, n_resamples, confidence, seed = _check_common(func, metric, n_classes, n_resamples, confidence, seed)
    t, p = _check_pair(y_true, y_pred, func, n_classes, batched=False)
    if t.shape[0] < 2:
        raise ValueError(f"The 'y_true' parameter of {func} must hold at least 2 examples; got {t.shape[0]}.")
    kernel = _KERNELS[metric]
    value = float(kernel(t, p, n_classes))

    def statistic(yt, yp, axis=-1):
        return kernel(yt, yp, n_classes)

    low, high, dist = _run_bootstrap((t, p), statistic, n_resamples, confidence, seed)
    if np.ptp(dist) == 0:
        low = high = value
    return {
        "value": value,
        "ci_low": finite_or(low, value),
        "ci_high": finite_or(high, value),
        "n_resamples": n_resamples,
        "confidence": confidence,
        "method": "percentile",
    }


def paired_bootstrap(
    y_true,
    pred_a,
    pred_b,
    metric: str,
    *,
    n_classes: int,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Paired bootstrap test of metric(a) - metric(b) on the same examples.

    Both systems are scored on the same resampled indices, so example difficulty cancels out
    (Koehn 2004; Berg-Kirkpatrick et al. 2012). With d = metric(a) - metric(b) on the full sample
    and d*_1..d*_R the resampled differences, the two-sided p-value is

        p = clip(2 * #{r : d*_r <= 0} / R, 1/(R+1), 1)   if d > 0
        p = clip(2 * #{r : d*_r >= 0} / R, 1/(R+1), 1)   if d < 0
        p = 1                                            if d == 0

    i.e. twice the share of resamples on the other side of zero from the observed difference
    (ties at zero count against significance). `ci_low`/`ci_high` are the percentile CI of d.
    """
    func = "paired_bootstrap"
    n_classes, n_resamples, confidence, seed = _check_common(func, metric, n_classes, n_resamples, confidence, seed)
    t, a = _check_pair(y_true, pred_a, func, n_classes, batched=False, pred_name="pred_a")
    _, b = _check_pair(y_true, pred_b, func, n_classes, batched=False, pred_name="pred_b")
    if t.shape[0] < 2:
        raise ValueError(f"The 'y_true' parameter of {func} must hold at least 2 examples; got {t.shape[0]}.")
    kernel = _KERNELS[metric]
    diff = float(kernel(t, a, n_classes) - kernel(t, b, n_classes))

    def statistic(yt, ya, yb, axis=-1):
        return kernel(yt, ya, n_classes) - kernel(yt, yb, n_classes)

    low, high, dist = _run_bootstrap((t, a, b), statistic, n_resamples, confidence, seed)
    if np.ptp(dist) == 0:
        low = high = diff
    if diff > 0:
        other_side = np.count_nonzero(dist <= 0)
    elif diff < 0:
        other_side = np.count_nonzero(dist >= 0)
    else:
        other_side = len(dist)
    p_value = float(np.clip(2.0 * other_side / len(dist), 1.0 / (n_resamples + 1), 1.0))
    return {
        "diff": diff,
        "ci_low": finite_or(low, diff),
        "ci_high": finite_or(high, diff),
        "p_value": p_value,
        "n_resamples": n_resamples,
        "confidence": confidence,
    }


def signature(**parts) -> str:
    """sacrebleu-style provenance string, e.g. "metric:accuracy|nrs:1000|ci:0.95|seed:0", in argument order.

    Keeping it in metrics.json lets a reader tell whether two reported numbers are comparable.
    """
    items = []
    for key, value in parts.items():
        text = str(value)
        if "|" in text or "|" in key or ":" in key:
            raise ValueError(
                f"The '{key}' parameter of signature must not contain '|' (nor ':' in its name); got {text!r}."
            )
        items.append(f"{key}:{text}")
    return "|".join(items)
