"""Text metrics for generation and chat, with bootstrap confidence intervals and paired comparisons.

Metrics (names as they appear in metrics.json) and their scales:

  bleu          corpus BLEU by sacrebleu (13a tokens, exp smoothing, mixed case), 0-100
  chrf          corpus chrF2 by sacrebleu (char order 6, no word n-grams), 0-100
  rouge1/2/L    rouge-score F-measure with the Porter stemmer, averaged over examples, 0-1
  exact_match   share of examples whose hypothesis equals a reference after whitespace normalisation
                (strip, runs of whitespace -> one space; case-sensitive), 0-1
  length_ratio  total hypothesis length / total reference length in sacrebleu 13a tokens, i.e. BLEU's own
                sys_len / ref_len (ref_len takes, per example, the reference length closest to the hypothesis)

BLEU and chrF keep sacrebleu's 0-100 scale so they can be compared with published numbers and carry its
signature strings; ROUGE and exact match stay on 0-1 as rouge-score reports them.

Several references per example (`references[i]` is a list of strings; a bare string is one reference):
BLEU and chrF use sacrebleu's own multi-reference rules (BLEU clips n-gram counts by the maximum over the
references; chrF keeps the best-scoring reference per example). Examples may have different numbers of
references: sacrebleu's reference streams are padded with None, which it skips, and its signature then says
`nrefs:var`. ROUGE takes, per example and per ROUGE type, the reference with the highest F-measure
(`RougeScorer.score_multi`, the usual convention), then averages over examples. Exact match counts a hit
against any reference.

The bootstrap works on per-example sufficient statistics, as sacrebleu's own paired bootstrap does: corpus
BLEU and chrF are not means of sentence scores, so each example's match counts are extracted once
(`Metric._extract_corpus_statistics`), and a resample's score is computed from the summed counts
(`Metric._compute_score_from_stats`). One seeded matrix of resampled row indices (drawn by
`scipy.stats.bootstrap`) drives every metric, and in a paired test both systems. Each batch of index rows
becomes a (B, n) matrix of draw counts, and one matrix product with the (n, columns) statistics gives every
resample's summed counts. Intervals are percentile intervals, as in `tunewise.evaluate.stats`.

rouge-score's tokenizer keeps only [a-z0-9] after lower-casing, so ROUGE is only meaningful for English-like
text (letters with diacritics are dropped); use chrF for other languages.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata

import numpy as np
from nltk.stem.porter import PorterStemmer
from rouge_score import rouge_scorer, tokenize, tokenizers
from sacrebleu.metrics import BLEU, CHRF
from scipy import stats as _sstats

from tunewise.evaluate.stats import bootstrap_batch_size, check_confidence, check_int, finite_or

__all__ = [
    "DEFAULT_METRICS",
    "ROUGE_TYPES",
    "SCORE_NAMES",
    "TextStats",
    "compare_stats",
    "normalize_whitespace",
    "paired_compare",
    "per_example_scores",
    "score_corpus",
    "score_stats",
    "text_metric_signatures",
    "text_stats",
]

DEFAULT_METRICS = ("bleu", "chrf", "rouge", "exact_match", "length_ratio")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
# every score this module reports, in the order it reports them
SCORE_NAMES = ("bleu", "chrf", *ROUGE_TYPES, "exact_match", "length_ratio")
# names accepted in `metrics`: the recipe's groups plus each single ROUGE type
_GROUPS = {"bleu": ("bleu",), "chrf": ("chrf",), "rouge": ROUGE_TYPES, "rouge1": ("rouge1",),
           "rouge2": ("rouge2",), "rougeL": ("rougeL",), "exact_match": ("exact_match",),
           "length_ratio": ("length_ratio",)}
# scores that are a plain mean of per-example values
_MEAN_SCORES = (*ROUGE_TYPES, "exact_match")
# sentence-level scores available per example
_SENTENCE_SCORES = ("chrf", *ROUGE_TYPES, "exact_match")


# ----------------------------------------------------------------------------------------------
# the metric objects (fixed settings; the signatures record them)


def _bleu() -> BLEU:
    return BLEU()


def _chrf() -> CHRF:
    return CHRF()


_PORTER = PorterStemmer()  # what rouge-score's DefaultTokenizer(use_stemmer=True) uses


@functools.lru_cache(maxsize=1 << 17)
def _stem(word: str) -> str:
    return _PORTER.stem(word)


class _Stemmer:
    """rouge-score's Porter stemmer with a per-word cache: stemming is pure, and 60% of ROUGE's time."""

    stem = staticmethod(_stem)


class _CachingTokenizer(tokenizers.Tokenizer):
    """rouge-score's DefaultTokenizer(use_stemmer=True), memoised per text (references recur across systems)."""

    def __init__(self) -> None:
        self._memo: dict[str, list[str]] = {}

    def tokenize(self, text: str) -> list[str]:
        tokens = self._memo.get(text)
        if tokens is None:
            tokens = self._memo[text] = tokenize.tokenize(text, _Stemmer)
        return tokens


def normalize_whitespace(text: str) -> str:
    """Strip and collapse every run of whitespace to one space (the exact-match normalisation)."""
    return " ".join(text.split())


# ----------------------------------------------------------------------------------------------
# input checks (once per public call)


def _check_texts(value, name: str, func: str) -> list[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"The '{name}' parameter of {func} must be a list of strings; got {type(value).__name__}.")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ValueError(f"The '{name}' parameter of {func} must be a list of strings; "
                             f"item {i} is {type(item).__name__} ({item!r:.60}).")
    return list(value)


def _check_references(value, func: str, n: int, hyp_name: str) -> list[list[str]]:
    name = "references"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"The '{name}' parameter of {func} must be a list with one list of reference strings "
                         f"per example; got {type(value).__name__}.")
    if len(value) != n:
        raise ValueError(f"The '{name}' parameter of {func} must have one entry per hypothesis: "
                         f"'{hyp_name}' has {n}, '{name}' has {len(value)}.")
    out = []
    for i, refs in enumerate(value):
        if isinstance(refs, str):
            out.append([refs])
            continue
        if isinstance(refs, bytes) or not isinstance(refs, Sequence):
            raise ValueError(f"The '{name}' parameter of {func} must hold a string or a list of strings per "
                             f"example; example {i} is {type(refs).__name__}.")
        if len(refs) == 0:
            raise ValueError(f"The '{name}' parameter of {func} must hold at least one reference per example; "
                             f"example {i} has none.")
        for j, ref in enumerate(refs):
            if not isinstance(ref, str):
                raise ValueError(f"The '{name}' parameter of {func} must hold strings; reference {j} of example "
                                 f"{i} is {type(ref).__name__} ({ref!r:.60}).")
        out.append(list(refs))
    return out


def _check_metrics(value, func: str) -> tuple[str, ...]:
    """Expand metric groups ("rouge") into score names, in SCORE_NAMES order."""
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) == 0:
        raise ValueError(f"The 'metrics' parameter of {func} must be a non-empty list of names from "
                         f"{sorted(_GROUPS)}; got {value!r}.")
    unknown = [m for m in value if m not in _GROUPS]
    if unknown:
        raise ValueError(f"The 'metrics' parameter of {func} must only hold names from {sorted(_GROUPS)}; "
                         f"got {unknown!r}.")
    wanted = {s for m in value for s in _GROUPS[m]}
    return tuple(s for s in SCORE_NAMES if s in wanted)


def _check_bootstrap_args(func: str, n_resamples, confidence, seed) -> tuple[int, float, int]:
    return (check_int(n_resamples, "n_resamples", func, 100), check_confidence(confidence, func),
            check_int(seed, "seed", func, 0))


# ----------------------------------------------------------------------------------------------
# per-example sufficient statistics


@dataclass(frozen=True, eq=False)
class TextStats:
    """Per-example sufficient statistics of one system against one set of references.

    Built once by `text_stats`; `score_stats` / `compare_stats` bootstrap it, `subset` slices it (for
    per-slice scores without re-tokenising), and `per_example` gives sentence-level scores.

    `columns` maps each statistic block to an (n, c) float64 array: "bleu" holds sacrebleu's
    [sys_len, ref_len, correct_1..4, total_1..4] per example, "chrf" its [hyp, ref, match] counts per
    n-gram order, and each of rouge1/rouge2/rougeL/exact_match a single column of per-example values.
    """

    scores: tuple[str, ...]
    n: int
    n_refs: int | None  # references per example; None when it varies (sacrebleu's nrefs:var)
    references_sha: str
    columns: dict[str, np.ndarray] = field(repr=False)

    def subset(self, index) -> TextStats:
        """The statistics of the rows in `index` (ints or a boolean mask), e.g. one slice value."""
        index = np.asarray(index)
        idx = np.arange(self.n)[index if index.dtype == bool else index.astype(np.int64)]
        return TextStats(self.scores, int(idx.size), self.n_refs,
                         f"{self.references_sha}[{hashlib.sha256(idx.tobytes()).hexdigest()[:12]}]",
                         {k: v[idx] for k, v in self.columns.items()})

    def per_example(self) -> list[dict[str, float]]:
        """Sentence-level scores per example: chrF (sacrebleu sentence chrF, 0-100), ROUGE F (0-1), exact match."""
        cols: dict[str, np.ndarray] = {}
        if "chrf" in self.columns:
            chrf = _chrf()
            cols["chrf"] = np.array([chrf._compute_score_from_stats(row).score
                                     for row in self.columns["chrf"].astype(np.int64).tolist()])
        for name in _SENTENCE_SCORES[1:]:
            if name in self.columns:
                cols[name] = self.columns[name][:, 0]
        return [{k: float(v[i]) for k, v in cols.items()} for i in range(self.n)]

    def _matrix(self) -> tuple[np.ndarray, dict[str, slice]]:
        """All statistic blocks side by side as one (n, C) matrix, and each block's column slice."""
        blocks, where, start = [], {}, 0
        for key, arr in self.columns.items():
            blocks.append(arr)
            where[key] = slice(start, start + arr.shape[1])
            start += arr.shape[1]
        return np.hstack(blocks), where

    def _scorer(self) -> Callable[[np.ndarray], np.ndarray]:
        """A function from draw counts (B, n) to the scores of each resample, shape (len(scores), B)."""
        matrix, where = self._matrix()
        bleu, chrf, n = _bleu(), _chrf(), self.n

        def score(counts: np.ndarray) -> np.ndarray:
            sums = counts @ matrix  # (B, C): each resample's summed statistics
            out = np.empty((len(self.scores), counts.shape[0]))
            for k, name in enumerate(self.scores):
                if name == "bleu":
                    out[k] = [bleu._compute_score_from_stats(row).score
                              for row in np.rint(sums[:, where["bleu"]]).astype(np.int64).tolist()]
                elif name == "chrf":
                    out[k] = [chrf._compute_score_from_stats(row).score
                              for row in np.rint(sums[:, where["chrf"]]).astype(np.int64).tolist()]
                elif name == "length_ratio":
                    sys_len, ref_len = sums[:, where["bleu"]][:, 0], sums[:, where["bleu"]][:, 1]
                    # sacrebleu's BLEUScore.ratio: 0 when there is no reference token at all
                    out[k] = np.divide(sys_len, ref_len, out=np.zeros_like(sys_len), where=ref_len > 0)
                else:
                    out[k] = sums[:, where[name]][:, 0] / n
            return out

        return score

    def values(self) -> dict[str, float]:
        """Each score on the full sample (every example drawn once)."""
        point = self._scorer()(np.ones((1, self.n)))[:, 0]
        return dict(zip(self.scores, (float(v) for v in point)))


def _digest(references: list[list[str]]) -> str:
    h = hashlib.sha256()
    for refs in references:
        for ref in refs:
            h.update(ref.encode("utf-8", "surrogatepass"))
            h.update(b"\x1f")
        h.update(b"\x1e")
    return h.hexdigest()[:16]


def _extract(systems: list[list[str]], references: list[list[str]], scores: tuple[str, ...]) -> list[TextStats]:
    """Statistics for several systems against the same references; reference n-grams are cached once."""
    n = len(references)
    counts = {len(r) for r in references}
    n_refs = counts.pop() if len(counts) == 1 else None
    max_refs = max(len(r) for r in references)
    # sacrebleu wants one stream per reference position; None marks a missing reference (skipped by sacrebleu)
    streams = [[refs[j] if j < len(refs) else None for refs in references] for j in range(max_refs)]
    sha = _digest(references)
    cols: list[dict[str, np.ndarray]] = [{} for _ in systems]

    if "bleu" in scores or "length_ratio" in scores:
        bleu = _bleu()
        bleu._ref_cache = bleu._cache_references(streams)
        for c, hyps in zip(cols, systems):
            c["bleu"] = np.asarray(bleu._extract_corpus_statistics(hyps, None), dtype=np.float64).reshape(n, -1)
    if "chrf" in scores:
        chrf = _chrf()
        chrf._ref_cache = chrf._cache_references(streams)
        for c, hyps in zip(cols, systems):
            c["chrf"] = np.asarray(chrf._extract_corpus_statistics(hyps, None), dtype=np.float64).reshape(n, -1)
    rouge_types = [t for t in ROUGE_TYPES if t in scores]
    if rouge_types:
        scorer = rouge_scorer.RougeScorer(rouge_types, tokenizer=_CachingTokenizer())
        for c, hyps in zip(cols, systems):
            per = [scorer.score_multi(refs, hyp) for hyp, refs in zip(hyps, references)]
            for t in rouge_types:
                c[t] = np.array([[s[t].fmeasure] for s in per], dtype=np.float64).reshape(n, 1)
    if "exact_match" in scores:
        norm_refs = [{normalize_whitespace(r) for r in refs} for refs in references]
        for c, hyps in zip(cols, systems):
            c["exact_match"] = np.array([[normalize_whitespace(h) in rs] for h, rs in zip(hyps, norm_refs)],
                                        dtype=np.float64).reshape(n, 1)
    return [TextStats(scores, n, n_refs, sha, c) for c in cols]


def text_stats(hypotheses: Sequence[str], references: Sequence[Sequence[str] | str],
               metrics: Sequence[str] = DEFAULT_METRICS) -> TextStats:
    """Per-example sufficient statistics of `hypotheses` against `references` (one list of strings per example)."""
    func = "text_stats"
    scores = _check_metrics(metrics, func)
    hyps = _check_texts(hypotheses, "hypotheses", func)
    if not hyps:
        raise ValueError(f"The 'hypotheses' parameter of {func} must hold at least one example; got 0.")
    refs = _check_references(references, func, len(hyps), "hypotheses")
    return _extract([hyps], refs, scores)[0]


# ----------------------------------------------------------------------------------------------
# bootstrap


def _run_bootstrap(n: int, statistic: Callable[[np.ndarray], np.ndarray], n_resamples: int, confidence: float,
                   seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Percentile bootstrap over example indices; `statistic` maps draw counts (B, n) to scores (k, B).

    scipy draws the (n_resamples, n) index matrix from `default_rng(seed)` in batches; each batch is turned
    into draw counts, so every score (and both systems of a paired test) sees the same resamples.
    """

    def on_indices(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        lead = idx.shape[:-1]
        rows = idx.reshape(-1, n)
        offset = (np.arange(rows.shape[0], dtype=np.int64) * n)[:, None]
        counts = np.bincount((rows + offset).ravel(), minlength=rows.shape[0] * n).reshape(rows.shape[0], n)
        out = statistic(counts.astype(np.float64))
        return out.reshape(out.shape[0], *lead)

    with warnings.catch_warnings():
        # a constant bootstrap distribution is legitimate (e.g. identical systems); resolved by the caller
        warnings.simplefilter("ignore", category=RuntimeWarning)
        warnings.simplefilter("ignore", category=getattr(_sstats, "DegenerateDataWarning", RuntimeWarning))
        res = _sstats.bootstrap(
            (np.arange(n),),
            on_indices,
            vectorized=True,
            method="percentile",
            n_resamples=n_resamples,
            batch=bootstrap_batch_size(n, n_resamples),
            confidence_level=confidence,
            rng=np.random.default_rng(seed),
        )
    low = np.atleast_1d(np.asarray(res.confidence_interval.low, dtype=np.float64))
    high = np.atleast_1d(np.asarray(res.confidence_interval.high, dtype=np.float64))
    dist = np.asarray(res.bootstrap_distribution, dtype=np.float64).reshape(low.shape[0], -1)
    return low, high, dist


def _at_least_two(stats: TextStats, func: str, name: str) -> None:
    if stats.n < 2:
        raise ValueError(f"The '{name}' parameter of {func} must hold at least 2 examples for a bootstrap; "
                         f"got {stats.n}.")


def score_stats(stats: TextStats, *, n_resamples: int = 1000, confidence: float = 0.95,
                seed: int = 0) -> dict[str, dict]:
    """Each score of `stats` with its percentile bootstrap CI.

    `value` is the score on the full sample (not the bootstrap mean); when the bootstrap distribution is
    constant, both bounds equal `value`.
    """
    func = "score_stats"
    if not isinstance(stats, TextStats):
        raise ValueError(f"The 'stats' parameter of {func} must be a TextStats from text_stats(); "
                         f"got {type(stats).__name__}.")
    n_resamples, confidence, seed = _check_bootstrap_args(func, n_resamples, confidence, seed)
    _at_least_two(stats, func, "stats")
    values = stats.values()
    low, high, dist = _run_bootstrap(stats.n, stats._scorer(), n_resamples, confidence, seed)
    out = {}
    for k, name in enumerate(stats.scores):
        value = values[name]
        lo, hi = (value, value) if np.ptp(dist[k]) == 0 else (low[k], high[k])
        out[name] = {"value": value, "ci_low": finite_or(lo, value), "ci_high": finite_or(hi, value),
                     "n_resamples": n_resamples, "confidence": confidence, "method": "percentile"}
    return out


def compare_stats(stats_a: TextStats, stats_b: TextStats, *, n_resamples: int = 1000, confidence: float = 0.95,
                  seed: int = 0) -> list[dict]:
    """Paired bootstrap of score(a) - score(b) for every score, on the same resampled examples.

    Both systems are scored on the same resampled indices (Koehn 2004), and the p-value follows
    `tunewise.evaluate.stats.paired_bootstrap`: with d the observed difference and d*_1..d*_R the resampled
    differences, p = clip(2 * #{r : d*_r on the other side of 0 from d, or at 0} / R, 1/(R+1), 1), and p = 1
    when d == 0. This is the sign-style (percentile) test, not the shift-to-null variant; it agrees with the
    CI: p < 1 - confidence exactly when the percentile CI excludes zero (up to ties).
    """
    func = "compare_stats"
    for name, s in (("stats_a", stats_a), ("stats_b", stats_b)):
        if not isinstance(s, TextStats):
            raise ValueError(f"The '{name}' parameter of {func} must be a TextStats from text_stats(); "
                             f"got {type(s).__name__}.")
    if stats_b.n != stats_a.n or stats_b.references_sha != stats_a.references_sha:
        raise ValueError(f"The 'stats_b' parameter of {func} must be scored on the same references as 'stats_a' "
                         f"(a paired test); got {stats_b.n} examples (sha {stats_b.references_sha}) against "
                         f"{stats_a.n} (sha {stats_a.references_sha}).")
    if stats_b.scores != stats_a.scores:
        raise ValueError(f"The 'stats_b' parameter of {func} must hold the same metrics as 'stats_a' "
                         f"{list(stats_a.scores)}; got {list(stats_b.scores)}.")
    n_resamples, confidence, seed = _check_bootstrap_args(func, n_resamples, confidence, seed)
    _at_least_two(stats_a, func, "stats_a")
    va, vb = stats_a.values(), stats_b.values()
    score_a, score_b = stats_a._scorer(), stats_b._scorer()
    low, high, dist = _run_bootstrap(stats_a.n, lambda counts: score_a(counts) - score_b(counts),
                                     n_resamples, confidence, seed)
    out = []
    for k, name in enumerate(stats_a.scores):
        diff = va[name] - vb[name]
        d = dist[k]
        lo, hi = (diff, diff) if np.ptp(d) == 0 else (low[k], high[k])
        if diff > 0:
            other_side = np.count_nonzero(d <= 0)
        elif diff < 0:
            other_side = np.count_nonzero(d >= 0)
        else:
            other_side = d.size
        p_value = float(np.clip(2.0 * other_side / d.size, 1.0 / (n_resamples + 1), 1.0))
        out.append({"metric": name, "diff": float(diff), "ci_low": finite_or(lo, diff),
                    "ci_high": finite_or(hi, diff), "p_value": p_value, "n_resamples": n_resamples,
                    "confidence": confidence})
    return out


# ----------------------------------------------------------------------------------------------
# the string-level API


def score_corpus(hypotheses: Sequence[str], references: Sequence[Sequence[str] | str],
                 metrics: Sequence[str] = DEFAULT_METRICS, *, n_resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> dict[str, dict]:
    """Every requested score with a percentile bootstrap CI.

    Returns {score name: {"value", "ci_low", "ci_high", "n_resamples", "confidence", "method"}} for the
    names in SCORE_NAMES order ("rouge" expands to rouge1, rouge2, rougeL). Needs at least 2 examples.
    """
    func = "score_corpus"
    scores = _check_metrics(metrics, func)
    hyps = _check_texts(hypotheses, "hypotheses", func)
    if len(hyps) < 2:
        raise ValueError(f"The 'hypotheses' parameter of {func} must hold at least 2 examples; got {len(hyps)}.")
    refs = _check_references(references, func, len(hyps), "hypotheses")
    _check_bootstrap_args(func, n_resamples, confidence, seed)
    stats = _extract([hyps], refs, scores)[0]
    return score_stats(stats, n_resamples=n_resamples, confidence=confidence, seed=seed)


def paired_compare(hyps_a: Sequence[str], hyps_b: Sequence[str], references: Sequence[Sequence[str] | str],
                   metrics: Sequence[str] = DEFAULT_METRICS, *, n_resamples: int = 1000, confidence: float = 0.95,
                   seed: int = 0) -> list[dict]:
    """Paired bootstrap comparison of system A against system B on the same examples (see `compare_stats`).

    Returns one {"metric", "diff", "ci_low", "ci_high", "p_value", "n_resamples", "confidence"} per score,
    with diff = A - B.
    """
    func = "paired_compare"
    scores = _check_metrics(metrics, func)
    a = _check_texts(hyps_a, "hyps_a", func)
    b = _check_texts(hyps_b, "hyps_b", func)
    if len(a) < 2:
        raise ValueError(f"The 'hyps_a' parameter of {func} must hold at least 2 examples; got {len(a)}.")
    if len(b) != len(a):
        raise ValueError(f"The 'hyps_b' parameter of {func} must have as many examples as 'hyps_a' ({len(a)}); "
                         f"got {len(b)}.")
    refs = _check_references(references, func, len(a), "hyps_a")
    _check_bootstrap_args(func, n_resamples, confidence, seed)
    stats_a, stats_b = _extract([a, b], refs, scores)
    return compare_stats(stats_a, stats_b, n_resamples=n_resamples, confidence=confidence, seed=seed)


def per_example_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str] | str],
                       metrics: Sequence[str] = ("chrf", "rougeL")) -> list[dict[str, float]]:
    """Sentence-level scores per example, for predictions.jsonl and error analysis.

    chrF is sacrebleu's sentence chrF (0-100); rouge1/2/L are rouge-score F-measures (0-1, best reference);
    exact_match is 0.0 or 1.0. BLEU and length_ratio are corpus-level only and are refused here.
    """
    func = "per_example_scores"
    scores = _check_metrics(metrics, func)
    corpus_only = [s for s in scores if s not in _SENTENCE_SCORES]
    if corpus_only:
        raise ValueError(f"The 'metrics' parameter of {func} must only hold sentence-level scores "
                         f"{list(_SENTENCE_SCORES)}; got {corpus_only} (corpus-level only).")
    hyps = _check_texts(hypotheses, "hypotheses", func)
    refs = _check_references(references, func, len(hyps), "hypotheses")
    if not hyps:
        return []
    return _extract([hyps], refs, scores)[0].per_example()


def text_metric_signatures(metrics: Sequence[str] = DEFAULT_METRICS, *, n_refs: int | None = 1) -> dict[str, str]:
    """Provenance strings for the requested metric groups, keyed bleu / chrf / rouge / exact_match / length_ratio.

    BLEU and chrF are sacrebleu's own signatures (`nrefs` is `var` when `n_refs` is None, i.e. examples
    have different numbers of references); the others are built in the same `key:value|...` form.
    """
    func = "text_metric_signatures"
    scores = _check_metrics(metrics, func)
    if n_refs is not None:
        n_refs = check_int(n_refs, "n_refs", func, 1)
    num_refs = -1 if n_refs is None else n_refs
    out: dict[str, str] = {}

    def sacre(metric) -> str:
        metric.num_refs = num_refs  # what sacrebleu sets when it caches references
        return metric.get_signature().format()

    if "bleu" in scores:
        out["bleu"] = sacre(_bleu())
    if "chrf" in scores:
        out["chrf"] = sacre(_chrf())
    if any(s in scores for s in ROUGE_TYPES):
        types = ",".join(s for s in ROUGE_TYPES if s in scores)
        out["rouge"] = (f"types:{types}|score:fmeasure|agg:mean|multiref:max|stemmer:porter|"
                        f"version:rouge-score-{metadata.version('rouge-score')}")
    if "exact_match" in scores:
        out["exact_match"] = "norm:strip+collapse-whitespace|case:mixed|multiref:any"
    if "length_ratio" in scores:
        bleu = _bleu()
        out["length_ratio"] = (f"nrefs:{'var' if n_refs is None else n_refs}|tok:{bleu.tokenizer_signature}|"
                               f"ref_len:closest|version:{metadata.version('sacrebleu')}")
    return out
