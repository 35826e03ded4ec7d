"""Findings, severities and the policy that turns them into a verdict.

A finding is one kind of problem (`check` + `kind`) in one place, with a count, a sentence that says what was
found, what to do about it, and example rows (id, split, origin file:line). Its severity starts at the check's
default, and the recipe's `audit.severity` overrides it per check. A blocking finding stops `tunewise run`
before training unless its check is listed in `audit.allow`, in which case it is marked `allowed` and the
override is recorded in the model card.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tunewise.audit.spill import JsonLog
from tunewise.recipe import AUDIT_CHECKS, AuditConfig

SEVERITIES = ("info", "warning", "blocking")
EXAMPLES = 10

# What a check that found nothing says in the summary.
CHECK_OK = {
    "duplicate": "no exact duplicates",
    "near_duplicate": "no near-duplicates",
    "leak": "no validation or test row found in train",
    "label_conflict": "no text carries two labels",
    "label_noise": "no label-noise candidates",
    "imbalance": "every class within audit.imbalance_ratio of the largest",
    "length": "every row fits model.max_length",
    "empty": "no empty or near-empty rows",
    "pii": "no e-mail, phone, card, IBAN, IP or SSN-like number",
    "license": "every licence allows the intended use",
    "provenance": "every file declares its source and personal data",
}


@dataclass
class Finding:
    check: str
    kind: str
    severity: str
    count: int
    message: str
    action: str
    split: str | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    default_severity: str = ""
    allowed: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckResult:
    """What an audit check returns (see audit/checks/): its findings, the lines it adds to flagged.jsonl and
    quarantine.jsonl, "ran" or why not for each check name it covers, and numbers it measured for the plots.
    Flagged and quarantine lines go to disk as they are made (there can be one per row); a quarantine line carries
    its global row number as its key, for the text excerpt the stage adds."""

    findings: list[Finding] = field(default_factory=list)
    flagged: JsonLog = field(default_factory=JsonLog)
    quarantine: JsonLog = field(default_factory=JsonLog)
    status: dict[str, str] = field(default_factory=dict)
    measures: dict[str, Any] = field(default_factory=dict)

    def extend(self, other: "CheckResult") -> "CheckResult":
        """Append another check's result to this one (in run order)."""
        self.findings += other.findings
        self.flagged += other.flagged
        self.quarantine += other.quarantine
        self.status.update(other.status)
        self.measures.update(other.measures)
        return self


def apply_policy(findings: list[Finding], cfg: AuditConfig) -> list[Finding]:
    """Set each finding's final severity (recipe overrides) and whether an allowed check accepts it."""
    for f in findings:
        f.default_severity = f.default_severity or f.severity
        if f.check in cfg.severity:
            f.severity = cfg.severity[f.check]
        f.allowed = f.severity == "blocking" and f.check in cfg.allow
    order = {"blocking": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: (order[f.severity], AUDIT_CHECKS.index(f.check), f.split or "", f.kind))
    return findings


def summary(findings: list[Finding], checks_run: dict[str, str]) -> dict[str, Any]:
    """Counts per check and severity. checks_run: check -> "ran" or why it was skipped."""
    by_check: dict[str, Any] = {}
    for check in AUDIT_CHECKS:
        mine = [f for f in findings if f.check == check]
        worst = max((f.severity for f in mine), key=SEVERITIES.index, default=None)
        by_check[check] = {
            "status": worst or ("ok" if checks_run.get(check, "ran") == "ran" else checks_run[check]),
            "findings": len(mine),
            "count": sum(f.count for f in mine),
            **{s: sum(f.count for f in mine if f.severity == s) for s in SEVERITIES},
            "allowed": any(f.allowed for f in mine),
        }
    return {
        **{s: sum(1 for f in findings if f.severity == s) for s in SEVERITIES},
        "blocked": any(f.severity == "blocking" and not f.allowed for f in findings),
        "allowed_blocking": sorted({f.check for f in findings if f.allowed}),
        "by_check": by_check,
    }


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """The printed summary of findings.json: one line per check, worst first."""
    s = doc["summary"]
    accepted = f" (accepted by audit.allow: {', '.join(s['allowed_blocking'])})" if s["allowed_blocking"] else ""
    lines = [f"audit: {s['blocking']} blocking, {s['warning']} warning, {s['info']} info finding(s){accepted}"]
    rank = {"blocking": 0, "warning": 1, "info": 2, "ok": 3}
    def order(item: tuple[str, dict[str, Any]]) -> tuple[int, int]:
        return rank.get(item[1]["status"], 4), AUDIT_CHECKS.index(item[0])

    for check, c in sorted(s["by_check"].items(), key=order):
        status = c["status"]
        if status in SEVERITIES:
            mine = [f for f in doc["findings"] if f["check"] == check]
            head = mine[0]["message"] if len(mine) == 1 else "; ".join(
                f"{f['split'] + ' ' if f.get('split') else ''}{f['kind']}: {f['count']:,} ({f['severity']})"
                for f in mine)
            tag = status if status != "blocking" else ("ALLOWED" if c["allowed"] else "BLOCKING")
            lines.append(f"  {tag:<8} {check:<15} {c['count']:>7,}  {head}")
        elif status == "ok":
            lines.append(f"  {'ok':<8} {check:<15} {0:>7}  {CHECK_OK[check]}")
        else:
            lines.append(f"  {'skipped':<8} {check:<15} {'-':>7}  {status}")
    return lines


def plural(n: int, word: str, words: str | None = None) -> str:
    """`1 row`, `2 rows`, `1,204 texts`."""
    return f"{n:,} {word if n == 1 else (words or word + 's')}"
