"""eval/metrics.json: the test-set scores of the fine-tuned model and its baselines, with bootstrap CIs, paired
comparisons and slices. The card reads it; the coming release gate and monitor compare against it.

A classifier's file adds calibration, per-class scores and the confusion matrix; a generation or chat file adds
the decoding settings, generation speed and the text metrics' signatures. The file comes in these two kinds, told
apart by `task`; `Metrics.read` returns the right one, and what both share lives on Metrics itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field, model_validator

from tunewise.artifacts.base import Artifact, Strict

FINE_TUNED = "fine_tuned"


class Score(Strict):
    """A metric on the test set with its percentile bootstrap confidence interval."""

    value: float = Field(description="The metric on the whole test set (not the bootstrap mean).")
    ci_low: float = Field(description="Lower bound of the interval (equals value when the bootstrap is constant).")
    ci_high: float = Field(description="Upper bound of the interval.")
    n_resamples: int = Field(description="Bootstrap resamples (evaluate.bootstrap_samples).")
    confidence: float = Field(description="Confidence level of the interval (evaluate.confidence).")
    method: Literal["percentile"] = Field(description="Bootstrap interval method.")


class Comparison(Strict):
    """A paired bootstrap test of model minus baseline on the same test examples."""

    model: str = Field(description="The model compared (fine_tuned).")
    baseline: str = Field(description="The baseline it is compared against.")
    metric: str = Field(description="The metric compared.")
    diff: float = Field(description="model - baseline on the whole test set.")
    ci_low: float = Field(description="Lower bound of the difference's interval.")
    ci_high: float = Field(description="Upper bound of the difference's interval.")
    p_value: float = Field(description="Two-sided paired bootstrap p-value (sign test on the resampled differences).")
    n_resamples: int = Field(description="Bootstrap resamples.")
    confidence: float = Field(description="Confidence level of the interval.")


# scores on 0-100 (sacrebleu's); every other score is on 0-1. A slice gap is compared with gate.max_slice_gap / 100
METRIC_RANGE = {"bleu": 100.0, "chrf": 100.0}


class GroupScore(Strict):
    """One slice group's score with its percentile bootstrap interval (resampling the group's own rows); no
    interval for a group of one row."""

    value: float = Field(description="The score on the group's rows.")
    ci_low: float | None = Field(description="Lower bound; null for a group of one row.")
    ci_high: float | None = Field(description="Upper bound; null for a group of one row.")


class SliceGroup(Strict):
    """The test rows with one value of a slice field."""

    n: int = Field(description="Test rows with this value.")
    judged: bool = Field(description="n reaches evaluate.min_slice_size: the group takes part in the gap.")
    scores: dict[str, GroupScore] = Field(description="Per slice metric (the field's `metrics`).")


class SliceGap(Strict):
    """The largest difference between two judged groups' scores, with a bootstrap interval: every group's rows are
    resampled (group sizes fixed), and the max-minus-min gap is recomputed on each resample."""

    value: float = Field(description="Highest minus lowest judged group's score on the whole test set.")
    ci_low: float = Field(description="Lower bound of the gap's percentile interval.")
    ci_high: float = Field(description="Upper bound of the gap's percentile interval. The resampled max-minus-min is "
                                       "biased upward, so the interval is widened to include `value` where it "
                                       "would sit wholly above it.")
    highest: str = Field(description="The judged group with the highest score.")
    lowest: str = Field(description="The judged group with the lowest score.")
    metric_range: float = Field(description="The metric's full range (1, or 100 for BLEU and chrF).")


class SliceField(Strict):
    """One metadata field (data.slice_fields): every group's scores, the groups too small to judge, and the largest
    gap per metric among the judged groups."""

    metrics: list[str] = Field(description="The slice metrics: accuracy and macro_f1 for classification; rougeL "
                                           "and/or chrf (sentence-level) for generation and chat.")
    min_size: int = Field(description="evaluate.min_slice_size: smaller groups are listed but not judged.")
    groups: dict[str, SliceGroup] = Field(description="Per value of the field, in sorted order; rows without the "
                                                      "field are the group `(missing)`.")
    too_small: list[str] = Field(description="Groups with fewer than min_size rows, left out of the gaps.")
    gaps: dict[str, SliceGap | None] = Field(description="Per metric, the largest gap between judged groups; null "
                                                         "with fewer than two judged groups.")
    n_resamples: int = Field(description="Bootstrap resamples.")
    confidence: float = Field(description="Confidence level of the intervals.")

    @model_validator(mode="after")
    def _consistent(self) -> "SliceField":
        if list(self.gaps) != self.metrics:
            raise ValueError(f"gaps are given for {list(self.gaps)}, but the metrics are {self.metrics}")
        for name, group in self.groups.items():
            if list(group.scores) != self.metrics:
                raise ValueError(f"group {name!r} is scored on {list(group.scores)}, not {self.metrics}")
        return self


class HeldOut(Strict):
    """The fine-tuned model on the test rows that the audit did not flag as copies or near-copies of train rows
    (audit check `leak`): the score of the truly held-out part, shown beside the headline."""

    flagged_rows: int = Field(description="Scored test rows the audit flagged as leaked from train.")
    kept_rows: int = Field(description="Scored test rows left.")
    kinds: dict[str, int] = Field(description="Flagged rows per leak kind (exact, near, prompt, ngram).")
    metrics: dict[str, Score] = Field(description="The fine-tuned model's metrics on the kept rows; empty when "
                                                  "fewer than two rows are left.")


class ModelScores(Strict):
    """One model's scores: the fine-tuned model or a baseline."""

    description: str = Field(description="What the model is, in words.")
    predictions: str = Field(description="Its predictions file, relative to the run directory.")
    metrics: dict[str, Score] = Field(description="Every metric with its CI, keyed by metric name.")


class CalibrationBin(Strict):
    """One equal-width bin of top-class confidence."""

    lo: float = Field(description="Lower edge.")
    hi: float = Field(description="Upper edge.")
    count: int = Field(description="Test rows whose confidence falls in the bin.")
    accuracy: float | None = Field(description="Their accuracy; null for an empty bin.")
    confidence: float | None = Field(description="Their mean confidence; null for an empty bin.")


class Calibration(Strict):
    """Calibration of the top predicted probability."""

    ece: float = Field(description="Expected calibration error over the bins.")
    brier: float = Field(description="Multi-class Brier score.")
    bins: list[CalibrationBin] = Field(description="evaluate.calibration_bins equal-width bins.")


class ClassifierScores(ModelScores):
    """A classifier's (or classification baseline's) scores, with calibration."""

    calibration: Calibration
    fitted_rows: int | None = Field(None, description="A baseline: the training rows it was fitted on, all of them "
                                    "or a seeded sample of evaluate.baseline_max_rows (its description then says "
                                    "`fitted on N of M`); null for the fine-tuned model.")
    train_rows: int | None = Field(None, description="A baseline: the rows in the train split; null for the "
                                   "fine-tuned model.")


class GenerationSpeed(Strict):
    """How fast a model generated the test outputs."""

    seconds: float = Field(description="Wall time of generation.")
    new_tokens: int = Field(description="Tokens generated.")
    new_tokens_per_second: float = Field(description="Generated tokens per second.")


class GeneratorScores(ModelScores):
    """A causal LM's (fine-tuned or base) scores, with its generation speed."""

    generation_speed: GenerationSpeed


class ClassScores(Strict):
    """The fine-tuned model on one class."""

    precision: float
    recall: float
    f1: float
    support: int = Field(description="Test rows of the class.")


class GenerationSettings(Strict):
    """How the test outputs were generated (evaluate.*) and where."""

    max_new_tokens: int
    do_sample: bool = Field(description="Sampling (true) or greedy decoding (false).")
    temperature: float = Field(description="Sampling temperature (unused when greedy).")
    top_p: float = Field(description="Nucleus sampling p (unused when greedy).")
    batch_size: int = Field(description="Prompts per generation batch.")
    precision: str = Field(description="bf16 or fp32.")
    device: str = Field(description="cpu or cuda.")
    chat_template: bool = Field(description="Prompts were rendered with the tokenizer's chat template.")


class Metrics(Artifact):
    """eval/metrics.json: point values with bootstrap CIs per model, paired comparisons against each baseline,
    per-slice scores, and the signature of everything the numbers depend on. One of ClassificationMetrics or
    GenerationMetrics, by `task`."""

    FILE = "metrics.json"
    STAGE = "evaluate"
    SCHEMA_VERSION = 2  # 2: slices with several metrics, gap intervals and too-small groups; held_out
    DISCRIMINATOR = "task"

    task: str = Field(description="The recipe's task; it decides the kind of file.")
    n_test: int = Field(description="Rows in the test split.")
    n_scored: int = Field(description="Test rows scored (the first evaluate.max_examples, else all).")
    signature: str = Field(description="Versions, bootstrap settings, test-file digest: what the numbers depend on.")
    models: Mapping[str, ModelScores] = Field(description="fine_tuned and each baseline.")
    comparisons: list[Comparison] = Field(description="fine_tuned against each baseline, per metric.")
    slices: dict[str, SliceField] = Field(description="Per data.slice_fields field; empty without slice fields.")
    held_out: HeldOut | None = Field(description="Scores without the test rows the audit flagged as leaked from "
                                                 "train; null when the audit is disabled or flagged none.")

    @model_validator(mode="after")
    def _comparable_models(self) -> "Metrics":
        if FINE_TUNED not in self.models:
            raise ValueError(f"`models` has no {FINE_TUNED!r} entry")
        names = list(self.models[FINE_TUNED].metrics)
        for model, scores in self.models.items():
            if list(scores.metrics) != names:
                raise ValueError(f"models.{model} scores {list(scores.metrics)}, but {FINE_TUNED} scores {names}: "
                                 f"every model is scored with the same metrics")
        return self

    def fine_tuned(self) -> ModelScores:
        return self.models[FINE_TUNED]

    def model_order(self) -> list[str]:
        """The fine-tuned model first, then baselines alphabetically."""
        return sorted(self.models, key=lambda m: (m != FINE_TUNED, m))

    def confidence(self) -> float:
        """The confidence level of the intervals (one per run: evaluate.confidence)."""
        return next(iter(self.fine_tuned().metrics.values())).confidence


class ClassificationMetrics(Metrics):
    """metrics.json of a classification run."""

    task: Literal["classification"] = Field(description="The recipe's task.")
    labels: list[str] = Field(description="The labels, in model output order (the confusion matrix's order).")
    models: dict[str, ClassifierScores] = Field(description="fine_tuned and each baseline.")
    per_class: dict[str, ClassScores] = Field(description="The fine-tuned model per class, in label order.")
    confusion_matrix: list[list[int]] = Field(description="Rows: true label; columns: predicted; label order.")


class GenerationMetrics(Metrics):
    """metrics.json of a generation or chat run."""

    task: Literal["generation", "chat"] = Field(description="The recipe's task.")
    text_metric_signatures: dict[str, str] = Field(
        description="Per metric group (bleu, chrf, rouge, exact_match, length_ratio): sacrebleu's signature or "
                    "the settings in the same form.")
    generation: GenerationSettings
    models: dict[str, GeneratorScores] = Field(description="fine_tuned and each baseline.")


Metrics.VARIANTS = (ClassificationMetrics, GenerationMetrics)
