"""Stage 3 for classification: score the fine-tuned model and its baselines on the test split.

Reads data/ and model/; writes eval/:
  predictions.jsonl               one line per test row, in test order, with every class probability
  predictions_<baseline>.jsonl    the same for each baseline
  metrics.json                    point values with bootstrap CIs, paired comparisons, per-class scores,
                                  confusion matrix, calibration, and the signature string
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

import tunewise
from tunewise.artifacts.metrics import ClassificationMetrics
from tunewise.artifacts.rows import load_labels
from tunewise.errors import RunDirError
from tunewise.evaluate import baselines as baseline_models
from tunewise.evaluate.calibration import brier_score, expected_calibration_error
from tunewise.evaluate.held_out import kept_and_kinds, leaked_test_ids
from tunewise.evaluate.slices import classification_scorers, slice_fields
from tunewise.evaluate.stats import bootstrap_ci, paired_bootstrap, signature
from tunewise.hardware import choose_placement
from tunewise.recipe import Recipe
from tunewise.rundir import atomic_write_jsonl, sha256_file
from tunewise.tasks import task_for



def _score_system(y: np.ndarray, probs: np.ndarray, n_classes: int, recipe: Recipe) -> dict[str, Any]:
    cfg = recipe.evaluate
    preds = probs.argmax(1)
    metrics = {m: bootstrap_ci(y, preds, m, n_classes=n_classes, n_resamples=cfg.bootstrap_samples,
                               confidence=cfg.confidence, seed=recipe.seed) for m in task_for(recipe).headline_metrics()}
    ece, bins = expected_calibration_error(y, probs, n_bins=cfg.calibration_bins)
    return {"metrics": metrics, "calibration": {"ece": ece, "brier": brier_score(y, probs), "bins": bins}}


def classification_slices(rows, y: np.ndarray, preds: np.ndarray, n_classes: int, recipe: Recipe) -> dict[str, Any]:
    """Accuracy and macro-F1 per group of each slice field, with CIs, and the largest gap per metric with its CI."""
    cfg = recipe.evaluate
    return slice_fields([r.meta for r in rows], recipe.data.slice_fields,
                        classification_scorers(y, preds, n_classes), min_size=cfg.min_slice_size,
                        n_resamples=cfg.bootstrap_samples, confidence=cfg.confidence, seed=recipe.seed)


def held_out_scores(rows, y: np.ndarray, preds: np.ndarray, n_classes: int, recipe: Recipe,
                    audit_dir: Path | None) -> dict[str, Any] | None:
    """The fine-tuned model's metrics without the test rows the audit flagged as leaked from train."""
    if audit_dir is None:
        return None
    kept, kinds = kept_and_kinds([r.id for r in rows], leaked_test_ids(audit_dir))
    if not kinds:
        return None
    cfg = recipe.evaluate
    idx = np.asarray(kept, dtype=np.int64)
    metrics = ({m: bootstrap_ci(y[idx], preds[idx], m, n_classes=n_classes, n_resamples=cfg.bootstrap_samples,
                                confidence=cfg.confidence, seed=recipe.seed) for m in task_for(recipe).headline_metrics()}
               if len(idx) >= 2 else {})
    return {"flagged_rows": len(rows) - len(kept), "kept_rows": len(kept), "kinds": kinds, "metrics": metrics}


def evaluate_classifier(recipe: Recipe, data_dir: Path, model_dir: Path, out: Path,
                        audit_dir: Path | None = None) -> str:
    task = task_for(recipe)
    labels = load_labels(data_dir)
    label2id = {label: i for i, label in enumerate(labels)}
    test_rows = task.read_split(data_dir, "test")
    n_test = len(test_rows)
    if recipe.evaluate.max_examples is not None:
        test_rows = test_rows[:recipe.evaluate.max_examples]
    train_rows = task.read_split(data_dir, "train")
    y = np.array([label2id[r.label] for r in test_rows])
    k = len(labels)
    placement = choose_placement(recipe.train.device, recipe.train.precision)

    model = task.load_model(model_dir)
    tokenizer = task.load_tokenizer(model_dir)
    if [model.config.id2label[i] for i in range(k)] != labels:
        raise RunDirError(f"{model_dir}: the model's label order differs from data/labels.json; rerun `tunewise train`")
    systems: dict[str, np.ndarray] = {
        "fine_tuned": task.predict(model, tokenizer, test_rows, recipe, placement, progress=True)}
    atomic_write_jsonl(out / "predictions.jsonl", task.prediction_rows(test_rows, systems["fine_tuned"], labels=labels))

    train_y = np.array([label2id[r.label] for r in train_rows])
    from tqdm.auto import tqdm

    for name in tqdm(recipe.evaluate.baselines_for(recipe.task), desc="baselines", unit="model", leave=False):
        probs = baseline_models.fit_predict_proba(name, [r.text for r in train_rows], train_y,
                                                  [r.text for r in test_rows], n_classes=k, seed=recipe.seed)
        systems[name] = probs
        atomic_write_jsonl(out / f"predictions_{name}.jsonl", task.prediction_rows(test_rows, probs, labels=labels))

    cfg = recipe.evaluate
    models = {}
    for name, probs in systems.items():
        desc = (f"{recipe.model.base} fine-tuned (full, {placement.precision})" if name == "fine_tuned"
                else baseline_models.describe(name))
        predictions = "eval/predictions.jsonl" if name == "fine_tuned" else f"eval/predictions_{name}.jsonl"
        models[name] = {"description": desc, "predictions": predictions, **_score_system(y, probs, k, recipe)}

    ft_pred = systems["fine_tuned"].argmax(1)
    comparisons = []
    for name in recipe.evaluate.baselines_for(recipe.task):
        for metric in task.headline_metrics():
            res = paired_bootstrap(y, ft_pred, systems[name].argmax(1), metric, n_classes=k,
                                   n_resamples=cfg.bootstrap_samples, confidence=cfg.confidence, seed=recipe.seed)
            comparisons.append({"model": "fine_tuned", "baseline": name, "metric": metric, **res})

    prec, rec, f1, support = precision_recall_fscore_support(y, ft_pred, labels=list(range(k)), zero_division=0)
    per_class = {lab: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                 for lab, p, r, f, s in zip(labels, prec, rec, f1, support)}
    test_file = data_dir / "test.jsonl"
    subset = {"scored": len(test_rows)} if len(test_rows) < n_test else {}  # evaluate.max_examples
    sig = signature(tunewise=tunewise.__version__, task="classification", boot="percentile",
                    n=cfg.bootstrap_samples, conf=cfg.confidence, seed=recipe.seed,
                    test=f"sha256={sha256_file(test_file)[:12]}", **subset, model=recipe.model.base,
                    sklearn=metadata.version("scikit-learn"), scipy=metadata.version("scipy"))
    ClassificationMetrics(
        task=recipe.task, n_test=n_test, n_scored=len(test_rows), labels=labels, signature=sig,
        models=models, comparisons=comparisons, per_class=per_class,
        slices=classification_slices(test_rows, y, ft_pred, k, recipe),
        held_out=held_out_scores(test_rows, y, ft_pred, k, recipe, audit_dir),
        confusion_matrix=confusion_matrix(y, ft_pred, labels=list(range(k))).tolist()).write(out)

    acc = models["fine_tuned"]["metrics"]["accuracy"]
    f1m = models["fine_tuned"]["metrics"]["macro_f1"]
    scored = f"{len(test_rows):,} of {n_test:,}" if len(test_rows) < n_test else f"{n_test:,}"
    lines = [f"evaluate: {scored} test rows · accuracy {acc['value']:.4f} "
             f"[{acc['ci_low']:.4f}, {acc['ci_high']:.4f}] · macro-F1 {f1m['value']:.4f} "
             f"[{f1m['ci_low']:.4f}, {f1m['ci_high']:.4f}] ({cfg.confidence:.0%} bootstrap CI)"]
    for c in comparisons:
        if c["metric"] == "accuracy":
            lines.append(f"  vs {c['baseline']}: {c['diff']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}], "
                         f"p={c['p_value']:.3g}")
    return "\n".join(lines)
