"""Shared fixtures: a small, deterministic banking77 slice, fast recipes for it, and ONE real `tunewise run`
(MiniLM, CPU) that many end-to-end tests share, so the suite trains only a few times overall."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BANKING77 = DATA / "banking77"
REPO = Path(__file__).resolve().parents[1]

# Six well-separated banking77 intents; the first N rows of each (in file order) are taken, so the slice is
# the same on every machine.
SLICE_INTENTS = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "age_limit", "pin_blocked",
                 "cancel_transfer"]
SLICE_TRAIN_PER_INTENT = 40
SLICE_TEST_PER_INTENT = 15

# fast settings for every recipe the tests write (2 CPU cores: keep steps few and short)
FAST = {
    "train": {"epochs": 3, "batch_size": 16, "lr": 1.0e-4, "precision": "fp32", "device": "cpu",
              "early_stopping_patience": None},
    "model": {"base": "minilm", "max_length": 48},
    "evaluate": {"bootstrap_samples": 200, "baselines": ["majority", "tfidf_logreg"]},
}


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONUNBUFFERED="1", TQDM_DISABLE="1")
    return env


def tunewise(*args: str | Path, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m tunewise ARGS` in a subprocess, offline; returns the completed process (text output)."""
    return subprocess.run([sys.executable, "-m", "tunewise", *map(str, args)], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _slice(source: Path, per_intent: int) -> list[dict]:
    taken: dict[str, int] = {label: 0 for label in SLICE_INTENTS}
    rows = []
    with open(source, encoding="utf-8", newline="") as fh:
        for record in csv.DictReader(fh):
            label = record["category"]
            if label in taken and taken[label] < per_intent:
                taken[label] += 1
                rows.append({"text": record["text"], "label": label})
    assert all(n == per_intent for n in taken.values()), f"banking77 slice is short: {taken}"
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not BANKING77.is_dir():
        pytest.skip(f"shared data not found at {BANKING77} (CI clones the repo next to shared/)")
    return DATA


@pytest.fixture(scope="session")
def banking_slice(data_root, tmp_path_factory) -> dict[str, Path]:
    """{"train": train.jsonl, "test": test.jsonl}: 6 intents x 40 train rows and x 15 test rows of banking77."""
    folder = tmp_path_factory.mktemp("banking77_slice")
    return {
        "train": _write_jsonl(folder / "train.jsonl", _slice(BANKING77 / "train.csv", SLICE_TRAIN_PER_INTENT)),
        "test": _write_jsonl(folder / "test.jsonl", _slice(BANKING77 / "test.csv", SLICE_TEST_PER_INTENT)),
    }


def write_recipe(path: Path, train: Path, test: Path | None, output_dir: Path, *, name: str = "banking6",
                 **sections) -> Path:
    """A fast classification recipe for the slice. Keyword args replace whole sections or add keys to them."""
    recipe: dict = {
        "name": name,
        "seed": 13,
        "output_dir": str(output_dir),
        "data": {"train": {"path": str(train), "source": "banking77 (PolyAI), slice", "license": "CC-BY-4.0",
                           "contains_personal_data": False},
                 "validation_fraction": 0.1},
        **{k: dict(v) for k, v in FAST.items()},
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
def make_recipe(banking_slice, tmp_path_factory):
    """make_recipe(name=..., **sections) -> path of a fast recipe over the slice, with its own output_dir."""
    def make(name: str = "banking6", **sections) -> Path:
        folder = tmp_path_factory.mktemp(f"recipe_{name}")
        return write_recipe(folder / "recipe.yaml", banking_slice["train"], banking_slice["test"], folder / "runs",
                            name=name, **sections)
    return make


@pytest.fixture(scope="session")
def session_recipe(make_recipe) -> Path:
    return make_recipe("banking6")


@pytest.fixture(scope="session")
def session_run(session_recipe) -> Path:
    """Runs ONE full `tunewise run` (data, train, evaluate, card) and yields its run directory."""
    proc = tunewise("run", session_recipe)
    assert proc.returncode == 0, f"tunewise run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    runs = sorted((session_recipe.parent / "runs").iterdir())
    assert len(runs) == 1, runs
    yield runs[0]
