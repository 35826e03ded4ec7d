"""Label checks for classification: conflicts, noise candidates, imbalance.

- Conflicts come from the duplicate index: one text (exact form) seen with two labels, or a verified
  near-duplicate pair whose labels differ.
- Noise candidates come from confident learning (cleanlab `find_label_issues`) on out-of-fold probabilities
  of a cheap model: TF-IDF word 1-2 grams and logistic regression fitted by SGD (sklearn `SGDClassifier`,
  log loss), five-fold `cross_val_predict`. A candidate is a row to look at, not a proven error.
- Imbalance compares each class's training count with the largest class's.
"""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np

from tunewise.audit.dedup import Duplicates

NOISE_FOLDS = 5
NOISE_MODEL = ("TF-IDF word 1-2 grams + logistic regression (SGD, log loss), "
               f"{NOISE_FOLDS}-fold out-of-fold probabilities, cleanlab find_label_issues (prune_by_noise_rate)")


def conflicts(dups: Duplicates, labels: np.ndarray) -> tuple[list[list[int]], int]:
    """Groups of rows (global row numbers) that hold the same or a near-same text with different labels.
    Returns (groups, rows in them). Exact groups come first; a near pair adds both sides' exact groups."""
    n = len(labels)
    order = np.lexsort((labels, dups.rep))
    rep_sorted, lab_sorted = dups.rep[order], labels[order]
    first_label = np.full(n, -1, dtype=np.int64)
    mixed = np.zeros(n, dtype=bool)
    first_label[rep_sorted[::-1]] = lab_sorted[::-1]
    mixed[rep_sorted[first_label[rep_sorted] != lab_sorted]] = True
    del lab_sorted

    def members(rep: int) -> list[int]:  # the rows holding one exact form (rows sorted by rep: a slice)
        return order[np.searchsorted(rep_sorted, rep):np.searchsorted(rep_sorted, rep, side="right")].tolist()

    groups: list[list[int]] = [sorted(members(r)) for r in np.flatnonzero(mixed).tolist()]
    seen = set(np.flatnonzero(mixed).tolist())
    if len(dups.edges):
        u, v = dups.edges[:, 0], dups.edges[:, 1]
        differ = (first_label[u] != first_label[v]) & ~mixed[u] & ~mixed[v]
        for a, b in dups.edges[differ].tolist():
            if a in seen and b in seen:
                continue
            groups.append(sorted(members(a) + members(b)))
            seen.update((a, b))
    groups.sort(key=lambda g: g[0])
    return groups, len({r for g in groups for r in g})


def noise_candidates(texts: list[str], labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confident learning on out-of-fold probabilities. Returns (indices into texts ranked most suspicious first,
    the label the model prefers for each, its out-of-fold probability)."""
    from cleanlab.filter import find_label_issues
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import SGDClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    counts = Counter(labels.tolist())
    folds = min(NOISE_FOLDS, max(counts.values()))
    keep = np.array([counts[y] >= 2 for y in labels.tolist()])  # a one-row class cannot be predicted out of fold
    idx = np.flatnonzero(keep)
    classes, y = np.unique(labels[idx], return_inverse=True)
    if len(classes) < 2 or folds < 2:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0)
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                          SGDClassifier(loss="log_loss", alpha=1e-5, max_iter=20, tol=None, random_state=seed))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small classes: "The least populated class has only 3 members"
        probs = cross_val_predict(model, [texts[i] for i in idx], y, cv=cv, method="predict_proba")
        ranked = find_label_issues(y, probs, return_indices_ranked_by="self_confidence")
    suggested = classes[probs[ranked].argmax(axis=1)]
    return idx[ranked], suggested, probs[ranked].max(axis=1)


def imbalance(counts: dict[str, int], ratio: float) -> tuple[list[str], int, str | None]:
    """Classes whose count is below the largest class's count / ratio. Returns (classes, largest, its label)."""
    if not counts:
        return [], 0, None
    top_label, top = max(counts.items(), key=lambda kv: kv[1])
    small = [label for label, c in counts.items() if c < top / ratio]
    return sorted(small, key=lambda label: counts[label]), top, top_label
