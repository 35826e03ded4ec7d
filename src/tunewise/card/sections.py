"""The task-specific parts of the model card and the report: one class per name in `task.card_sections`.

The card and the report are the same for every task except where a section says otherwise: the model-index task
type and tags, the template variables of its macros (templates/model_card_<name>.md.j2 and report_<name>.html.j2),
the training facts a task reports, the limitations read off its metrics, and its plots. `sections_for(recipe)`
looks them up by the task's section names, so the card code itself never tests the task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from tunewise.artifacts.metrics import FINE_TUNED, ClassificationMetrics, GenerationMetrics, Metrics
from tunewise.artifacts.train import CausalTrainSummary, ClassifierTrainSummary, TrainSummary
from tunewise.card import plots, tables
from tunewise.recipe import Recipe
from tunewise.tasks import task_for

LOW_F1 = 0.8
SMALL_TEST = 1000
# generation and chat: text scores on 0-100 and on 0-1 get separate forest plots (one axis would squash one group)
FOREST_GROUPS = (("bleu", "chrf"), ("rouge1", "rouge2", "rougeL", "exact_match"))


@dataclass
class TrainingFacts:
    """What a task's training summary adds to the training-procedure table."""

    parameters: str                      # "22,716,296" (and how many were trained, where fewer)
    method: str                          # "full", or "lora (r 16, ...)"
    throughput: str                      # after the training time: ", 100.8 examples/s"
    extra_rows: list[tuple[str, str]] = field(default_factory=list)  # before the last two rows


def _not_told_apart(metrics: Metrics, skip: tuple[str, ...] = ()) -> list[str]:
    """A limitation for each comparison the fine-tuned model does not win or lose significantly."""
    return [f"On {c['metric_label']}, the fine-tuned model cannot be told apart from the {c['baseline']} baseline "
            f"at the {c['confidence']} level (difference {c['diff_s']}, CI {c['ci_s']})."
            for c in tables.comparison_rows(metrics)
            if c["model"] == FINE_TUNED and not c["significant"] and c["metric"] not in skip]


class ClassificationSection:
    """Calibration, per-class scores, the confusion matrix and the label set."""

    name = "classification"

    def hub_task_type(self, recipe: Recipe) -> str:
        return task_for(recipe).pipeline_tag  # card.task_type is for generation and chat

    def hub_tags(self, recipe: Recipe) -> list[str]:
        return []

    def context(self, recipe: Recipe, metrics: Metrics, train_summary: TrainSummary,
                examples: list[dict[str, Any]] | None, *, prompt_chars: int, text_chars: int) -> dict[str, Any]:
        m = cast(ClassificationMetrics, metrics)
        return {"labels": m.labels, "n_labels": len(m.labels), "example_label": m.labels[0],
                "calibration": tables.calibration_rows(m), "per_class": tables.per_class_rows(m)}

    def training_facts(self, train_summary: TrainSummary) -> TrainingFacts:
        ts = cast(ClassifierTrainSummary, train_summary)
        speed = ts.train_examples_per_second
        return TrainingFacts(parameters=f"{ts.parameters:,}", method=ts.method,
                             throughput=f", {tables.fmt(speed, 1)} examples/s" if speed is not None else "")

    def limitations(self, recipe: Recipe, metrics: Metrics) -> list[str]:
        m = cast(ClassificationMetrics, metrics)
        out = []
        if m.n_test < SMALL_TEST:
            acc = m.fine_tuned().metrics["accuracy"]
            out.append(f"The test set is small ({m.n_test} examples, under {SMALL_TEST}), so the confidence intervals "
                       f"are wide; the fine-tuned model's accuracy interval is {acc.ci_high - acc.ci_low:.3f} wide "
                       f"({tables.fmt(acc.ci_low)}–{tables.fmt(acc.ci_high)}). Small differences between models "
                       f"cannot be resolved.")
        per_class = tables.per_class_rows(m)
        weak = [r for r in per_class if r["f1"] < LOW_F1]
        if weak:
            shown = ", ".join(f"{r['label']} ({r['f1_s']})" for r in weak[:12])
            more = f", and {len(weak) - 12} more" if len(weak) > 12 else ""
            out.append(f"{len(weak)} of {len(per_class)} classes have a test F1 below {LOW_F1:.2f}: {shown}{more}. "
                       "Expect more errors on these.")
        return out + _not_told_apart(m)

    def plots(self, metrics: Metrics, train_log: list[dict[str, Any]]) -> dict[str, str]:
        m = cast(ClassificationMetrics, metrics)
        cal = m.fine_tuned().calibration
        return {
            "loss_curves": plots.loss_curves(train_log),
            "confusion_matrix": plots.confusion_matrix(m.labels, m.confusion_matrix),
            "ci_forest": plots.ci_forest(forest_rows(m), title=f"Test metrics with {tables.pct(m.confidence())} "
                                                                f"bootstrap CIs (n = {m.n_test})"),
            "reliability_diagram": plots.reliability_diagram([b.model_dump() for b in cal.bins], cal.ece),
        }


class GenerationSection:
    """Text metrics for two scales, decoding settings, signatures, per-epoch validation, the loss mask and
    example generations."""

    name = "generation"

    def hub_task_type(self, recipe: Recipe) -> str:
        return recipe.card.task_type or task_for(recipe).pipeline_tag

    def hub_tags(self, recipe: Recipe) -> list[str]:
        return [self.hub_task_type(recipe), recipe.task]

    def context(self, recipe: Recipe, metrics: Metrics, train_summary: TrainSummary,
                examples: list[dict[str, Any]] | None, *, prompt_chars: int, text_chars: int) -> dict[str, Any]:
        m, ts = cast(GenerationMetrics, metrics), cast(CausalTrainSummary, train_summary)
        task_type = self.hub_task_type(recipe)
        return {
            "task_type": task_type,
            # chat and generation share this section (one causal LM task); only their wording differs
            "task_words": "chat" if recipe.task == "chat" else task_type.replace("-", " "),
            "finetune_words": {"lora": "LoRA adapters", "full": "full fine-tuning"}[ts.method],
            "lora": ts.method == "lora",
            "generation_table": tables.generation_metric_table(m),
            "generation_settings": tables.generation_settings_rows(m),
            "text_signatures": tables.text_signature_rows(m),
            "per_epoch": tables.per_epoch_rows(ts),
            "examples": tables.example_rows(examples, prompt_chars=prompt_chars, text_chars=text_chars),
            "max_new_tokens": m.generation.max_new_tokens,
            "mask_preview": [p.model_dump() for p in ts.mask_preview],
        }

    def training_facts(self, train_summary: TrainSummary) -> TrainingFacts:
        ts = cast(CausalTrainSummary, train_summary)
        method = ts.method
        if ts.lora is not None:
            lora = ts.lora
            targets = ", ".join(lora.target_modules) if isinstance(lora.target_modules, list) else lora.target_modules
            method += f" (r {lora.r}, alpha {lora.alpha}, dropout {lora.dropout}, modules {targets})"
        parameters = f"{ts.parameters:,}"
        if ts.trainable_parameters != ts.parameters:
            parameters += f" ({ts.trainable_parameters:,} trained, {ts.trainable_parameters / ts.parameters:.2%})"
        speed = ts.trained_tokens_per_second
        return TrainingFacts(parameters=parameters, method=method,
                             throughput=f", {tables.fmt(speed, 1)} trained tokens/s" if speed is not None else "",
                             extra_rows=[("Trained tokens", f"{ts.trained_tokens:,}"),
                                         ("Packing", "yes" if ts.packing else "no")])

    def limitations(self, recipe: Recipe, metrics: Metrics) -> list[str]:
        """Sample size, what overlap metrics miss, language, ties."""
        m = cast(GenerationMetrics, metrics)
        ft = m.fine_tuned().metrics
        out = []
        if m.n_scored < m.n_test:
            out.append(f"Only the first {m.n_scored} of {m.n_test} test examples were generated and scored "
                       "(`evaluate.max_examples`); the intervals describe that subset.")
        if m.n_scored < SMALL_TEST:
            head = next((k for k in ("rougeL", "chrf", "bleu") if k in ft), None)
            width = ""
            if head:
                r, d = ft[head], tables.digits(head)
                width = (f"; the fine-tuned model's {tables.metric_label(head)} interval is "
                         f"{r.ci_high - r.ci_low:.{d}f} wide ({tables.fmt(r.ci_low, d)}–{tables.fmt(r.ci_high, d)})")
            out.append(f"The test set is small ({m.n_scored} scored examples, under {SMALL_TEST}), so the confidence "
                       f"intervals are wide{width}. Small differences between models cannot be resolved.")
        out.append("BLEU, chrF and ROUGE measure word and character overlap with the reference texts. They do not "
                   "measure factual accuracy, faithfulness to the input, safety or helpfulness: read the example "
                   "generations, and have people rate outputs before relying on the model.")
        languages = [lang for lang in recipe.card.language if lang != "en"]
        if languages and any(k in ft for k in ("rouge1", "rouge2", "rougeL")):
            out.append(f"ROUGE (rouge-score) keeps only the letters a–z and digits, so for {', '.join(languages)} "
                       "text it ignores accented and non-Latin characters; prefer chrF there.")
        return out + _not_told_apart(m, skip=("length_ratio",))

    def plots(self, metrics: Metrics, train_log: list[dict[str, Any]]) -> dict[str, str]:
        """Training curves and one CI forest per score scale (0-100, 0-1)."""
        m = cast(GenerationMetrics, metrics)
        out = {"loss_curves": plots.loss_curves(train_log)}
        for names, key, scale in zip(FOREST_GROUPS, ("ci_forest_100", "ci_forest_unit"), ("0–100", "0–1")):
            if any(name in m.fine_tuned().metrics for name in names):
                labels = ", ".join(tables.metric_label(k) for k in names)
                out[key] = plots.ci_forest(forest_rows(m, names), salt=key.replace("_", "-"),
                                           title=f"{labels} ({scale}) with {tables.pct(m.confidence())} "
                                                 f"bootstrap CIs (n = {m.n_scored})")
        return out


def forest_rows(metrics: Metrics, names: tuple[str, ...] | None = None) -> list[tuple]:
    """(metric, model, value, ci_low, ci_high) for a CI forest plot: grouped by metric, the fine-tuned model first
    in each group; only the scores in `names` when given."""
    order = metrics.model_order()
    metric_names = list(dict.fromkeys(k for m in order for k in metrics.models[m].metrics))
    return [(name, m, r.value, r.ci_low, r.ci_high) for name in metric_names if names is None or name in names
            for m in order for r in (metrics.models[m].metrics[name],)]


SECTIONS = {s.name: s for s in (ClassificationSection(), GenerationSection())}
Section = ClassificationSection | GenerationSection


def sections_for(recipe: Recipe) -> list[Section]:
    """The card sections of the recipe's task, in order."""
    return [SECTIONS[name] for name in task_for(recipe).card_sections]
