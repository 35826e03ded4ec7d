"""The two Task implementations (see tunewise.tasks.Task). This module is light on purpose: the recipe asks a
task for its facts while it validates, so importing it must not pull in torch or transformers. The methods that
need a model import their implementation (tasks/classification.py, tasks/causal.py) when they are called."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewise.tasks.sides import TextSides

if TYPE_CHECKING:
    from tunewise.artifacts.rows import Example
    from tunewise.hardware import Placement
    from tunewise.recipe import Recipe


def _classifier():
    from tunewise.tasks import classification

    return classification


def _causal():
    from tunewise.tasks import causal

    return causal


class ClassificationTask:
    """text -> label with an encoder and a classification head (tunewise.tasks.Task)."""

    name = "classification"
    family = "classifier"
    has_labels = True
    has_prompts = False
    export_in_run = False  # model/ already is a standalone transformers folder
    auto_class = "AutoModelForSequenceClassification"  # the transformers class that loads the fine-tuned folder
    pipeline_tag = "text-classification"
    baseline_choices = ("majority", "tfidf_logreg")  # the baselines evaluate.baselines may name
    record_kind = "row"  # what a data/ line reads as (artifacts.rows: iter_split, sample_split, records_dataset)
    card_sections = ("classification",)

    def default_finetune(self) -> str:
        return "full"

    def default_baselines(self) -> list[str]:
        return ["majority", "tfidf_logreg"]

    def best_metric(self) -> str:
        return "macro_f1"

    def headline_metrics(self) -> tuple[str, ...]:
        return ("accuracy", "macro_f1")

    def read_split(self, data_dir: Path, split: str):
        from tunewise.artifacts.rows import load_split

        return load_split(data_dir, split)

    def sides(self, record: dict):
        text = _joined(record)
        return TextSides(text, text, text)

    def load_tokenizer(self, path: Path):
        return _classifier().load_tokenizer(path)

    def load_model(self, path: Path, labels: Sequence[str] | None = None):
        return _classifier().load_model(path, labels)

    def encode(self, tokenizer, rows, recipe, *, split: str, labels: Sequence[str] | None = None):
        """(dataset, truncated count): token ids and, when `labels` is given, label ids."""
        label_ids = None
        if labels is not None:
            index = {label: i for i, label in enumerate(labels)}
            label_ids = [index[r.label] for r in rows]
        return _classifier().encode(tokenizer, [r.text for r in rows], label_ids, recipe.model.max_length,
                                    text_pairs=_pairs(rows))

    def collator(self, tokenizer):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)

    def predict(self, model, tokenizer, rows, recipe, placement, *, progress: bool = False):
        """Class probabilities (a numpy array), row i for rows[i]."""
        return _classifier().predict_proba(model, tokenizer, [r.text for r in rows], max_length=recipe.model.max_length,
                             batch_size=recipe.train.eval_batch_size, placement=placement, progress=progress,
                             text_pairs=_pairs(rows))

    def prediction_rows(self, rows, outputs, *, labels: list[str]) -> list[dict]:
        return _classifier().prediction_rows(rows, labels, outputs)

    def map_texts(self, record: dict, fn) -> dict:
        """A copy of a data/ record with `fn` applied to its text(s) (e.g. PII redaction)."""
        out = {**record, "text": fn(record["text"])}
        if record.get("text_pair") is not None:
            out["text_pair"] = fn(record["text_pair"])
        return out

    def token_lengths(self, counter, records):
        """Token lengths of data/ records as the model reads them: the text with special tokens. `counter`
        measures (e.g. the audit's LengthCounter: `texts(list[str])`, `conversations(list[messages])`)."""
        return counter.texts([_joined(r) for r in records])


def _pairs(rows) -> list[str] | None:
    """The rows' second texts when they are sentence pairs (data.text_pair_field), else None."""
    pairs = [r.text_pair for r in rows]
    return None if all(p is None for p in pairs) else pairs


def _joined(record: dict) -> str:
    """A data/ record's whole input as one text (a sentence pair joined by a blank line), for audits and drift."""
    pair = record.get("text_pair")
    return record["text"] if pair is None else f"{record['text']}\n\n{pair}"


class CausalLMTask:
    """generation and chat on a causal LM trained on messages (tunewise.tasks.Task)."""

    family = "causal_lm"
    has_labels = False
    has_prompts = True
    export_in_run = True  # a merged standalone folder is what plain transformers and vLLM serve
    auto_class = "AutoModelForCausalLM"  # the transformers class that loads the fine-tuned folder
    pipeline_tag = "text-generation"
    baseline_choices = ("base_model",)  # the baselines evaluate.baselines may name
    record_kind = "example"  # what a data/ line reads as (artifacts.rows: iter_split, sample_split, records_dataset)
    card_sections = ("generation",)

    def __init__(self, name: str):
        self.name = name

    def default_finetune(self) -> str:
        return "lora"

    def default_baselines(self) -> list[str]:
        return ["base_model"]

    def best_metric(self) -> str:
        return "loss"

    def headline_metrics(self) -> tuple[str, ...]:
        return ("rougeL", "bleu", "chrf")

    def read_split(self, data_dir: Path, split: str) -> list[Example]:
        from tunewise.artifacts.rows import load_examples

        return load_examples(data_dir, split)

    def sides(self, record: dict[str, Any]):
        messages = record["messages"]
        prompt = "\n".join(m["content"] for m in messages if m["role"] != "assistant")
        target = next((m["content"] for m in reversed(messages) if m["role"] == "assistant"), "")
        return TextSides(prompt, target, "\n".join(m["content"] for m in messages))

    def load_tokenizer(self, path: Path):
        return _causal().load_tokenizer(path)

    def load_model(self, path: Path, **kwargs):
        return _causal().load_causal_lm(path, **kwargs)

    def encode(self, tokenizer, rows, recipe: "Recipe", *, split: str):
        """(encoded examples, quarantine records of those that could not be encoded)."""
        return _causal().encode_all(tokenizer, list(rows), task=self.name, max_length=recipe.model.max_length,
                          truncation=recipe.model.truncation, split=split)

    def collator(self, tokenizer, *, padding_mask: bool = False):
        return _causal().CausalCollator(tokenizer.pad_token_id, padding_mask=padding_mask)

    def predict(self, model, tokenizer, rows, recipe: "Recipe", placement: "Placement", *,
                desc: str = "generating") -> tuple[list[str], dict[str, float]]:
        """Generated replies in row order, and the generation speed."""
        return _causal().generate(model, tokenizer, list(rows), recipe=recipe, placement=placement, desc=desc)

    def prediction_rows(self, rows, outputs, *, per_example: list[dict[str, float]]) -> list[dict[str, Any]]:
        return _causal().prediction_rows(list(rows), outputs, per_example)

    def map_texts(self, record: dict[str, Any], fn) -> dict[str, Any]:
        """A copy of a data/ record with `fn` applied to every message and reference text (e.g. PII redaction)."""
        out = dict(record)
        out["messages"] = [{**m, "content": fn(m["content"])} for m in record["messages"]]
        if record.get("references"):
            out["references"] = [fn(r) for r in record["references"]]
        return out

    def token_lengths(self, counter, records):
        """Token lengths of data/ records as the model reads them: the messages with the chat template's
        per-message overhead. `counter` measures (e.g. the audit's LengthCounter)."""
        return counter.conversations([r["messages"] for r in records])
