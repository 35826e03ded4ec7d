"""The model card: Hugging Face model-index metadata plus a markdown body rendered from the run's evidence.

The YAML header uses huggingface_hub's own ModelCardData/EvalResult so the hub (and `ModelCard.load`)
reads our numbers; the body is a jinja2 template so wording changes do not touch code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData

import tunewise
from tunewise.recipe import Recipe
from tunewise.release import tables

TEMPLATES = Path(__file__).resolve().parent / "templates"
BUILTIN_HUB_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2",
                   "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}
# tunewise metric key -> (model-index metric type, config, display name)
HUB_METRICS = {"accuracy": ("accuracy", None, "Accuracy"), "macro_f1": ("f1", "macro", "Macro F1"),
               "weighted_f1": ("f1", "weighted", "Weighted F1"), "micro_f1": ("f1", "micro", "Micro F1")}
LOW_F1 = 0.8
SMALL_TEST = 1000
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def build_model_card(recipe: Recipe, metrics: dict[str, Any], train_summary: dict[str, Any],
                     data_summary: dict[str, Any], *, datacard_path: str | None = None) -> ModelCard:
    """Build the card; `str(card)` is the MODEL_CARD.md text (YAML header + markdown body)."""
    model_name = recipe.card.model_name or recipe.name
    card_data = ModelCardData(
        model_name=model_name,
        language=list(recipe.card.language),
        license=recipe.card.license,
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=["tunewise", "text-classification"],
        base_model=hub_base_model(recipe.model.base),
        datasets=hub_datasets(recipe) or None,
        metrics=sorted({HUB_METRICS.get(k, (k,))[0] for k in _ft_metrics(metrics)}) or None,
        eval_results=eval_results(recipe, metrics, data_summary) or None,
    )
    body = render_card_body(recipe, metrics, train_summary, data_summary, datacard_path=datacard_path)
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}")


def hub_base_model(base: str) -> str | None:
    """The hub id of the base model, or None for a local folder/file (which the hub cannot link)."""
    if base in BUILTIN_HUB_IDS:
        return BUILTIN_HUB_IDS[base]
    if base.startswith((".", "/", "~")) or base.endswith(".gguf") or Path(base).expanduser().exists():
        return None
    return base if _HUB_ID.fullmatch(base) else None


def hub_datasets(recipe: Recipe) -> list[str]:
    """Hub dataset ids named as `hf:NAME[:SPLIT]` in the recipe; local files have none."""
    out: list[str] = []
    for split in ("train", "validation", "test"):
        f = getattr(recipe.data, split)
        if f is not None and f.path.startswith("hf:"):
            name = f.path[3:].split(":")[0]
            if name and name not in out:
                out.append(name)
    return out


def _ft_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return ((metrics.get("models") or {}).get(tables.FINE_TUNED) or {}).get("metrics") or {}


def _test_dataset(recipe: Recipe, data_summary: dict[str, Any]) -> tuple[str, str]:
    """(dataset_type, dataset_name) for the model-index: the hub id when the test data came from the hub."""
    test = recipe.data.test or recipe.data.train  # test is carved from train when no test file is given
    if test.path.startswith("hf:"):
        name = test.path[3:].split(":")[0]
        return name, name
    info = (data_summary.get("splits") or {}).get("test") or {}
    file_name = Path(info.get("file") or test.path).name
    carved = " carved from it" if recipe.data.test is None or info.get("carved_from") else ""
    return "local", f"{file_name} (held-out test split{carved})"


def eval_results(recipe: Recipe, metrics: dict[str, Any], data_summary: dict[str, Any]) -> list[EvalResult]:
    """The fine-tuned model's test metrics in model-index form (point values; CIs are in the body)."""
    dataset_type, dataset_name = _test_dataset(recipe, data_summary)
    out = []
    for key, r in _ft_metrics(metrics).items():
        value = (r or {}).get("value")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        metric_type, config, display = HUB_METRICS.get(key, (key, None, key))
        out.append(EvalResult(task_type="text-classification", task_name="Text Classification",
                              dataset_type=dataset_type, dataset_name=dataset_name, dataset_split="test",
                              metric_type=metric_type, metric_name=display, metric_config=config,
                              metric_value=round(float(value), 4), verified=False))
    return out


# ---------------------------------------------------------------- body


def _md_cell(value: Any) -> str:
    """Table-cell safe text: a `|` or a newline would break the markdown table."""
    return " ".join(str(value).split()).replace("|", r"\|")


def template_env(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=autoescape,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["md"] = _md_cell
    env.filters["num"] = tables.fmt
    return env


def auto_limitations(metrics: dict[str, Any], split_rows: list[dict[str, Any]]) -> list[str]:
    """Limitations that follow from the evidence itself, so nobody has to remember to write them."""
    out = []
    n_test = metrics.get("n_test")
    acc = _ft_metrics(metrics).get("accuracy") or {}
    if isinstance(n_test, int) and n_test < SMALL_TEST:
        width = ""
        if isinstance(acc.get("ci_low"), (int, float)) and isinstance(acc.get("ci_high"), (int, float)):
            width = (f"; the fine-tuned model's accuracy interval is {acc['ci_high'] - acc['ci_low']:.3f} wide "
                     f"({tables.fmt(acc['ci_low'])}–{tables.fmt(acc['ci_high'])})")
        out.append(f"The test set is small ({n_test} examples, under {SMALL_TEST}), so the confidence intervals "
                   f"are wide{width}. Small differences between models cannot be resolved.")
    per_class = tables.per_class_rows(metrics)
    weak = [r for r in per_class if isinstance(r["f1"], (int, float)) and r["f1"] < LOW_F1]
    if weak:
        shown = ", ".join(f"{r['label']} ({r['f1_s']})" for r in weak[:12])
        more = f", and {len(weak) - 12} more" if len(weak) > 12 else ""
        out.append(f"{len(weak)} of {len(per_class)} classes have a test F1 below {LOW_F1:.2f}: {shown}{more}. "
                   "Expect more errors on these.")
    for c in tables.comparison_rows(metrics):
        if c["model"] == tables.FINE_TUNED and not c["significant"] and c["diff"] is not None:
            out.append(f"On {c['metric_label']}, the fine-tuned model cannot be told apart from the "
                       f"{c['baseline']} baseline at the {c['confidence']} level (difference {c['diff_s']}, "
                       f"CI {c['ci_s']}).")
    out += tables.data_warnings(split_rows)
    return out


def training_rows(recipe: Recipe, train_summary: dict[str, Any], *, markdown: bool = True) -> list[tuple[str, str]]:
    """(setting, value) pairs for the training-procedure table; plain text when markdown=False (the report)."""
    ts = train_summary
    t = recipe.train
    hub = hub_base_model(recipe.model.base)
    base = f"`{recipe.model.base}`" if markdown else recipe.model.base
    if hub and hub != recipe.model.base:
        base += f" ([{hub}](https://huggingface.co/{hub}))" if markdown else f" ({hub})"
    params = ts.get("parameters")
    best = ts.get("best_metric") or {}
    best_s = ts.get("best_checkpoint") or "—"
    if best.get("name") is not None:
        best_s += f" (validation {tables.metric_label(best['name'])} {tables.fmt(best.get('value'))})"
    epochs = f"{ts.get('epochs_run', '—')} of {t.epochs:g} planned"
    if ts.get("early_stopped"):
        epochs += " (stopped early)"
    speed = "—"
    if ts.get("train_seconds") is not None:
        speed = f"{tables.fmt(ts.get('train_seconds'), 1)} s"
        if ts.get("train_examples_per_second") is not None:
            speed += f", {tables.fmt(ts['train_examples_per_second'], 1)} examples/s"
    return [
        ("Base model", base),
        ("Parameters", f"{params:,}" if isinstance(params, int) else "—"),
        ("Method", str(ts.get("method", "—"))),
        ("Precision", str(ts.get("precision", t.precision))),
        ("Epochs", epochs),
        ("Learning rate", f"{t.lr:g} (AdamW, linear decay, warm-up {t.warmup_fraction:g} of steps)"),
        ("Batch size", f"{t.batch_size} (evaluation {t.eval_batch_size})"),
        ("Weight decay", f"{t.weight_decay:g}"),
        ("Max length", f"{recipe.model.max_length} tokens"),
        ("Seed", str(recipe.seed)),
        ("Hardware", str(ts.get("device", "—"))),
        ("Training examples", str(ts.get("train_examples", "—"))),
        ("Training time, throughput", speed),
        ("Best checkpoint", best_s),
    ]


def render_card_body(recipe: Recipe, metrics: dict[str, Any], train_summary: dict[str, Any],
                     data_summary: dict[str, Any], *, datacard_path: str | None = None) -> str:
    """The markdown body (everything below the YAML header)."""
    splits = tables.split_rows(data_summary, recipe)
    labels = tables.labels_of(metrics, data_summary)
    run_dir = f"{recipe.output_dir}/{recipe.name}-{recipe.fingerprint()}"
    ctx = {
        "recipe": recipe,
        "model_name": recipe.card.model_name or recipe.name,
        "base_hub": hub_base_model(recipe.model.base),
        "labels": labels,
        "n_test": metrics.get("n_test", "—"),
        "headline": tables.headline(metrics),
        "train_examples": train_summary.get("train_examples"),
        "splits": splits,
        "data_warnings": tables.data_warnings(splits),
        "datacard_path": datacard_path,
        "training": training_rows(recipe, train_summary),
        "metric_rows": tables.metric_rows(metrics),
        "model_descriptions": [(m, (metrics["models"][m] or {}).get("description")) for m in tables.model_order(metrics)
                               if (metrics["models"][m] or {}).get("description")],
        "comparisons": tables.comparison_rows(metrics),
        "calibration": tables.calibration_rows(metrics),
        "per_class": tables.per_class_rows(metrics),
        "slices": tables.slice_rows(metrics),
        "bootstrap": _bootstrap_words(metrics),
        "limitations": list(recipe.card.limitations),
        "auto_limitations": auto_limitations(metrics, splits),
        "signature": metrics.get("signature") or "(no signature recorded)",
        "fingerprint": recipe.fingerprint(),
        "run_dir": run_dir,
        "version": tunewise.__version__,
        "example_label": labels[0] if labels else "LABEL",
    }
    return template_env(autoescape=False).get_template("model_card.md.j2").render(**ctx)


def _bootstrap_words(metrics: dict[str, Any]) -> str:
    rows = tables.metric_rows(metrics)
    if not rows:
        return ""
    r = rows[0]
    n = f"{r['n_resamples']} " if r["n_resamples"] else ""
    method = f" {r['method']}" if r["method"] else ""
    return f"Intervals are {r['confidence']}{method} bootstrap intervals over {n}resamples of the test set."
