"""A run's classifier, loaded once for serving: model/ through tunewise's classifier code (torch), or the run's ONNX
export (export/onnx/, `tunewise export RUN --onnx`) through tunewise.onnx_backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from tunewise.errors import ModelError

if TYPE_CHECKING:
    import numpy as np

    from tunewise.rundir import RunDir

INFERENCE_BATCH = 64  # texts per forward pass; a micro-batch larger than this runs as several, length-sorted


@dataclass
class ServedClassifier:
    labels: list[str]
    backend: Literal["torch", "onnx"]
    folder: str           # relative to the run directory
    _predict: object

    def predict_proba(self, texts: Sequence[str]) -> "np.ndarray":
        return self._predict(list(texts))  # type: ignore[operator]

    def classify(self, texts: Sequence[str]) -> list[tuple[str, float, dict[str, float]]]:
        """(label, its probability, every label's probability) per text, in order."""
        probs = self.predict_proba(texts)
        out = []
        for row in probs:
            best = int(row.argmax())
            out.append((self.labels[best], float(row[best]),
                        {lab: round(float(p), 6) for lab, p in zip(self.labels, row)}))
        return out


def load_classifier(rd: "RunDir", backend: Literal["torch", "onnx"] = "torch") -> ServedClassifier:
    from tunewise.artifacts import TrainSummary

    summary = TrainSummary.read(rd.stage_dir("train") / TrainSummary.FILE)
    labels = list(summary.labels)  # a classifier's summary names its labels in output order
    max_length = rd.recipe.model.max_length
    if backend == "onnx":
        onnx_dir = rd.stage_dir("export") / "onnx"
        if not onnx_dir.is_dir():
            raise ModelError(f"{rd.root}: serve.backend=onnx, but there is no export/onnx/; build it with "
                             f"`tunewise export {rd.root} --onnx` (add --int8 for the quantised model), or serve "
                             f"with serve.backend=torch")
        from tunewise.onnx_backend import OnnxClassifier

        onnx = OnnxClassifier(onnx_dir, max_length=max_length)
        return ServedClassifier(labels, "onnx", str(onnx_dir.relative_to(rd.root)), onnx.predict_proba)

    from tunewise.hardware import choose_placement
    from tunewise.tasks import task_for
    from tunewise.tasks.classification import predict_proba

    task = task_for(rd.recipe)
    folder = rd.stage_dir("train")
    tokenizer = task.load_tokenizer(folder)
    model = task.load_model(folder)
    model.eval()
    if model.config.num_labels != len(labels):
        raise ModelError(f"{folder}: the model has {model.config.num_labels} outputs but train_summary.json names "
                         f"{len(labels)} labels; rerun the train stage")
    placement = choose_placement(rd.recipe.train.device, rd.recipe.train.precision)  # as evaluated

    def predict(texts: list[str]):
        return predict_proba(model, tokenizer, texts, max_length=max_length, batch_size=INFERENCE_BATCH,
                             placement=placement)
    return ServedClassifier(labels, "torch", folder.name, predict)
