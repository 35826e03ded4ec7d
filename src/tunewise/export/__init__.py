"""The export stage: a standalone Hugging Face folder of the fine-tuned model (LoRA merged), which plain
transformers, and so vLLM, loads; with --onnx (classifiers), also an ONNX Runtime backend checked against torch
on the test split. Reads model/ (and the base weights for a LoRA merge) and data/ (the test split, for --onnx);
writes export/."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunewise.artifacts.export import ExportRecord, OnnxRecord
from tunewise.errors import RecipeError

if TYPE_CHECKING:
    from pathlib import Path

    from tunewise.rundir import RunDir, StageOutcome
    from tunewise.stages import RunOptions


def run(rd: "RunDir", options: "RunOptions") -> "StageOutcome":
    from tunewise.export.merge import export_model
    from tunewise.models import resolve_base_model, weight_files
    from tunewise.tasks import task_for

    if options.int8 and not options.onnx:
        raise RecipeError("--int8 quantizes the ONNX export: use it with --onnx")
    if options.onnx and task_for(rd.recipe).family != "classifier":
        raise RecipeError(f"--onnx builds an ONNX Runtime backend for encoder classifiers; task {rd.recipe.task!r} "
                          f"is served from the merged export/ folder")
    base = resolve_base_model(rd.recipe.model.base)
    adapter = (rd.stage_dir("train") / "adapter_config.json").is_file()
    force = options.force or _other_kind_asked(rd, options, adapter)

    def write(out: "Path") -> str:
        lines = [export_model(rd.recipe, base, rd.stage_dir("train"), out, merge=options.merge)]
        if options.onnx:
            from tunewise.export.onnx import export_onnx_backend

            lines.append(export_onnx_backend(rd.recipe, rd.stage_dir("train"), rd.stage_dir("data"), out,
                                             int8=options.int8))
        return "\n".join(lines)

    return rd.run_stage("export", write, external_inputs=weight_files(base.path) if adapter and options.merge else (),
                        force=force)


def _other_kind_asked(rd: "RunDir", options: "RunOptions", adapter: bool) -> bool:
    """Whether the last export was of another kind than the one asked for (merged or not, ONNX or not, int8 or
    not): then it is redone even though its inputs are unchanged."""
    folder = rd.stage_dir("export")
    if not (folder / ExportRecord.FILE).is_file():
        return False
    if adapter and ExportRecord.read(folder / ExportRecord.FILE).merged != options.merge:
        return True
    had_onnx = (folder / OnnxRecord.FILE).is_file()
    if had_onnx != options.onnx:
        return True
    return had_onnx and OnnxRecord.read(folder / OnnxRecord.FILE).int8 != options.int8
