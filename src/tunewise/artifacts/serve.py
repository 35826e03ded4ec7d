"""serve/serve.json: what `tunewise serve` served from this run, and where its prediction log lives (for monitor)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tunewise.artifacts.base import Artifact


class ServeRecord(Artifact):
    """serve/serve.json, written each time `tunewise serve RUN` starts: the model folder and backend served, the
    endpoints, the resolved `serve:` settings, and the prediction log's URL (password hidden) and table layout
    version (tables: tunewise.artifacts.prediction_log)."""

    FILE = "serve.json"
    STAGE = "serve"
    SCHEMA_VERSION = 1

    run_id: str = Field(description="The run directory's id.")
    task: Literal["classification", "generation", "chat"] = Field(description="The recipe's task.")
    model_name: str = Field(description="The model id clients send and /v1/models lists.")
    model_folder: str = Field(description="The folder served, relative to the run directory (model or export).")
    backend: Literal["torch", "onnx"] = Field(description="The inference backend.")
    labels: list[str] | None = Field(description="Classifiers: the labels in model output order; null otherwise.")
    endpoints: list[str] = Field(description="The model endpoints offered, e.g. /v1/classify.")
    log_url: str = Field(description="The prediction log as a SQLAlchemy URL, password hidden.")
    log_in_run: str | None = Field(description="The SQLite log's path relative to the run directory when it lies "
                                               "inside it (the default, logs/predictions.sqlite), so a moved run "
                                               "still finds it; null for a log elsewhere.")
    log_schema_version: int = Field(description="tunewise.artifacts.prediction_log.LOG_SCHEMA_VERSION of its tables.")
    guard_run: str | None = Field(description="The injection guard's run directory; null: no guard.")
    settings: dict[str, Any] = Field(description="The resolved `serve:` section (recipe and command-line overrides).")
