"""export/EXPORT.json: how the standalone model folder in export/ was made, and the hashes of its files."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunewise.artifacts.base import Artifact, Strict


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


class OnnxAgreement(Strict):
    """The ONNX model against the torch model on the run's test split."""

    rows: int = Field(description="Test rows scored by both.")
    torch_accuracy: float = Field(description="Accuracy of the torch model (fp32).")
    onnx_accuracy: float = Field(description="Accuracy of the ONNX model.")
    accuracy_change: float = Field(description="onnx_accuracy - torch_accuracy.")
    agreement: float = Field(description="Share of rows where both predict the same label.")
    max_abs_prob_diff: float = Field(description="Largest absolute difference of any class probability.")


class OnnxRecord(Artifact):
    """export/ONNX.json: how export/onnx/ (an ONNX Runtime backend of an encoder classifier) was made and how far
    it agrees with torch on the run's test set. Written by `tunewise export RUN --onnx [--int8]`; read by serving
    (tunewise.onnx_backend.OnnxClassifier) and the benchmarks."""

    FILE = "ONNX.json"
    STAGE = "export"
    SCHEMA_VERSION = 1

    folder_name: str = Field(description="The folder under export/ that holds model.onnx and the tokenizer.")
    int8: bool = Field(description="Weights quantized to int8 (onnxruntime.quantization.quantize_dynamic).")
    opset: int = Field(description="ONNX opset of the graph.")
    dynamic_axes: list[str] = Field(description="Input axes left dynamic (batch, sequence).")
    inputs: list[str] = Field(description="Graph input names.")
    labels: list[str] = Field(description="Output columns of the probabilities, in order.")
    files: dict[str, str] = Field(description="sha256 of every file in the ONNX folder.")
    size_mb: float = Field(description="Size of model.onnx in MB.")
    test: OnnxAgreement | None = Field(description="ONNX against torch on data/test.jsonl; null when the run has no test split.")
