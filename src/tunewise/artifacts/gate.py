"""gate/gate.json: the release decision. Every rule of the recipe's `gate:` section, the evidence file it read (path
relative to the run directory, and that file's sha256 when judged), the value it read, the threshold, pass or fail,
and the reason in words. The card and the report show it; `tunewise run` and `tunewise gate` exit 3 when it fails.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from tunewise.artifacts.base import Artifact, Strict, omitted
from tunewise.errors import GateFailed

if TYPE_CHECKING:
    from tunewise.rundir import RunDir


class RuleVerdict(Strict):
    """One rule, judged."""

    rule: str = Field(description="The rule as a recipe key, e.g. `metrics.accuracy`, `beat_baselines.tfidf_logreg`, "
                                  "`max_slice_gap.channel.accuracy`, `max_flip_rate.gender`, `crows_pairs_band`, "
                                  "`no_blocking_findings`.")
    requirement: str = Field(description="What the rule asks, in words.")
    evidence: str = Field(description="The file the value is read from, relative to the run directory.")
    evidence_sha256: str | None = Field(description="That file's sha256 when judged; null when it is missing.")
    field: str | None = Field(description="Where in the file the value is (a dotted path); null when missing.")
    value: float | None = Field(description="The value read; null when the evidence is missing.")
    threshold: float | list[float] = Field(description="The bound it is held to ([low, high] for a band).")
    passed: bool = Field(description="Whether the rule holds. Missing evidence fails.")
    reason: str = Field(description="Why it passed or failed, in words.")
    skipped: bool | None = omitted("Present (true) only when the rule was not judged: its evidence is missing and the section says to skip it (gate.serving_evidence: skip); `passed` is then true and `reason` says what is missing.")


class Gate(Artifact):
    """gate/gate.json: the verdict of each release-gate rule against the run's evidence, and the overall decision."""

    FILE = "gate.json"
    STAGE = "gate"
    SCHEMA_VERSION = 1

    passed: bool = Field(description="Every rule passed (true with no rules: nothing was required).")
    rules: list[RuleVerdict] = Field(description="Every rule of the section, in the section's order.")
    section: dict[str, Any] = Field(description="The recipe's `gate:` section that was judged, as resolved.")
    judged_at: str = Field(description="When the rules were judged (ISO 8601, local time).")

    def failed(self) -> list[RuleVerdict]:
        return [r for r in self.rules if not r.passed]

    def verdict_lines(self) -> list[str]:
        """What `tunewise run` and `tunewise gate` print: the decision, then each rule's verdict and reason."""
        if not self.rules:
            return ["gate: no rules set (recipe `gate:` section is empty): nothing to decide"]
        failed = self.failed()
        head = (f"gate: FAILED ({len(failed)} of {len(self.rules)} rule(s) failed)" if failed
                else f"gate: passed (all {len(self.rules)} rule(s))")
        skipped = sum(bool(r.skipped) for r in self.rules)
        if skipped:
            head += f"; {skipped} not measured, skipped"
        return [head] + [f"  {'SKIP' if r.skipped else 'PASS' if r.passed else 'FAIL'}  {r.rule}: {r.reason}  "
                         f"[{r.evidence}]" for r in self.rules]


def require_gate_passed(rd: "RunDir") -> None:
    """Raise GateFailed (exit 3) naming the failed rules and their reasons when the run's gate/gate.json failed."""
    gate = Gate.read(rd.stage_dir("gate") / Gate.FILE)
    if not gate.passed:
        lines = [f"release gate failed: {len(gate.failed())} of {len(gate.rules)} rule(s)"]
        lines += [f"  - {r.rule}: {r.reason}" for r in gate.failed()]
        lines.append(f"Everything was written (card, report); details: {rd.stage_dir('gate') / Gate.FILE}. "
                     f"Re-check against other rules without retraining: `tunewise gate {rd.root} gate.KEY=VALUE`.")
        raise GateFailed("\n".join(lines))
