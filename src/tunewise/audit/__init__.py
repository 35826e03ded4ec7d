"""The data audit: runs after the data stage and before training, reads data/, writes audit/.

Checks duplicates, near-duplicates, train/eval leakage, label conflicts and noise, imbalance, length, empty rows,
personal data, and each source's licence against the recipe's intended use; writes findings.json, flagged.jsonl,
quarantine.jsonl, plots and a datasheet (datacard.md). Blocking findings stop training unless `audit.allow`
accepts them (see findings.py for the policy).

Modules: normalize (text forms), minhash + dedup (exact and near-duplicates, streaming), leakage (n-gram
overlap), labels (conflicts, cleanlab noise, imbalance), pii, provenance (licences), length (tokenizer lengths),
plots, datacard, stage (the orchestration).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tunewise.errors import AuditBlocked, RunDirError

if TYPE_CHECKING:
    from tunewise.rundir import RunDir

__all__ = ["run_audit", "load_findings", "check_gate"]


def run_audit(recipe, data_dir, out) -> str:  # noqa: ANN001  # re-exported lazily: the stage imports numpy & co
    from tunewise.audit.stage import run_audit as _run

    return _run(recipe, data_dir, out)


def load_findings(rd: "RunDir") -> dict[str, Any]:
    """audit/findings.json of a run whose audit stage finished."""
    from tunewise.audit.findings import FINDINGS_FILE

    path = rd.stage_dir("audit") / FINDINGS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path}: missing or damaged ({exc}); rerun the audit with "
                          f"`tunewise audit {rd.root} --force`") from None


def check_gate(rd: "RunDir", *, by: str = "train") -> None:
    """Raise AuditBlocked (naming the findings, their rows and the way out) when the run's audit has blocking
    findings that `audit.allow` does not accept. Needs the audit stage to have finished."""
    from tunewise.audit.findings import FINDINGS_FILE, blocked_message, blocking

    rd.require("audit", by)
    doc = load_findings(rd)
    if blocking(doc["findings"]):
        raise AuditBlocked(blocked_message(doc, str(rd.stage_dir("audit") / FINDINGS_FILE)))
