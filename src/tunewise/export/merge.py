"""The export: a standalone Hugging Face folder (safetensors) that plain transformers, and so vLLM, loads.

Reads model/ (and the base model for LoRA); writes export/:
  config.json, model.safetensors, generation_config.json, tokenizer files   the merged model
  EXPORT.json                                                              how it was made: base, adapter, hashes
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tunewise.artifacts.export import ExportRecord
from tunewise.errors import RunDirError
from tunewise.models import ResolvedModel
from tunewise.recipe import Recipe
from tunewise.rundir import sha256_file
from tunewise.tasks import task_for

MODEL_FILES = (".json", ".safetensors", ".txt", ".model", ".jinja")
SKIP = {"train_summary.json", "train_log.jsonl", "adapter_config.json", "adapter_model.safetensors"}


def export_model(recipe: Recipe, base: ResolvedModel, model_dir: Path, out: Path, *, merge: bool = True) -> str:
    """Merge LoRA adapters into the base weights (or copy a fully fine-tuned model) into `out`."""
    adapter = (model_dir / "adapter_config.json").is_file()
    if not adapter and not (model_dir / "config.json").is_file():
        raise RunDirError(f"{model_dir}: no trained model here (neither config.json nor adapter_config.json); "
                          f"run the train stage first")
    task = task_for(recipe)
    if adapter and merge:
        from peft import PeftModel

        model = PeftModel.from_pretrained(task.load_model(base.path), model_dir).merge_and_unload()
        tokenizer = task.load_tokenizer(model_dir)
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        how = f"LoRA adapter (r={recipe.model.lora_r}) merged into the base weights"
    elif adapter:
        for f in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy2(model_dir / f, out / f)
        _copy_tokenizer(model_dir, out)
        how = "LoRA adapter only (load it on top of the base model with peft)"
    else:
        for f in model_dir.iterdir():
            if f.is_file() and f.suffix in MODEL_FILES and f.name not in SKIP:
                shutil.copy2(f, out / f.name)
        how = "fully fine-tuned weights, copied"
    ExportRecord(how=how, merged=bool(adapter and merge), task=recipe.task,
                 base_model=recipe.model.base, base_model_hub_id=base.hub_id,
                 files={f.name: sha256_file(f) for f in sorted(out.iterdir()) if f.is_file()},
                 load_with=f"transformers.{task.auto_class}.from_pretrained(path)").write(out)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file()) / 1e6
    return f"export: {how} -> {out} ({size:,.0f} MB, safetensors)"


def _copy_tokenizer(src: Path, dst: Path) -> None:
    for f in src.iterdir():
        if f.is_file() and (f.name.startswith(("tokenizer", "special_tokens", "chat_template")) or f.suffix == ".jinja"):
            shutil.copy2(f, dst / f.name)


def read_export_record(folder: Path) -> ExportRecord:
    return ExportRecord.read(Path(folder) / ExportRecord.FILE)
