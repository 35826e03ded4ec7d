"""export/EXPORT.json: how the standalone model folder in export/ was made, and the hashes of its files."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunewise.artifacts.base import Artifact


class ExportRecord(Artifact):
    """export/EXPORT.json. Read by the export stage (to notice a switch between merged and adapter-only exports)
    and by whatever serves the folder."""

    FILE = "EXPORT.json"
    STAGE = "export"
    SCHEMA_VERSION = 1

    how: str = Field(description="In words: merged LoRA, adapter only, or copied full weights.")
    merged: bool = Field(description="LoRA adapters were merged into the base weights.")
    task: Literal["classification", "generation", "chat"] = Field(description="The recipe's task.")
    base_model: str = Field(description="model.base as written in the recipe.")
    base_model_hub_id: str | None = Field(description="The base model's hub id; null for a local model.")
    files: dict[str, str] = Field(description="sha256 of every file in export/ (besides EXPORT.json).")
    load_with: str = Field(description="The transformers call that loads the folder.")
