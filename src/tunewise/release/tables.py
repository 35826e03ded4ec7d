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
                 "micro_f1": "micro-F1"}
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
            rows.append({"model": model, "description": info.get("description") or "", "metric": name,
                         "metric_label": metric_label(name), "value": r.get("value"),
                         "ci_low": r.get("ci_low"), "ci_high": r.get("ci_high"),
                         "value_s": fmt(r.get("value")),
                         "ci_s": f"{fmt(r.get('ci_low'))} – {fmt(r.get('ci_high'))}",
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
        if not known:
            words = f"{model} vs {base} on {metric}: no interval was computed."
        else:
            gap = (f"{abs(diff):.3f} {'higher' if diff > 0 else 'lower'} than" if diff else "the same as")
            head = f"{model} scores {gap} {base} on {metric} ({conf} CI {lo:+.3f} to {hi:+.3f})"
            words = (f"{head}; the interval excludes zero, so the difference is significant at the {conf} level."
                     if significant else
                     f"{head}; the interval includes zero, so this test set cannot tell them apart at the "
                     f"{conf} level.")
        rows.append({"model": model, "baseline": base, "metric": c.get("metric", "?"), "metric_label": metric,
                     "diff": diff, "diff_s": fmt(diff, signed=True),
                     "ci_s": f"{fmt(lo, signed=True)} – {fmt(hi, signed=True)}", "confidence": conf,
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
    """Fine-tuned accuracy per slice value, grouped by field; each field's largest gap on its first row."""
    rows = []
    for field, info in (metrics.get("slices") or {}).items():
        gap = (info or {}).get("accuracy_gap")
        for i, (value, v) in enumerate(((info or {}).get("values") or {}).items()):
            acc = (v or {}).get("accuracy") or {}
            rows.append({"field": field, "value": value, "n": (v or {}).get("n", "—"), "accuracy_s": fmt(acc.get("value")),
                         "ci_s": f"{fmt(acc.get('ci_low'))}–{fmt(acc.get('ci_high'))}" if acc.get("ci_low") is not None
                         else "—", "gap_s": fmt(gap) if i == 0 else ""})
    return rows


def headline(metrics: dict[str, Any]) -> dict[str, str]:
    """The fine-tuned model's numbers as 'value (CI lo–hi)' strings, keyed by metric label."""
    ft = ((metrics.get("models") or {}).get(FINE_TUNED) or {}).get("metrics") or {}
    return {metric_label(k): f"{fmt(r.get('value'))} ({pct(r.get('confidence', 0.95))} CI "
                             f"{fmt(r.get('ci_low'))}–{fmt(r.get('ci_high'))})" for k, r in ft.items() if r}


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
