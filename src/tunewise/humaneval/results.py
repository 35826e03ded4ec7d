"""From ratings to results.json: the win rate (ties as ties) or Likert means, with percentile bootstrap intervals
that resample items, per-annotator counts, and agreement (Cohen's kappa by scikit-learn for two annotators,
Krippendorff's alpha by the `krippendorff` package for more)."""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from itertools import combinations
from typing import Any

import numpy as np

from tunewise.artifacts.humaneval import (
    Agreement,
    AnnotatorCounts,
    CriterionScores,
    HumanEvalResults,
    Interval,
    PairwiseResult,
)
from tunewise.humaneval.items import FINE_TUNED, OTHER
from tunewise.humaneval.store import Study

VERDICTS = (FINE_TUNED, OTHER, "tie")
LIKERT_SCALE = [1, 2, 3, 4, 5]


def ratio_interval(numerators: dict[str, float], denominators: dict[str, float], *, n: int, n_resamples: int,
                   confidence: float, seed: int) -> Interval:
    """sum(numerator) / sum(denominator) over items, with a percentile bootstrap that resamples items (one seeded
    index matrix). Resamples whose denominator is 0 are left out."""
    keys = [k for k in denominators if denominators[k] > 0]
    if not keys:
        return Interval(value=None, ci_low=None, ci_high=None, n=n, n_items=0)
    num = np.array([numerators.get(k, 0.0) for k in keys], dtype=float)
    den = np.array([denominators[k] for k in keys], dtype=float)
    value = float(num.sum() / den.sum())
    if len(keys) < 2:
        return Interval(value=value, ci_low=None, ci_high=None, n=n, n_items=len(keys))
    idx = np.random.default_rng(seed).integers(0, len(keys), size=(n_resamples, len(keys)))
    sums = den[idx].sum(axis=1)
    stats = num[idx].sum(axis=1)[sums > 0] / sums[sums > 0]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return Interval(value=value, ci_low=float(low), ci_high=float(high), n=n, n_items=len(keys))


def agreement(labels: dict[str, dict[str, Any]], *, ordinal: bool) -> Agreement:
    """labels: annotator -> item -> label. Cohen's kappa for two annotators (quadratic-weighted when ordinal),
    Krippendorff's alpha for more, over the items rated by two or more annotators."""
    per_item: dict[str, dict[str, Any]] = defaultdict(dict)
    for annotator, items in labels.items():
        for item, label in items.items():
            per_item[item][annotator] = label
    shared = {item: by for item, by in per_item.items() if len(by) >= 2}
    annotators = sorted({a for by in shared.values() for a in by})
    if not shared:
        return Agreement(method=None, value=None, raw_agreement=None, n_items=0, n_annotators=len(annotators),
                         note="no item was rated by two annotators: give annotators shared items "
                              "(humaneval.overlap > 0) to measure agreement")
    pairs = [(x, y) for by in shared.values() for x, y in combinations(by.values(), 2)]
    raw = sum(x == y for x, y in pairs) / len(pairs)
    kwargs = dict(raw_agreement=raw, n_items=len(shared), n_annotators=len(annotators))
    values = sorted({label for by in shared.values() for label in by.values()})
    if len(values) < 2:
        return Agreement(method=None, value=None, **kwargs,
                         note=f"every shared rating was {values[0]!r}: a chance-corrected coefficient is undefined "
                              f"when only one rating occurs (raw agreement {raw:.2f})")
    if len(annotators) == 2:
        from sklearn.metrics import cohen_kappa_score

        a, b = annotators
        both = [by for by in shared.values() if a in by and b in by]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            kappa = cohen_kappa_score([by[a] for by in both], [by[b] for by in both],
                                      labels=LIKERT_SCALE if ordinal else list(VERDICTS),
                                      weights="quadratic" if ordinal else None)
        method = "cohen_kappa_quadratic" if ordinal else "cohen_kappa"
        if not np.isfinite(kappa):
            return Agreement(method=method, value=None, **kwargs,
                             note="kappa is undefined: each annotator used a single rating throughout")
        note = f"Cohen's kappa of {a} and {b} on the {len(both)} items both rated"
        constant = [name for name in (a, b) if len({by[name] for by in both}) == 1]
        if constant:  # the prevalence paradox: chance agreement is then all the agreement there is
            note += (f"; {constant[0]} gave the same rating to every one of them, so kappa is 0 however often the "
                     f"other agrees (see raw_agreement)")
        return Agreement(method=method, value=float(kappa), **kwargs, note=note)
    import krippendorff

    domain = LIKERT_SCALE if ordinal else list(VERDICTS)
    matrix = np.full((len(annotators), len(shared)), np.nan)
    for j, by in enumerate(shared.values()):
        for a, label in by.items():
            matrix[annotators.index(a), j] = domain.index(label) + (1 if ordinal else 0)
    alpha = krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal" if ordinal else "nominal",
                               value_domain=[domain.index(v) + (1 if ordinal else 0) for v in domain])
    return Agreement(method="krippendorff_alpha_ordinal" if ordinal else "krippendorff_alpha_nominal",
                     value=float(alpha), **kwargs,
                     note=f"Krippendorff's alpha over {len(annotators)} annotators on {len(shared)} shared items")


def _majority(verdicts: list[str]) -> str:
    counts = Counter(verdicts).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return "tie"  # a split item is decided by nobody
    return counts[0][0]


def pairwise_result(ratings: list[dict[str, Any]], *, n_resamples: int, confidence: float,
                    seed: int) -> PairwiseResult:
    per_item: dict[str, Counter] = defaultdict(Counter)
    for r in ratings:
        per_item[r["item"]][r["verdict"]] += 1
    total = {k: float(sum(c.values())) for k, c in per_item.items()}
    decided = {k: float(c[FINE_TUNED] + c[OTHER]) for k, c in per_item.items()}
    wins = {k: float(c[FINE_TUNED]) for k, c in per_item.items()}
    n = len(ratings)
    kw = dict(n_resamples=n_resamples, confidence=confidence, seed=seed)
    count = Counter(r["verdict"] for r in ratings)
    majority = Counter(_majority(list(c.elements())) for c in per_item.values())
    won, lost = majority[FINE_TUNED], majority[OTHER]
    p = None
    if won + lost:
        from scipy.stats import binomtest

        p = float(binomtest(won, won + lost, 0.5).pvalue)
    labels: dict[str, dict[str, str]] = defaultdict(dict)
    for r in ratings:
        labels[r["annotator"]][r["item"]] = r["verdict"]
    return PairwiseResult(
        wins=count[FINE_TUNED], losses=count[OTHER], ties=count["tie"],
        win_rate=ratio_interval(wins, total, n=n, **kw),
        tie_rate=ratio_interval({k: float(c["tie"]) for k, c in per_item.items()}, total, n=n, **kw),
        loss_rate=ratio_interval({k: float(c[OTHER]) for k, c in per_item.items()}, total, n=n, **kw),
        decided_win_rate=ratio_interval(wins, decided, n=count[FINE_TUNED] + count[OTHER], **kw),
        items_won=won, items_lost=lost, items_tied=majority["tie"], sign_test_p=p,
        agreement=agreement(labels, ordinal=False))


def likert_result(ratings: list[dict[str, Any]], criteria: list[str], *, n_resamples: int, confidence: float,
                  seed: int) -> dict[str, CriterionScores]:
    kw = dict(n_resamples=n_resamples, confidence=confidence, seed=seed)
    out: dict[str, CriterionScores] = {}
    for criterion in criteria:
        sides = {}
        for model in (FINE_TUNED, OTHER):
            mine = [r for r in ratings if r["model"] == model]
            sums: dict[str, float] = defaultdict(float)
            counts: dict[str, float] = defaultdict(float)
            for r in mine:  # per test row, so both bootstraps resample the same units
                sums[r["row_id"]] += r["scores"][criterion]
                counts[r["row_id"]] += 1
            sides[model] = ratio_interval(sums, counts, n=len(mine), **kw)
        by_pair: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
        for r in ratings:
            by_pair[(r["annotator"], r["row_id"])][r["model"]] = r["scores"][criterion]
        diff_sum: dict[str, float] = defaultdict(float)
        diff_n: dict[str, float] = defaultdict(float)
        for (_, row), both in by_pair.items():
            if len(both) == 2:
                diff_sum[row] += both[FINE_TUNED] - both[OTHER]
                diff_n[row] += 1
        labels: dict[str, dict[str, int]] = defaultdict(dict)
        for r in ratings:
            labels[r["annotator"]][r["item"]] = r["scores"][criterion]
        out[criterion] = CriterionScores(
            fine_tuned=sides[FINE_TUNED], other=sides[OTHER],
            difference=ratio_interval(diff_sum, diff_n, n=int(sum(diff_n.values())), **kw),
            agreement=agreement(labels, ordinal=True))
    return out


def annotator_counts(ratings: list[dict[str, Any]], mode: str) -> dict[str, AnnotatorCounts]:
    out = {}
    for name in sorted({r["annotator"] for r in ratings}):
        mine = [r for r in ratings if r["annotator"] == name]
        verdicts = Counter(r["verdict"] for r in mine)
        pairwise = mode == "pairwise"
        out[name] = AnnotatorCounts(ratings=len(mine), shared=sum(r["shared"] for r in mine),
                                    wins=verdicts[FINE_TUNED] if pairwise else None,
                                    losses=verdicts[OTHER] if pairwise else None,
                                    ties=verdicts["tie"] if pairwise else None, source=mine[0]["source"])
    return out


def compute(study: Study, n_items: int, n_shared: int, ratings: list[dict[str, Any]], *, n_resamples: int,
            confidence: float, ratings_file: str, ratings_sha256: str) -> HumanEvalResults:
    kw = dict(n_resamples=n_resamples, confidence=confidence, seed=study.seed)
    pairwise = pairwise_result(ratings, **kw) if study.mode == "pairwise" else None
    likert = likert_result(ratings, study.criteria, **kw) if study.mode == "likert" else None
    return HumanEvalResults(
        mode=study.mode, against=study.against, against_description=study.against_description,
        criteria=study.criteria if study.mode == "likert" else [], n_items=n_items, n_rows=study.n_rows,
        n_rated_items=len({r["item"] for r in ratings}), n_ratings=len(ratings),
        n_annotators=len({r["annotator"] for r in ratings}), overlap=study.overlap, n_shared_items=n_shared,
        seed=study.seed, sources=study.sources, pairwise=pairwise, likert=likert,
        annotators=annotator_counts(ratings, study.mode), confidence=confidence, n_resamples=n_resamples,
        ratings_file=ratings_file, ratings_sha256=ratings_sha256)
