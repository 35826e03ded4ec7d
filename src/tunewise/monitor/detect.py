"""Windows of logged traffic against the reference: what a window keeps while rows stream through it (bounded:
per-row numbers, category counts, a reservoir of texts; never all texts), and the detector that tests a closed
window. The monitor and bench/drift.py share this code; p-values are corrected by the caller (Holm over every
test of every window of one monitor run, `stats.holm`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tunewise.monitor import stats

PCA_DIMS = 32  # the domain classifier works on the reference's top principal components: cheap and as strong


@dataclass
class ReferenceData:
    """What the detector compares against: the reference values per numeric feature, counts per categorical one,
    the embedding sample, and the model's accuracy on the reference rows."""

    numeric: dict[str, np.ndarray]
    categorical: dict[str, dict[str, int]]
    embeddings: np.ndarray
    accuracy: float | None = None
    accuracy_n: int = 0
    psi_edges: dict[str, np.ndarray] = field(default_factory=dict)
    psi_shares: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_profile(cls, profile, embeddings: np.ndarray) -> "ReferenceData":  # a ReferenceProfile
        perf = profile.performance
        return cls(numeric={k: np.asarray(v.values, float) for k, v in profile.numeric.items()},
                   categorical={k: dict(v.counts) for k, v in profile.categorical.items()},
                   embeddings=embeddings, accuracy=perf.accuracy if perf else None, accuracy_n=perf.n if perf else 0,
                   psi_edges={k: np.asarray(v.psi_edges) for k, v in profile.numeric.items()},
                   psi_shares={k: np.asarray(v.psi_reference) for k, v in profile.numeric.items()})


@dataclass
class WindowData:
    """One window's rows, reduced to what the tests need."""

    numeric: dict[str, np.ndarray]
    categorical: dict[str, Counter]
    embeddings: np.ndarray | None = None       # the window's embedded sample (None: no embedding test)
    correct: np.ndarray | None = None          # feedback rows: prediction == label
    y: np.ndarray | None = None                # feedback rows: label ids (for macro-F1)
    pred: np.ndarray | None = None             # feedback rows: predicted ids


class WindowAccumulator:
    """Collects one window as chunks of rows stream in. Memory: a few numbers per row and a fixed-size
    reservoir of texts (Vitter's algorithm R) for the embedding sample and the examples."""

    def __init__(self, index: int, sample_size: int, rng: np.random.Generator):
        self.index = index
        self.rows = 0
        self.start: str | None = None
        self.end: str | None = None
        self.numeric: dict[str, list[np.ndarray]] = {}
        self.categorical: dict[str, Counter] = {}
        self.sample: list[str] = []
        self.sample_size = sample_size
        self.rng = rng
        self.y: list[np.ndarray] = []
        self.pred: list[np.ndarray] = []

    def add(self, texts: Sequence[str], numeric: dict[str, np.ndarray], categorical: dict[str, Sequence[str]],
            span: tuple[str, str], feedback: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """One chunk of rows; `span` is where its first and last rows are in the log (time, or file:line)."""
        if not texts:
            return
        self.start = self.start or span[0]
        self.end = span[1]
        for name, values in numeric.items():
            self.numeric.setdefault(name, []).append(np.asarray(values, float))
        for name, values in categorical.items():
            self.categorical.setdefault(name, Counter()).update(v for v in values if v is not None)
        if feedback is not None and len(feedback[0]):
            self.y.append(feedback[0])
            self.pred.append(feedback[1])
        # reservoir sampling (algorithm R, one vectorised draw per chunk): every row of the window equally likely
        # to be kept; row number r (1-based) replaces slot j ~ U{0..r-1} when j falls inside the reservoir
        fill = min(len(texts), self.sample_size - len(self.sample))
        self.sample.extend(texts[:fill])
        if len(texts) > fill:
            seen = self.rows + fill + np.arange(1, len(texts) - fill + 1)
            slots = self.rng.integers(0, seen)
            for i in np.flatnonzero(slots < self.sample_size):  # in row order: a later row overwrites
                self.sample[slots[i]] = texts[fill + i]
        self.rows += len(texts)

    def data(self, embed: Callable[[list[str]], np.ndarray] | None) -> WindowData:
        y = np.concatenate(self.y) if self.y else None
        pred = np.concatenate(self.pred) if self.pred else None
        return WindowData(numeric={k: np.concatenate(v) for k, v in self.numeric.items()},
                          categorical=self.categorical,
                          embeddings=embed(self.sample) if embed is not None and self.sample else None,
                          correct=(y == pred) if y is not None else None, y=y, pred=pred)


class DriftDetector:
    """Tests a window against the reference: every numeric and categorical feature, the embedding domain
    classifier (its null calibrated once per sample size, by permutation of reference rows), and accuracy."""

    def __init__(self, reference: ReferenceData, *, alpha: float, permutations: int, min_rows: int, seed: int):
        self.reference = reference
        self.alpha = alpha
        self.permutations = permutations
        self.min_rows = min_rows
        self.seed = seed
        self._nulls: dict[tuple[int, int], stats.DomainNull] = {}
        emb = reference.embeddings
        self._pca = None
        if len(emb) >= 4:
            from sklearn.decomposition import PCA

            self._pca = PCA(n_components=min(PCA_DIMS, len(emb) - 1, emb.shape[1]), random_state=seed).fit(emb)
            self._ref_emb = self._pca.transform(emb)
            self._ref_order = np.random.default_rng(seed).permutation(len(emb))
        for name, values in reference.numeric.items():
            if name not in reference.psi_edges:
                reference.psi_edges[name], reference.psi_shares[name] = stats.psi_bins(values, 10)

    def embedding_sizes(self, window_rows: int) -> tuple[int, int]:
        """(reference rows, window rows) of the domain test: the window's sample, and the reference rows left
        after setting aside as many (so the permutation null can be drawn at the same sizes)."""
        n = len(self.reference.embeddings)
        m = min(window_rows, max(2, n // 2))
        return n - m, m

    def null(self, n_ref: int, n_win: int) -> stats.DomainNull:
        key = (n_ref, n_win)
        if key not in self._nulls:
            self._nulls[key] = stats.domain_null(self._ref_emb, n_ref, n_win, self.permutations, self.seed)
        return self._nulls[key]

    def test(self, window: WindowData) -> list[stats.TestResult]:
        ref = self.reference
        out: list[stats.TestResult] = []
        for name, values in window.numeric.items():
            if name in ref.numeric and len(values) and len(ref.numeric[name]):
                out.append(stats.numeric_test(name, ref.numeric[name], values, ref.psi_edges[name],
                                              ref.psi_shares[name]))
        for name, counts in window.categorical.items():
            if name in ref.categorical and sum(counts.values()) >= self.min_rows:
                out.append(stats.categorical_test(name, ref.categorical[name], dict(counts)))
        if window.embeddings is not None and self._pca is not None and len(window.embeddings) >= 2:
            n_ref, _ = self.embedding_sizes(len(window.embeddings))
            win = self._pca.transform(window.embeddings)[: len(self.reference.embeddings) - n_ref]
            ref_part = self._ref_emb[self._ref_order[:n_ref]]
            out.append(stats.embedding_test(ref_part, win, self.null(n_ref, len(win)), self.alpha))
        if window.correct is not None and ref.accuracy is not None and len(window.correct) >= self.min_rows:
            out.append(stats.accuracy_drop_test(ref.accuracy, ref.accuracy_n, window.correct))
        return out
