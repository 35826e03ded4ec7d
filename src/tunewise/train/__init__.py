"""Stage 2: fine-tuning. Reads data/, writes model/."""

from tunewise.rundir import RunDir, StageOutcome


def train(rd: RunDir, *, resume: bool = False, force: bool = False) -> StageOutcome:
    from tunewise.train.classification import train_classifier

    rec = rd.stage_record("train")
    interrupted = bool(rec and rec.get("status") == "running")
    outcome = rd.run_stage("train", lambda out: train_classifier(rd.recipe, rd.stage_dir("data"), out,
                                                                 resume=resume and interrupted),
                           upstream=["data"], force=force, keep_existing=resume and interrupted)
    return outcome
