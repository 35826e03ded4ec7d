"""The drift statistics: two-sample tests with effect sizes, the embedding domain classifier with its permutation
null, Holm's correction, and feedback accuracy with confidence intervals. Pure numpy/scipy/scikit-learn; nothing
here knows about runs or logs, so the monitor and bench/drift.py call the same code.

Each test compares a window with the reference *sample* (never with reference proportions treated as exact), so
its p-value stays valid however small the reference split is:
  numeric      two-sample Kolmogorov-Smirnov (scipy), + Wasserstein distance in reference SDs and PSI as effects
  categorical  chi-squared on the 2 x K table of reference and window counts, categories pooled until every
               expected count is >= 5 (the approximation's rule); Fisher's exact test for a yes/no feature (a
               rare category would otherwise be pooled away); + Jensen-Shannon distance and PSI as effects
  embedding    ROC AUC of a ridge classifier (a linear discriminant) telling window rows from reference rows, scored
               by exact leave-one-out (closed form: one solve per window, not one fit per fold); its null
               distribution comes from random splits of the reference sample into the same two sizes (a
               permutation null, computed once per size), a normal fitted to it gives smooth p-values
  performance  one-sided two-proportion z-test of window accuracy below the reference accuracy
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_EXPECTED = 5.0  # chi-squared's rule of thumb: pool categories until every expected count reaches it
EPS = 1e-6  # PSI's floor for an empty bin (log of zero otherwise)


@dataclass
class TestResult:
    feature: str
    kind: str
    test: str
    statistic: float
    p_value: float
    effect: dict[str, float]


# ---------------------------------------------------------------- numeric


def psi_bins(reference: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Inner edges at the reference's quantiles (deduplicated: discrete features get fewer bins) and the
    reference's share per bin."""
    qs = np.quantile(reference, np.linspace(0, 1, n_bins + 1)[1:-1]) if len(reference) else np.array([])
    edges = np.unique(qs)
    return edges, bin_shares(reference, edges)


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return counts / max(1, counts.sum())


def psi(ref_share: np.ndarray, win_share: np.ndarray) -> float:
    """Population stability index, sum (w - r) ln(w / r); 0.1 and 0.25 are the customary 'moderate' and
    'major' marks."""
    r = np.clip(np.asarray(ref_share, float), EPS, None)
    w = np.clip(np.asarray(win_share, float), EPS, None)
    return float(np.sum((w - r) * np.log(w / r)))


def numeric_test(feature: str, reference: np.ndarray, window: np.ndarray, edges: np.ndarray,
                 ref_share: np.ndarray) -> TestResult:
    ks = stats.ks_2samp(reference, window, method="asymp" if len(reference) * len(window) > 10_000 else "auto")
    sd = float(np.std(reference)) or 1.0
    effect = {"wasserstein": float(stats.wasserstein_distance(reference, window)) / sd,
              "psi": psi(ref_share, bin_shares(window, edges)),
              "mean_shift": float(np.mean(window) - np.mean(reference)) / sd}
    return TestResult(feature, "numeric", "ks", float(ks.statistic), float(ks.pvalue), effect)


# ---------------------------------------------------------------- categorical


def categorical_test(feature: str, ref_counts: dict[str, int], win_counts: dict[str, int]) -> TestResult:
    cats = list(dict.fromkeys([*ref_counts, *win_counts]))
    ref = np.array([ref_counts.get(c, 0) for c in cats], float)
    win = np.array([win_counts.get(c, 0) for c in cats], float)
    p_ref, p_win = ref / max(1.0, ref.sum()), win / max(1.0, win.sum())
    effect = {"js": float(jensen_shannon(p_ref, p_win)), "psi": psi(p_ref, p_win)}
    if len(cats) == 2:  # a yes/no feature (refusals, empty replies): Fisher's exact test, valid at any count
        _, p = stats.fisher_exact(np.vstack([ref, win]))  # its odds ratio is infinite on a zero cell: not shown
        return TestResult(feature, "categorical", "fisher", float(abs(p_win[1] - p_ref[1])), float(p), effect)
    table = pooled_table(ref, win)
    if table.shape[1] < 2:  # one category left after pooling: nothing can differ
        return TestResult(feature, "categorical", "chi2", 0.0, 1.0, effect)
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    return TestResult(feature, "categorical", "chi2", float(chi2), float(p), effect)


def pooled_table(ref: np.ndarray, win: np.ndarray) -> np.ndarray:
    """The 2 x K table with the rarest categories merged into one until every expected count is >= 5."""
    order = np.argsort(-(ref + win), kind="stable")
    ref, win = ref[order], win[order]
    n_ref, n_win = ref.sum(), win.sum()
    total = n_ref + n_win
    while len(ref) > 1:
        col = ref + win
        expected_min = np.minimum(col * n_ref / total, col * n_win / total)
        if expected_min.min() >= MIN_EXPECTED:
            break
        ref = np.append(ref[:-2], ref[-2:].sum())
        win = np.append(win[:-2], win[-2:].sum())
    return np.vstack([ref, win])


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    from scipy.spatial.distance import jensenshannon

    if p.sum() == 0 or q.sum() == 0:
        return 0.0
    return float(jensenshannon(p, q, base=2))


# ---------------------------------------------------------------- embeddings: the domain classifier


def domain_ridge(n_reference: int, n_window: int) -> float:
    """The domain classifier's ridge penalty, 1 / (pi (1 - pi)) for a window share pi of the rows: the curvature a
    logistic regression at C = 1 has near its solution, so the least-squares fit leans on the directions a
    logistic one would (the low-variance principal components are shrunk hard)."""
    share = n_window / (n_reference + n_window)
    return 1.0 / (share * (1.0 - share))


def loo_decisions(x: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """Exact leave-one-out decision values of ridge least squares (intercept unpenalised) on rows x, for each
    label column of y ([n] or [n, k]). With the hat matrix H = X (X'X + P)^-1 X', row i's fit without row i is
    ((Hy)_i - h_ii y_i) / (1 - h_ii): n refits cost one solve, and k labelings of the same rows one matmul."""
    design = np.hstack([x, np.ones((len(x), 1))])
    penalty = np.full(design.shape[1], ridge)
    penalty[-1] = 0.0
    coef_map = np.linalg.solve(design.T @ design + np.diag(penalty), design.T)  # (d+1) x n: labels -> weights
    leverage = np.einsum("ij,ji->i", design, coef_map)                        # diag(H)
    labels = y.reshape(len(y), -1).astype(float)
    fitted = design @ (coef_map @ labels)
    loo = (fitted - leverage[:, None] * labels) / (1.0 - leverage)[:, None]
    return loo.reshape(y.shape)


def auc_from_scores(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """ROC AUC per column: the Mann-Whitney U over n1 * n0 (ties count half), what roc_auc_score computes."""
    scores = scores.reshape(len(scores), -1)
    positive = positive.reshape(len(positive), -1).astype(bool)
    ranks = stats.rankdata(scores, axis=0)
    n1 = positive.sum(0)
    n0 = len(positive) - n1
    return ((ranks * positive).sum(0) - n1 * (n1 + 1) / 2) / (n1 * n0)


def domain_auc(reference: np.ndarray, window: np.ndarray) -> float:
    """Leave-one-out ROC AUC of a ridge classifier (a linear discriminant) telling window rows (1) from
    reference rows (0); 0.5 is no signal. The left-out scores of all rows make one AUC."""
    x = np.vstack([reference, window])
    y = np.r_[np.zeros(len(reference)), np.ones(len(window))]
    scores = loo_decisions(x, y, domain_ridge(len(reference), len(window)))
    return float(auc_from_scores(scores, y)[0])


@dataclass
class DomainNull:
    """The permutation null of the domain AUC for one (reference, window) size pair."""

    n_reference: int
    n_window: int
    aucs: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.aucs.mean())

    @property
    def std(self) -> float:
        return float(max(self.aucs.std(ddof=1), 1e-3))

    def p_value(self, auc: float) -> float:
        """Upper tail of a normal fitted to the null AUCs: smooth where the permutation sample has no draw this
        far out (the empirical tail cannot go below 1/permutations, too coarse for Holm's thresholds)."""
        z = (auc - self.mean) / self.std
        return float(stats.norm.sf(z))

    def threshold(self, alpha: float) -> float:
        """The AUC whose p-value is alpha."""
        return float(self.mean + stats.norm.isf(alpha) * self.std)


def domain_null(pool: np.ndarray, n_reference: int, n_window: int, permutations: int, seed: int) -> DomainNull:
    """Calibrate the AUC's null by permutation: split reference rows at random into a pseudo-reference and a
    pseudo-window of the real sizes, as if nothing had drifted, and collect their AUCs. When the two sizes use
    the whole pool (the monitor's case) every split is a relabelling of the same rows: one solve for all."""
    rng = np.random.default_rng(seed)
    need = n_reference + n_window
    ridge = domain_ridge(n_reference, n_window)
    if len(pool) == need:
        labels = np.zeros((need, permutations))
        for i in range(permutations):
            labels[rng.permutation(need)[:n_window], i] = 1.0
        return DomainNull(n_reference, n_window, auc_from_scores(loo_decisions(pool, labels, ridge), labels))
    aucs = np.empty(permutations)
    y = np.r_[np.zeros(n_reference), np.ones(n_window)]
    for i in range(permutations):
        idx = rng.permutation(len(pool))
        if len(pool) < need:  # a small reference: draw the pseudo-window with replacement from the rest
            ref_idx = idx[:n_reference]
            win_idx = rng.choice(idx[n_reference:] if len(pool) > n_reference else idx, n_window)
        else:
            ref_idx, win_idx = idx[:n_reference], idx[n_reference:need]
        x = np.vstack([pool[ref_idx], pool[win_idx]])
        aucs[i] = auc_from_scores(loo_decisions(x, y, ridge), y)[0]
    return DomainNull(n_reference, n_window, aucs)


def embedding_test(reference: np.ndarray, window: np.ndarray, null: DomainNull, alpha: float) -> TestResult:
    auc = domain_auc(reference, window)
    return TestResult("embedding", "embedding", "domain_classifier", auc, null.p_value(auc),
                      {"threshold": null.threshold(alpha), "null_mean": null.mean, "null_std": null.std})


# ---------------------------------------------------------------- performance from feedback


def accuracy_drop_test(ref_accuracy: float, ref_n: int, correct: np.ndarray) -> TestResult:
    """One-sided two-proportion z-test that the window's accuracy is below the reference's."""
    n = len(correct)
    acc = float(np.mean(correct)) if n else float("nan")
    pooled = (ref_accuracy * ref_n + acc * n) / (ref_n + n)
    se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / ref_n + 1 / n))
    z = (ref_accuracy - acc) / se
    return TestResult("accuracy", "performance", "accuracy_drop", ref_accuracy - acc, float(stats.norm.sf(z)),
                      {"window_accuracy": acc, "reference_accuracy": ref_accuracy})


def wilson_ci(correct: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    res = stats.binomtest(int(np.sum(correct)), len(correct)).proportion_ci(confidence, method="wilson")
    return float(res.low), float(res.high)


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Macro-F1 over the classes present in y or pred, one value per row of 2D label arrays (vectorised with
    bincount over row * n_classes + class)."""
    y, pred = np.atleast_2d(y), np.atleast_2d(pred)
    rows = y.shape[0]
    offset = (np.arange(rows) * n_classes)[:, None]
    size = rows * n_classes
    hit = y == pred
    tp = np.bincount((y + offset)[hit], minlength=size).reshape(rows, n_classes)
    fp = np.bincount((pred + offset)[~hit], minlength=size).reshape(rows, n_classes)
    fn = np.bincount((y + offset)[~hit], minlength=size).reshape(rows, n_classes)
    present = (tp + fp + fn) > 0
    f1 = np.where(present, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    return f1.sum(1) / np.maximum(present.sum(1), 1)


def macro_f1_ci(y: np.ndarray, pred: np.ndarray, n_classes: int, *, resamples: int = 1000,
                confidence: float = 0.95, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Macro-F1 with a percentile bootstrap CI (seeded index matrices, in blocks so a large window stays within
    a few million indices at a time)."""
    value = float(macro_f1(y, pred, n_classes)[0])
    rng = np.random.default_rng(seed)
    block = max(1, 2_000_000 // max(1, len(y)))
    boot = np.concatenate([macro_f1(y[idx], pred[idx], n_classes) for idx in
                           (rng.integers(0, len(y), size=(min(block, resamples - done), len(y)))
                            for done in range(0, resamples, block))])
    a = (1 - confidence) / 2
    return value, (float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a)))


# ---------------------------------------------------------------- multiple testing


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values: reject where adjusted <= alpha keeps the family-wise error rate at
    alpha under any dependence between the tests (windows share one reference, features share rows)."""
    p = np.asarray(p_values, float)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out
