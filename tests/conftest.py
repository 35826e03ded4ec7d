"""Shared fixtures: a small, deterministic banking77 slice, fast recipes for it, the `tunewise` CLI as a
subprocess, and ONE real `tunewise run` (MiniLM on CPU) that the end-to-end tests share, so the whole suite
trains only a few times."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tunewise.recipe import load_recipe

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BANKING77 = DATA / "banking77"

# Six banking77 intents; the first N rows of each, in file order, make the slice (the same on every machine).
SLICE_INTENTS = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "age_limit", "pin_blocked",
                 "cancel_transfer"]
SLICE_TRAIN_PER_INTENT = 40
SLICE_TEST_PER_INTENT = 15

# Fast settings for every recipe the tests write. fp32 keeps predictions bit-for-bit reproducible and comparable
# with a plain transformers reload; early stopping is off so the step count of a schedule is known in advance.
FAST: dict[str, dict] = {
    "model": {"base": "minilm", "max_length": 48},
    "train": {"epochs": 3, "batch_size": 16, "lr": 1.0e-4, "precision": "fp32", "device": "cpu",
              "early_stopping_patience": None},
    "evaluate": {"bootstrap_samples": 200, "baselines": ["majority", "tfidf_logreg"]},
}


# ---------------------------------------------------------------- the CLI as a subprocess


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONUNBUFFERED="1", TQDM_DISABLE="1")
    # One intra-op thread: on a shared 2-core machine, OpenMP spin-waiting against other busy processes makes
    # 2-thread training over 10x slower; with 1 thread the run time barely depends on what else is running.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_tunewise(*args: str | Path, cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """`python -m tunewise ARGS` in a subprocess (offline). A Python traceback is never acceptable output."""
    proc = subprocess.run([sys.executable, "-m", "tunewise", *map(str, args)], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr + proc.stdout, f"tunewise {args} printed a traceback:\n{proc.stderr}"
    return proc


@pytest.fixture(scope="session")
def cli_env() -> dict[str, str]:
    """The environment the CLI subprocesses run with (for tests that need Popen)."""
    return subprocess_env()


@pytest.fixture(scope="session")
def tunewise() -> Callable[..., subprocess.CompletedProcess]:
    """tunewise("run", recipe, "train.epochs=1", cwd=...) -> CompletedProcess (asserts no traceback)."""
    return run_tunewise


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="session")
def jsonl() -> Callable[[Path], list[dict]]:
    return read_jsonl


# ---------------------------------------------------------------- the data


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder next to the repository (CI clones the repo beside shared/)."""
    if not BANKING77.is_dir():
        pytest.skip(f"shared data not found at {BANKING77} (CI clones the repository next to shared/)")
    return DATA


def banking77_rows(source: Path, per_intent: int) -> list[dict]:
    taken = {label: 0 for label in SLICE_INTENTS}
    rows = []
    with open(source, encoding="utf-8", newline="") as fh:
        for record in csv.DictReader(fh):
            label = record["category"]
            if label in taken and taken[label] < per_intent:
                taken[label] += 1
                rows.append({"text": record["text"], "label": label})
    assert all(n == per_intent for n in taken.values()), f"the banking77 slice is short: {taken}"
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def banking_slice(shared_data, tmp_path_factory) -> dict[str, Path]:
    """{"train": .jsonl, "test": .jsonl}: 6 intents x 40 train rows and 6 x 15 test rows of banking77."""
    folder = tmp_path_factory.mktemp("banking77_slice")
    return {
        "train": write_jsonl(folder / "train.jsonl", banking77_rows(BANKING77 / "train.csv", SLICE_TRAIN_PER_INTENT)),
        "test": write_jsonl(folder / "test.jsonl", banking77_rows(BANKING77 / "test.csv", SLICE_TEST_PER_INTENT)),
    }


# ---------------------------------------------------------------- recipes and the shared run


def write_recipe(path: Path, *, train: str | Path, test: str | Path | None, output_dir: Path,
                 name: str = "banking6", **sections) -> Path:
    """A fast classification recipe. Keyword args add keys to a section (dicts) or set top-level keys."""
    recipe: dict = {
        "name": name,
        "seed": 13,
        "output_dir": str(output_dir),
        "data": {"train": {"path": str(train), "source": "banking77 (PolyAI), slice", "license": "CC-BY-4.0",
                           "contains_personal_data": False},
                 "validation_fraction": 0.1},
        **{key: dict(value) for key, value in FAST.items()},
    }
    if test is not None:
        recipe["data"]["test"] = {"path": str(test), "license": "CC-BY-4.0"}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(recipe.get(key), dict):
            recipe[key].update(value)
        else:
            recipe[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def make_recipe(banking_slice, tmp_path_factory) -> Callable[..., Path]:
    """make_recipe(name, **sections) -> a fast recipe over the banking77 slice, in a fresh folder whose
    runs/ subfolder is its output_dir."""
    def make(name: str = "banking6", **sections) -> Path:
        folder = tmp_path_factory.mktemp(f"recipe_{name}")
        return write_recipe(folder / "recipe.yaml", train=banking_slice["train"], test=banking_slice["test"],
                            output_dir=folder / "runs", name=name, **sections)
    return make


@pytest.fixture(scope="session")
def session_recipe(make_recipe) -> Path:
    return make_recipe("banking6")


@pytest.fixture(scope="session")
def session_run(session_recipe, tunewise) -> Path:
    """ONE full `tunewise run` (data, train, evaluate, card) on the slice; yields its run directory.
    Tests must not modify it: copy it (shutil.copytree) to tamper with it or to rerun a stage."""
    proc = tunewise("run", session_recipe)
    assert proc.returncode == 0, f"tunewise run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    runs = sorted((session_recipe.parent / "runs").iterdir())
    assert len(runs) == 1, runs
    root = runs[0]
    yield root


# ---------------------------------------------------------------- kill -9 and resume


def complete_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders whose trainer_state.json (the last file the Trainer writes) is complete JSON."""
    done = []
    for state in root.glob("model/checkpoints/checkpoint-*/trainer_state.json"):
        try:
            json.loads(state.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        done.append(state.parent)
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def start_and_kill_at_first_checkpoint(recipe: Path, overrides: list[str], env: dict, log: Path) -> Path:
    """Start `tunewise run`, SIGKILL it as soon as a complete checkpoint exists; returns the run directory."""
    resolved = load_recipe(recipe, overrides)
    root = Path(resolved.output_dir) / f"{resolved.name}-{resolved.fingerprint()}"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tunewise", "run", str(recipe), *overrides], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 480
            while not complete_checkpoints(root):
                assert proc.poll() is None, f"the run ended before its first checkpoint:\n{log.read_text()}"
                assert time.monotonic() < deadline, "no checkpoint was written in time"
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert "evaluate:" not in log.read_text(), "the run finished before it was killed"
    return root
