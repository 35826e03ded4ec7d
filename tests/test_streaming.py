"""Data larger than memory: the data stage and the audit stream their input, so the memory each uses beyond its
fixed start-up cost stays below the size of the data (each checked under a hard cap in a subprocess); the training
data is read back as a memory-mapped Arrow table."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import BANKING77, subprocess_env

REPO = Path(__file__).resolve().parents[1]

DATA_MB = 16  # the file under the cap; bench/streaming.py measures larger ones

CAPPED_DATA_STAGE = r'''
import json, resource, sys
from pathlib import Path

from tunewise.data.prepare import prepare_data
from tunewise.recipe import load_recipe

def peak_kib():  # the most address space this process has held so far (VmPeak)
    for line in open("/proc/self/status"):
        if line.startswith("VmPeak:"):
            return int(line.split()[1])

small, big, allowance = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
prepare_data(load_recipe(small), small.parent / "small-out")  # the same code paths and imports, on 1,000 rows
start_up = peak_kib() * 1024
cap = start_up + allowance
resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
message = prepare_data(load_recipe(big), big.parent / "big-out")
try:  # the control: under the same cap, holding the file's lines in memory fails
    lines = Path(load_recipe(big).data.train.path).read_text(encoding="utf-8").splitlines()
    holds = True
except MemoryError:
    holds = False
print(json.dumps({"message": message, "start_up": start_up, "cap": cap, "peak": peak_kib() * 1024,
                  "whole_file_fits": holds}))
'''


CAPPED_AUDIT = r'''
import json, resource, sys
from pathlib import Path

import tunewise.audit.scan
from tunewise.audit.stage import run_audit
from tunewise.data.prepare import prepare_data
from tunewise.recipe import load_recipe

# the label-noise model is fitted on a seeded sample of at most this many train rows: a fixed cost, whatever the
# data's size, so a smaller sample keeps the test fast and leaves every code path as it is
tunewise.audit.scan.LABEL_NOISE_MAX_ROWS = NOISE_ROWS = 2000

def private_bytes():  # the private memory (heap, anonymous mappings) this process holds: what RLIMIT_DATA limits
    for line in open("/proc/self/status"):
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024

warm, big, big_data, allowance = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
prepare_data(load_recipe(warm), warm.parent / "warm-data")
for attempt in range(2):  # every import, cache and pool, and the label-noise model at its full sample
    run_audit(load_recipe(warm), warm.parent / "warm-data", warm.parent / f"warm-audit{attempt}")
start_up = private_bytes()  # the heap is never trimmed (STEADY_MALLOC), so this is the warm-up's high-water mark
cap = start_up + allowance
resource.setrlimit(resource.RLIMIT_DATA, (cap, resource.getrlimit(resource.RLIMIT_DATA)[1]))
message = run_audit(load_recipe(big), big_data, big.parent / "big-audit")
end = private_bytes()
print(json.dumps({"message": message, "start_up": start_up, "cap": cap, "end": end}))
'''
# One heap that never shrinks, so the private memory after the warm-up is its high-water mark; allocations under
# 32 MiB come from that heap (RLIMIT_DATA, unlike RLIMIT_AS, does not count the memory-mapped temp files the audit
# spills to, nor thread arenas' reserved address space, which varied by up to 113 MiB from run to run)
STEADY_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(2**40),
                 "MALLOC_ARENA_MAX": "1", "RAYON_NUM_THREADS": "1"}
WARM_LINES = 2500  # 2,000+ train rows: the label-noise check's sample (NOISE_ROWS) is full, as on the big file
WARM_EVERY = 4  # ... taken every 4th line of the first 10,000, so all 77 banking77 labels are in it, as in the big
# file: the label-noise model's size grows with the labels it sees (~15 MiB more for 77 than for the first 20)
AUDIT_SHARE = 0.75  # the audit's cap above its start-up, as a share of the data's size


def varied_banking77(path: Path, megabytes: float) -> dict[str, int]:
    """The benchmark's generator (bench/streaming.py): real banking77 rows made distinct, one line in 1,000 broken."""
    spec = importlib.util.spec_from_file_location("bench_streaming", REPO / "bench" / "streaming.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.varied_banking77(path, megabytes)


def data_recipe(folder: Path, name: str, train: Path) -> Path:
    recipe = {"name": name, "output_dir": str(folder / "runs"), "model": {"base": "minilm"},
              "data": {"train": {"path": str(train), "license": "CC-BY-4.0"}, "on_error": "quarantine",
                       "validation_fraction": 0.05, "test_fraction": 0.05}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def capped_data_stage(tmp_path_factory):
    """The data stage on 16 MiB of JSONL under the cap (see the test below); its output feeds the audit's test."""
    if not BANKING77.is_dir():
        pytest.skip("shared banking77 data not found")
    tmp_path = tmp_path_factory.mktemp("capped")
    big = tmp_path / "big.jsonl"
    written = varied_banking77(big, DATA_MB)
    small = tmp_path / "small.jsonl"
    with open(big, encoding="utf-8") as src:
        small.write_text("".join(next(src) for _ in range(1000)), encoding="utf-8")
    allowance = big.stat().st_size // 2  # half the data, on top of what 1,000 rows needed
    proc = subprocess.run([sys.executable, "-c", CAPPED_DATA_STAGE, str(data_recipe(tmp_path, "small", small)),
                           str(data_recipe(tmp_path, "big", big)), str(allowance)],
                          env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"folder": tmp_path, "big": big, "written": written, "result": result}


def test_the_data_stage_runs_in_far_less_memory_than_its_data(capped_data_stage):
    """16 MiB of JSONL through the whole data stage (read, validate, quarantine, derive labels, make ids unique,
    carve validation and test stratified, write) with the process's address space capped at what the same stage
    needed for 1,000 rows plus half the data's size; reading the file into memory under that cap fails.
    Every row is accounted for: rows in = rows kept + rows quarantined."""
    tmp_path, big = capped_data_stage["folder"], capped_data_stage["big"]
    written, result = capped_data_stage["written"], capped_data_stage["result"]
    assert not result["whole_file_fits"], result  # the cap binds: the file as lines does not fit under it
    assert result["cap"] - result["start_up"] <= big.stat().st_size / 2

    out = tmp_path / "big-out"
    summary = json.loads((out / "summary.json").read_text())
    kept = sum(split["rows"] for split in summary["splits"].values())
    assert summary["quarantined_total"] == written["bad"] > 0
    assert kept + summary["quarantined_total"] == written["lines"]
    lines = {name: sum(1 for _ in open(out / f"{name}.jsonl", encoding="utf-8")) for name in summary["splits"]}
    assert lines == {name: split["rows"] for name, split in summary["splits"].items()}
    assert sum(1 for _ in open(out / "quarantine.jsonl", encoding="utf-8")) == written["bad"]
    print(f"{big.stat().st_size / 2**20:.1f} MiB of data, {written['lines']:,} lines; start-up "
          f"{result['start_up'] / 2**20:.0f} MiB of address space, cap {result['cap'] / 2**20:.0f} MiB, "
          f"peak {result['peak'] / 2**20:.0f} MiB")


def test_the_audit_runs_in_less_memory_than_its_data(capped_data_stage):
    """The whole audit (exact and MinHash near-duplicates, leakage, label conflicts and label noise, lengths in
    MiniLM tokens, PII, the plots and the datacard) of the 16 MiB file's ~95,000 rows, with the private memory
    (RLIMIT_DATA) capped at its start-up plus 0.75 times the data's size (12 MiB). Start-up is measured after
    auditing 2,500 lines of the same file twice, spread over its first 10,000 lines so they hold all 77 labels:
    that warm-up includes the fixed costs that do not grow with the data (imports, the tokenizer, the label-noise
    model on its full 2,000-row sample over all the labels, the heap's working set of one batch). Beyond it the
    audit keeps its per-row state in files (audit/spill.py, and dedup.py's partitioned duplicate search) and
    holds about 5-6 MiB here, ~60 bytes a row against ~176 bytes a row of data. The audit before that (the
    duplicate index's arrays in memory, a global sort, hashing 2,048 texts a step) ran out of memory under
    this cap while hashing.
    The findings account for every row: the rows audited are the rows the data stage kept, and
    quarantine.jsonl holds every row the data stage quarantined plus every row a finding recommends removing."""
    folder, big = capped_data_stage["folder"], capped_data_stage["big"]
    written = capped_data_stage["written"]
    warm = folder / "warm.jsonl"
    with open(big, encoding="utf-8") as src:
        lines = [line for _, line in zip(range(WARM_LINES * WARM_EVERY), src)]
    warm.write_text("".join(lines[::WARM_EVERY]), encoding="utf-8")
    allowance = int(AUDIT_SHARE * big.stat().st_size)  # less than the data, on top of the warm-up's high-water
    proc = subprocess.run([sys.executable, "-c", CAPPED_AUDIT, str(data_recipe(folder, "warm", warm)),
                           str(folder / "big.yaml"), str(folder / "big-out"), str(allowance)],
                          env={**subprocess_env(), **STEADY_MALLOC}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (
        f"the audit of {big.stat().st_size / 2**20:.1f} MiB of data did not finish with its private memory capped at "
        f"start-up + {AUDIT_SHARE:g} x the data's size (+{allowance / 2**20:.1f} MiB):\n"
        + proc.stdout[-3000:] + proc.stderr[-3000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["cap"] - result["start_up"] < big.stat().st_size  # the cap is below the data's size

    findings = json.loads((folder / "big-audit" / "findings.json").read_text())
    summary = json.loads((folder / "big-out" / "summary.json").read_text())
    stats = findings["stats"]
    assert {name: s["rows"] for name, s in stats["splits"].items()} == \
        {name: s["rows"] for name, s in summary["splits"].items()}
    assert stats["data_quarantined"] == written["bad"] > 0
    assert sum(s["rows"] for s in stats["splits"].values()) + stats["data_quarantined"] == written["lines"]
    assert stats["near_duplicates"]["candidate_pairs"] > 0  # the near-duplicate search ran on every row
    noise = next(f for f in findings["findings"] if f["check"] == "label_noise")
    assert noise["details"]["checked_rows"] == 2000  # NOISE_ROWS: the check ran on its full sample
    removals = sum(f["count"] for f in findings["findings"]
                   if (f["check"], f["kind"]) in {("duplicate", "exact"), ("empty", "near_empty"), ("leak", "exact")})
    lines = [json.loads(line) for line in open(folder / "big-audit" / "quarantine.jsonl", encoding="utf-8")]
    assert len(lines) == written["bad"] + removals
    assert all(line["text"] for line in lines if line["stage"] == "audit")  # each with its excerpt
    data_mib = big.stat().st_size / 2**20
    print(f"{data_mib:.1f} MiB of data, {written['lines']:,} lines; audit start-up {result['start_up'] / 2**20:.0f} "
          f"MiB of private memory, cap start-up + {AUDIT_SHARE:g} x the data's size "
          f"(+{(result['cap'] - result['start_up']) / 2**20:.1f} MiB), at the end "
          f"+{(result['end'] - result['start_up']) / 2**20:.1f} MiB above start-up")


def test_the_carved_split_is_sklearns_stratified_split_exactly():
    """The data stage carves splits without sklearn (whose split holds Python lists), drawing the same random
    numbers: the same held-out rows as `train_test_split(..., stratify=labels)` (or its plain shuffle where
    stratifying is impossible), over many label mixes, fractions and seeds."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    from tunewise.data.splits import stratified_held_out

    rng = np.random.default_rng(0)
    for trial in range(150):
        n = int(rng.integers(4, 400))
        classes = int(rng.integers(1, 30))
        labels = np.sort(rng.zipf(1.5, n) % classes) if trial % 3 == 0 else rng.integers(0, classes, n)
        indices = np.sort(rng.choice(10 * n, n, replace=False))
        held_count = int(rng.integers(1, n))
        seed = int(rng.integers(0, 2**31 - 1))
        try:
            _, expected = train_test_split(list(indices), test_size=held_count, random_state=seed,
                                           stratify=list(labels))
        except ValueError:
            _, expected = train_test_split(list(indices), test_size=held_count, random_state=seed, shuffle=True)
        got = stratified_held_out(indices, labels, held_count, seed)
        assert sorted(got.tolist()) == sorted(int(i) for i in expected), (trial, n, classes, held_count, seed)


def test_training_reads_its_splits_as_memory_mapped_arrow(banking_slice, tmp_path):
    """The classifier's train stage reads data/<split>.jsonl as a memory-mapped Arrow table and tokenises it into
    an Arrow file on disk: the same token ids, lengths and labels, row for row, as tokenising the rows in memory,
    with nothing of the table held in memory (its rows are in the Arrow files it names)."""
    from tunewise.artifacts.rows import load_split, rows_dataset
    from tunewise.data.prepare import prepare_data
    from tunewise.models import resolve_base_model
    from tunewise.recipe import load_recipe
    from tunewise.tasks import task_for
    from tunewise.tasks.classification import encode_rows_dataset

    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(yaml.safe_dump({"name": "arrow", "output_dir": str(tmp_path / "runs"),
                                           "model": {"base": "minilm", "max_length": 16},
                                           "data": {"train": {"path": str(banking_slice["train"])}}}))
    recipe = load_recipe(recipe_path)
    prepare_data(recipe, tmp_path / "data")
    task = task_for(recipe)
    tokenizer = task.load_tokenizer(resolve_base_model("minilm").path)
    labels = json.loads((tmp_path / "data" / "labels.json").read_text())["labels"]

    rows = rows_dataset(tmp_path / "data", "train", tmp_path / "cache" / "rows")
    encoded, truncated = encode_rows_dataset(tokenizer, rows, labels, 16, tmp_path / "cache" / "train.arrow")
    expected, expected_truncated = task.encode(tokenizer, load_split(tmp_path / "data", "train"), recipe,
                                               split="train", labels=labels)
    assert truncated == expected_truncated > 0  # max_length 16 cuts some banking77 questions
    assert sorted(encoded.column_names) == sorted(expected.column_names)
    assert encoded.to_dict() == expected.to_dict()
    assert rows.cache_files and encoded.cache_files == [{"filename": str(tmp_path / "cache" / "train.arrow")}]
    assert encoded.data.nbytes > 0 and not encoded._indices  # a plain memory-mapped table, no index mapping
