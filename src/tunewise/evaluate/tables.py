"""A split (the test split) as evaluation reads it when it may not fit in memory: a memory-mapped Arrow table of the rows
(artifacts.rows.records_dataset), tokenised into an Arrow file, predicted in the same length-sorted batches as
`tasks.classification.predict_proba` (so the probabilities are the same), and written out a chunk at a time.
What the metrics need is kept per row: the label id, the probabilities (a float array backed by a file in the
scratch folder), and the slice groups as index arrays."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunewise.artifacts.rows import Row, records_dataset, row_from_record
from tunewise.evaluate.slices import RowGroups
from tunewise.rundir import AtomicJsonlWriter

CHUNK = 1000  # rows decoded or written at a time
TOKENISE_CHUNK = 256  # rows tokenised at a time: the tokenizer holds every token of a text before truncating it


@dataclass
class SplitTable:
    """One split of data/ (classification rows) as a memory-mapped table; `n_split` rows in the file, the first
    len(self) of them used (evaluate.max_examples)."""

    rows: Any  # datasets.Dataset with columns id, origin, label, record
    n_split: int
    cache: Path
    split: str

    @classmethod
    def read(cls, data_dir: Path, cache: Path, *, split: str = "test", max_rows: int | None = None) -> "SplitTable":
        rows = records_dataset(data_dir, split, cache / "records", kind="row")
        n = len(rows)
        if max_rows is not None and max_rows < n:
            rows = rows.select(range(max_rows))  # a contiguous slice of the table: nothing copied
        return cls(rows, n, cache, split)

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> Iterator[Any]:
        for batch in self.rows.select_columns([name]).iter(batch_size=10_000):
            yield from batch[name]

    def batches(self) -> Iterator[list[Row]]:
        """The rows, decoded CHUNK at a time."""
        for batch in self.rows.select_columns(["record"]).iter(batch_size=CHUNK):
            yield [row_from_record(r) for r in batch["record"]]

    def ids(self) -> Iterator[str]:
        return self.column("id")

    def label_ids(self, label2id: dict[str, int]) -> np.ndarray:
        return np.fromiter((label2id[label] for label in self.column("label")), dtype=np.int64, count=len(self))

    def slice_groups(self, fields: list[str]) -> dict[str, dict[str, np.ndarray]]:
        groups = RowGroups(fields)
        if fields:
            for rows in self.batches():
                for row in rows:
                    groups.add(row.meta)
        return groups.groups()

    def probabilities(self, name: str, n_classes: int, dtype=np.float32) -> np.ndarray:
        """A zeroed (rows, classes) array backed by a file in the scratch folder (paged by the OS, not held)."""
        return np.lib.format.open_memmap(self.cache / f"{self.split}.{name}.probs.npy", mode="w+", dtype=dtype,
                                         shape=(len(self), n_classes))

    def tokens(self, tokenizer, max_length: int):
        """The rows tokenised as `predict_proba` tokenises them (truncated to max_length, sentence pairs as pairs),
        into an Arrow file a batch at a time; plus a `length` column."""
        import datasets

        def encode(batch):
            rows = [row_from_record(r) for r in batch["record"]]
            pairs = [r.text_pair for r in rows]
            enc = tokenizer([r.text for r in rows], None if all(p is None for p in pairs) else pairs,
                            truncation=True, max_length=max_length)
            return {**{key: enc[key] for key in enc}, "length": [len(ids) for ids in enc["input_ids"]]}

        shown = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        try:
            return self.rows.map(encode, batched=True, batch_size=TOKENISE_CHUNK, remove_columns=self.rows.column_names,
                                 cache_file_name=str(self.cache / f"{self.split}.tokens.arrow"),
                                 load_from_cache_file=False)
        finally:
            if shown:
                datasets.enable_progress_bars()

    def predict_proba(self, model, tokenizer, *, max_length: int, batch_size: int, placement,
                      progress: bool = False) -> np.ndarray:
        """Class probabilities, row i for row i: `tasks.classification.predict_proba` over the table, with the
        same length-sorted batches (so the same numbers), each batch's token ids read from the Arrow file."""
        import torch

        from tunewise.tasks.classification import autocast

        tokens = self.tokens(tokenizer, max_length)
        keys = [c for c in tokens.column_names if c != "length"]
        order = np.argsort(np.asarray(tokens.data.column("length").to_numpy(), dtype=np.int64), kind="stable")
        model.eval()
        model.to(placement.device)
        out = self.probabilities("fine_tuned", model.config.num_labels)
        token_ids = tokens.select_columns(keys)
        batches = range(0, len(order), batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="predict", unit="batch", leave=False)
        with torch.inference_mode():
            for start in batches:
                idx = order[start:start + batch_size]
                batch = tokenizer.pad(token_ids[idx.tolist()], return_tensors="pt")
                batch = {k: v.to(placement.device) for k, v in batch.items()}
                with autocast(placement):
                    logits = model(**batch).logits
                out[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return out

    def predict_in_chunks(self, predict: Callable[[list[str]], np.ndarray], n_classes: int,
                          name: str = "baseline") -> np.ndarray:
        """`predict(texts)` (e.g. a fitted baseline) over the rows, CHUNK texts at a time, into a float64 array."""
        out = self.probabilities(name, n_classes, dtype=np.float64)
        at = 0
        for rows in self.batches():
            out[at:at + len(rows)] = predict([r.text for r in rows])
            at += len(rows)
        return out

    def write_predictions(self, path: Path, task, labels: list[str], probs: np.ndarray) -> None:
        """predictions.jsonl (task.prediction_rows, one line per row in order), written a chunk at a time."""
        at = 0
        with AtomicJsonlWriter(path) as writer:
            for rows in self.batches():
                for record in task.prediction_rows(rows, probs[at:at + len(rows)], labels=labels):
                    writer.write(record)
                at += len(rows)
