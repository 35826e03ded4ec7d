"""Rows shared by the model card and the HTML report, built from the JSON the earlier stages write.

Both documents show the same numbers; building the rows once keeps them from drifting apart.
Everything here reads plain dicts defensively: a missing key shows as "—" or "not declared", never a crash.
"""

from __future__ import annotations

import math
from pathlib import PurePath
from typing import Any

from tunewise.recipe import Recipe

FINE_TUNED = "fine_tuned"
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
CAUSAL_TASKS = ("generation", "chat")
SPLIT_ORDER = ("train", "validation", "test")


def fmt(x: Any, digits: int = 3, signed: bool = False) -> str:
    """A number for a table cell; '—' for missing or non-finite values."""
    if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x):
        return "—"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def fmt_p(p: Any) -> str:
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not math.isfinite(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def pct(conf: Any) -> str:
    """0.95 -> '95%'."""
    return f"{conf * 100:g}%" if isinstance(conf, (int, float)) and not isinstance(conf, bool) else "95%"


def metric_label(name: str) -> str:
    return METRIC_LABELS.get(name, name)


def digits(name: str) -> int:
    """Decimals shown for a metric's values and intervals."""
    return METRIC_DIGITS.get(name, 3)


def is_causal(metrics: dict[str, Any]) -> bool:
    """True for the metrics.json of a generation or chat run (text metrics, no labels)."""
    return metrics.get("task") in CAUSAL_TASKS


def model_order(metrics: dict[str, Any]) -> list[str]:
    """The fine-tuned model first, then baselines alphabetically."""
    return sorted(metrics.get("models") or {}, key=lambda m: (m != FINE_TUNED, m))


def metric_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per model x metric with value and CI."""
    rows = []
    models = metrics.get("models") or {}
    for model in model_order(metrics):
        info = models[model] or {}
        for name, r in (info.get("metrics") or {}).items():
            r = r or {}
            d = digits(name)
            rows.append({"model": model, "description": info.get("description") or "", "metric": name,
                         "metric_label": metric_label(name), "value": r.get("value"),
                         "ci_low": r.get("ci_low"), "ci_high": r.get("ci_high"),
                         "value_s": fmt(r.get("value"), d),
                         "ci_s": f"{fmt(r.get('ci_low'), d)} – {fmt(r.get('ci_high'), d)}",
                         "confidence": pct(r.get("confidence", 0.95)), "method": r.get("method") or "",
                         "n_resamples": r.get("n_resamples"), "fine_tuned": model == FINE_TUNED})
    return rows


def comparison_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Paired model-vs-baseline differences, each with a plain-words reading of its CI."""
    rows = []
    for c in metrics.get("comparisons") or []:
        lo, hi, diff = c.get("ci_low"), c.get("ci_high"), c.get("diff")
        conf = pct(c.get("confidence", 0.95))
        known = all(isinstance(v, (int, float)) for v in (lo, hi, diff))
        significant = known and (lo > 0 or hi < 0)
        model, base, metric = c.get("model", FINE_TUNED), c.get("baseline", "?"), metric_label(c.get("metric", "?"))
        d = digits(c.get("metric", "?"))
        if not known:
            words = f"{model} vs {base} on {metric}: no interval was computed."
        else:
            gap = (f"{abs(diff):.{d}f} {'higher' if diff > 0 else 'lower'} than" if diff else "the same as")
            head = f"{model} scores {gap} {base} on {metric} ({conf} CI {lo:+.{d}f} to {hi:+.{d}f})"
            words = (f"{head}; the interval excludes zero, so the difference is significant at the {conf} level."
                     if significant else
                     f"{head}; the interval includes zero, so this test set cannot tell them apart at the "
                     f"{conf} level.")
        rows.append({"model": model, "baseline": base, "metric": c.get("metric", "?"), "metric_label": metric,
                     "diff": diff, "diff_s": fmt(diff, d, signed=True),
                     "ci_s": f"{fmt(lo, d, signed=True)} – {fmt(hi, d, signed=True)}", "confidence": conf,
                     "p_value": c.get("p_value"), "p_s": fmt_p(c.get("p_value")),
                     "significant": significant, "significant_s": "yes" if significant else "no", "words": words})
    return rows


def calibration_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    models = metrics.get("models") or {}
    rows = []
    for model in model_order(metrics):
        cal = (models[model] or {}).get("calibration") or {}
        if cal:
            rows.append({"model": model, "ece": cal.get("ece"), "ece_s": fmt(cal.get("ece")),
                         "brier_s": fmt(cal.get("brier")), "fine_tuned": model == FINE_TUNED})
    return rows


def per_class_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-class precision/recall/F1, worst F1 first (that is where the model fails)."""
    rows = []
    for label, r in (metrics.get("per_class") or {}).items():
        r = r or {}
        f1 = r.get("f1")
        rows.append({"label": label, "f1": f1, "precision_s": fmt(r.get("precision")),
                     "recall_s": fmt(r.get("recall")), "f1_s": fmt(f1), "support": r.get("support", "—")})
    rows.sort(key=lambda r: (r["f1"] if isinstance(r["f1"], (int, float)) else -1.0, r["label"]))
    return rows


def slice_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Fine-tuned score per slice value, grouped by field; each field's largest gap on its first row.

    The score is the one named by the field's `<metric>_gap` key: accuracy for classification (also the
    fallback), e.g. rougeL for generation. `accuracy_s` and `score_s` hold the same formatted value.
    """
    rows = []
    for field, info in (metrics.get("slices") or {}).items():
        info = info or {}
        gap_keys = [k for k in info if k.endswith("_gap")]
        name = gap_keys[0][: -len("_gap")] if gap_keys else "accuracy"
        gap, d = info.get(f"{name}_gap"), digits(name)
        for i, (value, v) in enumerate((info.get("values") or {}).items()):
            acc = (v or {}).get(name) or {}
            score_s = fmt(acc.get("value"), d)
            rows.append({"field": field, "value": value, "n": (v or {}).get("n", "—"), "accuracy_s": score_s,
                         "metric": name, "metric_label": metric_label(name), "score_s": score_s,
                         "ci_s": f"{fmt(acc.get('ci_low'), d)}–{fmt(acc.get('ci_high'), d)}"
                         if acc.get("ci_low") is not None else "—", "gap_s": fmt(gap, d) if i == 0 else ""})
    return rows


def headline(metrics: dict[str, Any]) -> dict[str, str]:
    """The fine-tuned model's numbers as 'value (CI lo–hi)' strings, keyed by metric label."""
    ft = ((metrics.get("models") or {}).get(FINE_TUNED) or {}).get("metrics") or {}
    return {metric_label(k): f"{fmt(r.get('value'), digits(k))} ({pct(r.get('confidence', 0.95))} CI "
                             f"{fmt(r.get('ci_low'), digits(k))}–{fmt(r.get('ci_high'), digits(k))})"
            for k, r in ft.items() if r}


# ---------------------------------------------------------------- data


def _declared(value: Any) -> str:
    if value is None or value == "":
        return NOT_DECLARED
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _recipe_source(recipe: Recipe | None, split: str) -> dict[str, Any]:
    data_file = getattr(recipe.data, split, None) if recipe is not None else None
    return data_file.model_dump() if data_file is not None else {}


def split_rows(data_summary: dict[str, Any], recipe: Recipe | None = None) -> list[dict[str, Any]]:
    """One row per split: file, rows, quarantined, provenance. A carved split inherits its parent's source."""
    splits = data_summary.get("splits") or {}
    sources = data_summary.get("files") or {}
    names = [s for s in SPLIT_ORDER if s in splits] + [s for s in splits if s not in SPLIT_ORDER]
    rows = []
    for split in names:
        info = splits.get(split) or {}
        carved = info.get("carved_from")
        src = sources.get(split) or (sources.get(carved) if carved else None) or \
            _recipe_source(recipe, split) or (_recipe_source(recipe, carved) if carved else {})
        file = info.get("source_file") or src.get("path") or ""
        sha = info.get("sha256") or ""
        rows.append({"split": split, "file": file, "file_name": PurePath(file).name if file else "—",
                     "source_path": src.get("path") or file, "rows": info.get("rows", "—"),
                     "quarantined": info.get("quarantined", 0), "carved_from": carved,
                     "sha256": sha, "sha256_short": sha[:12] if sha else "—",
                     "source": _declared(src.get("source")), "license": _declared(src.get("license")),
                     "personal_data": _declared(src.get("contains_personal_data")),
                     "label_counts": info.get("label_counts") or {}})
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


def labels_of(metrics: dict[str, Any], data_summary: dict[str, Any]) -> list[str]:
    return list(metrics.get("labels") or data_summary.get("labels") or [])


# ---------------------------------------------------------------- generation and chat


def generation_metric_table(metrics: dict[str, Any]) -> dict[str, Any]:
    """Wide table for text metrics: one row per metric, one value + CI cell per model (fine-tuned first)."""
    models = model_order(metrics)
    infos = metrics.get("models") or {}
    names: list[str] = []
    for m in models:
        for name in ((infos[m] or {}).get("metrics") or {}):
            if name not in names:
                names.append(name)
    rows = []
    for name in names:
        d = digits(name)
        cells = []
        for m in models:
            r = ((infos[m] or {}).get("metrics") or {}).get(name) or {}
            lo, hi = r.get("ci_low"), r.get("ci_high")
            cells.append({"model": m, "value_s": fmt(r.get("value"), d),
                          "ci_s": f"{fmt(lo, d)} – {fmt(hi, d)}" if lo is not None and hi is not None else "—"})
        rows.append({"metric": name, "metric_label": metric_label(name), "scale": METRIC_SCALES.get(name, ""),
                     "cells": cells})
    confidence = next((pct(r.get("confidence")) for m in models
                       for r in ((infos[m] or {}).get("metrics") or {}).values()
                       if r and isinstance(r.get("confidence"), (int, float))), "95%")
    return {"models": models, "rows": rows, "confidence": confidence}


def generation_settings_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(setting, value) pairs describing how the test outputs were generated."""
    g = dict(metrics.get("generation") or {})
    rows: list[tuple[str, str]] = []
    n_test, n_scored = metrics.get("n_test"), metrics.get("n_scored", metrics.get("n_test"))
    if n_scored is not None:
        of = f" of {n_test}" if n_test is not None and n_scored != n_test else ""
        rows.append(("Test examples scored", f"{n_scored}{of}"))
    if g:
        sample = g.pop("do_sample", False)
        temperature, top_p = g.pop("temperature", None), g.pop("top_p", None)
        if sample:
            parts = [f"temperature {temperature:g}" if isinstance(temperature, (int, float)) else None,
                     f"top-p {top_p:g}" if isinstance(top_p, (int, float)) else None]
            rows.append(("Decoding", "sampling" + "".join(f", {p}" for p in parts if p)))
        else:
            rows.append(("Decoding", "greedy (do_sample false)"))
        if "max_new_tokens" in g:
            rows.append(("Max new tokens", str(g.pop("max_new_tokens"))))
        if "batch_size" in g:
            rows.append(("Batch size", str(g.pop("batch_size"))))
        rows += [(str(k).replace("_", " ").capitalize(), str(v)) for k, v in g.items()]
    return rows


SIGNATURE_LABELS = {"bleu": "BLEU", "chrf": "chrF", "rouge": "ROUGE", "exact_match": "exact match",
                    "length_ratio": "length ratio"}


def text_signature_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric, signature) pairs: sacrebleu's own signatures and the ROUGE/exact-match settings."""
    sigs = metrics.get("text_metric_signatures") or {}
    return [(SIGNATURE_LABELS.get(k, k), str(v)) for k, v in sigs.items() if v]


def per_epoch_rows(train_summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Validation loss and mean token accuracy after each epoch; the best (lowest-loss) epoch is marked."""
    epochs = [e for e in train_summary.get("per_epoch") or [] if isinstance(e, dict)]
    losses = [e.get("eval_loss") for e in epochs if isinstance(e.get("eval_loss"), (int, float))]
    best = min(losses) if losses else None
    rows = []
    for e in epochs:
        epoch = e.get("epoch")
        rows.append({"epoch": f"{epoch:g}" if isinstance(epoch, (int, float)) else "—",
                     "step": e.get("step") if e.get("step") is not None else "—",
                     "eval_loss_s": fmt(e.get("eval_loss"), 4),
                     "token_accuracy_s": fmt(e.get("eval_mean_token_accuracy")),
                     "best": best is not None and e.get("eval_loss") == best})
    return rows


def _clip(text: str, limit: int) -> tuple[str, bool]:
    """Text cut to about `limit` characters, keeping its head and tail (the end of a prompt often matters)."""
    if len(text) <= limit:
        return text, False
    head = int(limit * 0.7)
    tail = max(limit - head - 3, 0)
    return f"{text[:head].rstrip()} … {text[len(text) - tail:].lstrip()}" if tail else text[:head] + " …", True


def _as_text(value: Any) -> str:
    """A prompt or output as plain text; chat prompts (lists of {role, content}) become 'role: content' lines."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" if isinstance(m, dict) else str(m)
                         for m in value)
    return "" if value is None else str(value)


def example_rows(examples: list[dict[str, Any]] | None, *, prompt_chars: int = 400,
                 text_chars: int = 600) -> list[dict[str, Any]]:
    """Display rows for example generations (raw text; the templates escape it).

    `examples` items are {"id", "prompt", "references", "outputs": {model: {"prediction", "chrf", "rougeL"}}},
    as `model_card.load_examples` returns them, fine-tuned model first.
    """
    rows = []
    for ex in examples or []:
        prompt, prompt_cut = _clip(_as_text(ex.get("prompt")), prompt_chars)
        refs = [_as_text(r) for r in ex.get("references") or []]
        reference, ref_cut = _clip(refs[0], text_chars) if refs else ("", False)
        outputs = []
        for model, out in (ex.get("outputs") or {}).items():
            text, cut = _clip(_as_text((out or {}).get("prediction")), text_chars)
            outputs.append({"model": model, "text": text, "truncated": cut,
                            "chrf_s": fmt((out or {}).get("chrf"), 1), "rougeL_s": fmt((out or {}).get("rougeL"))})
        rows.append({"id": str(ex.get("id", "")), "prompt": prompt, "prompt_truncated": prompt_cut,
                     "reference": reference, "reference_truncated": ref_cut, "more_references": max(len(refs) - 1, 0),
                     "outputs": outputs})
    return rows
