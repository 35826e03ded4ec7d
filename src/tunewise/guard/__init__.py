"""The guard stage, for injection-guard recipes (`guard.enabled: true`, examples/injection-guard.yaml).

Reads data/ (validation and test splits, labels) and model/ (the fine-tuned classifier); writes guard/:
  guard.json     GuardReport: the serving threshold, chosen on validation for guard.target_fpr with the rules'
                 false positives counted; the detection rate at each of guard.report_fprs on test, with CIs; the
                 model, the rules and the two combined; per guessed language; every rule with its hits
  scores.jsonl   one line per validation and test row: label, model score, rules fired, guessed language
The model is scored exactly as tunewise.safety.guard.InjectionGuard scores it when serving (fp32, windowed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunewise.rundir import RunDir, StageOutcome
    from tunewise.stages import RunOptions


def run(rd: "RunDir", options: "RunOptions") -> "StageOutcome":
    from tunewise.guard.report import write_guard

    return rd.run_stage("guard", lambda out: write_guard(rd, out), force=options.force)
