"""report.html: the run's front page, one self-contained file that opens offline.

Plots are inlined SVG, CSS is inline, there are no scripts, fonts or external URLs. Every piece of
user-provided text goes through jinja2 autoescaping; only the SVGs we generate are marked safe.
"""

from __future__ import annotations

from typing import Any

from tunewise.artifacts.data import DataSummary
from tunewise.artifacts.metrics import Metrics
from tunewise.artifacts.train import TrainSummary
from tunewise.card import governance, tables
from tunewise.card.plots import ci_forest
from tunewise.card.model_card import card_context, hub_base_model, render, template_env, training_rows
from tunewise.card.sections import sections_for
from tunewise.kit.html import inline_svg
from tunewise.recipe import Recipe


def render_plots(recipe: Recipe, metrics: Metrics, train_log: list[dict[str, Any]]) -> dict[str, str]:
    """The report's SVGs by name, from the task's card sections."""
    return {name: svg for section in sections_for(recipe) for name, svg in section.plots(metrics, train_log).items()}


def render_report(recipe: Recipe, metrics: Metrics, train_log: list[dict[str, Any]], train_summary: TrainSummary,
                  data_summary: DataSummary, card_markdown: str, *, examples: list[dict[str, Any]] | None = None,
                  audit: dict[str, Any] | None = None, audit_plots: list[str] | None = None,
                  gov: dict[str, Any] | None = None) -> str:
    """The full HTML page as a string. `examples`: example outputs for tasks with prompts (`load_examples`).
    `gov`: the card stage's `governance_context` (gate, cost, governance tables, probe sections)."""
    hub = hub_base_model(recipe.model.base)
    ctx = card_context(recipe, metrics, train_summary, data_summary, examples, prompt_chars=1500, text_chars=1500,
                       audit=audit, gov=gov)
    plots = render_plots(recipe, metrics, train_log)
    gaps = governance.gap_forest_rows(metrics)
    if gaps:
        plots["slice_gaps"] = ci_forest(gaps, salt="slice-gaps",
                                        title=f"Largest slice gap per field with {ctx['slice_conf']} bootstrap CIs "
                                              f"(0–1 scale)")
    ctx.update({
        "run_id": f"{recipe.name}-{recipe.fingerprint()}",
        "base_model": ctx["base_shown"] + (f" ({hub})" if hub and hub != recipe.model.base else ""),
        "train_summary": train_summary,
        "train_seconds": tables.fmt(train_summary.train_seconds, 1),
        "plots": {name: inline_svg(svg) for name, svg in plots.items()},
        "training": training_rows(recipe, train_summary, markdown=False),
        "card_markdown": card_markdown,
        "audit": audit,
        "audit_plots": [inline_svg(svg) for svg in (audit_plots or [])],
    })
    return render(template_env(autoescape=True), "report", "html", recipe, ctx)
