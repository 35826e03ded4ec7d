"""Check `empty`: rows with under 2 letters or digits, or a placeholder such as 'N/A' (found by the streaming
pass, `scan.is_near_empty`); recommended for removal."""

from __future__ import annotations

from tunewise.audit.findings import EXAMPLES, CheckResult, Finding, plural
from tunewise.audit.scan import Scan


def check(scan: Scan) -> CheckResult:
    result = CheckResult(status={"empty": "ran"})
    for sp in scan.splits:
        if not sp.near_empty:
            continue
        result.findings.append(Finding(
            "empty", "near_empty", "warning", len(sp.near_empty),
            f"{plural(len(sp.near_empty), sp.name + ' row')} empty or near-empty (under 2 letters or digits, "
            f"or a placeholder such as 'N/A')",
            "remove them (listed in audit/quarantine.jsonl) or fill them in", split=sp.name,
            examples=[sp.row(i) for i in sp.near_empty[:EXAMPLES]]))
        for i in sp.near_empty:
            row = sp.row(i)
            result.flagged.append({"check": "empty", "kind": "near_empty", **row})
            result.quarantine.append({"stage": "audit", "check": "empty", **row,
                                      "reason": "empty or near-empty text"}, sp.start + i)
    return result
