"""report.html: the run's front page, one self-contained file that opens offline.

Plots are inlined SVG, CSS is inline, there are no scripts, fonts or external URLs. Every piece of
user-provided text goes through jinja2 autoescaping; only the SVGs we generate are marked safe.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from tunewise.recipe import Recipe
from tunewise.release import plots, tables
from tunewise.release.model_card import hub_base_model, template_env, training_rows


def inline_svg(svg: str) -> Markup:
    """Drop the XML prolog and DOCTYPE (invalid inside HTML) and keep the <svg> element."""
    start = svg.find("<svg")
    return Markup(svg[start:] if start >= 0 else "")


def render_plots(metrics: dict[str, Any], train_log: list[dict[str, Any]],
                 data_summary: dict[str, Any]) -> dict[str, str]:
    """The four SVGs by name; the card stage may also write them as files."""
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
                  train_summary: dict[str, Any], data_summary: dict[str, Any], card_markdown: str) -> str:
    """The full HTML page as a string."""
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
    }
    return template_env(autoescape=True).get_template("report.html.j2").render(**ctx)
