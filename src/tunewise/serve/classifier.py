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
    parallel_batches: int = 1   # micro-batches the backend may run at once (MicroBatcher workers)

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


@dataclass(frozen=True)
class BackendChoice:
    backend: Literal["torch", "onnx"]
    why: str              # in words, for the start-up line and serve.json readers


def resolve_backend(rd: "RunDir", config) -> BackendChoice:  # noqa: ANN001
    """serve.backend `auto` -> onnx when export/onnx/ exists and its recorded test-accuracy change against torch
    (export/ONNX.json) is within serve.onnx_max_accuracy_drop, else torch. The model forward is almost all of a
    classify request's CPU (docs/serving.md, "Where the CPU goes"), and an int8 ONNX model costs a fraction of
    torch's; but it is not the evaluated model, so auto serves it only with its measured agreement on record."""
    from tunewise.artifacts.export import OnnxRecord

    record_path = rd.stage_dir("export") / OnnxRecord.FILE
    have_onnx = (rd.stage_dir("export") / "onnx").is_dir() and record_path.is_file()
    if config.backend != "auto":
        return BackendChoice(config.backend, f"serve.backend={config.backend}")
    if not have_onnx:
        return BackendChoice("torch", f"no export/onnx/ (build one with `tunewise export {rd.root} --onnx --int8`)")
    record = OnnxRecord.read(record_path)
    kind = "int8" if record.int8 else "fp32"
    if record.test is None:
        return BackendChoice("torch", f"export/onnx/ ({kind}) has no measured test agreement with torch")
    t = record.test
    change = (f"test accuracy {t.torch_accuracy:.4f} (torch) -> {t.onnx_accuracy:.4f} (onnx {kind}), "
              f"change {t.accuracy_change:+.4f}, same label on {t.agreement:.1%} of {t.rows} rows")
    if t.accuracy_change < -config.onnx_max_accuracy_drop:
        return BackendChoice("torch", f"export/onnx/ {change}: a larger drop than serve.onnx_max_accuracy_drop="
                                      f"{config.onnx_max_accuracy_drop:g}")
    return BackendChoice("onnx", f"export/onnx/ {change}")


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
        from tunewise.onnx_backend import OnnxClassifier, cpu_threads

        # one thread per model run, and as many runs at once as CPUs but one (left to the event loop and the log
        # writer): a micro-batch's runs are small (length buckets of a few texts), too small for an intra-op pool
        # to pay for its hand-offs, which cost a fifth more CPU per request on two threads. More concurrent batches
        # than that only make the batches smaller: on 2 CPUs, 2 at once cost 5.4 CPU-ms per request against 4.4
        # for one (measured under bench/serve.py load); serve.batch_workers overrides it.
        onnx = OnnxClassifier(onnx_dir, max_length=max_length, threads=1)
        return ServedClassifier(labels, "onnx", str(onnx_dir.relative_to(rd.root)), onnx.predict_proba,
                                parallel_batches=max(1, cpu_threads() - 1))

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
