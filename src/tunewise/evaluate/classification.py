"""Stage 3 for classification: score the fine-tuned model and its baselines on the test split.

Reads data/ and model/; writes eval/:
  predictions.jsonl               one line per test row, in test order, with every class probability
  predictions_<baseline>.jsonl    the same for each baseline
  metrics.json                    point values with bootstrap CIs, paired comparisons, per-class scores,
                                  confusion matrix, calibration, and the signature string
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

import tunewise
from tunewise.artifacts.metrics import ClassificationMetrics
from tunewise.artifacts.rows import load_labels, sample_split
from tunewise.errors import RunDirError
from tunewise.evaluate import baselines as baseline_models
from tunewise.evaluate.calibration import brier_score, expected_calibration_error
from tunewise.evaluate.held_out import kept_and_kinds, leaked_test_ids
from tunewise.evaluate.slices import RowGroups, classification_scorers, slice_fields_of_groups
from tunewise.evaluate.stats import bootstrap_ci, paired_bootstrap, signature
from tunewise.evaluate.tables import SplitTable
from tunewise.hardware import choose_placement
from tunewise.recipe import Recipe
from tunewise.rundir import scratch_folder, sha256_file
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
    groups = RowGroups(recipe.data.slice_fields)
    for row in rows:
        groups.add(row.meta)
    return classification_slices_of_groups(groups.groups(), y, preds, n_classes, recipe)


def classification_slices_of_groups(groups: dict[str, dict[str, np.ndarray]], y: np.ndarray, preds: np.ndarray,
                                    n_classes: int, recipe: Recipe) -> dict[str, Any]:
    """`classification_slices` from the rows already grouped per slice field (`SplitTable.slice_groups`)."""
    cfg = recipe.evaluate
    return slice_fields_of_groups(groups, len(y), classification_scorers(y, preds, n_classes),
                                  min_size=cfg.min_slice_size, n_resamples=cfg.bootstrap_samples,
                                  confidence=cfg.confidence, seed=recipe.seed)


def held_out_scores(rows: Iterable[Any], y: np.ndarray, preds: np.ndarray, n_classes: int, recipe: Recipe,
                    audit_dir: Path | None) -> dict[str, Any] | None:
    """The fine-tuned model's metrics without the test rows the audit flagged as leaked from train. `rows`: the
    scored rows in order, or just their ids (e.g. streamed from the table)."""
    if audit_dir is None:
        return None
    ids = (r if isinstance(r, str) else r.id for r in rows)
    kept, kinds = kept_and_kinds(ids, leaked_test_ids(audit_dir))
    if not kinds:
        return None
    cfg = recipe.evaluate
    idx = np.asarray(kept, dtype=np.int64)
    metrics = ({m: bootstrap_ci(y[idx], preds[idx], m, n_classes=n_classes, n_resamples=cfg.bootstrap_samples,
                                confidence=cfg.confidence, seed=recipe.seed) for m in task_for(recipe).headline_metrics()}
               if len(idx) >= 2 else {})
    return {"flagged_rows": len(y) - len(kept), "kept_rows": len(kept), "kinds": kinds, "metrics": metrics}


def fit_baselines(recipe: Recipe, data_dir: Path, test: SplitTable, labels: list[str],
                  out: Path) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Each of evaluate.baselines fitted on the train split and predicted over `test` a chunk at a time, its
    predictions_<name>.jsonl written to `out`: ({name: probabilities}, {"fitted_rows", "train_rows"}). sklearn
    fits in memory, so on at most evaluate.baseline_max_rows training rows, a seeded sample beyond (the rest only
    read past): the train split's size bounds neither the memory nor the fitting time. A split of at most that
    many rows is fitted whole, in file order, as before the cap existed."""
    from tqdm.auto import tqdm

    task, k = task_for(recipe), len(labels)
    names = recipe.evaluate.baselines_for(recipe.task)
    if not names:
        return {}, {}
    label2id = {label: i for i, label in enumerate(labels)}
    train, n_train = sample_split(data_dir, "train", recipe.evaluate.baseline_max_rows,
                                  np.random.default_rng(recipe.seed), kind=task.record_kind)
    train_texts = [r.text for r in train]
    train_y = np.fromiter((label2id[r.label] for r in train), dtype=np.int64, count=len(train))
    del train
    systems = {}
    for name in tqdm(names, desc="baselines", unit="model", leave=False):
        predict = baseline_models.fit(name, train_texts, train_y, n_classes=k, seed=recipe.seed)
        systems[name] = test.predict_in_chunks(predict, k, name)
        test.write_predictions(out / f"predictions_{name}.jsonl", task, labels, systems[name])
    return systems, {"fitted_rows": len(train_texts), "train_rows": n_train}


def baseline_description(name: str, fitted: dict[str, int]) -> str:
    """The baseline in words; with `fitted on N of M training rows` when it was fitted on a sample."""
    desc = baseline_models.describe(name)
    if fitted["fitted_rows"] < fitted["train_rows"]:
        desc += (f", fitted on a seeded sample of {fitted['fitted_rows']:,} of {fitted['train_rows']:,} training "
                 f"rows (evaluate.baseline_max_rows)")
    return desc


def evaluate_classifier(recipe: Recipe, data_dir: Path, model_dir: Path, out: Path,
                        audit_dir: Path | None = None) -> str:
    # the test split is read as memory-mapped Arrow and tokenised into an Arrow file, a batch at a time, and the
    # predictions are written as they are made: only what the metrics need stays in memory (label and predicted
    # ids, the probabilities as a float32 array, slice groups as index arrays)
    with scratch_folder(out) as cache:
        return _evaluate(recipe, data_dir, model_dir, out, audit_dir, cache)


def _evaluate(recipe: Recipe, data_dir: Path, model_dir: Path, out: Path, audit_dir: Path | None,
              cache: Path) -> str:
    task = task_for(recipe)
    labels = load_labels(data_dir)
    label2id = {label: i for i, label in enumerate(labels)}
    test = SplitTable.read(data_dir, cache, max_rows=recipe.evaluate.max_examples)
    n_test = test.n_split
    y = test.label_ids(label2id)
    k = len(labels)
    placement = choose_placement(recipe.train.device, recipe.train.precision)

    model = task.load_model(model_dir)
    tokenizer = task.load_tokenizer(model_dir)
    if [model.config.id2label[i] for i in range(k)] != labels:
        raise RunDirError(f"{model_dir}: the model's label order differs from data/labels.json; rerun `tunewise train`")
    systems: dict[str, np.ndarray] = {
        "fine_tuned": test.predict_proba(model, tokenizer, max_length=recipe.model.max_length,
                                         batch_size=recipe.train.eval_batch_size, placement=placement, progress=True)}
    del model
    test.write_predictions(out / "predictions.jsonl", task, labels, systems["fine_tuned"])

    baselines, fitted = fit_baselines(recipe, data_dir, test, labels, out)
    systems.update(baselines)

    cfg = recipe.evaluate
    models = {}
    for name, probs in systems.items():
        if name == "fine_tuned":
            desc, extra = f"{recipe.model.base} fine-tuned (full, {placement.precision})", {}
        else:
            desc, extra = baseline_description(name, fitted), fitted
        predictions = "eval/predictions.jsonl" if name == "fine_tuned" else f"eval/predictions_{name}.jsonl"
        models[name] = {"description": desc, "predictions": predictions, **extra,
                        **_score_system(y, probs, k, recipe)}

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
    n_scored = len(y)
    test_file = data_dir / "test.jsonl"
    subset = {"scored": n_scored} if n_scored < n_test else {}  # evaluate.max_examples
    sig = signature(tunewise=tunewise.__version__, task="classification", boot="percentile",
                    n=cfg.bootstrap_samples, conf=cfg.confidence, seed=recipe.seed,
                    test=f"sha256={sha256_file(test_file)[:12]}", **subset, model=recipe.model.base,
                    sklearn=metadata.version("scikit-learn"), scipy=metadata.version("scipy"))
    ClassificationMetrics(
        task=recipe.task, n_test=n_test, n_scored=n_scored, labels=labels, signature=sig,
        models=models, comparisons=comparisons, per_class=per_class,
        slices=classification_slices_of_groups(test.slice_groups(recipe.data.slice_fields), y, ft_pred, k, recipe),
        held_out=held_out_scores(test.ids(), y, ft_pred, k, recipe, audit_dir),
        confusion_matrix=confusion_matrix(y, ft_pred, labels=list(range(k))).tolist()).write(out)

    acc = models["fine_tuned"]["metrics"]["accuracy"]
    f1m = models["fine_tuned"]["metrics"]["macro_f1"]
    scored = f"{n_scored:,} of {n_test:,}" if n_scored < n_test else f"{n_test:,}"
    lines = [f"evaluate: {scored} test rows · accuracy {acc['value']:.4f} "
             f"[{acc['ci_low']:.4f}, {acc['ci_high']:.4f}] · macro-F1 {f1m['value']:.4f} "
             f"[{f1m['ci_low']:.4f}, {f1m['ci_high']:.4f}] ({cfg.confidence:.0%} bootstrap CI)"]
    for c in comparisons:
        if c["metric"] == "accuracy":
            lines.append(f"  vs {c['baseline']}: {c['diff']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}], "
                         f"p={c['p_value']:.3g}")
    return "\n".join(lines)
