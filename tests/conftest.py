"""Shared fixtures: a small, deterministic banking77 slice, fast recipes for it, the `tunewise` CLI as a
subprocess, and ONE real `tunewise run` (MiniLM on CPU) that the end-to-end tests share, so the whole suite
trains only a few times.

The suite runs on pytest-xdist workers (`-n auto` in pyproject.toml), one per CPU up to 4, each pinned to its own
CPU: the CLI subprocesses train on one thread, so a serial run leaves every other core idle. The shared runs are
built once for all workers (`built_once`)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml


# ---------------------------------------------------------------- one CPU per xdist worker

XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ... in a worker; unset in a serial run
MAX_WORKERS = 4  # each worker builds what no other has yet; past 4 the shared runs and model loads dominate


def pytest_xdist_auto_num_workers(config) -> int:
    return max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))


if XDIST_WORKER is not None:
    # Pinned before torch is imported, so OpenMP, the thread plan (tunewise.hardware.plan_threads reads the
    # affinity mask) and every subprocess see one CPU: two workers with two threads each on two cores spin-wait
    # on each other and run many times slower.
    _cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {_cpus[int(XDIST_WORKER.removeprefix("gw")) % len(_cpus)]})


# The files that take longest (on one CPU of a 2-core AVX2 machine, 2026-12-02: 300 s down to 50 s), longest first:
# handed out first under xdist (with --no-loadscope-reorder), so that no long file starts when the rest is done.
SLOWEST_FILES = ("test_faults.py", "test_causal.py", "test_distributed.py", "test_guard.py", "test_streaming_causal.py",
                 "test_streaming.py", "test_faithfulness.py", "test_streaming_eval.py", "test_gate.py", "test_probes.py",
                 "test_monitor.py", "test_audit.py", "test_serve.py")


def pytest_collection_modifyitems(items) -> None:
    if XDIST_WORKER is not None:  # a serial run keeps pytest's order
        rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order is kept


def built_once(tmp_path_factory, name: str, build: Callable[[Path], Path]) -> Path:
    """build(folder) for a session fixture that every worker shares: under xdist the first worker to ask builds it
    in a folder all workers see (beside their own temporary folders) while the others wait, then read it. The
    shared runs are read-only to tests (they copy before changing anything), so sharing them across processes is
    as safe as sharing them across the tests of one. A serial run builds in its own temporary folder."""
    if XDIST_WORKER is None:
        return build(tmp_path_factory.mktemp(name))
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent
    done = root / f"{name}.built"
    with FileLock(str(root / f"{name}.lock")):
        if done.is_file():
            return Path(done.read_text(encoding="utf-8"))
        folder = root / name
        shutil.rmtree(folder, ignore_errors=True)  # left by a worker whose build failed
        folder.mkdir()
        result = build(folder)
        done.write_text(str(result), encoding="utf-8")
        return result


DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BANKING77 = DATA / "banking77"


def native_bf16_matmuls() -> bool:
    """AMX or AVX-512 bf16 on the CPU, or a bf16 GPU. Without them (an AVX2-only CPU) torch emulates bf16 matmuls
    at about 1 GFLOP/s against about 95 in fp32 (a 2-core AMD EPYC), and a test that forces bf16 training runs for
    many minutes instead of seconds."""
    import torch

    from tunewise.hardware import cpu_facts

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool({"amx_bf16", "avx512_bf16"} & set(cpu_facts()["isa"]))


needs_bf16_matmuls = pytest.mark.skipif(not native_bf16_matmuls(),
                                        reason="forces bf16, which this CPU only emulates (no AMX or AVX-512 bf16)")


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


@pytest.fixture(autouse=True)
def threads_given_back(monkeypatch):
    """A stage run in this process (train, evaluate) sets its torch thread count and OMP_NUM_THREADS /
    MKL_NUM_THREADS; each test gives them back, or every later CLI subprocess would inherit them and compute fp32
    sums in another order (a rerun would then not reproduce a run made earlier in the suite)."""
    import torch

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        was = os.environ.get(name)
        monkeypatch.setenv(name, was or "")  # recorded, so the teardown restores it (or its absence)
        if was is None:
            monkeypatch.delenv(name)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


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
    def build(folder: Path) -> Path:
        write_jsonl(folder / "train.jsonl", banking77_rows(BANKING77 / "train.csv", SLICE_TRAIN_PER_INTENT))
        write_jsonl(folder / "test.jsonl", banking77_rows(BANKING77 / "test.csv", SLICE_TEST_PER_INTENT))
        return folder

    folder = built_once(tmp_path_factory, "banking77_slice", build)
    return {"train": folder / "train.jsonl", "test": folder / "test.jsonl"}


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
        return banking_recipe(tmp_path_factory.mktemp(f"recipe_{name}"), banking_slice, name=name, **sections)
    return make


def banking_recipe(folder: Path, banking_slice: dict[str, Path], name: str = "banking6", **sections) -> Path:
    """folder/recipe.yaml: a fast recipe over the banking77 slice whose output_dir is folder/runs."""
    return write_recipe(folder / "recipe.yaml", train=banking_slice["train"], test=banking_slice["test"],
                        output_dir=folder / "runs", name=name, **sections)


@pytest.fixture(scope="session")
def session_recipe(banking_slice, tmp_path_factory) -> Path:
    return built_once(tmp_path_factory, "recipe_banking6", lambda folder: banking_recipe(folder, banking_slice))


@pytest.fixture(scope="session")
def session_run(session_recipe, tunewise, tmp_path_factory) -> Path:
    """ONE full `tunewise run` (data, train, evaluate, card) on the slice; returns its run directory.
    Tests must not modify it: copy it (shutil.copytree) to tamper with it or to rerun a stage."""
    def build(_folder: Path) -> Path:
        proc = tunewise("run", session_recipe)
        assert proc.returncode == 0, f"tunewise run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        runs = sorted((session_recipe.parent / "runs").iterdir())
        assert len(runs) == 1, runs
        return runs[0]

    return built_once(tmp_path_factory, "session_run", build)


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


# ---------------------------------------------------------------- copies of shared runs


WEIGHT_SUFFIXES = (".safetensors", ".onnx", ".onnx_data", ".bin", ".pt", ".pth")


def _link_weights(src: str, dst: str) -> str:
    """copytree's copy function: model weights are hard-linked (no bytes written), everything else copied. Tunewise
    never rewrites a weight file in place and no test tampers with one; JSON and logs that tests edit are copies."""
    if src.endswith(WEIGHT_SUFFIXES):
        try:
            os.link(src, dst)
            return dst
        except OSError:  # another file system: fall back to a copy
            pass
    return shutil.copy2(src, dst)


def copy_run(run: Path, dest: Path, *, ignore: Callable | None = None) -> Path:
    """A private copy of a shared run directory for a test that reruns a stage or edits files: its model weights
    are hard links to the shared run's (a copy of a causal run would otherwise write ~0.5 GB)."""
    shutil.copytree(run, dest, copy_function=_link_weights, ignore=ignore)
    return Path(dest)


# ---------------------------------------------------------------- ONE tiny causal run, shared


CAUSAL_TRAIN_ROWS, CAUSAL_TEST_ROWS = 16, 10
CAUSAL_RECIPE: dict = {
    "name": "causal-tiny", "task": "generation", "seed": 11, "audit": {"enabled": False},
    "data": {"prompt_template": "Translate to German: {en}", "completion_field": "de", "validation_fraction": 0.25},
    "model": {"base": "smollm2", "max_length": 96},
    "train": {"epochs": 1, "batch_size": 8, "lr": 5e-4, "precision": "fp32", "early_stopping_patience": None},
    "evaluate": {"max_new_tokens": 12, "bootstrap_samples": 200, "generation_batch_size": 10,
                 "baselines": ["base_model"]},
    "humaneval": {"n": CAUSAL_TEST_ROWS, "overlap": 0.5},
    "probes": {"crows_pairs": False},  # 1,508 pairs x 2 models; tests/test_probes.py covers CrowS-Pairs
}


@pytest.fixture(scope="session")
def session_causal_run(shared_data, tunewise, tmp_path_factory) -> Path:
    """ONE full `tunewise run` of SmolLM2 + LoRA on 16 Multi30k en-de pairs (4 carved for validation), evaluated on
    10 test prompts against the base model zero-shot, card and merged export included. Shared by test_causal
    (the end-to-end checks), test_humaneval (studies of its outputs) and test_serve_chat (serving its export).
    Tests must not modify it: copy it with `copy_run` (weights hard-linked)."""
    src = shared_data / "multi30k_en_de"
    if not src.is_dir():
        pytest.skip(f"shared data not found at {src}")
    return built_once(tmp_path_factory, "causal", lambda root: _build_causal_run(src, root))


def _build_causal_run(src: Path, root: Path) -> Path:
    (root / "train.jsonl").write_text("".join((src / "train.jsonl").read_text().splitlines(True)[:CAUSAL_TRAIN_ROWS]))
    (root / "test.jsonl").write_text(
        "".join((src / "test_2016_flickr.jsonl").read_text().splitlines(True)[:CAUSAL_TEST_ROWS]))
    recipe = json.loads(json.dumps(CAUSAL_RECIPE))
    recipe["output_dir"] = str(root / "runs")
    recipe["data"].update(
        train={"path": str(root / "train.jsonl"), "source": "Multi30k (slice)", "license": "CC-BY-4.0",
               "contains_personal_data": False},
        test={"path": str(root / "test.jsonl"), "source": "Multi30k test 2016 (slice)", "license": "CC-BY-4.0",
              "contains_personal_data": False})
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    proc = run_tunewise("run", path)
    assert proc.returncode == 0, f"the causal run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    run = Path(proc.stdout.split("run directory: ")[1].split()[0])
    assert run.parent == root / "runs", proc.stdout
    return run


# ---------------------------------------------------------------- ONE injection guard, shared

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FAST_GUARD = {"model": {"base": "minilm", "max_length": 64},
              # precision auto: bf16 autocast where the CPU has AMX (1.7x faster steps there), fp32 elsewhere; the
              # guard stage still scores in fp32, so the threshold and serving agree either way
              "train": {"epochs": 3, "batch_size": 16, "lr": 1.5e-4, "precision": "auto", "device": "cpu",
                        "early_stopping_patience": None},
              "evaluate": {"bootstrap_samples": 200, "baselines": ["majority"]},
              "audit": {"label_noise": False}, "probes": {"enabled": False}}


@pytest.fixture(scope="session")
def session_guard_run(shared_data, tunewise, tmp_path_factory) -> Path:
    """A small injection guard (3 epochs, max_length 64) on examples/injection-guard.yaml's settings and the data
    examples/data/make_guard_data.py builds, with the held-out benign sets scored by the guard stage. Shared by
    test_guard (its quality and card) and test_serve (screening and blocking requests). Do not modify it."""
    if not (shared_data / "prompt_injections" / "train.jsonl").is_file():
        pytest.skip(f"{shared_data / 'prompt_injections'} not found")
    return built_once(tmp_path_factory, "guard", lambda folder: _build_guard_run(shared_data, folder, tunewise))


def _build_guard_run(shared_data: Path, folder: Path, tunewise) -> Path:
    prep = subprocess.run([sys.executable, str(EXAMPLES / "data" / "make_guard_data.py"), "--shared", str(shared_data),
                           "--out", str(folder / "data")], capture_output=True, text=True, timeout=120)
    assert prep.returncode == 0, prep.stderr
    example = yaml.safe_load((EXAMPLES / "injection-guard.yaml").read_text())
    recipe = {**example, **FAST_GUARD, "output_dir": str(folder / "runs")}
    recipe["data"] = {**example["data"],
                      "train": {**example["data"]["train"], "path": str(folder / "data" / "train.jsonl")},
                      "test": {**example["data"]["test"], "path": str(folder / "data" / "test.jsonl")}}
    recipe["guard"] = {**example["guard"], "benign_eval": [
        {**example["guard"]["benign_eval"][0], "path": str(folder / "data" / "ood_benign.jsonl"), "max_rows": 150},
        {**example["guard"]["benign_eval"][1], "path": str(EXAMPLES / "data" / "helpdesk" / "test.jsonl"),
         "max_rows": 120}]}
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    proc = tunewise("run", folder / "recipe.yaml")
    assert proc.returncode == 0, f"guard run failed:\n{proc.stdout}\n{proc.stderr}"
    assert "guard: threshold" in proc.stdout and "out-of-distribution benign" in proc.stdout
    [root] = sorted((folder / "runs").iterdir())
    return root
