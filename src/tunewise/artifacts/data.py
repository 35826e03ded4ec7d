"""data/summary.json and data/labels.json: what the data stage read, kept and set aside.

The audit reads the summary for provenance; the card for the data table; evaluate reads the label order.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunewise.artifacts.base import Artifact, Strict

SplitName = Literal["train", "validation", "test"]


class SplitSummary(Strict):
    """One split as written to data/<split>.jsonl."""

    rows: int = Field(description="Rows written.")
    quarantined: int = Field(description="Rows of this split set aside in data/quarantine.jsonl.")
    label_counts: dict[str, int] | None = Field(
        description="Rows per label, in label order; null for tasks without labels (generation, chat).")
    duplicate_ids_renamed: int = Field(description="Rows whose repeated id got a suffix to make it unique.")
    source_file: str = Field(description="The file the rows came from (train's file for a carved split).")
    sha256: str | None = Field(description="sha256 of that file; null for a hub dataset (`hf:`).")
    carved_from: Literal["train"] | None = Field(description="`train` when the split was carved out of train.")


class SourceFile(Strict):
    """One data file named in the recipe, with its declared provenance (null: not declared)."""

    path: str = Field(description="The path (or `hf:NAME[:SPLIT]`) as resolved from the recipe.")
    sha256: str | None = Field(description="sha256 of the file; null for a hub dataset.")
    source: str | None = Field(description="Where the data came from, as declared in the recipe.")
    license: str | None = Field(description="The data licence, as declared in the recipe.")
    contains_personal_data: bool | None = Field(description="As declared in the recipe.")
    max_rows: int | None = Field(description="Only the first rows were kept (data.<split>.max_rows).")


class Carving(Strict):
    """A split carved out of train because the recipe gave no file for it."""

    from_split: Literal["train"] = Field(alias="from", description="The split it was carved from.")
    fraction: float = Field(description="The share of train carved (data.<split>_fraction).")
    seed: int = Field(description="The seed of the stratified split.")
    rows: int = Field(description="Rows carved.")


class LabelSet(Strict):
    """The label set, in short (the labels themselves are in labels.json)."""

    count: int = Field(description="Number of labels.")
    derived: bool = Field(description="Derived from the train rows (true) or declared in the recipe (false).")


class DataSummary(Artifact):
    """data/summary.json: per split rows, quarantined rows, label counts, source file and its sha256; the files'
    provenance; what was carved."""

    FILE = "summary.json"
    STAGE = "data"
    SCHEMA_VERSION = 1

    splits: dict[SplitName, SplitSummary] = Field(description="The splits written, in train/validation/test order.")
    files: dict[SplitName, SourceFile] = Field(description="The recipe's data files, by the slot that names them.")
    carved: dict[SplitName, Carving] = Field(description="Splits carved out of train.")
    labels: LabelSet | None = Field(description="Classification: the label set; null for generation and chat.")
    on_error: Literal["fail", "quarantine"] = Field(description="data.on_error.")
    max_quarantine_fraction: float = Field(description="data.max_quarantine_fraction.")
    quarantined_total: int = Field(description="Rows set aside in data/quarantine.jsonl, all splits.")

    @model_validator(mode="after")
    def _every_split_has_its_file(self) -> "DataSummary":
        for name, split in self.splits.items():
            if self.source_slot(name) not in self.files:
                raise ValueError(f"split {name!r} names no file in `files`")
        return self

    def source_slot(self, split: str) -> SplitName:
        """The recipe slot whose file a split came from: train for a carved split."""
        return self.splits[split].carved_from or split  # type: ignore[return-value]

    def source_of(self, split: str) -> SourceFile:
        """The data file (and its declared provenance) a split came from."""
        return self.files[self.source_slot(split)]


class Labels(Artifact):
    """data/labels.json (classification): the label set in the order the model's output units use."""

    FILE = "labels.json"
    STAGE = "data"
    SCHEMA_VERSION = 1

    labels: list[str] = Field(description="The labels, in model output order.")
    derived: bool = Field(description="Derived from the train rows (true) or declared in the recipe (false).")
