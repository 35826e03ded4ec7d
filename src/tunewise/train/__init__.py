"""The train stage: fine-tune the base model. Reads data/ (after the audit has passed), writes model/.

The training loop is task-specific (a classifier's Trainer against a causal LM's trained-positions loss); the
implementation is looked up by `task.family` below, the one place this stage distinguishes tasks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunewise.rundir import RunDir, StageOutcome
    from tunewise.stages import RunOptions

TRAINERS = {"classifier": "tunewise.train.classification:train_classifier",
            "causal_lm": "tunewise.train.causal:train_causal"}


def run(rd: "RunDir", options: "RunOptions") -> "StageOutcome":
    from tunewise.models import resolve_base_model, weight_files
    from tunewise.stages import load
    from tunewise.tasks import task_for

    if rd.recipe.audit.enabled:  # never train on data whose audit found blocking problems the recipe does not accept
        from tunewise.artifacts.findings import require_audit_passed

        require_audit_passed(rd, by="train")
    rec = rd.stage_record("train")
    interrupted = bool(rec and rec.get("status") == "running")
    resume = options.resume and interrupted
    base = resolve_base_model(rd.recipe.model.base)
    train_fn = load(TRAINERS[task_for(rd.recipe).family])
    outcome = rd.run_stage("train", lambda out: train_fn(rd.recipe, base, rd.stage_dir("data"), out, resume=resume),
                           external_inputs=weight_files(base.path), force=options.force, keep_existing=resume)
    if interrupted and not options.resume and outcome.ran:
        outcome.message += " (the previous training was interrupted and restarted from scratch; --resume continues it)"
    return outcome
