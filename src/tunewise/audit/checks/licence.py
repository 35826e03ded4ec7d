"""Checks `license` and `provenance`, per data file (see audit/provenance.py): each licence against the recipe's
intended_use, and each file's source and personal-data declarations."""

from __future__ import annotations

from tunewise.audit import provenance
from tunewise.audit.findings import CheckResult, Finding
from tunewise.audit.scan import Scan


def check(scan: Scan) -> CheckResult:
    result = CheckResult(status={"license": "ran", "provenance": "ran"})
    cfg = scan.recipe.audit
    for split, facts in scan.data_summary.files.items():
        for v in provenance.judge(split, facts, scan.recipe.intended_use, cfg.missing_license):
            result.findings.append(Finding(
                "license", v.kind, v.severity or "info", 1, v.message, v.action, split=split,
                examples=[{"id": None, "split": split, "origin": facts.path, "detail": f"license: {facts.license}"}]))
        for v in provenance.declarations(split, facts):
            result.findings.append(Finding(
                "provenance", v.kind, v.severity or "info", 1, v.message, v.action, split=split,
                examples=[{"id": None, "split": split, "origin": facts.path}]))
    return result
