"""Rows shared by the model card and the HTML report, built from the typed artifacts the earlier stages write.

Both documents show the same numbers; building the rows once keeps them from drifting apart. The artifacts are
validated when read (`tunewise.artifacts`), so a row reads its fields directly; the few values that can be absent
(a slice without an interval, a file without a declared licence) are Optional in the schema and shown as "—" or
"not declared" here, explicitly.
"""

from __future__ import annotations

import math
from pathlib import PurePath
from typing import Any

from tunewise.artifacts.data import DataSummary
from tunewise.artifacts.metrics import FINE_TUNED, ClassificationMetrics, GenerationMetrics, Metrics
from tunewise.artifacts.train import CausalTrainSummary

NOT_DECLARED = "not declared"
METRIC_LABELS = {"accuracy": "accuracy", "macro_f1": "macro-F1", "weighted_f1": "weighted-F1",
                 "micro_f1": "micro-F1",
                 # generation and chat (tunewise.evaluate.text_metrics)
                 "bleu": "BLEU", "chrf": "chrF", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L",
                 "exact_match": "exact match", "length_ratio": "length ratio"}
# sacrebleu's BLEU and chrF are on 0-100 and read best with 2 decimals; every other score keeps 3
METRIC_DIGITS = {"bleu": 2, "chrf": 2}
METRIC_SCALES = {"bleu": "0–100", "chrf": "0–100", "rouge1": "0–1", "rouge2": "0–1", "rougeL": "0–1",
                 "exact_match": "0–1", "length_ratio": "hyp/ref tokens", "accuracy": "0–1", "macro_f1": "0–1"}
SPLIT_ORDER = ("train", "validation", "test")


def fmt(x: float | int | None, digits: int = 3, signed: bool = False) -> str:
    """A number for a table cell; '—' for a value the artifact leaves null, or a non-finite one."""
    if x is None or isinstance(x, bool) or not math.isfinite(x):
        return "—"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def pct(conf: float) -> str:
    """0.95 -> '95%'."""
    return f"{conf * 100:g}%"


def metric_label(name: str) -> str:
    return METRIC_LABELS.get(name, name)  # a metric without a display name shows its key


def digits(name: str) -> int:
    """Decimals shown for a metric's values and intervals."""
    return METRIC_DIGITS.get(name, 3)


def metric_rows(metrics: Metrics) -> list[dict[str, Any]]:
    """One row per model x metric with value and CI, the fine-tuned model first."""
    rows = []
    for model in metrics.model_order():
        info = metrics.models[model]
        for name, r in info.metrics.items():
            d = digits(name)
            rows.append({"model": model, "description": info.description, "metric": name,
                         "metric_label": metric_label(name), "value": r.value,
                         "ci_low": r.ci_low, "ci_high": r.ci_high,
                         "value_s": fmt(r.value, d), "ci_s": f"{fmt(r.ci_low, d)} – {fmt(r.ci_high, d)}",
                         "confidence": pct(r.confidence), "method": r.method,
                         "n_resamples": r.n_resamples, "fine_tuned": model == FINE_TUNED})
    return rows


def comparison_rows(metrics: Metrics) -> list[dict[str, Any]]:
    """Paired model-vs-baseline differences, each with a plain-words reading of its CI."""
    rows = []
    for c in metrics.comparisons:
        lo, hi, diff = c.ci_low, c.ci_high, c.diff
        conf = pct(c.confidence)
        significant = lo > 0 or hi < 0
        metric = metric_label(c.metric)
        d = digits(c.metric)
        gap = f"{abs(diff):.{d}f} {'higher' if diff > 0 else 'lower'} than" if diff else "the same as"
        head = f"{c.model} scores {gap} {c.baseline} on {metric} ({conf} CI {lo:+.{d}f} to {hi:+.{d}f})"
        words = (f"{head}; the interval excludes zero, so the difference is significant at the {conf} level."
                 if significant else
                 f"{head}; the interval includes zero, so this test set cannot tell them apart at the "
                 f"{conf} level.")
        rows.append({"model": c.model, "baseline": c.baseline, "metric": c.metric, "metric_label": metric,
                     "diff": diff, "diff_s": fmt(diff, d, signed=True),
                     "ci_s": f"{fmt(lo, d, signed=True)} – {fmt(hi, d, signed=True)}", "confidence": conf,
                     "p_value": c.p_value, "p_s": fmt_p(c.p_value),
                     "significant": significant, "significant_s": "yes" if significant else "no", "words": words})
    return rows


def calibration_rows(metrics: ClassificationMetrics) -> list[dict[str, Any]]:
    rows = []
    for model in metrics.model_order():
        cal = metrics.models[model].calibration
        rows.append({"model": model, "ece": cal.ece, "ece_s": fmt(cal.ece), "brier_s": fmt(cal.brier),
                     "fine_tuned": model == FINE_TUNED})
    return rows


def per_class_rows(metrics: ClassificationMetrics) -> list[dict[str, Any]]:
    """Per-class precision/recall/F1, worst F1 first (that is where the model fails)."""
    rows = [{"label": label, "f1": r.f1, "precision_s": fmt(r.precision), "recall_s": fmt(r.recall),
             "f1_s": fmt(r.f1), "support": r.support} for label, r in metrics.per_class.items()]
    rows.sort(key=lambda r: (r["f1"], r["label"]))
    return rows


def headline(metrics: Metrics) -> dict[str, str]:
    """The fine-tuned model's numbers as 'value (CI lo–hi)' strings, keyed by metric label."""
    return {metric_label(k): f"{fmt(r.value, digits(k))} ({pct(r.confidence)} CI "
                             f"{fmt(r.ci_low, digits(k))}–{fmt(r.ci_high, digits(k))})"
            for k, r in metrics.fine_tuned().metrics.items()}


# ---------------------------------------------------------------- data


def _declared(value: str | bool | None) -> str:
    if value is None or value == "":
        return NOT_DECLARED
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def split_rows(data_summary: DataSummary) -> list[dict[str, Any]]:
    """One row per split: file, rows, quarantined, provenance. A carved split shows its parent file's source."""
    rows = []
    for split in [s for s in SPLIT_ORDER if s in data_summary.splits]:
        info = data_summary.splits[split]
        src = data_summary.source_of(split)
        file = info.source_file
        sha = info.sha256 or ""
        rows.append({"split": split, "file": file, "file_name": PurePath(file).name if file else "—",
                     "source_path": src.path, "rows": info.rows, "quarantined": info.quarantined,
                     "carved_from": info.carved_from, "sha256": sha, "sha256_short": sha[:12] if sha else "—",
                     "source": _declared(src.source), "license": _declared(src.license),
                     "personal_data": _declared(src.contains_personal_data)})
    return rows


def data_warnings(rows: list[dict[str, Any]]) -> list[str]:
    """One warning per undeclared provenance field, per distinct source (carved splits share their parent's)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["source_path"] or r["split"], []).append(r)
    out = []
    for group in groups.values():
        r = group[0]
        which = " and ".join(g["split"] for g in group) + f" data ({r['file_name']})"
        if r["license"] == NOT_DECLARED:
            out.append(f"Warning: the licence of the {which} is not declared; confirm you may use it "
                       "before releasing this model.")
        if r["source"] == NOT_DECLARED:
            out.append(f"Warning: the source of the {which} is not declared.")
        if r["personal_data"] == NOT_DECLARED:
            out.append(f"Warning: the {which} does not declare whether it contains personal data.")
        elif r["personal_data"] == "yes":
            out.append(f"Warning: the {which} is declared to contain personal data; the model may have "
                       "memorised some of it.")
    return out


# ---------------------------------------------------------------- generation and chat


def generation_metric_table(metrics: GenerationMetrics) -> dict[str, Any]:
    """Wide table for text metrics: one row per metric, one value + CI cell per model (fine-tuned first)."""
    models = metrics.model_order()
    rows = []
    for name in metrics.fine_tuned().metrics:  # every model scores the same metrics (the schema checks it)
        d = digits(name)
        cells = []
        for m in models:
            r = metrics.models[m].metrics[name]
            cells.append({"model": m, "value_s": fmt(r.value, d),
                          "ci_s": f"{fmt(r.ci_low, d)} – {fmt(r.ci_high, d)}"})
        rows.append({"metric": name, "metric_label": metric_label(name), "scale": METRIC_SCALES.get(name, ""),
                     "cells": cells})
    return {"models": models, "rows": rows, "confidence": pct(metrics.confidence())}


def generation_settings_rows(metrics: GenerationMetrics) -> list[tuple[str, str]]:
    """(setting, value) pairs describing how the test outputs were generated."""
    g = metrics.generation
    of = f" of {metrics.n_test}" if metrics.n_scored != metrics.n_test else ""
    decoding = f"sampling, temperature {g.temperature:g}, top-p {g.top_p:g}" if g.do_sample \
        else "greedy (do_sample false)"
    return [("Test examples scored", f"{metrics.n_scored}{of}"), ("Decoding", decoding),
            ("Max new tokens", str(g.max_new_tokens)), ("Batch size", str(g.batch_size)),
            ("Precision", g.precision), ("Device", g.device), ("Chat template", str(g.chat_template))]


SIGNATURE_LABELS = {"bleu": "BLEU", "chrf": "chrF", "rouge": "ROUGE", "exact_match": "exact match",
                    "length_ratio": "length ratio"}


def text_signature_rows(metrics: GenerationMetrics) -> list[tuple[str, str]]:
    """(metric, signature) pairs: sacrebleu's own signatures and the ROUGE/exact-match settings."""
    return [(SIGNATURE_LABELS.get(k, k), v) for k, v in metrics.text_metric_signatures.items()]


def per_epoch_rows(train_summary: CausalTrainSummary) -> list[dict[str, Any]]:
    """Validation loss and mean token accuracy after each epoch; the best (lowest-loss) epoch is marked."""
    best = min((e.eval_loss for e in train_summary.per_epoch), default=None)
    return [{"epoch": f"{e.epoch:g}", "step": e.step if e.step is not None else "—",
             "eval_loss_s": fmt(e.eval_loss, 4), "token_accuracy_s": fmt(e.eval_mean_token_accuracy),
             "best": e.eval_loss == best} for e in train_summary.per_epoch]


def _clip(text: str, limit: int) -> tuple[str, bool]:
    """Text cut to about `limit` characters, keeping its head and tail (the end of a prompt often matters)."""
    if len(text) <= limit:
        return text, False
    head = int(limit * 0.7)
    tail = max(limit - head - 3, 0)
    return f"{text[:head].rstrip()} … {text[len(text) - tail:].lstrip()}" if tail else text[:head] + " …", True


def _as_text(value: str | list[dict[str, str]]) -> str:
    """A prompt or output as plain text; chat prompts (lists of {role, content}) become 'role: content' lines."""
    if isinstance(value, str):
        return value
    return "\n".join(f"{m['role']}: {m['content']}" for m in value)


def example_rows(examples: list[dict[str, Any]] | None, *, prompt_chars: int = 400,
                 text_chars: int = 600) -> list[dict[str, Any]]:
    """Display rows for example generations (raw text; the templates escape it).

    `examples` items are {"id", "prompt", "references", "outputs": {model: {"prediction", "chrf", "rougeL"}}},
    as `model_card.load_examples` returns them, fine-tuned model first; a score is None where that metric was
    not computed.
    """
    rows = []
    for ex in examples or []:
        prompt, prompt_cut = _clip(_as_text(ex["prompt"]), prompt_chars)
        refs = [_as_text(r) for r in ex["references"]]
        reference, ref_cut = _clip(refs[0], text_chars) if refs else ("", False)
        outputs = []
        for model, out in ex["outputs"].items():
            text, cut = _clip(_as_text(out["prediction"]), text_chars)
            outputs.append({"model": model, "text": text, "truncated": cut,
                            "chrf_s": fmt(out["chrf"], 1), "rougeL_s": fmt(out["rougeL"])})
        rows.append({"id": str(ex["id"]), "prompt": prompt, "prompt_truncated": prompt_cut,
                     "reference": reference, "reference_truncated": ref_cut, "more_references": max(len(refs) - 1, 0),
                     "outputs": outputs})
    return rows
