"""audit/findings.json: what the audit found, the policy it judged by, and the gate that stops training.

The audit stage writes it; train (the gate), the card, and the coming release gate read it. The gate lives here,
next to the file it reads, so that no stage has to import the audit package to ask whether training may start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from tunewise.artifacts.base import Artifact, Strict, omitted
from tunewise.errors import AuditBlocked
from tunewise.recipe import AUDIT_CHECKS

if TYPE_CHECKING:
    from tunewise.rundir import RunDir

Severity = Literal["info", "warning", "blocking"]
AuditCheck = Literal[AUDIT_CHECKS]  # type: ignore[valid-type]  # the recipe's tuple of check names

FINDINGS_FILE = "findings.json"
# What each check is about, in words: the vocabulary of `check` for whoever shows findings (card, datacard).
CHECK_TITLES = {
    "duplicate": "exact duplicates (after Unicode and whitespace normalisation)",
    "near_duplicate": "near-duplicates (MinHash LSH, verified Jaccard)",
    "leak": "train/eval leakage (exact, near-duplicate, n-gram)",
    "label_conflict": "same or near-same text with different labels",
    "label_noise": "label-noise candidates (confident learning)",
    "imbalance": "class imbalance",
    "length": "length against model.max_length",
    "empty": "empty or near-empty rows",
    "pii": "personal data (e-mail, phone, card, IBAN, IP, SSN)",
    "license": "licence against intended_use",
    "provenance": "source and personal-data declarations",
}


class RowRef(Strict):
    """Where a person finds a row: its id, split and origin file:line (plus its label and an excerpt if known)."""

    id: str | None = Field(description="The row's id; null for a finding about a whole file or class.")
    split: str = Field(description="The split the row is in (train, validation, test).")
    origin: str | None = Field(description="`path/to/file.jsonl:12`, or the file's path, or null for a class.")
    label: str | None = omitted("The row's label: label checks only.")
    text: str | None = omitted("An excerpt of the row's text (160 characters); absent for PII, licence, "
                               "provenance and imbalance findings, and where the row was not found again.")


class Example(RowRef):
    """One example row of a finding, with the row it matches and a short explanation where the check has them."""

    match: RowRef | None = omitted("The row this one duplicates, leaks from or conflicts with.")
    detail: str | None = omitted("Why the row was flagged, e.g. `Jaccard 0.86` or `labels a / b`.")
    suggested: str | None = omitted("label_noise: the label the cross-validated model predicts.")


class FindingDetails(Strict):
    """Check-specific numbers; each key is present only for the check named in its description."""

    clusters: int | None = omitted("near_duplicate: clusters in the split.")
    largest: int | None = omitted("near_duplicate: rows in the largest cluster.")
    method: str | None = omitted("label_noise: the model and procedure that found the candidates.")
    checked_rows: int | None = omitted("label_noise: train rows given to the model.")
    counts: dict[str, int] | None = omitted("imbalance: train rows per class.")
    ratio: float | None = omitted("imbalance: largest class over smallest class.")
    truncation_rate: float | None = omitted("length: share of rows over model.max_length.")
    unit: str | None = omitted("length: what a length counts, e.g. `tokens of the `minilm` tokenizer`.")
    per_split: dict[str, int] | None = omitted("pii: rows with this kind of PII per split.")
    matches: int | None = omitted("pii: matched values in all rows.")


class Finding(Strict):
    """One kind of problem (check + kind) in one place, with what to do about it."""

    check: AuditCheck = Field(description="The audit check that found it.")
    kind: str = Field(description="What the check found, e.g. `exact`, `near`, `ngram`, `email`, `conflict`.")
    severity: Severity = Field(description="Final severity, after the recipe's `audit.severity` overrides.")
    count: int = Field(description="Rows (or files, or classes) concerned.")
    message: str = Field(description="One sentence that says what was found.")
    action: str = Field(description="What to do about it.")
    split: str | None = Field(description="The split concerned; null when the finding spans splits.")
    examples: list[Example] = Field(description="Up to 10 example rows.")
    details: FindingDetails = Field(description="Check-specific numbers.")
    default_severity: Severity = Field(description="The check's own severity before the recipe's overrides.")
    allowed: bool = Field(description="A blocking finding that `audit.allow` accepts for this run.")


class Policy(Strict):
    """The recipe settings the findings were judged by."""

    intended_use: Literal["unspecified", "research", "internal", "commercial"] = Field(
        description="The recipe's intended_use, checked against each file's licence.")
    allow: list[AuditCheck] = Field(description="Checks whose blocking findings the recipe accepts (audit.allow).")
    severity_overrides: dict[AuditCheck, Severity] = Field(description="audit.severity: severity per check.")
    missing_license: Severity = Field(description="Severity of a data file with no declared licence.")


class CheckSummary(Strict):
    """One check's line of the summary."""

    status: str = Field(description="The worst severity found, `ok`, or why the check was skipped "
                                    "(e.g. `not applicable to task chat`).")
    findings: int = Field(description="Findings of this check.")
    count: int = Field(description="Rows concerned, summed over its findings.")
    info: int = Field(description="Rows concerned by its info findings.")
    warning: int = Field(description="Rows concerned by its warning findings.")
    blocking: int = Field(description="Rows concerned by its blocking findings.")
    allowed: bool = Field(description="Some blocking finding of this check is accepted by audit.allow.")


class FindingsSummary(Strict):
    """Counts per severity, and per check."""

    info: int = Field(description="Findings of severity info.")
    warning: int = Field(description="Findings of severity warning.")
    blocking: int = Field(description="Findings of severity blocking (accepted or not).")
    blocked: bool = Field(description="Some blocking finding is not accepted by audit.allow: training may not start.")
    allowed_blocking: list[AuditCheck] = Field(description="Checks whose blocking findings audit.allow accepted.")
    by_check: dict[AuditCheck, CheckSummary] = Field(description="Every check, in the recipe's check order.")


class LengthStats(Strict):
    """Lengths of one split's rows, in the unit of `stats.length_unit`; null percentiles for an empty split."""

    p50: int | None = Field(description="Median length.")
    p95: int | None = Field(description="95th percentile length.")
    max: int | None = Field(description="Longest row.")
    over_max_length: int = Field(description="Rows longer than model.max_length.")
    truncation_rate: float = Field(description="Share of rows longer than model.max_length.")


class SplitStats(Strict):
    """What the dataset card shows of one split."""

    rows: int = Field(description="Rows in the split.")
    file: str | None = Field(description="The data file the split came from (train's file for a carved split).")
    label_counts: dict[str, int] | None = Field(description="Rows per label; null for tasks without labels.")
    length: LengthStats
    exact_duplicates: int = Field(description="Rows repeating an earlier row of the split exactly.")
    near_empty: int = Field(description="Empty or near-empty rows.")
    pii_rows: int = Field(description="Rows holding PII.")
    pii_by_kind: dict[str, int] = Field(description="PII matches per kind (email, phone, ...).")


class NearDuplicateStats(Strict):
    """The settings and counts of the MinHash LSH near-duplicate search."""

    shingle_words: int = Field(description="Words per shingle.")
    threshold: float = Field(description="Minimum verified Jaccard similarity.")
    num_perm: int = Field(description="MinHash permutations.")
    bands: int = Field(description="LSH bands.")
    rows_per_band: int = Field(description="MinHash rows per LSH band.")
    candidate_pairs: int = Field(description="Pairs that shared a band.")
    verified_pairs: int = Field(description="Candidate pairs whose exact Jaccard reached the threshold.")
    median_words: float = Field(description="Median words per train example (picks the shingle size).")


class AuditStats(Strict):
    """Statistics for the dataset card."""

    splits: dict[str, SplitStats] = Field(description="Per split, in train/validation/test order.")
    data_quarantined: int = Field(description="Rows the data stage quarantined.")
    length_unit: str = Field(description="What a length counts, e.g. `tokens of the `minilm` tokenizer`.")
    near_duplicates: NearDuplicateStats
    ngram_template_ngrams_ignored: int | None = omitted(
        "Generation and chat: n-grams so common in train (templates) that the n-gram leak check ignores them.")


class AuditFiles(Strict):
    """The other files of audit/, by name."""

    flagged: str = Field(description="One line per flagged row and finding.")
    quarantine: str = Field(description="Rows the data stage quarantined and rows the audit recommends removing.")
    datacard: str = Field(description="The datasheet for the dataset.")
    plots: list[str] = Field(description="SVG plots.")
    redacted: str | None = omitted("With audit.redact_pii: the folder of redacted splits.")


class Findings(Artifact):
    """audit/findings.json: every finding, the summary per check and severity, the policy, the statistics, and the
    signature of the settings that produced them."""

    FILE = FINDINGS_FILE
    STAGE = "audit"
    SCHEMA_VERSION = 1

    signature: str = Field(description="The settings and data digests the findings depend on.")
    policy: Policy
    summary: FindingsSummary
    findings: list[Finding] = Field(description="Every finding, blocking first, then by check order.")
    stats: AuditStats
    files: AuditFiles

    def blocking(self) -> list[Finding]:
        """Blocking findings that no `audit.allow` entry accepts: each one stops training."""
        return [f for f in self.findings if f.severity == "blocking" and not f.allowed]

    def blocked_message(self, findings_path: str) -> str:
        """The error shown when the audit blocks training: each blocking finding, its rows, and the way out."""
        stop = self.blocking()
        lines = [f"the data audit found {len(stop)} blocking problem(s); training did not start."]
        for f in stop:
            lines.append(f"  - {f.check} ({f.kind}{', ' + f.split if f.split else ''}): {f.message}")
            shown = f.examples[:5]
            for ex in shown:
                extra = f" <- {row_ref(ex.match)}" if ex.match is not None else ""
                what = f" [{ex.detail}]" if ex.detail else ""
                where = f"{ex.split}: " if ex.split else ""
                lines.append(f"      {where}{row_ref(ex)}{extra}{what}")
            if f.count > len(shown) and shown:
                lines.append(f"      ... and {f.count - len(shown):,} more (audit/flagged.jsonl)")
            lines.append(f"    what to do: {f.action}")
        checks = sorted({f.check for f in stop})
        lines.append(f"Details: {findings_path}. Fix the data and rerun, or accept these findings for this run with "
                     f"`audit.allow=[{','.join(checks)}]` (the override is recorded in the model card).")
        return "\n".join(lines)


def row_ref(row: RowRef) -> str:
    """`file.jsonl:12 (id x)` for messages: where a person finds the row."""
    short = (row.origin or "?").rsplit("/", 1)[-1]
    name, _, line = short.rpartition(":")
    generated = f"{name.rsplit('.', 1)[0]}:{line}"  # the data stage's id for a row without its own
    return f"{short} (id {row.id})" if row.id and row.id != generated else short


def read_findings(rd: "RunDir") -> Findings:
    """audit/findings.json of a run whose audit stage finished."""
    return Findings.read(rd.stage_dir("audit") / FINDINGS_FILE)


def require_audit_passed(rd: "RunDir", *, by: str = "train") -> None:
    """Raise AuditBlocked (naming the findings, their rows and the way out) when the run's audit has blocking
    findings that `audit.allow` does not accept. Needs the audit stage to have finished; `by` names the stage
    that asks, for the "run the audit first" message."""
    rd.require("audit", by)
    findings = read_findings(rd)
    if findings.blocking():
        raise AuditBlocked(findings.blocked_message(str(rd.stage_dir("audit") / FINDINGS_FILE)))
