"""Windows of logged traffic against the reference: what a window keeps while rows stream through it (bounded:
per-row numbers, category counts, a reservoir of texts; never all texts), and the detector that tests a closed
window. The monitor and bench/drift.py share this code; p-values are corrected by the caller (Holm over every
test of every window of one monitor run, `stats.holm`).

The embedding test runs in two stages, because embedding is most of the monitor's cost (MiniLM per sampled row)
and most windows answer clearly from half the sample. Stage 1 embeds the first half of the window's (shuffled)
sample and tests it; it stops when its p-value p1 is clearly quiet (p1 > SCREEN_P) or clearly drifted
(p1 <= DECISIVE_P, far below any Holm threshold of a realistic run). Otherwise stage 2 embeds the rest and reports
min(1, p2 + DECISIVE_P), p2 being the test on the whole sample. The reported p stays a valid p-value (under no
drift, P(p <= a) <= a for every a, whatever the dependence between p1 and p2):
  a < DECISIVE_P:            P(p <= a) = P(p1 <= a) = a
  DECISIVE_P <= a < SCREEN_P: P(p <= a) <= P(p1 <= DECISIVE_P) + P(p2 <= a - DECISIVE_P) = a
  a >= SCREEN_P:             P(p <= a) <= P(p1 <= SCREEN_P) + P(SCREEN_P < p1 <= a) = a
and power is lost only on windows whose half sample looks quiet while the whole would alert (bench/drift.py
measures it against the one-stage test on the whole sample)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tunewise.monitor import stats

PCA_DIMS = 32  # the domain classifier works on the reference's top principal components: cheap and as strong
SCREEN_P = 0.2        # stage 1 of the embedding test stops as quiet above this p-value (1 window in 5 goes on)
DECISIVE_P = 1e-6     # ... and as drifted at or below it (Holm at alpha 0.05 would need 5e4 tests to miss it)
MIN_SCREEN_ROWS = 20  # a window side under twice this is tested in one stage


class EmbeddingSample:
    """A window's embedding sample, embedded on demand by prefix: `first(n)` embeds only the rows not embedded
    yet, so the two-stage test pays for stage 2 only when it runs it."""

    def __init__(self, rows: int, embed_rows: Callable[[int, int], np.ndarray]):
        self.rows = rows
        self._embed_rows = embed_rows  # (start, stop) -> embeddings of sample rows start..stop-1
        self._done = np.zeros((0, 0), dtype=np.float32)

    @classmethod
    def of_texts(cls, texts: Sequence[str], embed: Callable[[list[str]], np.ndarray]) -> "EmbeddingSample":
        return cls(len(texts), lambda start, stop: embed(list(texts[start:stop])))

    @classmethod
    def of_vectors(cls, vectors: np.ndarray) -> "EmbeddingSample":
        return cls(len(vectors), lambda start, stop: vectors[start:stop])

    @property
    def embedded(self) -> int:
        """Rows embedded so far."""
        return len(self._done)

    def first(self, n: int) -> np.ndarray:
        n = min(n, self.rows)
        if n > len(self._done):
            more = self._embed_rows(len(self._done), n)
            self._done = more if not len(self._done) else np.vstack([self._done, more])
        return self._done[:n]


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
    embeddings: EmbeddingSample | None = None  # the window's embedding sample (None: no embedding test)
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

    def data(self, embeddings: EmbeddingSample | None) -> WindowData:
        y = np.concatenate(self.y) if self.y else None
        pred = np.concatenate(self.pred) if self.pred else None
        return WindowData(numeric={k: np.concatenate(v) for k, v in self.numeric.items()},
                          categorical=self.categorical, embeddings=embeddings,
                          correct=(y == pred) if y is not None else None, y=y, pred=pred)


class DriftDetector:
    """Tests a window against the reference: every numeric and categorical feature, the embedding domain
    classifier (its null calibrated once per sample size, by permutation of reference rows; two stages unless
    `two_stage=False`), and accuracy."""

    def __init__(self, reference: ReferenceData, *, alpha: float, permutations: int, min_rows: int, seed: int,
                 two_stage: bool = True):
        self.reference = reference
        self.two_stage = two_stage
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
        if window.embeddings is not None and self._pca is not None and window.embeddings.rows >= 2:
            out.append(self.embedding_test(window.embeddings))
        if window.correct is not None and ref.accuracy is not None and len(window.correct) >= self.min_rows:
            out.append(stats.accuracy_drop_test(ref.accuracy, ref.accuracy_n, window.correct))
        return out

    def embedding_test(self, sample: EmbeddingSample) -> stats.TestResult:
        """The domain classifier on the window's sample: in two stages when the sample is large enough (see the
        module's docstring for why the reported p-value stays valid)."""
        n_win = self.embedding_sizes(sample.rows)[1]
        if not self.two_stage or n_win < 2 * MIN_SCREEN_ROWS:
            return self.domain_test(sample.first(n_win), stage=0)
        first = self.domain_test(sample.first(n_win // 2), stage=1)
        if first.p_value > SCREEN_P or first.p_value <= DECISIVE_P:
            return first
        second = self.domain_test(sample.first(n_win), stage=2)
        second.p_value = min(1.0, second.p_value + DECISIVE_P)
        return second

    def domain_test(self, window_embeddings: np.ndarray, stage: int = 0) -> stats.TestResult:
        n_ref, n_win = self.embedding_sizes(len(window_embeddings))
        win = self._pca.transform(window_embeddings[:n_win])
        result = stats.embedding_test(self._ref_emb[self._ref_order[:n_ref]], win, self.null(n_ref, n_win),
                                      self.alpha)
        result.effect.update(rows_embedded=float(n_win), stage=float(stage))
        return result
