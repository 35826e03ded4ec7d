"""The evaluate stage: score the fine-tuned model and its baselines on the test split, with bootstrap CIs.
Reads data/ and model/, writes eval/.

Scoring is task-specific (class probabilities and calibration against generated text and overlap metrics); the
implementation is looked up by `task.family` below, the one place this stage distinguishes tasks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunewise.rundir import RunDir, StageOutcome
    from tunewise.stages import RunOptions

EVALUATORS = {"classifier": "tunewise.evaluate.classification:evaluate_classifier",
              "causal_lm": "tunewise.evaluate.generation:evaluate_generation"}


def run(rd: "RunDir", options: "RunOptions") -> "StageOutcome":
    from tunewise.stages import load
    from tunewise.tasks import task_for

    evaluate_fn = load(EVALUATORS[task_for(rd.recipe).family])
    # the audit's leak findings give the held-out score (the test rows that are not copies of train rows)
    audit_dir = rd.stage_dir("audit") if rd.recipe.audit.enabled else None
    return rd.run_stage("evaluate", lambda out: evaluate_fn(rd.recipe, rd.stage_dir("data"), rd.stage_dir("train"),
                                                            out, audit_dir), force=options.force)
