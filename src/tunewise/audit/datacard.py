"""audit/datacard.md: a datasheet for the dataset, after Gebru et al., "Datasheets for Datasets" (CACM 2021).

Every answer comes from the recipe, the data stage's summary.json or the audit's own statistics; where none of
them knows (who funded the data, how consent was obtained) the card says "not stated in the recipe" instead of
guessing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

import tunewise
from tunewise.artifacts.data import DataSummary
from tunewise.artifacts.findings import CHECK_TITLES
from tunewise.audit.pii import KIND_WORDS
from tunewise.recipe import Recipe
from tunewise.tasks import task_for

TEMPLATES = Path(__file__).resolve().parent / "templates"
NOT_STATED = "_Not stated in the recipe._"
# what a row is, in the card's words: by task name, since generation and chat share one Task implementation
TASK_WORDS = {
    "classification": "a text and its label (text classification)",
    "generation": "a prompt and the completion the model should learn to write (generation)",
    "chat": "a conversation in OpenAI messages format, whose assistant turns the model learns (chat)",
}


def _md(value: Any) -> str:
    return " ".join(str(value).split()).replace("|", r"\|")


def render_datacard(recipe: Recipe, data_summary: DataSummary, doc: dict[str, Any]) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=False, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["md"] = _md
    env.filters["sentence"] = lambda text: text[:1].upper() + text[1:]
    stats = doc["stats"]
    splits = []
    for name, s in stats["splits"].items():
        info = data_summary.splits[name]
        facts = data_summary.source_of(name)
        splits.append({
            "name": name, "rows": s["rows"], "file": Path(facts.path).name,
            "carved_from": info.carved_from, "sha256": (facts.sha256 or "")[:12] or "—",
            "quarantined": info.quarantined, "length": s["length"], "pii_rows": s["pii_rows"],
            "pii_by_kind": s["pii_by_kind"], "duplicates": s["exact_duplicates"], "near_empty": s["near_empty"],
            "label_counts": s["label_counts"],
        })
    findings = doc["findings"]
    by_check = doc["summary"]["by_check"]
    labels = list((splits[0]["label_counts"] or {}).keys()) if splits else []
    pii_kinds = sorted({k for s in splits for k in s["pii_by_kind"]})
    ctx = {
        "recipe": recipe,
        "task": task_for(recipe),  # the facts that decide which sentences apply (has_prompts)
        "name": recipe.card.model_name or recipe.name,
        "task_words": TASK_WORDS[recipe.task],
        "files": [{"split": k, **v.model_dump(), "file": Path(v.path).name} for k, v in data_summary.files.items()],
        "splits": splits,
        "labels": labels,
        "findings": findings,
        "of": lambda check: [f for f in findings if f["check"] == check],
        "by_check": by_check,
        "titles": CHECK_TITLES,
        "summary": doc["summary"],
        "policy": doc["policy"],
        "stats": stats,
        "pii_kinds": pii_kinds,
        "pii_words": KIND_WORDS,
        "data_quarantined": stats["data_quarantined"],
        "carved": data_summary.carved,
        "on_error": data_summary.on_error,
        "signature": doc["signature"],
        "version": tunewise.__version__,
        "not_stated": NOT_STATED,
        "run_id": f"{recipe.name}-{recipe.fingerprint()}",
    }
    return env.get_template("datacard.md.j2").render(**ctx)
