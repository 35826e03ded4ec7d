"""The data audit: runs after the data stage and before training, reads data/, writes audit/.

Checks duplicates, near-duplicates, train/eval leakage, label conflicts and noise, imbalance, length, empty rows,
personal data, and each source's licence against the recipe's intended use; writes findings.json, flagged.jsonl,
quarantine.jsonl, plots and a datasheet (datacard.md). Blocking findings stop training unless `audit.allow`
accepts them (see findings.py for the policy).

Modules: stage (the orchestration: scan -> checks -> policy -> write), scan (the one streaming pass over data/),
checks/ (one module per check, each returning its findings), findings (findings, policy, summaries), and the
methods the checks use: normalize (text forms), minhash + dedup (exact and near-duplicates, streaming), leakage
(n-gram overlap), labels (conflicts, cleanlab noise, imbalance), pii, provenance (licences), length (tokenizer
lengths); plots and datacard write the rest of audit/.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunewise.rundir import RunDir, StageOutcome
    from tunewise.stages import RunOptions

__all__ = ["run", "run_audit"]


def run(rd: "RunDir", options: "RunOptions") -> "StageOutcome":
    """The audit stage: reads data/, writes audit/. Not run when `audit.enabled` is false, unless asked for by name
    (`tunewise audit`). Blocking findings are enforced by the train stage, so audit/ is always written for the
    user to read."""
    from tunewise.rundir import StageOutcome

    if not rd.recipe.audit.enabled and not options.explicit:
        return StageOutcome("audit", False, 0.0, "audit: disabled (audit.enabled=false); training is not gated")
    return rd.run_stage("audit", lambda out: run_audit(rd.recipe, rd.stage_dir("data"), out), force=options.force)


def run_audit(recipe, data_dir, out) -> str:  # noqa: ANN001  # re-exported lazily: the stage imports numpy & co
    from tunewise.audit.stage import run_audit as audit_folder

    return audit_folder(recipe, data_dir, out)
