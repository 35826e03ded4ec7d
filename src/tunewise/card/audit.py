"""What the model card and the report show of the data audit, read from audit/findings.json.

The card stage reads the audit only through the Findings artifact, never through the audit package: the two
stages meet in the run directory.
"""

from __future__ import annotations

from typing import Any

from tunewise.artifacts.findings import CHECK_TITLES, Findings

DATACARD = "../audit/datacard.md"  # the dataset card, relative to card/README.md


def audit_summary(findings: Findings | None, datacard: str | None = None) -> dict[str, Any]:
    """The template's view of the audit: counts per check and severity, and every accepted override.
    `findings` None means the audit was disabled for the run."""
    if findings is None:
        return {"enabled": False}
    s = findings.summary
    rows = [{"check": check, "title": CHECK_TITLES[check], **c.model_dump()} for check, c in s.by_check.items()]
    allowed = [{"check": f.check, "kind": f.kind, "split": f.split, "count": f.count, "message": f.message}
               for f in findings.findings if f.allowed]
    return {"enabled": True, "blocking": s.blocking, "warning": s.warning, "info": s.info, "rows": rows,
            "allow": list(findings.policy.allow), "allowed": allowed, "datacard": datacard,
            "signature": findings.signature}
