"""report.html: the run's front page, one self-contained file that opens offline.

Plots are inlined SVG, CSS is inline, there are no scripts, fonts or external URLs. Every piece of
user-provided text goes through jinja2 autoescaping; only the SVGs we generate are marked safe.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from tunewise.recipe import Recipe
from tunewise.release import plots, tables
from tunewise.release.model_card import generation_context, hub_base_model, template_env, training_rows

# generation and chat: text scores on 0-100 and on 0-1 get separate forest plots (one axis would squash one group)
FOREST_GROUPS = (("bleu", "chrf"), ("rouge1", "rouge2", "rougeL", "exact_match"))


def inline_svg(svg: str) -> Markup:
    """Drop the XML prolog and DOCTYPE (invalid inside HTML) and keep the <svg> element."""
    start = svg.find("<svg")
    return Markup(svg[start:] if start >= 0 else "")


def _metrics_subset(metrics: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """metrics.json restricted to the scores in `names` (for one forest plot)."""
    models = {}
    for m, info in (metrics.get("models") or {}).items():
        scores = (info or {}).get("metrics") or {}
        models[m] = {**(info or {}), "metrics": {k: v for k, v in scores.items() if k in names}}
    return {**metrics, "models": models, "n_test": metrics.get("n_scored", metrics.get("n_test"))}


def render_generation_plots(metrics: dict[str, Any], train_log: list[dict[str, Any]]) -> dict[str, str]:
    """Generation and chat: training curves and one CI forest per score scale (0-100, 0-1)."""
    out = {"loss_curves": plots.loss_curves(train_log)}
    n = metrics.get("n_scored", metrics.get("n_test"))
    for names, key, scale in zip(FOREST_GROUPS, ("ci_forest_100", "ci_forest_unit"), ("0–100", "0–1")):
        subset = _metrics_subset(metrics, names)
        if any((info or {}).get("metrics") for info in subset["models"].values()):
            labels = ", ".join(tables.metric_label(k) for k in names)
            out[key] = plots.ci_forest(subset, salt=key.replace("_", "-"),
                                       title=f"{labels} ({scale}) with {tables.pct(_confidence(metrics))} "
                                             f"bootstrap CIs" + (f" (n = {n})" if n else ""))
    return out


def _confidence(metrics: dict[str, Any]) -> float:
    for info in (metrics.get("models") or {}).values():
        for r in ((info or {}).get("metrics") or {}).values():
            if r and isinstance(r.get("confidence"), (int, float)):
                return r["confidence"]
    return 0.95


def render_plots(metrics: dict[str, Any], train_log: list[dict[str, Any]],
                 data_summary: dict[str, Any]) -> dict[str, str]:
    """The four SVGs by name (classification); the card stage may also write them as files."""
    if tables.is_causal(metrics):
        return render_generation_plots(metrics, train_log)
    ft = (metrics.get("models") or {}).get(tables.FINE_TUNED) or {}
    cal = ft.get("calibration") or {}
    return {
        "loss_curves": plots.loss_curves(train_log),
        "confusion_matrix": plots.confusion_matrix(tables.labels_of(metrics, data_summary),
                                                   metrics.get("confusion_matrix") or []),
        "ci_forest": plots.ci_forest(metrics),
        "reliability_diagram": plots.reliability_diagram(cal.get("bins") or [], cal.get("ece")),
    }


def render_report(recipe: Recipe, metrics: dict[str, Any], train_log: list[dict[str, Any]],
                  train_summary: dict[str, Any], data_summary: dict[str, Any], card_markdown: str, *,
                  examples: list[dict[str, Any]] | None = None, audit: dict[str, Any] | None = None,
                  audit_plots: list[str] | None = None) -> str:
    """The full HTML page as a string. `examples`: generation and chat example outputs (`load_examples`)."""
    svgs = {name: inline_svg(svg) for name, svg in render_plots(metrics, train_log, data_summary).items()}
    splits = tables.split_rows(data_summary, recipe)
    labels = tables.labels_of(metrics, data_summary)
    hub = hub_base_model(recipe.model.base)
    ctx = {
        "recipe": recipe,
        "run_id": f"{recipe.name}-{recipe.fingerprint()}",
        "model_name": recipe.card.model_name or recipe.name,
        "base_model": recipe.model.base + (f" ({hub})" if hub and hub != recipe.model.base else ""),
        "n_test": metrics.get("n_test", "—"),
        "n_labels": len(labels),
        "headline": tables.headline(metrics),
        "train_summary": train_summary,
        "train_seconds": tables.fmt(train_summary.get("train_seconds"), 1),
        "plots": svgs,
        "metric_rows": tables.metric_rows(metrics),
        "comparisons": tables.comparison_rows(metrics),
        "calibration": tables.calibration_rows(metrics),
        "per_class": tables.per_class_rows(metrics),
        "slices": tables.slice_rows(metrics),
        "splits": splits,
        "data_warnings": tables.data_warnings(splits),
        "training": training_rows(recipe, train_summary, markdown=False),
        "signature": metrics.get("signature") or "(no signature recorded)",
        "fingerprint": recipe.fingerprint(),
        "card_markdown": card_markdown,
        "model_descriptions": [(m, (metrics["models"][m] or {}).get("description")) for m in tables.model_order(metrics)
                               if (metrics["models"][m] or {}).get("description")],
        **generation_context(recipe, metrics, train_summary, examples, prompt_chars=1500, text_chars=1500),
        "audit": audit,
        "audit_plots": [inline_svg(svg) for svg in (audit_plots or [])],
    }
    return template_env(autoescape=True).get_template("report.html.j2").render(**ctx)
