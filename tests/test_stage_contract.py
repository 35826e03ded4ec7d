"""The stage contract, checked on the source itself: stages meet only through the run directory.

Each stage package may import the shared ground (recipe, run directory, registry, artifacts, tasks, models,
hardware, the plotting kit) and its own modules, never another stage package. No module imports another
module's private (`_name`) helpers. The registry, the CLI and the packages agree.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunewise import stages

SRC = Path(__file__).resolve().parents[1] / "src" / "tunewise"
STAGE_PACKAGES = sorted({s.run_path.split(":")[0].split(".")[1] for s in stages.STAGES})
SHARED = {"recipe", "errors", "rundir", "stages", "artifacts", "tasks", "models", "hardware", "licences", "kit",
          "safety", "onnx_backend"}


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) for every `import` / `from ... import` in a file, absolute form."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative import
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            out.append((module, [a.name for a in node.names], node.lineno))
    return out


def _top(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "tunewise" and len(parts) > 1 else None


def test_every_registry_stage_is_a_package_with_its_run_function():
    names = stages.names()
    assert names[:3] == ["data", "audit", "train"] and "evaluate" in names and len(set(names)) == len(names)
    for stage in stages.STAGES:  # the pipeline runs the registry in order: what a stage needs comes before it
        assert all(names.index(n) < names.index(stage.name) for n in stage.needs), stage.name
    assert len({s.folder for s in stages.STAGES}) == len(stages.STAGES), "two stages share a folder"
    for stage in stages.STAGES:
        module, _, func = stage.run_path.partition(":")
        assert callable(getattr(importlib.import_module(module), func)), stage.name
        assert (SRC / module.split(".")[1]).is_dir(), f"stage {stage.name} is not a package under tunewise/"


@pytest.mark.parametrize("package", STAGE_PACKAGES)
def test_no_stage_package_imports_another(package):
    offenders = []
    for path in sorted((SRC / package).rglob("*.py")):
        for module, _, line in _imports(path):
            top = _top(module)
            if top in STAGE_PACKAGES and top != package:
                offenders.append(f"{path.relative_to(SRC)}:{line} imports {module}")
    assert not offenders, "stages meet only through the run directory:\n" + "\n".join(offenders)


@pytest.mark.parametrize("package", sorted(SHARED - {"kit"}))
def test_shared_ground_imports_no_stage_package_at_module_level(package):
    paths = [SRC / f"{package}.py"] if (SRC / f"{package}.py").is_file() else sorted((SRC / package).rglob("*.py"))
    offenders = []
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:  # module level only: `tasks` lazily reaching the models is fine, a cycle is not
            if isinstance(node, ast.ImportFrom) and _top(node.module or "") in STAGE_PACKAGES:
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} imports {node.module}")
    assert not offenders, "\n".join(offenders)


def test_no_module_imports_a_private_name_from_another_module():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        for module, names, line in _imports(path):
            if module.startswith("tunewise"):
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if private:
                    offenders.append(f"{path.relative_to(SRC)}:{line} imports {private} from {module}")
    assert not offenders, "\n".join(offenders)


def test_each_stage_with_a_command_has_one_in_the_cli():
    from tunewise.cli import app

    commands = {c.name for c in app.registered_commands}
    for stage in stages.STAGES:
        if stage.cli is not None:
            assert stage.name in commands, f"stage {stage.name} has no `tunewise {stage.name}` command"


def test_the_library_is_offline_by_default_without_the_cli():
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    code = "import tunewise, huggingface_hub.constants as c; print(c.HF_HUB_OFFLINE)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    env["HF_HUB_OFFLINE"] = "0"  # the user may opt in
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_loading_a_recipe_and_asking_its_task_imports_no_ml_library():
    """The recipe consults the Task protocol while it validates; that must stay cheap (every CLI call, every
    error message), so the task facts live in a module that imports neither torch nor transformers."""
    code = ("import sys; from tunewise.recipe import validate_recipe; from tunewise.tasks import task_for; "
            "r = validate_recipe({'name': 'x', 'task': 'chat', 'data': {'train': 't.jsonl'}}); task_for(r).has_prompts; "
            "task_for('classification').has_labels; "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
