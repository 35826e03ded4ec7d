"""`tunewise export RUN --onnx [--int8]`: an ONNX Runtime backend of an encoder classifier in export/onnx/, and
its accuracy change against torch on the run's test split (export/ONNX.json, printed).

export/
  onnx/model.onnx, tokenizer files, config.json   the backend (tunewise.onnx_backend.OnnxClassifier loads it)
  ONNX.json                                       OnnxRecord: int8 or not, opset, hashes, torch vs ONNX on test
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tunewise.artifacts.data import Labels
from tunewise.artifacts.export import OnnxAgreement, OnnxRecord
from tunewise.onnx_backend import OnnxClassifier, export_onnx
from tunewise.recipe import Recipe
from tunewise.rundir import sha256_file
from tunewise.tasks import task_for

ONNX_FOLDER = "onnx"


def export_onnx_backend(recipe: Recipe, model_dir: Path, data_dir: Path, out: Path, *, int8: bool) -> str:
    """Build out/onnx/ from model_dir, compare it with torch on data/test.jsonl, write out/ONNX.json."""
    made = export_onnx(model_dir, out / ONNX_FOLDER, int8=int8)
    agreement = compare_on_test(recipe, model_dir, data_dir, out / ONNX_FOLDER)
    OnnxRecord(folder_name=ONNX_FOLDER, int8=int8, opset=made.opset, dynamic_axes=["batch", "sequence"],
               inputs=made.inputs, labels=made.labels,
               files={f.name: sha256_file(f) for f in sorted((out / ONNX_FOLDER).iterdir()) if f.is_file()},
               size_mb=made.size_mb, test=agreement).write(out)
    kind = "int8" if int8 else "fp32"
    line = f"onnx: {kind} model -> {out / ONNX_FOLDER} ({made.size_mb:,.1f} MB)"
    if agreement is None:
        return line + "; no test split to compare with torch"
    return (line + f"; test accuracy torch {agreement.torch_accuracy:.4f} -> onnx {agreement.onnx_accuracy:.4f} "
            f"(change {agreement.accuracy_change:+.4f}), same label on {agreement.agreement:.1%} of "
            f"{agreement.rows:,} rows, largest probability difference {agreement.max_abs_prob_diff:.2g}")


def compare_on_test(recipe: Recipe, model_dir: Path, data_dir: Path, onnx_dir: Path) -> OnnxAgreement | None:
    """Both backends on the test split (honouring evaluate.max_examples), torch in fp32 on the CPU."""
    from tunewise.hardware import choose_placement
    from tunewise.tasks.classification import predict_proba

    task = task_for(recipe)
    if not (data_dir / "test.jsonl").is_file():
        return None
    rows = task.read_split(data_dir, "test")[:recipe.evaluate.max_examples]
    labels = Labels.read(data_dir / Labels.FILE).labels
    texts = [r.text for r in rows]
    truth = np.array([labels.index(r.label) for r in rows])
    max_length = recipe.model.max_length
    torch_probs = predict_proba(task.load_model(model_dir), task.load_tokenizer(model_dir), texts,
                                max_length=max_length, batch_size=recipe.train.eval_batch_size,
                                placement=choose_placement("cpu", "fp32"))
    onnx_probs = OnnxClassifier(onnx_dir, max_length=max_length,
                                batch_size=recipe.train.eval_batch_size).predict_proba(texts)
    torch_pred, onnx_pred = torch_probs.argmax(1), onnx_probs.argmax(1)
    torch_acc, onnx_acc = float((torch_pred == truth).mean()), float((onnx_pred == truth).mean())
    return OnnxAgreement(rows=len(rows), torch_accuracy=torch_acc, onnx_accuracy=onnx_acc,
                         accuracy_change=onnx_acc - torch_acc, agreement=float((torch_pred == onnx_pred).mean()),
                         max_abs_prob_diff=float(np.abs(torch_probs - onnx_probs).max()))
