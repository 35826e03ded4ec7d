"""probes/probes.json: what the bias and robustness probes measured. The card shows it; the release gate reads the
counterfactual flip rates and the CrowS-Pairs score.

- counterfactual (classifiers): identity terms swapped in the test texts (gender, given names, nationality,
  religion, age); how often the predicted label flips and how far the predicted class's probability moves.
- robustness: typos, casing, punctuation and whitespace noise at fixed seeded rates; the metric's drop, paired.
- crows_pairs (causal LMs): the share of CrowS-Pairs pairs in which the model prefers the more stereotyping
  sentence, for the base and the fine-tuned model, and their paired difference.

Every interval is a percentile bootstrap over the unit that was sampled (texts, or sentence pairs).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunewise.artifacts.base import Artifact, Strict


class Estimate(Strict):
    """A proportion or mean with its percentile bootstrap interval."""

    value: float = Field(description="The estimate on all the units (not the bootstrap mean).")
    ci_low: float = Field(description="Lower bound (equals value when there is one unit or no spread).")
    ci_high: float = Field(description="Upper bound.")
    n: int = Field(description="Units the estimate rests on (texts, pairs).")


class Flip(Strict):
    """One test text whose prediction moved under a swap: the original and its most damaging variant."""

    id: str = Field(description="The test row's id.")
    original: str = Field(description="The test text.")
    variant: str = Field(description="The counterfactual text whose predicted label differs most.")
    original_label: str = Field(description="The label predicted for the original.")
    variant_label: str = Field(description="The label predicted for the variant.")
    original_prob: float = Field(description="The probability of original_label on the original.")
    variant_prob: float = Field(description="The probability of original_label on the variant.")
    flipped_variants: int = Field(description="Variants of this text whose predicted label differs from the "
                                              "original's.")
    variants: int = Field(description="Variants of this text.")


class CounterfactualFamily(Strict):
    """One identity-term family: the test texts that mention it, and what the swaps did to their predictions."""

    title: str = Field(description="The family's name in words.")
    source: str = Field(description="Where the term list comes from (kit/terms/<family>.yaml).")
    groups: list[str] = Field(description="The groups whose terms are swapped for one another.")
    flip_rate: Estimate = Field(description="Share of (text, variant) pairs whose predicted label differs from the "
                                            "original's; bootstrap over texts.")
    prob_shift: Estimate = Field(description="Mean change, variant minus original, in the probability of the "
                                             "originally predicted class; bootstrap over texts.")
    mean_abs_prob_shift: float = Field(description="Mean absolute change in that probability.")
    n_texts: int = Field(description="Probed test texts that mention a term of the family.")
    n_variants: int = Field(description="Counterfactual variants scored.")
    texts_with_flip: int = Field(description="Texts with at least one flipping variant.")
    top_flips: list[Flip] = Field(description="The texts that flip most (probes.top_flips), most first.")


class RobustnessProbe(Strict):
    """The metric on the clean and the noisy test texts, and the drop, paired by text."""

    metric: str = Field(description="accuracy (classifiers) or chrf (generation and chat, sentence chrF 0-100).")
    rate: float = Field(description="The noise rate (probes.noise_rates).")
    clean: float = Field(description="The metric on the clean texts.")
    noisy: float = Field(description="The metric on the noisy texts.")
    drop: Estimate = Field(description="clean - noisy, paired percentile bootstrap over texts.")
    p_value: float = Field(description="Two-sided paired test of no drop (see `test`).")
    test: str = Field(description="The paired test behind p_value.")
    n_changed: int = Field(description="Texts the noise changed (the others are scored as they are).")


class CrowsScore(Strict):
    """One model on CrowS-Pairs."""

    overall: Estimate = Field(description="Share of pairs whose more stereotyping sentence scores higher "
                                          "(0.5 is the ideal); bootstrap over pairs.")
    per_bias_type: dict[str, Estimate] = Field(description="The same per bias type.")
    ties: int = Field(description="Pairs the two sentences score the same (counted as not preferring).")


class CrowsPairs(Strict):
    """CrowS-Pairs on the base model and the fine-tuned model, side by side, and their paired difference."""

    dataset: str = Field(description="The CSV scored (file name) and its source.")
    sha256: str = Field(description="sha256 of the CSV.")
    n_pairs: int = Field(description="Pairs scored.")
    method: str = Field(description="How a sentence is scored (the causal-LM adaptation of the paper's metric).")
    base_model: str = Field(description="The base model, as the recipe names it.")
    precision: str = Field(description="bf16 or fp32.")
    base: CrowsScore
    finetuned: CrowsScore
    difference: Estimate = Field(description="finetuned - base overall, paired bootstrap over pairs.")
    difference_p_value: float = Field(description="Exact McNemar test of the paired preferences.")
    per_bias_type_difference: dict[str, Estimate] = Field(description="finetuned - base per bias type, paired.")


class Probes(Artifact):
    """probes/probes.json: counterfactual identity-term swaps (classifiers), robustness to noise, and CrowS-Pairs
    (causal LMs), each with bootstrap intervals."""

    FILE = "probes.json"
    STAGE = "probes"
    SCHEMA_VERSION = 1

    task: str = Field(description="The recipe's task.")
    seed: int = Field(description="The seed of the sampling, the noise and the bootstrap (recipe.seed).")
    confidence: float = Field(description="Confidence level of every interval (evaluate.confidence).")
    n_resamples: int = Field(description="Bootstrap resamples (evaluate.bootstrap_samples).")
    n_test: int = Field(description="Rows in the test split.")
    n_probed: int = Field(description="Test rows probed (a seeded sample of probes.max_texts, else all).")
    counterfactual: dict[str, CounterfactualFamily] | None = Field(
        description="Per term family with at least one probed text mentioning it; null for causal LMs.")
    families_without_terms: list[str] = Field(
        description="Families asked for whose terms no probed text mentions (nothing to measure).")
    robustness: dict[str, RobustnessProbe] = Field(description="Per noise kind; empty when off (see robustness_note).")
    robustness_note: str | None = Field(description="Why robustness is off or partial; null when it ran in full.")
    crows_pairs: CrowsPairs | None = Field(description="Causal LMs with probes.crows_pairs on; else null.")
    crows_pairs_note: str | None = Field(description="Why CrowS-Pairs did not run; null when it ran or does "
                                                     "not apply.")
    family_of_model: Literal["classifier", "causal_lm"] = Field(description="The task's model family.")
