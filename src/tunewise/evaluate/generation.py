"""Stage 3 for generation and chat: generate for the test prompts with the fine-tuned model and with the base model
zero-shot, then score both with text metrics and bootstrap CIs, and compare them paired.

Reads data/ and model/; writes eval/:
  predictions.jsonl               one line per scored test example, in test order
  predictions_base_model.jsonl    the same for the base model zero-shot
  metrics.json                    text metrics with CIs, paired comparisons, slices, sacrebleu signatures
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tunewise
from tunewise.artifacts.metrics import GenerationMetrics
from tunewise.artifacts.rows import Example, example_from_record, records_dataset
from tunewise.evaluate.held_out import kept_and_kinds, leaked_test_ids
from tunewise.evaluate.slices import mean_scorers, slice_fields
from tunewise.evaluate.stats import signature
from tunewise.evaluate.text_metrics import (
    compare_stats,
    score_stats,
    text_metric_signatures,
    text_stats,
)
from tunewise.hardware import choose_placement
from tunewise.models import resolve_base_model
from tunewise.recipe import Recipe
from tunewise.rundir import AtomicJsonlWriter, scratch_folder, sha256_file
from tunewise.tasks import task_for
from tunewise.tasks.causal import for_inference, has_chat_template, load_finetuned, references_of

def generation_slices(examples: list[Example], per_example: list[dict[str, float]], metrics: list[str],
                      recipe: Recipe) -> dict[str, Any]:
    """Mean sentence-level ROUGE-L and/or chrF per group of each slice field, with CIs, and the largest gaps."""
    cfg = recipe.evaluate
    per_row = {m: np.array([scores[m] for scores in per_example], dtype=float) for m in metrics}
    return slice_fields([ex.meta for ex in examples], recipe.data.slice_fields, mean_scorers(per_row),
                        min_size=cfg.min_slice_size, n_resamples=cfg.bootstrap_samples, confidence=cfg.confidence,
                        seed=recipe.seed)


def held_out_scores(examples: list[Example], per_example: list[dict[str, float]], metrics: list[str],
                    recipe: Recipe, audit_dir: Path | None) -> dict[str, Any] | None:
    """The fine-tuned model's mean sentence-level scores without the test rows the audit flagged as leaked."""
    from scipy.stats import bootstrap

    if audit_dir is None:
        return None
    kept, kinds = kept_and_kinds([ex.id for ex in examples], leaked_test_ids(audit_dir))
    if not kinds:
        return None
    cfg = recipe.evaluate
    scores: dict[str, Any] = {}
    for m in metrics if len(kept) >= 2 else []:
        arr = np.array([per_example[i][m] for i in kept], dtype=float)
        value = float(arr.mean())
        lo = hi = value
        if arr.std() > 0:
            res = bootstrap((arr,), np.mean, n_resamples=cfg.bootstrap_samples, confidence_level=cfg.confidence,
                            method="percentile", rng=np.random.default_rng(recipe.seed))
            lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        scores[m] = {"value": value, "ci_low": lo, "ci_high": hi, "n_resamples": cfg.bootstrap_samples,
                     "confidence": cfg.confidence, "method": "percentile"}
    return {"flagged_rows": len(examples) - len(kept), "kept_rows": len(kept), "kinds": kinds, "metrics": scores}


def scored_examples(data_dir: Path, cache: Path, max_examples: int | None) -> tuple[list[Example], int]:
    """The test examples to score (the first evaluate.max_examples) and how many the split has: the split is read
    as a memory-mapped Arrow table (every line checked), and only the scored examples are decoded."""
    table = records_dataset(data_dir, "test", cache / "records", kind="example")
    n_test = len(table)
    if max_examples is not None and max_examples < n_test:
        table = table.select(range(max_examples))
    records = table.select_columns(["record"]).iter(batch_size=1000)
    return [example_from_record(r) for batch in records for r in batch["record"]], n_test


def evaluate_generation(recipe: Recipe, data_dir: Path, model_dir: Path, out: Path,
                        audit_dir: Path | None = None) -> str:
    with scratch_folder(out) as cache:
        test, n_test = scored_examples(data_dir, cache, recipe.evaluate.max_examples)
    return _evaluate(recipe, data_dir, model_dir, out, audit_dir, test, n_test)


def _evaluate(recipe: Recipe, data_dir: Path, model_dir: Path, out: Path, audit_dir: Path | None,
              test: list[Example], n_test: int) -> str:
    cfg = recipe.evaluate
    task = task_for(recipe)
    placement = choose_placement(recipe.train.device, recipe.train.precision)
    base = resolve_base_model(recipe.model.base)
    tok = task.load_tokenizer(model_dir if (model_dir / "tokenizer_config.json").is_file() else base.path)
    references = [references_of(ex) for ex in test]
    metric_names = list(cfg.metrics)
    sentence = [m for m in ("chrf", "rougeL") if m in metric_names or (m == "rougeL" and "rouge" in metric_names)]

    systems: dict[str, list[str]] = {}
    speed: dict[str, dict[str, float]] = {}
    torch.manual_seed(recipe.seed)
    model = load_finetuned(model_dir, base.path, placement)
    systems["fine_tuned"], speed["fine_tuned"] = task.predict(model, tok, test, recipe, placement,
                                                              desc="generating (fine-tuned)")
    del model
    baselines = cfg.baselines_for(recipe.task)
    if "base_model" in baselines:
        model = for_inference(task.load_model(base.path), placement)
        systems["base_model"], speed["base_model"] = task.predict(model, tok, test, recipe, placement,
                                                                  desc="generating (base model)")
        del model

    method = recipe.model.finetune_method(recipe.task)
    models: dict[str, Any] = {}
    boot = {"n_resamples": cfg.bootstrap_samples, "confidence": cfg.confidence, "seed": recipe.seed}
    # each system's per-example statistics are extracted once; CIs, paired tests and sentence scores reuse them
    stats = {name: text_stats(outputs, references, metric_names) for name, outputs in systems.items()}
    for name, outputs in systems.items():
        per_example = [{k: scores[k] for k in sentence} for scores in stats[name].per_example()]
        file = "predictions.jsonl" if name == "fine_tuned" else f"predictions_{name}.jsonl"
        with AtomicJsonlWriter(out / file) as writer:  # one line at a time
            for record in task.prediction_rows(test, outputs, per_example=per_example):
                writer.write(record)
        desc = (f"{recipe.model.base} fine-tuned ({method}" + (f" r{recipe.model.lora_r}" if method == "lora" else "")
                + f", {placement.precision})" if name == "fine_tuned"
                else f"{recipe.model.base} zero-shot on the same prompts")
        models[name] = {"description": desc, "predictions": f"eval/{file}", "generation_speed": speed[name],
                        "metrics": score_stats(stats[name], **boot)}
        if name == "fine_tuned":
            ft_per_example = per_example
    comparisons = []
    for name in systems:
        if name == "fine_tuned":
            continue
        for c in compare_stats(stats["fine_tuned"], stats[name], **boot):
            comparisons.append({"model": "fine_tuned", "baseline": name, **c})

    n_refs = {len(r) for r in references}
    sig = signature(tunewise=tunewise.__version__, task=recipe.task, boot="percentile", n=cfg.bootstrap_samples,
                    conf=cfg.confidence, seed=recipe.seed, test=f"sha256={sha256_file(data_dir / 'test.jsonl')[:12]}",
                    scored=len(test), model=recipe.model.base, decoding="sample" if cfg.do_sample else "greedy",
                    max_new=cfg.max_new_tokens, sacrebleu=metadata.version("sacrebleu"),
                    rouge_score=metadata.version("rouge-score"))
    metrics = GenerationMetrics(**{
        "task": recipe.task, "n_test": n_test, "n_scored": len(test), "signature": sig,
        "text_metric_signatures": text_metric_signatures(metric_names, n_refs=n_refs.pop() if len(n_refs) == 1 else None),
        "generation": {"max_new_tokens": cfg.max_new_tokens, "do_sample": cfg.do_sample,
                       "temperature": cfg.temperature, "top_p": cfg.top_p, "batch_size": cfg.generation_batch_size,
                       "precision": placement.precision, "device": placement.device,
                       "chat_template": has_chat_template(tok)},
        "models": models, "comparisons": comparisons,
        "slices": generation_slices(test, ft_per_example, sentence, recipe) if sentence else {},
        "held_out": held_out_scores(test, ft_per_example, sentence, recipe, audit_dir) if sentence else None,
    })
    metrics.write(out)
    return _summary_line(metrics, cfg.confidence)


def _summary_line(metrics: GenerationMetrics, confidence: float) -> str:
    ft = metrics.fine_tuned().metrics
    shown = [m for m in task_for(metrics.task).headline_metrics() if m in ft]
    parts = [f"{m} {ft[m].value:.4g} [{ft[m].ci_low:.4g}, {ft[m].ci_high:.4g}]" for m in shown]
    lines = [f"evaluate: {metrics.n_scored:,} test examples · " + " · ".join(parts)
             + f" ({confidence:.0%} bootstrap CI)"]
    for c in metrics.comparisons:
        if c.metric in shown:
            lines.append(f"  vs {c.baseline} {c.metric}: {c.diff:+.4g} [{c.ci_low:+.4g}, "
                         f"{c.ci_high:+.4g}], p={c.p_value:.3g}")
    return "\n".join(lines)
