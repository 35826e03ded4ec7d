"""Text classification: tokenisation, the model head, and order-safe batched prediction."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from sklearn.metrics import accuracy_score, f1_score

from tunewise.hardware import Placement


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=False)


def load_model(path: Path, labels: Sequence[str] | None = None):
    """A sequence-classification model from safetensors; a new head sized for `labels` when given."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    kwargs = {}
    if labels is not None:
        kwargs = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                  "label2id": {label: i for i, label in enumerate(labels)}}
    # the "newly initialized classifier weights" warning is expected when adding a head; keep output clean
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            path, use_safetensors=True, trust_remote_code=False, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)


def encode(tokenizer, texts: Sequence[str], label_ids: Sequence[int] | None, max_length: int, *,
           text_pairs: Sequence[str] | None = None) -> tuple[Dataset, int]:
    """Tokenise without padding (the collator pads per batch). Returns the dataset and how many texts were truncated.
    `text_pairs`: each text's second text, encoded as the tokenizer's sentence pair ([CLS] a [SEP] b [SEP] for
    BERT); an over-long pair loses tokens from its longer text first."""
    pairs = list(text_pairs) if text_pairs is not None else None
    full = tokenizer(list(texts), pairs, truncation=False, add_special_tokens=True)["input_ids"]
    truncated = sum(len(ids) > max_length for ids in full)
    enc = tokenizer(list(texts), pairs, truncation=True, max_length=max_length)
    columns = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
               "length": [len(ids) for ids in enc["input_ids"]]}
    if "token_type_ids" in enc:
        columns["token_type_ids"] = enc["token_type_ids"]
    if label_ids is not None:
        columns["labels"] = list(label_ids)
    return Dataset.from_dict(columns), truncated


def encode_rows_dataset(tokenizer, rows: Dataset, labels: Sequence[str], max_length: int,
                        cache_file: Path) -> tuple[Dataset, int]:
    """`encode` for a memory-mapped rows dataset (artifacts.rows.rows_dataset): tokenised a batch at a time into
    the Arrow file `cache_file`, so the token ids of a split larger than memory stay on disk too. Returns the
    dataset (input_ids, attention_mask, length, labels) and how many texts were truncated."""
    import datasets

    index = {label: i for i, label in enumerate(labels)}

    def encode_batch(batch):
        pairs = batch["text_pair"] if any(p is not None for p in batch["text_pair"]) else None
        full = tokenizer(batch["text"], pairs, truncation=False, add_special_tokens=True)["input_ids"]
        enc = tokenizer(batch["text"], pairs, truncation=True, max_length=max_length)
        out = {key: enc[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in enc}
        return {**out, "length": [len(ids) for ids in enc["input_ids"]], "labels": [index[y] for y in batch["label"]],
                "truncated": [len(ids) > max_length for ids in full]}

    cache_file.parent.mkdir(parents=True, exist_ok=True)
    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        encoded = rows.map(encode_batch, batched=True, batch_size=1000, remove_columns=rows.column_names,
                           cache_file_name=str(cache_file), load_from_cache_file=False)
    finally:
        if shown:
            datasets.enable_progress_bars()
    truncated = sum(sum(batch["truncated"]) for batch in encoded.select_columns(["truncated"]).iter(batch_size=10_000))
    return encoded.remove_columns("truncated"), truncated


def trainer_metrics(eval_pred) -> dict[str, float]:
    """Validation metrics for the Trainer; scored against the label_ids it returns, never the dataset's order."""
    logits, label_ids = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    preds = np.asarray(logits).argmax(-1)
    return {"accuracy": float(accuracy_score(label_ids, preds)),
            "macro_f1": float(f1_score(label_ids, preds, average="macro", zero_division=0))}


def autocast(placement: Placement):
    if placement.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=placement.device, dtype=placement.autocast_dtype)


@torch.inference_mode()
def predict_proba(model, tokenizer, texts: Sequence[str], *, max_length: int, batch_size: int,
                  placement: Placement, progress: bool = False,
                  text_pairs: Sequence[str] | None = None) -> np.ndarray:
    """Class probabilities in the order of `texts`.

    Batches are formed from length-sorted texts to cut padding; results are scattered back by index,
    so row i of the output always belongs to texts[i].
    """
    model.eval()
    model.to(placement.device)
    enc = tokenizer(list(texts), list(text_pairs) if text_pairs is not None else None, truncation=True,
                    max_length=max_length)
    order = np.argsort([len(ids) for ids in enc["input_ids"]], kind="stable")
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    batches = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="predict", unit="batch", leave=False)
    for start in batches:
        idx = order[start:start + batch_size]
        batch = tokenizer.pad({key: [enc[key][i] for i in idx] for key in enc}, return_tensors="pt")
        batch = {k: v.to(placement.device) for k, v in batch.items()}
        with autocast(placement):
            logits = model(**batch).logits
        out[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    return out


def prediction_rows(rows, labels: list[str], probs: np.ndarray) -> list[dict]:
    """One predictions.jsonl line per row, in row order, with every class probability."""
    preds = probs.argmax(1)
    return [{"id": r.id, "text": r.text, **({"text_pair": r.text_pair} if r.text_pair is not None else {}),
             "label": r.label, "pred": labels[p], "correct": r.label == labels[p],
             "confidence": round(float(pr[p]), 6), "probs": {lab: round(float(x), 6) for lab, x in zip(labels, pr)},
             "meta": r.meta, "origin": r.origin}
            for r, p, pr in zip(rows, preds, probs)]
