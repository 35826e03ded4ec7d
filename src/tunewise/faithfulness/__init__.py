"""The faithfulness stage: score each generated test output for content its source does not support.

Reads data/ (nothing beyond the registry's lineage) and eval/ (metrics.json names the models and their
predictions files); writes faithfulness/:
  faithfulness.json              the flagged share per model with CIs, the paired difference, checker and settings
  scores.jsonl                   one line per fine-tuned output: sentence scores, unsupported spans, flag, reasons
  scores_<model>.jsonl           the same for the base model (and any other model evaluate scored)

The checker (`evaluate.faithfulness.checker`: the built-in `smollm2`, or a checker file fitted by
`python bench/faithfulness.py --fit-out FILE`) reads each output with a causal LM, with and without its source, and
combines the token log-probabilities with transparent checks in a small logistic regression (checker.py). The
checker file is this stage's hashed input, so refitting it reruns the stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunewise.recipe import Recipe
    from tunewise.rundir import RunDir, StageOutcome
    from tunewise.stages import RunOptions

SCORES = "scores.jsonl"


def enabled(recipe: "Recipe") -> bool:
    """On for generation recipes with a checker (`auto`), or when asked for (`true`)."""
    cfg = recipe.evaluate.faithfulness
    if cfg.enabled == "auto":
        return recipe.task == "generation" and cfg.checker is not None
    return bool(cfg.enabled)


def scores_file(model: str) -> str:
    return SCORES if model == "fine_tuned" else f"scores_{model}.jsonl"


def run(rd: "RunDir", options: "RunOptions") -> "StageOutcome":
    from tunewise.faithfulness.checker import checker_inputs, locate
    from tunewise.tasks import task_for

    if task_for(rd.recipe).family != "causal_lm":
        from tunewise.errors import RecipeError

        raise RecipeError(f"evaluate.faithfulness scores generated outputs; task '{rd.recipe.task}' generates "
                          f"none (set evaluate.faithfulness.enabled=false)")
    checker_file = locate(rd.recipe.evaluate.faithfulness)
    return rd.run_stage("faithfulness", lambda out: write(rd, checker_file, out),
                        external_inputs=checker_inputs(checker_file), force=options.force)


def write(rd: "RunDir", checker_file: Path, out: Path) -> str:
    import numpy as np

    from tunewise.artifacts.faithfulness import FaithfulnessResults
    from tunewise.artifacts.metrics import Metrics
    from tunewise.faithfulness.checker import Checker
    from tunewise.faithfulness.score import SourceReader, paired_difference, score_outputs, share_interval
    from tunewise.rundir import atomic_write_jsonl

    recipe = rd.recipe
    cfg, ev = recipe.evaluate.faithfulness, recipe.evaluate
    metrics = Metrics.read(rd.stage_dir("evaluate") / Metrics.FILE)
    reader = SourceReader.for_recipe(recipe)
    checker = Checker.load(checker_file, batch_size=cfg.batch_size)
    boot = {"n_resamples": ev.bootstrap_samples, "confidence": ev.confidence, "seed": recipe.seed}
    threshold, threshold_source = (checker.threshold(cfg.unit) if cfg.threshold == "auto"
                                   else (cfg.threshold, "evaluate.faithfulness.threshold"))
    cfg = cfg.model_copy(update={"threshold": threshold})

    flags: dict[str, dict[str, bool]] = {}
    models = {}
    for name in metrics.model_order():
        entry = metrics.models[name]
        lines = _read_jsonl(rd.root / entry.predictions)
        sources = [reader(line["prompt"]) for line in lines]
        outputs = [line["prediction"] for line in lines]
        records = score_outputs(outputs, [s for s, _ in sources], checker, cfg)
        rows = [{"id": line["id"], "prediction": line["prediction"], **rec,
                 "source_from": reader.describe() if from_column else "the whole prompt"}
                for line, rec, (_, from_column) in zip(lines, records, sources)]
        atomic_write_jsonl(out / scores_file(name), rows)
        flags[name] = {r["id"]: r["flagged"] for r in rows}
        kinds: dict[str, int] = {}
        for r in rows:
            for u in r["unsupported"]:
                kinds[u["kind"]] = kinds.get(u["kind"], 0) + 1
        scored = [r["score"] for r in rows if r["score"] is not None]
        models[name] = {
            "description": entry.description, "predictions": entry.predictions,
            "scores": f"{rd.stage_dir('faithfulness').name}/{scores_file(name)}",
            "flagged": share_interval(np.array([r["flagged"] for r in rows]), **boot),
            "flagged_by_checker": sum("checker" in r["flagged_by"] for r in rows),
            "flagged_by_checks": sum(any(k != "checker" for k in r["flagged_by"]) for r in rows),
            "mean_score": float(np.mean(scored)) if scored else 0.0,
            "sentences": sum(len(r["sentences"]) for r in rows),
            "sentences_flagged": sum(s["flagged"] for r in rows for s in r["sentences"]),
            "empty_outputs": sum(not r["sentences"] for r in rows),
            "unsupported": dict(sorted(kinds.items())),
        }
    comparisons = []
    ft = flags["fine_tuned"]
    for name in models:
        if name == "fine_tuned":
            continue
        common = [i for i in ft if i in flags[name]]
        diff = paired_difference(np.array([ft[i] for i in common]), np.array([flags[name][i] for i in common]),
                                 **boot)
        comparisons.append({"model": "fine_tuned", "baseline": name, **diff})
    results = FaithfulnessResults(
        n_scored=metrics.n_scored, confidence=ev.confidence, n_resamples=ev.bootstrap_samples,
        checker=checker.facts(),
        settings={"threshold": threshold, "threshold_source": threshold_source, "unit": cfg.unit,
                  "max_source_tokens": checker.model.max_source_tokens,
                  "transparent_checks": cfg.transparent_checks, "source": reader.describe()},
        models=models, comparisons=comparisons)
    results.write(out)
    return _summary_line(results)


def _summary_line(results) -> str:
    parts = [f"{name} {m.flagged.value:.1%} [{m.flagged.ci_low:.1%}, {m.flagged.ci_high:.1%}]"
             for name, m in ((n, results.models[n]) for n in results.model_order())]
    line = (f"faithfulness: {results.n_scored:,} outputs per model flagged as unsupported by the source · "
            + " · ".join(parts) + f" ({results.confidence:.0%} bootstrap CI)")
    for c in results.comparisons:
        line += (f"\n  fine_tuned vs {c.baseline}: {c.diff:+.1%} [{c.ci_low:+.1%}, {c.ci_high:+.1%}], "
                 f"p={c.p_value:.3g}")
    return line


def _read_jsonl(path: Path) -> list[dict]:
    import json

    from tunewise.errors import RunDirError

    if not path.is_file():
        raise RunDirError(f"{path}: missing; the faithfulness stage scores evaluate's predictions: rerun the "
                          f"evaluate stage (`tunewise evaluate {path.parent.parent} --force`)")
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
