"""guard/guard.json: the injection guard's threshold, chosen on validation for a target false-positive rate, and
its detection rate at fixed false-positive rates on the test split, which it never trained or tuned on."""

from __future__ import annotations

from pydantic import Field

from tunewise.artifacts.base import Artifact, Strict


class Rate(Strict):
    """A proportion with its confidence interval (Wilson score interval)."""

    value: float | None = Field(description="hits / of; null when `of` is 0.")
    ci: tuple[float, float] | None = Field(description="Wilson score interval at the report's confidence; null when `of` is 0.")
    hits: int = Field(description="Rows counted as flagged.")
    of: int = Field(description="Rows in the denominator (injections for a detection rate, benign rows for an FPR).")


class OperatingPoint(Strict):
    """One threshold, chosen on validation for a target FPR, and what it does on test."""

    target_fpr: float = Field(description="The false-positive rate the threshold was chosen for, on validation.")
    threshold: float = Field(description="The model-score threshold (a text is flagged at score >= threshold, or by a rule). Above 1: the model never flags; only the rules do.")
    validation_fpr: Rate = Field(description="The combined guard's FPR on validation benign rows at this threshold.")
    validation_detection: Rate = Field(description="The combined guard's detection rate (TPR) on validation injections.")
    test_detection: Rate = Field(description="Detection rate (TPR) on the test split's injections: the headline number.")
    test_fpr: Rate = Field(description="The false-positive rate this threshold really gives on the test split's benign rows.")


class Component(Strict):
    """What one part of the guard does alone on test, at the serving threshold."""

    detection: Rate = Field(description="Detection rate on test injections.")
    fpr: Rate = Field(description="False-positive rate on test benign rows.")


class RuleReport(Strict):
    name: str = Field(description="The rule's name, as GuardVerdict.rules reports it.")
    language: str = Field(description="en, de or any.")
    pattern: str = Field(description="The regular expression (case-insensitive, searched anywhere in the text).")
    why: str = Field(description="The attack it catches.")
    test_hits_injection: int = Field(description="Test injections it fires on.")
    test_hits_benign: int = Field(description="Test benign rows it fires on (false positives).")


class BenignEval(Strict):
    """One out-of-distribution benign file (guard.benign_eval): never trained or tuned on, every row benign."""

    path: str = Field(description="The file, as resolved from the recipe.")
    source: str | None = Field(description="Its declared source.")
    license: str | None = Field(description="Its declared licence.")
    fpr: Rate = Field(description="The combined guard's false-positive rate on it at the serving threshold.")
    model_fpr: Rate = Field(description="The model alone at the serving threshold.")
    rules_fpr: Rate = Field(description="The rules alone.")
    examples: list[str] = Field(description="Up to 5 flagged rows (the highest scores first, cut at 160 characters), so a reviewer sees what is blocked.")


class GuardReport(Artifact):
    """guard/guard.json, written by the guard stage of an injection-guard run (recipe `guard.enabled: true`).
    Read by tunewise.safety.guard.InjectionGuard (threshold, positive class) and by the card's guard section."""

    FILE = "guard.json"
    STAGE = "guard"
    SCHEMA_VERSION = 1

    labels: list[str] = Field(description="The classifier's labels, in output order.")
    positive_label: str = Field(description="The label that means prompt injection.")
    positive_index: int = Field(description="Its index in `labels` (the column of predict_proba).")
    rules: bool = Field(description="The transparent rules are combined with the model (a rule firing flags the text).")
    target_fpr: float = Field(description="guard.target_fpr: the FPR the serving threshold was chosen for.")
    threshold: float = Field(description="The serving threshold: the operating point for target_fpr.")
    max_length: int = Field(description="Tokens per window; longer texts are scored in overlapping windows, the highest counts.")
    confidence: float = Field(description="Confidence level of every interval.")
    ci_method: str = Field(description="How the intervals are computed.")
    validation_rows: dict[str, int] = Field(description="Validation rows: benign and injection counts (the threshold's data).")
    test_rows: dict[str, int] = Field(description="Test rows: benign and injection counts (never trained or tuned on).")
    operating_points: list[OperatingPoint] = Field(description="One per guard.report_fprs value and the target FPR, in ascending target.")
    test_auc: float | None = Field(description="ROC AUC of the model score alone on test (null when a class is missing).")
    components: dict[str, Component] = Field(description="At the serving threshold on test: `model` alone, `rules` alone, `combined`.")
    per_language: dict[str, Component] = Field(description="The combined guard at the serving threshold on test, by guessed language (de, en, other; a function-word heuristic).")
    rule_reports: list[RuleReport] = Field(description="Every rule with its pattern, why, and its hits on test.")
    benign_eval: list[BenignEval] = Field(default_factory=list, description="False-positive rate, at the serving threshold, on each out-of-distribution benign file of guard.benign_eval (empty when none is set).")
    caveats: list[str] = Field(description="What the numbers do not show.")
