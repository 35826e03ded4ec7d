"""faithfulness/faithfulness.json: how many generated outputs state something their source does not support, for
the fine-tuned model and the base model side by side, as judged by a fine-tuned checker (evaluate.faithfulness).

Each output is split into sentences; the checker (a tunewise classification run over (claim, evidence) sentence
pairs) gives each sentence, and the whole output, a probability of being unfaithful; transparent checks list the
numbers, names and dates the source never mentions. An output is flagged when a sentence (or, with
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
    """Which checker judged, and how well it did on its own held-out test set."""

    run: str = Field(description="The checker's run directory (a tunewise classification run).")
    run_id: str = Field(description="The checker run's id (name-fingerprint).")
    base_model: str = Field(description="The checker's base model.")
    model_sha256: str = Field(description="sha256 of the checker's weights file.")
    unfaithful_label: str = Field(description="The checker's label whose probability is the unfaithfulness score.")
    test_rows: int = Field(description="Rows of the checker's own test split.")
    test_accuracy: float = Field(description="The checker's accuracy on its own test split (its eval/metrics.json).")
    test_macro_f1: float = Field(description="The checker's macro-F1 on its own test split.")


class FaithfulnessSettings(Strict):
    """The settings the scores depend on (evaluate.faithfulness)."""

    threshold: float = Field(description="Probability of `unfaithful` at or above which a sentence/output is flagged.")
    threshold_source: str = Field(description="Where the threshold came from: the recipe, or (`auto`) the checker's "
                                              "validation split, with the balanced accuracy it reached there.")
    unit: str = Field(description="`sentence` (an output is flagged when any sentence is) or `summary`.")
    evidence_chars: int = Field(description="Characters of source read per claim.")
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
    SCHEMA_VERSION = 1

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
