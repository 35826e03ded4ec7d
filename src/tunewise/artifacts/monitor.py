"""reference/profile.json and monitor/drift.json: what deployed traffic is compared against, and what the
comparison found.

The reference stage profiles the run's held-out test split right after training (text, tokens, vocabulary, labels,
the model's own predictions and confidence, a MiniLM embedding sample in reference/embeddings.npy); the monitor
(`tunewise monitor RUN --log ...`) tests windows of logged traffic against it and writes drift.json.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunewise.artifacts.base import Artifact, Strict


class NumericProfile(Strict):
    """One per-row numeric feature on the reference rows: its summary, PSI bins and the values the two-sample
    tests compare windows against."""

    description: str = Field(description="What the feature measures, in words.")
    n: int = Field(description="Reference rows with a value.")
    mean: float
    std: float
    quantiles: dict[str, float] = Field(description="p01, p05, p25, p50, p75, p95, p99.")
    psi_edges: list[float] = Field(description="Inner bin edges (reference quantiles, deduplicated) of the PSI bins.")
    psi_reference: list[float] = Field(description="Share of reference rows per PSI bin (len(psi_edges) + 1 bins).")
    values: list[float] = Field(description="The reference values themselves (rounded to 6 significant digits), "
                                            "for the KS and Wasserstein tests.")


class CategoricalProfile(Strict):
    """One categorical feature on the reference rows: counts per category."""

    description: str = Field(description="What the feature is, in words.")
    n: int = Field(description="Reference rows with a value.")
    counts: dict[str, int] = Field(description="Rows per category, in the label order where there is one.")


class EmbeddingSample(Strict):
    """The sentence-embedding sample the domain classifier compares windows against."""

    file: str = Field(description="The .npy file beside profile.json (float32, rows x dim, L2-normalised).")
    sha256: str = Field(description="sha256 of that file.")
    rows: int = Field(description="Reference rows embedded (a seeded sample of the reference rows).")
    dim: int = Field(description="Embedding width.")
    model: str = Field(description="The embedding model (hub id) and pooling.")
    max_length: int = Field(description="Tokens per text embedded.")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="The encoder's matmul precision (bf16: autocast, where the CPU runs bf16 natively); the monitor embeds windows at the same precision.")


class Vocabulary(Strict):
    """The training split's word vocabulary, for out-of-vocabulary rates."""

    file: str = Field(description="vocab.txt beside profile.json: one word per line, most frequent first.")
    size: int = Field(description="Words kept (monitor.vocab_size most frequent training words).")
    train_words: int = Field(description="Distinct words in the training split.")
    tokenization: str = Field(description="How texts are split into words (lower-cased \\w+ runs).")


class ReferencePerformance(Strict):
    """The model on the reference rows (their labels are known): the level feedback accuracy is compared with."""

    n: int
    accuracy: float
    macro_f1: float


class ReferenceProfile(Artifact):
    """reference/profile.json: the statistics of the held-out reference split that monitoring compares logged
    traffic with. Classifiers: text, token, OOV, label, prediction and confidence distributions. Causal LMs: prompt
    and response lengths, refusal and empty-reply rates, and the injection guard's scores when a guard is set."""

    FILE = "profile.json"
    STAGE = "reference"
    SCHEMA_VERSION = 1

    task: Literal["classification", "generation", "chat"] = Field(description="The recipe's task.")
    split: Literal["test", "validation", "train"] = Field(description="The data split profiled.")
    split_reason: str = Field(description="Why that split is the reference.")
    rows: int = Field(description="Rows of the split profiled (the first monitor.reference_max_rows, seeded "
                                  "sample when the split is larger).")
    split_rows: int = Field(description="Rows in the split.")
    labels: list[str] | None = Field(description="The model's labels in output order; null for causal LMs.")
    numeric: dict[str, NumericProfile] = Field(description="Per-row numeric features by name.")
    categorical: dict[str, CategoricalProfile] = Field(description="Categorical features by name.")
    rates: dict[str, float] = Field(description="Headline rates: oov_rate (share of reference words missing from "
                                                "the training vocabulary), refusal_rate and empty_rate (causal).")
    performance: ReferencePerformance | None = Field(description="Accuracy and macro-F1 of the model on the "
                                                                 "reference rows; null without labels.")
    vocabulary: Vocabulary
    embeddings: EmbeddingSample
    guard: str | None = Field(description="The injection guard whose scores were profiled; null without one.")
    seconds: float = Field(description="Time the profile took.")


class FeatureTest(Strict):
    """One feature of one window tested against the reference."""

    feature: str
    kind: Literal["numeric", "categorical", "embedding", "performance"]
    test: str = Field(description="ks (two-sample Kolmogorov-Smirnov), chi2 (contingency table of reference vs "
                                  "window counts), fisher (exact test of a yes/no feature), domain_classifier (leave-one-out ROC AUC of a ridge linear classifier, "
                                  "null calibrated by permutation) or accuracy_drop (one-sided two-proportion z).")
    statistic: float = Field(description="KS D, chi-squared, the difference in share (fisher), ROC AUC, or the "
                                         "accuracy drop.")
    p_value: float = Field(description="The test's own p-value.")
    adjusted_p: float = Field(description="Holm-adjusted over every test of every window of this monitor run.")
    significant: bool = Field(description="adjusted_p <= alpha.")
    effect: dict[str, float] = Field(description="Effect sizes: wasserstein (in reference standard deviations), "
                                                 "psi, js (Jensen-Shannon distance, base 2), mean_shift, "
                                                 "threshold (domain AUC at alpha), ...")


class PerformanceWindow(Strict):
    """Feedback-labelled rows of a window: accuracy (Wilson CI) and macro-F1 (bootstrap CI)."""

    n_labelled: int
    accuracy: float
    accuracy_ci: tuple[float, float]
    macro_f1: float
    macro_f1_ci: tuple[float, float]


class WindowResult(Strict):
    """One window of logged traffic."""

    index: int
    start: str = Field(description="First row: its timestamp, or its row number when rows have none.")
    end: str = Field(description="Last row, likewise.")
    rows: int
    tested: bool = Field(description="False when the window has fewer than monitor.min_window_rows rows.")
    alert: bool = Field(description="At least one test of the window is significant after correction.")
    drifted: list[str] = Field(description="Features whose test is significant.")
    tests: list[FeatureTest]
    means: dict[str, float] = Field(description="Window mean per numeric feature.")
    shares: dict[str, dict[str, float]] = Field(description="Share per category, per categorical feature.")
    performance: PerformanceWindow | None
    examples: list[str] = Field(description="A few texts of the window (a seeded sample).")


class RetrainCost(Strict):
    """The retraining estimate, from the run's own measured training speed."""

    train_rows: int = Field(description="Training rows of the retrain (reference train split + feedback rows).")
    epochs: float
    seconds: float = Field(description="Estimated wall time: the run's measured seconds per example-epoch times "
                                       "the new rows and epochs.")
    device: str
    core_hours: float | None = Field(description="CPU core-hours (cpu runs); null on a GPU.")
    gpu_hours: float | None = Field(description="GPU-hours (cuda runs); null on a CPU.")
    price: float
    currency: str
    basis: str = Field(description="Where the speed and prices come from.")


class RetrainSignal(Strict):
    """What to do about a confirmed alert."""

    reason: str
    feedback_rows: int = Field(description="Labelled rows written for the retrain.")
    files: list[str] = Field(description="Files written under monitor/ for the retrain.")
    command: str | None = Field(description="The `tunewise run` command that retrains; null without feedback.")
    cost: RetrainCost


class DriftReport(Artifact):
    """monitor/drift.json: windows of logged traffic tested against reference/profile.json, with every test's raw
    and Holm-adjusted p-value, the alert, the drifted features and, on an alert, the costed retrain signal."""

    FILE = "drift.json"
    STAGE = "monitor"
    SCHEMA_VERSION = 1

    source: str = Field(description="The log read (JSONL path or database URL, password hidden).")
    source_kind: Literal["jsonl", "sql"]
    window: str = Field(description="Rows per window, or a duration such as 1h.")
    since: str | None = Field(description="Rows before this time were skipped; null: none.")
    rows_read: int
    rows_quarantined: int = Field(description="Unreadable rows, listed with file:line in monitor/quarantine.jsonl.")
    rows_skipped_since: int = Field(description="Rows before --since.")
    predicted_here: int = Field(description="Rows the monitor ran the model over (the log carried no prediction).")
    alpha: float
    multiple_testing: str = Field(description="How false alarms are controlled, in words.")
    settings: dict[str, float | int | str] = Field(description="The monitor settings used.")
    windows: list[WindowResult]
    alert: bool = Field(description="Some test was significant: the command exits 1.")
    drifted_features: list[str] = Field(description="Features significant in any window.")
    performance_drop: bool = Field(description="A significant accuracy drop against the reference.")
    retrain: RetrainSignal | None = Field(description="Set when an alert fired.")
