"""The export stage: a standalone Hugging Face folder of the fine-tuned model (LoRA merged), which plain
transformers, and so vLLM, loads. Reads model/ (and the base weights for a LoRA merge), writes export/."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunewise.artifacts.export import ExportRecord

if TYPE_CHECKING:
    from tunewise.rundir import RunDir, StageOutcome
    from tunewise.stages import RunOptions


def run(rd: "RunDir", options: "RunOptions") -> "StageOutcome":
    from tunewise.export.merge import export_model
    from tunewise.models import resolve_base_model, weight_files

    base = resolve_base_model(rd.recipe.model.base)
    adapter = (rd.stage_dir("train") / "adapter_config.json").is_file()
    previous = rd.stage_dir("export") / ExportRecord.FILE
    force = options.force
    if previous.is_file() and adapter and ExportRecord.read(previous).merged != options.merge:
        force = True  # the other kind of export was asked for
    return rd.run_stage("export", lambda out: export_model(rd.recipe, base, rd.stage_dir("train"), out,
                                                           merge=options.merge),
                        external_inputs=weight_files(base.path) if adapter and options.merge else (), force=force)
