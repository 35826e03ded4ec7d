"""faithfulness/faithfulness.json: how many generated outputs state something their source does not support, for
the fine-tuned model and the base model side by side, as judged by the faithfulness checker (evaluate.faithfulness).

Each output is split into sentences; the checker (a causal LM read with and without the source, its token
log-probabilities combined with transparent checks by a fitted logistic regression) gives each sentence, and the
whole output, a probability of being unfaithful; transparent checks list the numbers, names and dates the source
never mentions, and the words the source does not make likelier. An output is flagged when a sentence (or, with
`unit: summary`, the whole output) reaches the threshold, or when a transparent check that flags fires. The
per-output details are in faithfulness/scores*.jsonl; the card and the report read this file.
"""

from __future__ import annotations

from pydantic import Field

from tunewise.artifacts.base import Artifact, Strict

FINE_TUNED = "fine_tuned"


class Share(Strict):
    """A proportion of outputs with its percentile bootstrap interval over the outputs."""

    value: float = Field(description="The share on all scored outputs (not the bootstrap mean).")
    ci_low: float = Field(description="Lower bound (equals value when there is no spread).")
    ci_high: float = Field(description="Upper bound.")
    n: int = Field(description="Outputs the share rests on.")


class CheckerFacts(Strict):
    """Which checker judged, and how well it did on held-out human labels."""

    name: str = Field(description="The checker's name (from its file).")
    path: str = Field(description="The checker file (the fitted combination, JSON).")
    lm: str = Field(description="The causal LM whose token log-probabilities it reads.")
    sha256: str = Field(description="sha256 of the checker file.")
    features: list[str] = Field(description="The features its logistic regression combines.")
    fitted_on: str = Field(description="The human-labelled summaries it was fitted on, in words.")
    benchmark: dict = Field(description="Balanced accuracy and ROC AUC (with 95% CIs over documents) on held-out "
                                        "documents, per dataset, as bench/faithfulness.py measured them.")


class FaithfulnessSettings(Strict):
    """The settings the scores depend on (evaluate.faithfulness)."""

    threshold: float = Field(description="Probability of `unfaithful` at or above which a sentence/output is flagged.")
    threshold_source: str = Field(description="Where the threshold came from: the recipe, or (`auto`) the checker's "
                                              "validation split, with the balanced accuracy it reached there.")
    unit: str = Field(description="`sentence` (an output is flagged when any sentence is) or `summary`.")
    max_source_tokens: int = Field(description="Source tokens the LM reads (longer sources keep their start).")
    transparent_checks: bool = Field(description="Whether a number (in digits) absent from the source flags an output.")
    source: str = Field(description="Where each output's source was taken from (a prompt-template column or the "
                                    "whole prompt).")


class ModelFaithfulness(Strict):
    """One model's outputs: the flagged share, why they were flagged, and the per-output file."""

    description: str = Field(description="The model, in words (from eval/metrics.json).")
    predictions: str = Field(description="The predictions file scored, relative to the run directory.")
    scores: str = Field(description="The per-output scores file, relative to the run directory.")
    flagged: Share = Field(description="Share of outputs flagged.")
    flagged_by_checker: int = Field(description="Outputs the checker flagged (a sentence or the output over the "
                                                "threshold).")
    flagged_by_checks: int = Field(description="Outputs a transparent check flagged (a number absent from the "
                                               "source), with or without the checker.")
    mean_score: float = Field(description="Mean over outputs of the output's unfaithfulness score (its highest "
                                          "sentence score with unit=sentence).")
    sentences: int = Field(description="Sentences scored.")
    sentences_flagged: int = Field(description="Sentences at or over the threshold.")
    empty_outputs: int = Field(description="Outputs with no sentence to check (empty text): counted, not flagged.")
    unsupported: dict[str, int] = Field(description="Transparent-check spans found, per kind (number, number_word, "
                                                     "name, date).")


class PairedDifference(Strict):
    """Flagged share of the fine-tuned model minus the base model's, on the same prompts (paired bootstrap)."""

    model: str = Field(description="fine_tuned.")
    baseline: str = Field(description="The model compared against (base_model).")
    diff: float = Field(description="model - baseline flagged share.")
    ci_low: float = Field(description="Lower bound of the difference's interval.")
    ci_high: float = Field(description="Upper bound.")
    p_value: float = Field(description="Two-sided paired bootstrap p-value (share of resampled differences on the "
                                       "other side of zero, doubled).")
    n: int = Field(description="Prompts both models answered.")


class FaithfulnessResults(Artifact):
    """faithfulness/faithfulness.json: the flagged share per model with CIs, the paired difference, the checker
    and the settings."""

    FILE = "faithfulness.json"
    STAGE = "faithfulness"
    SCHEMA_VERSION = 2

    n_scored: int = Field(description="Test outputs scored per model (those eval/ scored).")
    confidence: float = Field(description="Confidence level of every interval (evaluate.confidence).")
    n_resamples: int = Field(description="Bootstrap resamples (evaluate.bootstrap_samples).")
    checker: CheckerFacts
    settings: FaithfulnessSettings
    models: dict[str, ModelFaithfulness] = Field(description="fine_tuned, and base_model when evaluate scored it.")
    comparisons: list[PairedDifference] = Field(description="fine_tuned against each other model.")

    def model_order(self) -> list[str]:
        """The fine-tuned model first, then the others alphabetically."""
        return sorted(self.models, key=lambda m: (m != FINE_TUNED, m))
