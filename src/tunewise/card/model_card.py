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
from tunewise.artifacts.data import DataSummary
from tunewise.artifacts.metrics import Metrics
from tunewise.artifacts.train import TrainSummary
from tunewise.card import governance, tables
from tunewise.card.sections import sections_for
from tunewise.licences import hub_licence_name, model_licence_note
from tunewise.recipe import Recipe
from tunewise.tasks import task_for

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
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def build_model_card(recipe: Recipe, metrics: Metrics, train_summary: TrainSummary, data_summary: DataSummary,
                     *, datacard_path: str | None = None, examples: list[dict[str, Any]] | None = None,
                     audit: dict[str, Any] | None = None, gov: dict[str, Any] | None = None) -> ModelCard:
    """Build the card; `str(card)` is the card/README.md text (YAML header + markdown body).

    `examples` (tasks with prompts): example generations as `load_examples` returns them. `audit`:
    `tunewise.card.audit.audit_summary`. `gov`: what only the run directory knows (gate verdict, cost, governance
    tables, probe sections, hashes, the recipe's folder), as the card stage's `governance_context` builds it; None
    leaves those sections out.
    """
    task = task_for(recipe)
    sections = sections_for(recipe)
    tags = ["tunewise", task.pipeline_tag]
    for section in sections:
        tags += [t for t in section.hub_tags(recipe) if t not in tags]
    lora = train_summary.method == "lora"
    if lora:
        tags += ["lora", "peft"]
    card_data = ModelCardData(
        model_name=recipe.card.model_name or recipe.name,
        language=list(recipe.card.language),
        license=recipe.card.license,
        license_name=hub_licence_name(recipe.card.license, data_licences(recipe)),
        library_name="peft" if lora else "transformers",  # a LoRA run saves an adapter that peft loads
        pipeline_tag=task.pipeline_tag,
        tags=tags,
        base_model=hub_base_model(recipe.model.base),
        datasets=hub_datasets(recipe) or None,
        metrics=sorted({HUB_METRICS.get(k, (k,))[0] for k in metrics.fine_tuned().metrics if k not in HUB_SKIP})
        or None,
        eval_results=eval_results(recipe, metrics, data_summary) or None,
    )
    body = render_card_body(recipe, metrics, train_summary, data_summary, datacard_path=datacard_path,
                            examples=examples, audit=audit, gov=gov)
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}")


def data_licences(recipe: Recipe) -> dict[str, str | None]:
    return {split: f.license for split in ("train", "validation", "test") if (f := getattr(recipe.data, split))}


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


def _test_dataset(recipe: Recipe, data_summary: DataSummary) -> tuple[str, str]:
    """(dataset_type, dataset_name) for the model-index: the hub id when the test data came from the hub."""
    test = data_summary.splits["test"]  # the data stage always writes a test split (carved from train if need be)
    if test.source_file.startswith("hf:"):
        name = test.source_file[3:].split(":")[0]
        return name, name
    carved = " carved from it" if test.carved_from else ""
    return "local", f"{Path(test.source_file).name} (test split{carved})"


def hub_task_type(recipe: Recipe) -> str:
    """The model-index task type: the first card section's (text-classification; for generation and chat
    `card.task_type`, default text-generation)."""
    return sections_for(recipe)[0].hub_task_type(recipe)


def eval_results(recipe: Recipe, metrics: Metrics, data_summary: DataSummary) -> list[EvalResult]:
    """The fine-tuned model's test metrics in model-index form (point values; CIs are in the body)."""
    dataset_type, dataset_name = _test_dataset(recipe, data_summary)
    task_type = hub_task_type(recipe)
    out = []
    for key, r in metrics.fine_tuned().metrics.items():
        if key in HUB_SKIP:
            continue
        metric_type, config, display = HUB_METRICS.get(key, (key, None, key))
        out.append(EvalResult(task_type=task_type, task_name=HUB_TASK_NAMES.get(task_type, task_type),
                              dataset_type=dataset_type, dataset_name=dataset_name, dataset_split="test",
                              metric_type=metric_type, metric_name=display, metric_config=config,
                              metric_value=round(r.value, 4), verified=False))
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


def auto_limitations(recipe: Recipe, metrics: Metrics, split_rows: list[dict[str, Any]]) -> list[str]:
    """Limitations that follow from the evidence itself, so nobody has to remember to write them."""
    return [item for section in sections_for(recipe) for item in section.limitations(recipe, metrics)] \
        + tables.data_warnings(split_rows)


def training_rows(recipe: Recipe, train_summary: TrainSummary, *, markdown: bool = True) -> list[tuple[str, str]]:
    """(setting, value) pairs for the training-procedure table; plain text when markdown=False (the report)."""
    ts = train_summary
    t = recipe.train
    hub = hub_base_model(recipe.model.base)
    base = f"`{recipe.model.base}`" if markdown else recipe.model.base
    if hub and hub != recipe.model.base:
        base += f" ([{hub}](https://huggingface.co/{hub}))" if markdown else f" ({hub})"
    best_s = ts.best_checkpoint or "—"
    if ts.best_metric is not None:
        best_s += f" (validation {tables.metric_label(ts.best_metric.name)} {tables.fmt(ts.best_metric.value)})"
    epochs = f"{ts.epochs_run} of {t.epochs:g} planned" + (" (stopped early)" if ts.early_stopped else "")
    facts = [section.training_facts(ts) for section in sections_for(recipe)]
    rows = [
        ("Base model", base),
        ("Parameters", facts[0].parameters),
        ("Method", facts[0].method),
        ("Precision", ts.precision),
        ("Epochs", epochs),
        ("Learning rate", f"{t.lr:g} (AdamW, linear decay, warm-up {t.warmup_fraction:g} of steps)"),
        ("Batch size", f"{t.batch_size} (evaluation {t.eval_batch_size})"),
        ("Weight decay", f"{t.weight_decay:g}"),
        ("Max length", f"{recipe.model.max_length} tokens"),
        ("Seed", str(recipe.seed)),
        ("Hardware", ts.device),
        ("Training examples", str(ts.train_examples)),
        *(row for f in facts for row in f.extra_rows),
        ("Training time, throughput", f"{tables.fmt(ts.train_seconds, 1)} s" + "".join(f.throughput for f in facts)),
        ("Best checkpoint", best_s),
    ]
    return rows


def _test_words(metrics: Metrics, audit: dict[str, Any] | None) -> tuple[str, str]:
    """("held-out test" or "test", the evaluation-data sentence): the test split is called held out only when the
    audit checked it for copies of training rows and found none."""
    n = f"{metrics.n_scored} examples" + (f" of {metrics.n_test}" if metrics.n_scored != metrics.n_test else "")
    if metrics.held_out is not None:
        return "test", (f"All numbers are on the test split ({n}). It is not fully held out: see the note below.")
    if audit is not None and audit.get("enabled"):
        return "held-out test", (f"All numbers are on the held-out test split ({n}): the data audit found no test "
                                 f"row that copies or near-copies a training row (check `leak`).")
    return "test", (f"All numbers are on the test split ({n}). It was not checked for copies of training rows (the "
                    f"data audit did not run), so it is not known to be held out.")


def run_dir_shown(recipe: Recipe, gov: dict[str, Any] | None) -> str:
    """The run directory as a shared card shows it: relative to the recipe's folder (never an absolute path)."""
    root = f"{recipe.output_dir}/{recipe.name}-{recipe.fingerprint()}"
    return governance.shown_path(root, gov["path_base"] if gov else None) if Path(root).is_absolute() else root


def trained_on(ts: TrainSummary) -> str | None:
    """The hardware sentence of the Reproducibility section: where the model was trained and what a bit-identical
    rerun needs. None for a summary written before tunewise recorded the hardware."""
    hw = ts.hardware
    if hw is None:
        return None
    ident = f", {hw.cpu_id}" if hw.cpu_id else ""
    where = hw.gpu or f"{hw.cpu_model} ({', '.join(hw.cpu_isa) or 'no ISA flags recorded'}{ident})"
    procs = (f"{hw.world_size} processes ({hw.strategy}, {hw.backend})" if hw.world_size > 1 else "1 process")
    return (f"Trained on {where}, {procs}, {hw.threads_per_process} thread(s) per process, {ts.precision}. "
            f"Bit-identical results need the same {'GPU' if hw.gpu else 'CPU'} kind, thread count and number of "
            f"processes: kernels differ between CPU kinds (AMX against AVX-512 bf16), and the same recipe and seed gave "
            f"accuracy 0.9042 on one and 0.9083 on another. Elsewhere expect the same metrics within their "
            f"confidence intervals, not to the last digit.")


def card_context(recipe: Recipe, metrics: Metrics, train_summary: TrainSummary, data_summary: DataSummary,
                 examples: list[dict[str, Any]] | None, *, prompt_chars: int, text_chars: int,
                 audit: dict[str, Any] | None = None, gov: dict[str, Any] | None = None) -> dict[str, Any]:
    """The template variables the card and the report share, and those of the task's sections."""
    task = task_for(recipe)
    base = gov["path_base"] if gov else None
    splits = tables.split_rows(data_summary)
    for row in splits:
        row["file_shown"] = governance.shown_path(row["file"], base)
    test_words, test_sentence = _test_words(metrics, audit)
    slice_metrics = list(dict.fromkeys(m for info in metrics.slices.values() for m in info.metrics))
    conf = metrics.confidence()
    ctx = {
        "gov": gov,
        "test_words": test_words,
        "test_sentence": test_sentence,
        "held_out": governance.held_out_context(metrics),
        "slice_gaps": governance.gap_rows(metrics),
        "slice_groups": governance.group_rows(metrics),
        "slice_metric_labels": [tables.metric_label(m) for m in slice_metrics],
        "slice_conf": tables.pct(next(iter(metrics.slices.values())).confidence if metrics.slices else conf),
        "min_slice_size": recipe.evaluate.min_slice_size,
        "base_shown": governance.shown_path(recipe.model.base, base),
        "finetune_method": f"{train_summary.method}" + (f" (LoRA r {recipe.model.lora_r})"
                                                        if train_summary.method == "lora" else " (every weight)"),
        "run_dir": run_dir_shown(recipe, gov),
        "ethics": ethical_considerations(recipe, metrics, data_summary, audit, gov),
        "recommendations": recommendations(recipe, metrics, gov),
        "test_hashes": test_hashes(data_summary, gov),
        "recipe": recipe,
        "model_name": recipe.card.model_name or recipe.name,
        "base_hub": hub_base_model(recipe.model.base),
        "pipeline_tag": task.pipeline_tag,
        "n_test": metrics.n_test,
        "n_scored": metrics.n_scored,
        "headline": tables.headline(metrics),
        "train_examples": train_summary.train_examples,
        "splits": splits,
        "data_warnings": tables.data_warnings(splits),
        "metric_rows": tables.metric_rows(metrics),
        "model_descriptions": [(m, metrics.models[m].description) for m in metrics.model_order()
                               if metrics.models[m].description],
        "comparisons": tables.comparison_rows(metrics),
        "auto_limitations": auto_limitations(recipe, metrics, splits),
        "signature": metrics.signature,
        "fingerprint": recipe.fingerprint(),
        "trained_on": trained_on(train_summary),
    }
    for section in sections_for(recipe):
        ctx.update(section.context(recipe, metrics, train_summary, examples, prompt_chars=prompt_chars,
                                   text_chars=text_chars))
    return ctx


def render(env: jinja2.Environment, page: str, ext: str, recipe: Recipe, ctx: dict[str, Any]) -> str:
    """Render templates/<page>.<ext>.j2 with the macros of the task's sections (<page>_<section>.<ext>.j2)."""
    sections = [env.get_template(f"{page}_{section.name}.{ext}.j2").make_module(ctx)
                for section in sections_for(recipe)]
    return env.get_template(f"{page}.{ext}.j2").render(**ctx, sections=sections)


def render_card_body(recipe: Recipe, metrics: Metrics, train_summary: TrainSummary, data_summary: DataSummary, *,
                     datacard_path: str | None = None, examples: list[dict[str, Any]] | None = None,
                     audit: dict[str, Any] | None = None, gov: dict[str, Any] | None = None,
                     prompt_chars: int = 300, text_chars: int = 400) -> str:
    """The markdown body (everything below the YAML header). `audit`: `tunewise.card.audit.audit_summary`.
    Example texts are cut to `prompt_chars` / `text_chars` characters (head and tail kept)."""
    ctx = card_context(recipe, metrics, train_summary, data_summary, examples, prompt_chars=prompt_chars,
                       text_chars=text_chars, audit=audit, gov=gov)
    ctx.update({
        "datacard_path": datacard_path,
        "audit": audit,
        "training": training_rows(recipe, train_summary),
        "bootstrap": _bootstrap_words(metrics),
        "limitations": list(recipe.card.limitations),
        "licence_note": model_licence_note(recipe.card.license, data_licences(recipe)),
        "version": tunewise.__version__,
    })
    return render(template_env(autoescape=False), "model_card", "md", recipe, ctx)


def ethical_considerations(recipe: Recipe, metrics: Metrics, data_summary: DataSummary,
                           audit: dict[str, Any] | None, gov: dict[str, Any] | None) -> list[str]:
    """What a reviewer should weigh, read off the evidence: personal data, groups compared, bias probes, licences."""
    out = []
    personal = {split: f.contains_personal_data for split, f in data_summary.files.items()}
    if any(v for v in personal.values()):
        out.append("Some training or test data is declared to contain personal data: the model may reproduce it, "
                   "and its use falls under data-protection law.")
    elif any(v is None for v in personal.values()):
        out.append("Not every data file declares whether it holds personal data; the audit's PII scan "
                   "(`audit/findings.json`) is the only check made.")
    else:
        out.append("Every data file is declared free of personal data; the audit's PII scan checks the claim.")
    if audit is not None and audit.get("enabled"):
        pii = next((r for r in audit["rows"] if r["check"] == "pii"), None)
        if pii and pii["count"]:
            out.append(f"The audit found personal data (e-mail, phone, card, IBAN, IP or SSN-like) in {pii['count']} "
                       f"row(s); see the dataset card.")
    if metrics.slices:
        worst = max((g for info in metrics.slices.values() for g in info.gaps.values() if g is not None),
                    key=lambda g: g.ci_high / g.metric_range, default=None)
        if worst is not None:
            out.append(f"Groups are served unequally to some degree: the largest slice gap is "
                       f"{worst.value / worst.metric_range:.3f} ({worst.highest} vs {worst.lowest}), upper bound "
                       f"{worst.ci_high / worst.metric_range:.3f}. Whether that is acceptable depends on who the "
                       f"groups are and what an error costs them.")
    else:
        out.append("No groups were compared (no data.slice_fields): fairness across the people or settings the "
                   "model serves was not measured.")
    if not (gov and gov.get("probes_md")):
        out.append("No identity-term or stereotype probes ran, so sensitivity to gender, names, nationality, "
                   "religion or age was not measured.")
    out.append(f"Intended use category: {recipe.intended_use} (`intended_use`); the audit checks each data "
               f"licence against it.")
    return out


def recommendations(recipe: Recipe, metrics: Metrics, gov: dict[str, Any] | None) -> list[str]:
    out = []
    if gov and gov.get("gate") and gov["gate"]["n_failed"]:
        failed = ", ".join(f"`{r['rule']}`" for r in gov["gate"]["rules"] if not r["passed"])
        out.append(f"Do not release as is: the release gate failed ({failed}).")
    if metrics.held_out is not None:
        out.append("Remove the test rows that copy training rows (audit check `leak`) and re-evaluate before quoting "
                   "the headline as a generalisation estimate.")
    too_small = sorted({f"{field}={v}" for field, info in metrics.slices.items() for v in info.too_small})
    if too_small:
        out.append(f"Collect more test rows for the groups too small to judge ({', '.join(too_small[:8])}"
                   f"{', ...' if len(too_small) > 8 else ''}) before drawing conclusions about them.")
    out.append("Monitor the model on live traffic against its reference profile and re-run this evaluation on "
               "fresh data before each release.")
    out.append("Keep a human able to review or override the model's decisions where an error harms someone.")
    return out


def test_hashes(data_summary: DataSummary, gov: dict[str, Any] | None) -> list[dict[str, str]]:
    """The test data's two hashes, each labelled: the source file as read, and the run's copy that was scored."""
    test = data_summary.splits["test"]
    out = []
    if test.sha256:
        name = Path(test.source_file).name if test.source_file else "?"
        carved = " (test carved from it, `data.test_fraction`)" if test.carved_from else ""
        out.append({"label": f"Test source file `{name}` as read{carved}, sha256", "sha": test.sha256})
    if gov and gov.get("test_copy_sha"):
        out.append({"label": "The run's copy of the test split, `data/test.jsonl` (what was scored), sha256",
                    "sha": gov["test_copy_sha"]})
    return out


PREDICTION_KEYS = ("id", "prompt", "references", "prediction")  # what a generation predictions row always holds


def _prediction_rows(path: Path):
    """The rows of a predictions file, in order, stopping at the first line that is not a predictions row."""
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                return
            if not isinstance(row, dict) or any(k not in row for k in PREDICTION_KEYS):
                return
            yield row


def load_examples(run_root: Path, metrics: Metrics, limit: int = EXAMPLES_SHOWN) -> list[dict[str, Any]]:
    """The first `limit` test examples with every model's output, joined by id (generation and chat).

    Reads the predictions files that metrics.json names (paths relative to the run directory; a path that
    leaves the run directory, or a missing or unreadable file, is skipped). Returns
    [{"id", "prompt", "references", "outputs": {model: {"prediction", "chrf", "rougeL"}}}], fine-tuned first;
    a per-example score is None where evaluate did not compute that metric.
    """
    root = Path(run_root).resolve()

    def path_of(model: str) -> Path | None:
        path = (root / metrics.models[model].predictions).resolve()
        return path if path.is_relative_to(root) and path.is_file() else None

    examples: list[dict[str, Any]] = []
    by_id: dict[str, dict[str, Any]] = {}
    for model in metrics.model_order():
        path = path_of(model)
        if path is None:
            continue
        picking = not examples  # the first readable file (the fine-tuned model's) picks the examples
        wanted = set(by_id)
        for row in _prediction_rows(path):
            key = str(row["id"])
            # chrF and ROUGE-L are in a row only when evaluate.metrics asked for them
            output = {"prediction": row["prediction"], "chrf": row.get("chrf"), "rougeL": row.get("rougeL")}
            if picking:
                if key in by_id:
                    continue
                by_id[key] = {"id": row["id"], "prompt": row["prompt"], "references": row["references"],
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


def _bootstrap_words(metrics: Metrics) -> str:
    r = next(iter(metrics.fine_tuned().metrics.values()))
    return (f"Intervals are {tables.pct(r.confidence)} {r.method} bootstrap intervals over {r.n_resamples} "
            f"resamples of the test set.")
