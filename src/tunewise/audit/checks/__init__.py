"""The audit's checks: each module has `check(scan) -> CheckResult`, over what the streaming pass collected
(audit/scan.py), and returns its findings, flagged rows and quarantine lines.

A check that does not apply to the run's task says so from the task's attributes (`task.has_labels`,
`task.has_prompts`): its status then names the reason and the summary shows it as skipped. CHECKS is the run
order, which is also the order of the lines in flagged.jsonl and quarantine.jsonl.
"""

from __future__ import annotations

from tunewise.audit.checks import duplicates, empty, labels, leak, length, licence, pii
from tunewise.audit.findings import CheckResult
from tunewise.audit.scan import Scan

CHECKS = (duplicates.check, leak.check, labels.check, length.check, empty.check, pii.check, licence.check)


def run_checks(scan: Scan) -> CheckResult:
    """Every check in order, their results joined."""
    result = CheckResult()
    for check in CHECKS:
        result.extend(check(scan))
    return result
