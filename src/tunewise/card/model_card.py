"""The model card: Hugging Face model-index metadata plus a markdown body rendered from the run's evidence.

The YAML header uses huggingface_hub's own ModelCardData/EvalResult so the hub (and `ModelCard.load`)
reads our numbers; the body is a jinja2 template so wording changes do not touch code.
"""

from __future__ import annotations

import html
import json
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
               "weighted_f1": ("f1", "weighted", "Weighted F1"), "micro_f1": ("f1", "micro", "Micro F1"),
               # generation and chat: sacrebleu BLEU/chrF (0-100), rouge-score F-measure (0-1)
               "bleu": ("bleu", None, "BLEU"), "chrf": ("chrf", None, "chrF"),
               "rouge1": ("rouge", "rouge1", "ROUGE-1"), "rouge2": ("rouge", "rouge2", "ROUGE-2"),
               "rougeL": ("rouge", "rougeL", "ROUGE-L"), "exact_match": ("exact_match", None, "Exact match")}
# scores kept out of the model-index: a diagnostic, not a quality metric (it stays in the body's tables)
HUB_SKIP = {"length_ratio"}
HUB_TASK_NAMES = {"text-classification": "Text Classification", "text-generation": "Text Generation",
                  "summarization": "Summarization", "translation": "Translation",
                  "question-answering": "Question Answering"}
EXAMPLES_SHOWN = 5
LOW_F1 = 0.8
SMALL_TEST = 1000
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def build_model_card(recipe: Recipe, metrics: dict[str, Any], train_summary: dict[str, Any],
                     data_summary: dict[str, Any], *, datacard_path: str | None = None,
                     examples: list[dict[str, Any]] | None = None, audit: dict[str, Any] | None = None) -> ModelCard:
    """Build the card; `str(card)` is the MODEL_CARD.md text (YAML header + markdown body).

    `examples` (generation and chat): example generations as `load_examples` returns them.
    """
    model_name = recipe.card.model_name or recipe.name
    causal = tables.is_causal(metrics)
    pipeline_tag = "text-generation" if causal else "text-classification"
    tags = ["tunewise", pipeline_tag]
    if causal:
        task_type = hub_task_type(recipe, metrics)
        tags += [t for t in (task_type, recipe.task) if t not in tags]
        if (train_summary.get("method") or train_summary.get("finetune")) == "lora":
            tags += ["lora", "peft"]
    card_data = ModelCardData(
        model_name=model_name,
        language=list(recipe.card.language),
        license=recipe.card.license,
        library_name="peft" if causal and (train_summary.get("method") or train_summary.get("finetune")) == "lora"
        else "transformers",
        pipeline_tag=pipeline_tag,
        tags=tags,
        base_model=hub_base_model(recipe.model.base),
        datasets=hub_datasets(recipe) or None,
        metrics=sorted({HUB_METRICS.get(k, (k,))[0] for k in _ft_metrics(metrics) if k not in HUB_SKIP}) or None,
        eval_results=eval_results(recipe, metrics, data_summary) or None,
    )
    body = render_card_body(recipe, metrics, train_summary, data_summary, datacard_path=datacard_path,
                            examples=examples, audit=audit)
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


def hub_task_type(recipe: Recipe, metrics: dict[str, Any]) -> str:
    """The model-index task type: text-classification, or for generation/chat `card.task_type` (default
    text-generation)."""
    if not tables.is_causal(metrics):
        return "text-classification"
    return recipe.card.task_type or "text-generation"


def eval_results(recipe: Recipe, metrics: dict[str, Any], data_summary: dict[str, Any]) -> list[EvalResult]:
    """The fine-tuned model's test metrics in model-index form (point values; CIs are in the body)."""
    dataset_type, dataset_name = _test_dataset(recipe, data_summary)
    task_type = hub_task_type(recipe, metrics)
    out = []
    for key, r in _ft_metrics(metrics).items():
        value = (r or {}).get("value")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or key in HUB_SKIP:
            continue
        metric_type, config, display = HUB_METRICS.get(key, (key, None, key))
        out.append(EvalResult(task_type=task_type, task_name=HUB_TASK_NAMES.get(task_type, task_type),
                              dataset_type=dataset_type, dataset_name=dataset_name, dataset_split="test",
                              metric_type=metric_type, metric_name=display, metric_config=config,
                              metric_value=round(float(value), 4), verified=False))
    return out


# ---------------------------------------------------------------- body


def _md_cell(value: Any) -> str:
    """Table-cell safe text: a `|` or a newline would break the markdown table."""
    return " ".join(str(value).split()).replace("|", r"\|")


def _md_text(value: Any) -> str:
    """Free text (a prompt, a model output) shown literally in a markdown table cell.

    HTML is escaped (so an output cannot inject tags into the hub's rendering), markdown specials are
    backslash-escaped, and line breaks become <br> so dialogue turns stay apart.
    """
    lines = [" ".join(line.split()) for line in str(value).splitlines()]
    escaped = [re.sub(r"([\\`*_\[\]|~])", r"\\\1", html.escape(line, quote=False)) for line in lines if line]
    return "<br>".join(escaped)


def template_env(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=autoescape,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["md"] = _md_cell
    env.filters["mdtext"] = _md_text
    env.filters["num"] = tables.fmt
    return env


def auto_limitations(metrics: dict[str, Any], split_rows: list[dict[str, Any]],
                     recipe: Recipe | None = None) -> list[str]:
    """Limitations that follow from the evidence itself, so nobody has to remember to write them."""
    if tables.is_causal(metrics):
        return generation_limitations(metrics, split_rows, recipe)
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


def generation_limitations(metrics: dict[str, Any], split_rows: list[dict[str, Any]],
                           recipe: Recipe | None = None) -> list[str]:
    """auto_limitations for generation and chat: sample size, what overlap metrics miss, language, ties."""
    out = []
    n_test = metrics.get("n_test")
    n_scored = metrics.get("n_scored", n_test)
    ft = _ft_metrics(metrics)
    if isinstance(n_scored, int) and isinstance(n_test, int) and n_scored < n_test:
        out.append(f"Only the first {n_scored} of {n_test} test examples were generated and scored "
                   "(`evaluate.max_examples`); the intervals describe that subset.")
    if isinstance(n_scored, int) and n_scored < SMALL_TEST:
        head = next((k for k in ("rougeL", "chrf", "bleu") if isinstance((ft.get(k) or {}).get("ci_low"), (int, float))
                     and isinstance((ft.get(k) or {}).get("ci_high"), (int, float))), None)
        width = ""
        if head:
            r, d = ft[head], tables.digits(head)
            width = (f"; the fine-tuned model's {tables.metric_label(head)} interval is "
                     f"{r['ci_high'] - r['ci_low']:.{d}f} wide "
                     f"({tables.fmt(r['ci_low'], d)}–{tables.fmt(r['ci_high'], d)})")
        out.append(f"The test set is small ({n_scored} scored examples, under {SMALL_TEST}), so the confidence "
                   f"intervals are wide{width}. Small differences between models cannot be resolved.")
    out.append("BLEU, chrF and ROUGE measure word and character overlap with the reference texts. They do not "
               "measure factual accuracy, faithfulness to the input, safety or helpfulness: read the example "
               "generations, and have people rate outputs before relying on the model.")
    languages = [lang for lang in (recipe.card.language if recipe is not None else []) if lang != "en"]
    if languages and any(k in ft for k in ("rouge1", "rouge2", "rougeL")):
        out.append(f"ROUGE (rouge-score) keeps only the letters a–z and digits, so for {', '.join(languages)} "
                   "text it ignores accented and non-Latin characters; prefer chrF there.")
    for c in tables.comparison_rows(metrics):
        if c["model"] == tables.FINE_TUNED and not c["significant"] and c["diff"] is not None \
                and c["metric"] != "length_ratio":
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
    if ts.get("trained_tokens") is not None:  # causal LMs count tokens, not examples
        speed = f"{tables.fmt(ts.get('train_seconds'), 1)} s" if ts.get("train_seconds") is not None else "—"
        if ts.get("trained_tokens_per_second") is not None:
            speed += f", {tables.fmt(ts['trained_tokens_per_second'], 1)} trained tokens/s"
    method = str(ts.get("method") or ts.get("finetune") or "—")
    lora = ts.get("lora") or {}
    if method == "lora" and lora:
        targets = lora.get("target_modules")
        targets = ", ".join(targets) if isinstance(targets, list) else targets
        method += (f" (r {lora.get('r')}, alpha {lora.get('alpha')}, dropout {lora.get('dropout')}, "
                   f"modules {targets})")
    trainable = ts.get("trainable_parameters")
    params_s = f"{params:,}" if isinstance(params, int) else "—"
    if isinstance(trainable, int) and isinstance(params, int) and trainable != params:
        params_s += f" ({trainable:,} trained, {trainable / params:.2%})"
    rows = [
        ("Base model", base),
        ("Parameters", params_s),
        ("Method", method),
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
    if ts.get("trained_tokens") is not None:
        rows.insert(-2, ("Trained tokens", f"{ts['trained_tokens']:,}" if isinstance(ts["trained_tokens"], int)
                         else str(ts["trained_tokens"])))
        if ts.get("packing") is not None:
            rows.insert(-2, ("Packing", "yes" if ts["packing"] else "no"))
    return rows


def render_card_body(recipe: Recipe, metrics: dict[str, Any], train_summary: dict[str, Any],
                     data_summary: dict[str, Any], *, datacard_path: str | None = None,
                     examples: list[dict[str, Any]] | None = None, audit: dict[str, Any] | None = None) -> str:
    """The markdown body (everything below the YAML header). `audit`: `tunewise.audit.findings.card_summary`."""
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
        "audit": audit,
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
        "auto_limitations": auto_limitations(metrics, splits, recipe),
        "signature": metrics.get("signature") or "(no signature recorded)",
        "fingerprint": recipe.fingerprint(),
        "run_dir": run_dir,
        "version": tunewise.__version__,
        "example_label": labels[0] if labels else "LABEL",
        **generation_context(recipe, metrics, train_summary, examples),
    }
    return template_env(autoescape=False).get_template("model_card.md.j2").render(**ctx)


def generation_context(recipe: Recipe, metrics: dict[str, Any], train_summary: dict[str, Any],
                       examples: list[dict[str, Any]] | None, *, prompt_chars: int = 300,
                       text_chars: int = 400) -> dict[str, Any]:
    """Template variables for generation and chat runs; harmless (empty) for classification.

    Example texts are cut to `prompt_chars` / `text_chars` characters (head and tail kept).
    """
    causal = tables.is_causal(metrics)
    method = train_summary.get("method") or train_summary.get("finetune")
    task_type = hub_task_type(recipe, metrics)
    return {
        "causal": causal,
        "task_type": task_type,
        "task_words": ("chat" if recipe.task == "chat" else task_type.replace("-", " ")) if causal else "",
        "finetune_words": {"lora": "LoRA adapters", "full": "full fine-tuning"}.get(method or "", method or ""),
        "lora": method == "lora",
        "n_scored": metrics.get("n_scored", metrics.get("n_test", "—")),
        "generation_table": tables.generation_metric_table(metrics) if causal else {"models": [], "rows": []},
        "generation_settings": tables.generation_settings_rows(metrics) if causal else [],
        "text_signatures": tables.text_signature_rows(metrics) if causal else [],
        "per_epoch": tables.per_epoch_rows(train_summary) if causal else [],
        "examples": tables.example_rows(examples, prompt_chars=prompt_chars, text_chars=text_chars) if causal else [],
        "max_new_tokens": (metrics.get("generation") or {}).get("max_new_tokens", recipe.evaluate.max_new_tokens),
        "mask_preview": (train_summary.get("mask_preview") or []) if causal else [],
    }


def _jsonl_rows(path: Path):
    """The JSON objects of a JSONL file, in order, stopping at the first line that does not parse."""
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                return
            if isinstance(row, dict):
                yield row


def load_examples(run_root: Path, metrics: dict[str, Any], limit: int = EXAMPLES_SHOWN) -> list[dict[str, Any]]:
    """The first `limit` test examples with every model's output, joined by id (generation and chat).

    Reads the predictions files that metrics.json names (paths relative to the run directory; a path that
    leaves the run directory, or a missing or unreadable file, is skipped). Returns
    [{"id", "prompt", "references", "outputs": {model: {"prediction", "chrf", "rougeL"}}}], fine-tuned first.
    """
    root = Path(run_root).resolve()
    models = tables.model_order(metrics)
    infos = metrics.get("models") or {}

    def path_of(model: str) -> Path | None:
        rel = (infos.get(model) or {}).get("predictions")
        if not rel:
            return None
        path = (root / rel).resolve()
        return path if path.is_relative_to(root) and path.is_file() else None

    examples: list[dict[str, Any]] = []
    by_id: dict[str, dict[str, Any]] = {}
    for model in models:
        path = path_of(model)
        if path is None:
            continue
        picking = not examples  # the first readable file (the fine-tuned model's) picks the examples
        wanted = set(by_id)
        for row in _jsonl_rows(path):
            key = str(row.get("id"))
            output = {"prediction": row.get("prediction"), "chrf": row.get("chrf"), "rougeL": row.get("rougeL")}
            if picking:
                if key in by_id:
                    continue
                refs = row.get("references") or ([row["reference"]] if row.get("reference") is not None else [])
                by_id[key] = {"id": row.get("id"), "prompt": row.get("prompt"), "references": refs,
                              "outputs": {model: output}}
                examples.append(by_id[key])
                if len(examples) >= limit:
                    break
            elif key in wanted:
                by_id[key]["outputs"][model] = output
                wanted.discard(key)
                if not wanted:
                    break
    return examples


def _bootstrap_words(metrics: dict[str, Any]) -> str:
    rows = tables.metric_rows(metrics)
    if not rows:
        return ""
    r = rows[0]
    n = f"{r['n_resamples']} " if r["n_resamples"] else ""
    method = f" {r['method']}" if r["method"] else ""
    return f"Intervals are {r['confidence']}{method} bootstrap intervals over {n}resamples of the test set."
