"""eval/metrics.json: the test-set scores of the fine-tuned model and its baselines, with bootstrap CIs, paired
comparisons and slices. The card reads it; the coming release gate and monitor compare against it.

A classifier's file adds calibration, per-class scores and the confusion matrix; a generation or chat file adds
the decoding settings, generation speed and the text metrics' signatures. The file comes in these two kinds, told
apart by `task`; `Metrics.read` returns the right one, and what both share lives on Metrics itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from tunewise.artifacts.base import Artifact, Open, Strict, omitted

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


class SliceScore(Strict):
    """The fine-tuned model's score on the rows with one slice value; no interval where it cannot be computed
    (fewer than 2 rows, or identical scores)."""

    value: float = Field(description="The score on these rows.")
    ci_low: float | None = Field(description="Lower bound; null when no interval could be computed.")
    ci_high: float | None = Field(description="Upper bound; null when no interval could be computed.")
    n_resamples: int | None = omitted("Classification slices with an interval: bootstrap resamples.")
    confidence: float | None = omitted("Classification slices with an interval: confidence level.")
    method: Literal["percentile"] | None = omitted("Classification slices with an interval: interval method.")


class SliceValue(Open):
    """The rows with one value of a slice field: `n` and one score keyed by the slice metric's name
    (e.g. `accuracy` or `rougeL`)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"minProperties": 2, "maxProperties": 2})
    __pydantic_extra__: dict[str, SliceScore] = Field(init=False)
    n: int = Field(description="Test rows with this value.")

    @model_validator(mode="after")
    def _one_score(self) -> "SliceValue":
        if len(self.__pydantic_extra__) != 1:
            raise ValueError(f"expected `n` and one score named after the slice metric, got keys "
                             f"{['n', *self.__pydantic_extra__]}")
        return self

    @property
    def metric(self) -> str:
        return next(iter(self.__pydantic_extra__))

    @property
    def score(self) -> SliceScore:
        return next(iter(self.__pydantic_extra__.values()))


class SliceField(Open):
    """One metadata field (data.slice_fields): the score per value, and `<metric>_gap`, the largest difference
    between two values' scores (null when there are none)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"minProperties": 2, "maxProperties": 2})
    __pydantic_extra__: dict[str, float | None] = Field(init=False)
    values: dict[str, SliceValue] = Field(description="Per value of the field, in sorted order.")

    @model_validator(mode="after")
    def _one_gap(self) -> "SliceField":
        keys = list(self.__pydantic_extra__)
        if len(keys) != 1 or not keys[0].endswith("_gap"):
            raise ValueError(f"expected `values` and one `<metric>_gap`, got keys {['values', *keys]}")
        wrong = sorted({v.metric for v in self.values.values()} - {self.metric})
        if wrong:
            raise ValueError(f"the values are scored with {wrong}, but the gap is {keys[0]!r}")
        return self

    @property
    def metric(self) -> str:
        return next(iter(self.__pydantic_extra__)).removesuffix("_gap")

    @property
    def gap(self) -> float | None:
        return next(iter(self.__pydantic_extra__.values()))


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
    SCHEMA_VERSION = 1
    DISCRIMINATOR = "task"

    task: str = Field(description="The recipe's task; it decides the kind of file.")
    n_test: int = Field(description="Rows in the test split.")
    n_scored: int = Field(description="Test rows scored (the first evaluate.max_examples, else all).")
    signature: str = Field(description="Versions, bootstrap settings, test-file digest: what the numbers depend on.")
    models: Mapping[str, ModelScores] = Field(description="fine_tuned and each baseline.")
    comparisons: list[Comparison] = Field(description="fine_tuned against each baseline, per metric.")
    slices: dict[str, SliceField] = Field(description="Per data.slice_fields field; empty without slice fields.")

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
