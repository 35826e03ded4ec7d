"""Stage 2: fine-tuning. Reads data/ (after the audit has passed), writes model/."""

from tunewise.rundir import RunDir, StageOutcome


def train(rd: RunDir, *, resume: bool = False, force: bool = False) -> StageOutcome:
    from tunewise.models import resolve_base_model, weight_files
    from tunewise.train.causal import train_causal
    from tunewise.train.classification import train_classifier

    audited = rd.recipe.audit.enabled
    if audited:  # never train on data whose audit found blocking problems the recipe does not accept
        from tunewise.audit import check_gate

        check_gate(rd)
    rec = rd.stage_record("train")
    interrupted = bool(rec and rec.get("status") == "running")
    base = resolve_base_model(rd.recipe.model.base)
    train_fn = train_causal if rd.recipe.causal else train_classifier
    outcome = rd.run_stage("train", lambda out: train_fn(rd.recipe, base, rd.stage_dir("data"), out,
                                                         resume=resume and interrupted),
                           external_inputs=weight_files(base.path),
                           upstream=["data", "audit"] if audited else ["data"], force=force,
                           keep_existing=resume and interrupted)
    if interrupted and not resume and outcome.ran:
        outcome.message += " (the previous training was interrupted and restarted from scratch; --resume continues it)"
    return outcome
