"""Data larger than memory, after training: the evaluate stage's baselines and the monitor's reference profile read
the splits a line at a time and hold only a bounded sample (evaluate.baseline_max_rows training rows, monitor.
reference_max_rows test rows, the training words' counts). Both run here, on the real stage code, under a hard
memory cap below the size of the data (in a subprocess); and a split within the caps gives exactly what reading it
whole gave.

The cap is RLIMIT_DATA at what the same code needed on a few rows plus three quarters of the data's size, as in
tests/test_streaming_causal.py (which explains why RLIMIT_DATA and not RLIMIT_AS). The reference loads two models
and frees them when it returns; glibc hands the blocks of 32 MiB and more back at once, so the warm-up's need is
its peak private memory, sampled while it runs, not what is left at its end.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from conftest import BANKING77, subprocess_env
from test_streaming_causal import STEADY_MALLOC, classification_rows, write_data

DATA_MB = 16  # each split (train and test) under the cap
BASELINE_MAX_ROWS = 500
REFERENCE_MAX_ROWS = 100
MAX_EXAMPLES = 300  # evaluate.max_examples: the baselines predict the first 300 test rows (a real option), not 16k

CAPPED = r'''
import json, os, resource, subprocess, sys
from pathlib import Path

import torch
torch.set_num_threads(1)

from tunewise.artifacts.monitor import ReferenceProfile
from tunewise.artifacts.rows import load_split
from tunewise.evaluate.classification import fit_baselines
from tunewise.evaluate.tables import SplitTable
from tunewise.monitor.reference import write_reference
from tunewise.recipe import validate_recipe
from tunewise.rundir import RunDir, scratch_folder

small, big, allowance = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
recipe = validate_recipe(json.loads(sys.argv[4]))

def data_kib():  # the private memory (heap, anonymous mappings) this process holds: what RLIMIT_DATA limits
    for line in open("/proc/self/status"):
        if line.startswith("VmData:"):
            return int(line.split()[1])

WATCH = """
import select, sys
status, peak = f"/proc/{sys.argv[1]}/status", 0
while not select.select([sys.stdin], [], [], 0.001)[0]:  # until the watched process closes our stdin
    with open(status) as f:
        peak = max(peak, next(int(line.split()[1]) for line in f if line.startswith("VmData:")))
print(peak)
"""

class Peak:  # the most private memory held while a run lasts, read every millisecond by another process (a thread
    # here would wait for the GIL while numpy and scipy hold it, and miss the fit's short-lived arrays)
    def __enter__(self):
        self.watcher = subprocess.Popen([sys.executable, "-c", WATCH, str(os.getpid())], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        return self
    def __exit__(self, *exc):
        self.kib = max(int(self.watcher.communicate()[0]), data_kib())

def run(root, name):
    data, out = root / "data", root / name
    labels = json.loads((data / "labels.json").read_text())["labels"]
    (out / "eval").mkdir(parents=True)
    with scratch_folder(out / "eval") as cache:
        test = SplitTable.read(data, cache, max_rows=recipe.evaluate.max_examples)
        systems, fitted = fit_baselines(recipe, data, test, labels, out / "eval")
        scored = len(test)
    (out / "reference").mkdir()
    write_reference(RunDir(root, recipe, {}), out / "reference")
    profile = ReferenceProfile.read(out / "reference" / "profile.json")
    return {"fitted": fitted, "scored": scored, "baseline_rows": {k: int(v.shape[0]) for k, v in systems.items()},
            "reference_rows": profile.rows, "reference_split_rows": profile.split_rows,
            "train_words": profile.vocabulary.train_words, "vocabulary": profile.vocabulary.size}

# the same code paths and imports, on a few rows, twice: the second run needs some 190 MiB more than the first
# (the heap the first leaves behind is fragmented), a third no more than the second
run(small, "first")
with Peak() as warm_up:
    small_result = run(small, "second")
start_up = warm_up.kib * 1024
cap = start_up + allowance
with Peak() as capped:
    resource.setrlimit(resource.RLIMIT_DATA, (cap, resource.getrlimit(resource.RLIMIT_DATA)[1]))
    result = run(big, "out")
try:  # the control: under the same cap, the same run with the train split held as rows (as the stages held it) fails
    held = load_split(big / "data", "train")
    run(big, "control")
    failed = None
except (MemoryError, RuntimeError) as exc:  # numpy and Python raise MemoryError, torch a RuntimeError
    if isinstance(exc, RuntimeError) and "allocate" not in str(exc):
        raise
    failed = f"{type(exc).__name__}: {str(exc)[:200]}"
print(json.dumps({**result, "small": small_result, "start_up": start_up, "cap": cap, "peak": capped.kib * 1024,
                  "control_failed": failed}))
'''


def _recipe(**evaluate) -> dict:
    return {"name": "streaming-eval", "seed": 7, "data": {"train": "x.jsonl"},
            "model": {"base": "minilm", "max_length": 32},
            "train": {"device": "cpu", "precision": "fp32"},
            "evaluate": {"baseline_max_rows": BASELINE_MAX_ROWS, **evaluate},
            "monitor": {"reference_max_rows": REFERENCE_MAX_ROWS, "embedding_sample": 20}}


def _run_dir(root: Path, train: list[dict], test: list[dict], labels: list[str], model: Path | None = None) -> Path:
    """root/data/ as the data stage leaves it (train.jsonl, test.jsonl, labels.json), and root/model/ (the train
    stage's folder) a link to `model`."""
    from tunewise.artifacts.data import Labels

    folder = write_data(root / "data", train, test, labels)
    Labels(labels=labels, derived=True).write(folder)
    if model is not None:
        (root / "model").symlink_to(model)
    return root


def test_baselines_and_reference_profile_run_in_less_memory_than_their_data(tmp_path):
    """16 MiB of training rows and 16 MiB of test rows: the evaluate stage's two baselines (fitted on a seeded
    sample of 500 training rows, predicting the first 300 test rows a chunk at a time) and the reference profile
    (100 sampled test rows predicted by MiniLM, 20 embedded, the vocabulary counted over the whole train split),
    with the process's private memory capped at what the same code needed for a few rows plus 3/4 of one split's
    size; the same run holding the train split as rows, as these stages did, fails under that cap."""
    if not BANKING77.is_dir():
        pytest.skip("shared banking77 data not found")
    from tunewise.models import resolve_base_model
    from tunewise.tasks import task_for

    rows, labels = classification_rows(DATA_MB)
    task = task_for("classification")
    minilm = resolve_base_model("minilm").path
    model = tmp_path / "minilm-classifier"  # what the reference predicts with: MiniLM with a fresh head
    task.load_model(minilm, labels).save_pretrained(model)
    task.load_tokenizer(minilm).save_pretrained(model)
    recipe = _recipe(max_examples=MAX_EXAMPLES)
    big = _run_dir(tmp_path / "big", rows, rows[::-1], labels, model)
    # tfidf_logreg's fit needs memory in proportion to its features times the classes, which depends on which
    # rows were sampled: the warm-up fits on the very rows the big run's sample picks, so that what the capped
    # run needs beyond it is what the split's size adds (the test split: more rows than the reference samples)
    picked = np.sort(np.random.default_rng(recipe["seed"]).choice(len(rows), BASELINE_MAX_ROWS, replace=False))
    small = _run_dir(tmp_path / "small", [rows[i] for i in picked], rows[-1000:], labels, model)
    size = (big / "data" / "train.jsonl").stat().st_size
    allowance = size * 3 // 4
    proc = subprocess.run([sys.executable, "-c", CAPPED, str(small), str(big), str(allowance), json.dumps(recipe)],
                          env={**subprocess_env(), **STEADY_MALLOC}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["control_failed"], result  # the cap binds
    assert result["cap"] - result["start_up"] < size

    assert result["fitted"] == {"fitted_rows": BASELINE_MAX_ROWS, "train_rows": len(rows)}
    assert result["scored"] == MAX_EXAMPLES
    assert result["baseline_rows"] == {"majority": MAX_EXAMPLES, "tfidf_logreg": MAX_EXAMPLES}
    assert result["reference_rows"] == REFERENCE_MAX_ROWS and result["reference_split_rows"] == len(rows)
    # the vocabulary saw every training row: each row's text starts with its own number
    assert result["train_words"] >= len(rows) > result["small"]["train_words"]
    print(f"{size / 2**20:.1f} MiB per split; start-up {result['start_up'] / 2**20:.0f} MiB private memory, cap "
          f"{result['cap'] / 2**20:.0f} MiB, peak of the capped run {result['peak'] / 2**20:.0f} MiB "
          f"({(result['peak'] - result['start_up']) / 2**20:+.1f} MiB); holding the split: {result['control_failed']}")


def _banking77(n_train: int, n_test: int) -> tuple[list[dict], list[dict], list[str]]:
    """Real banking77 rows as the data stage writes them (train from train.csv, test from test.csv)."""
    from tunewise.artifacts.rows import Row

    def read(name: str, n: int) -> list[dict]:
        with open(BANKING77 / name, encoding="utf-8", newline="") as f:
            picked = list(csv.DictReader(f))[:n]
        return [asdict(Row(id=f"{name}:{i}", text=r["text"], label=r["category"], meta={}, origin=f"{name}:{i + 2}"))
                for i, r in enumerate(picked)]

    train, test = read("train.csv", n_train), read("test.csv", n_test)
    return train, test, sorted({r["label"] for r in train + test})


def test_baselines_within_baseline_max_rows_are_what_the_whole_split_gave(tmp_path):
    """A train split of at most evaluate.baseline_max_rows rows: fit_baselines gives exactly the probabilities of
    fitting on every training row in order and predicting every test text at once (the code before the cap), and
    the description says nothing of a sample. One row over the cap: fitted on the seeded sample, and it says so."""
    if not BANKING77.is_dir():
        pytest.skip("shared banking77 data not found")
    from tunewise.artifacts.rows import load_split
    from tunewise.evaluate import baselines
    from tunewise.evaluate.classification import baseline_description, fit_baselines
    from tunewise.evaluate.tables import SplitTable
    from tunewise.recipe import validate_recipe
    from tunewise.rundir import scratch_folder

    train, test, labels = _banking77(400, 200)
    root = _run_dir(tmp_path, train, test, labels)
    data = root / "data"
    rows = load_split(data, "train")
    texts = [r.text for r in load_split(data, "test")]
    y = np.array([labels.index(r.label) for r in rows])
    for cap, fitted_rows in ((len(train), len(train)), (len(train) - 1, len(train) - 1)):
        recipe = validate_recipe(_recipe(baseline_max_rows=cap))
        out = tmp_path / f"eval-{cap}"
        out.mkdir()
        with scratch_folder(out) as cache:
            systems, fitted = fit_baselines(recipe, data, SplitTable.read(data, cache), labels, out)
        assert fitted == {"fitted_rows": fitted_rows, "train_rows": len(train)}
        keep = (np.arange(len(rows)) if cap >= len(rows)
                else np.sort(np.random.default_rng(recipe.seed).choice(len(rows), cap, replace=False)))
        for name in ("majority", "tfidf_logreg"):
            expected = baselines.fit_predict_proba(name, [rows[i].text for i in keep], y[keep], texts, len(labels),
                                                   recipe.seed)
            np.testing.assert_array_equal(systems[name], expected)
            sampled = baseline_description(name, fitted)
            if cap >= len(rows):
                assert sampled == baselines.describe(name)
            else:
                assert sampled.endswith(f"fitted on a seeded sample of {cap:,} of {len(rows):,} training rows "
                                        f"(evaluate.baseline_max_rows)")
            predictions = [json.loads(line) for line in open(out / f"predictions_{name}.jsonl", encoding="utf-8")]
            assert [p["id"] for p in predictions] == [r["id"] for r in test]


def test_sample_split_is_the_whole_list_choice_read_a_line_at_a_time(tmp_path):
    """sample_split keeps the rows `sorted(rng.choice(n, cap))` picked from the whole list (what the reference and
    the probes did), leaves the generator untouched when the split fits, counts lines as read_jsonl does (a BOM,
    blank lines), and still stops at a damaged line it only reads past."""
    from tunewise.artifacts.rows import count_split, iter_split, load_split, sample_split
    from tunewise.errors import DataError

    train, _, labels = _banking77(300, 0)
    lines = [json.dumps(r) for r in train]
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes(b"\xef\xbb\xbf" + "\n\n".join(lines).encode() + b"\n  \n")
    whole = load_split(folder, "train")
    assert count_split(folder, "train") == len(whole) == len(train)
    assert [r.id for r in iter_split(folder, "train", kind="row")] == [r["id"] for r in train]
    for cap in (20, 299):
        rng, before = np.random.default_rng(3), np.random.default_rng(3)
        got, n = sample_split(folder, "train", cap, rng, kind="row")
        assert n == len(whole)
        assert got == [whole[i] for i in sorted(before.choice(len(whole), cap, replace=False))]
        assert rng.random() == before.random()  # the same draws after, as the reference's embedding sample needs
    for cap in (300, None):
        rng = np.random.default_rng(3)
        assert sample_split(folder, "train", cap, rng, kind="row") == (whole, 300)
        assert rng.random() == np.random.default_rng(3).random()
    (folder / "train.jsonl").write_text("\n".join(lines[:250] + ['{"id": "x"}'] + lines[250:]) + "\n")
    with pytest.raises(DataError, match=r"train\.jsonl:251: not a row written by the data stage"):
        sample_split(folder, "train", 10, np.random.default_rng(0), kind="row")
