"""Stage 3: evaluation with confidence intervals against baselines. Reads data/ and model/, writes eval/."""

from tunewise.rundir import RunDir, StageOutcome


def evaluate(rd: RunDir, *, force: bool = False) -> StageOutcome:
    from tunewise.evaluate.classification import evaluate_classifier
    from tunewise.evaluate.generation import evaluate_generation

    evaluate_fn = evaluate_generation if rd.recipe.causal else evaluate_classifier
    return rd.run_stage("evaluate", lambda out: evaluate_fn(rd.recipe, rd.stage_dir("data"), rd.stage_dir("train"),
                                                            out),
                        upstream=["data", "train"], force=force)
