"""Data larger than memory, beyond the data stage: causal-LM training reads, encodes and packs its splits through
memory-mapped Arrow files, and classification evaluation reads, tokenises, predicts and writes the test split a
batch at a time. Both run here under a hard memory cap below the size of the data (in a subprocess), and both give
exactly what the in-memory code gives on the same rows.

The cap is RLIMIT_DATA, the kernel's limit on a process's private memory (heap and anonymous mappings), set at what
the same code needed on a few rows plus three quarters of the data's size. (RLIMIT_AS, which tests/test_streaming.py
caps, also counts the address space of file mappings, so it forbids memory-mapping a file larger than the cap at
all, however little of it is ever in memory: the wrong measure for memory-mapped data.)
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

from conftest import BANKING77, DATA, subprocess_env

DIALOGSUM = DATA / "dialogsum" / "dialogsum.test.jsonl"
DATA_MB = 16  # each split under the cap (causal train, classification test)
DIALOGUES_PER_EXAMPLE = 4  # long prompts (cut to max_length): the cost per byte is tokenising, not templates
QUESTIONS_PER_ROW = 12  # rows of about 1 KB (the 1,000 rows that Arrow conversion buffers must fit the cap)
# for MiniLM's predictions: rows of about 3 KB, a third as many forward passes for the same bytes (the classifier
# reads the first CLASSIFIER_MAX_LENGTH tokens of each)
QUESTIONS_PER_PREDICTED_ROW = 36
REPLY_TOO_LONG_EVERY = 50  # one causal example in 50 has a reply longer than max_length: quarantined, counted
CAUSAL_MAX_LENGTH = 160
PACK_LENGTH = 640
CLASSIFIER_MAX_LENGTH = 8

# glibc malloc never hands heap memory back (no trim, no mmap below 32 MiB; one arena), so the private memory
# measured after the few-row run is the high-water mark of the same code, batches included; one tokenizer thread
STEADY_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(2**40),
                 "MALLOC_ARENA_MAX": "1", "RAYON_NUM_THREADS": "1"}

CAPPED = r'''
import json, resource, sys
from pathlib import Path

import torch
torch.set_num_threads(1)

from tunewise.artifacts.rows import records_dataset
from tunewise.evaluate.tables import SplitTable
from tunewise.hardware import Placement
from tunewise.models import resolve_base_model
from tunewise.tasks import task_for
from tunewise.tasks.causal import encode_examples_dataset, pack_dataset

small, big, cache, max_length, pack_length, cls_length = (Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]),
                                                          int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
allowance = int(sys.argv[7])
causal = task_for("chat")
classifier = task_for("classification")
smollm2 = causal.load_tokenizer(resolve_base_model("smollm2").path)
minilm_path = resolve_base_model("minilm").path
minilm = classifier.load_tokenizer(minilm_path)
labels = json.loads((small / "labels.json").read_text())["labels"]
model = classifier.load_model(minilm_path, labels)
cpu = Placement(device="cpu", precision="fp32", reason="test")

def data_kib():  # the private memory (heap, anonymous mappings) this process holds: what RLIMIT_DATA limits
    for line in open("/proc/self/status"):
        if line.startswith("VmData:"):
            return int(line.split()[1])

def run(folder, name):
    out = cache / name
    examples = records_dataset(folder, "train", out / "records", kind="example")
    enc = encode_examples_dataset(smollm2, examples, task="chat", max_length=max_length, truncation="truncate",
                                  split="train", cache_file=out / "train.arrow")
    packed = pack_dataset(enc.dataset, pack_length, out / "packed.arrow")
    packed_examples = sum(len(s) for b in packed.select_columns(["seq_lens"]).iter(10_000) for s in b["seq_lens"])
    table = SplitTable.read(folder, out / "eval")
    (out / "eval").mkdir(parents=True, exist_ok=True)
    y = table.label_ids({label: i for i, label in enumerate(labels)})
    probs = table.predict_proba(model, minilm, max_length=cls_length, batch_size=32, placement=cpu)
    table.write_predictions(out / "predictions.jsonl", classifier, labels, probs)
    groups = table.slice_groups(["channel"])
    return {"examples": enc.examples, "encoded": len(enc.dataset), "rejected": len(enc.rejected),
            "rejected_checks": sorted({r["check"] for r in enc.rejected}), "totals": enc.totals(),
            "packed_rows": len(packed), "packed_examples": packed_examples,
            "longest_packed": max(packed.data.column("length").to_pylist()), "scored": len(table),
            "labels_seen": int(len(set(y.tolist()))), "probs_rows": int(probs.shape[0]),
            "slice_rows": {v: int(len(i)) for v, i in groups["channel"].items()}}

run(small, "small")  # the same code paths and imports, on a few rows
start_up = data_kib() * 1024
cap = start_up + allowance
resource.setrlimit(resource.RLIMIT_DATA, (cap, resource.getrlimit(resource.RLIMIT_DATA)[1]))
result = run(big, "big")
try:  # the control: under the same cap, holding the data's lines in memory fails
    lines = (big / "train.jsonl").read_text(encoding="utf-8").splitlines()
    holds = True
except MemoryError:
    holds = False
print(json.dumps({**result, "start_up": start_up, "cap": cap, "peak_data": data_kib() * 1024,
                  "whole_file_fits": holds}))
'''


def causal_examples(megabytes: float) -> list[dict]:
    """Chat examples from real DialogSum dialogues (each made distinct) until the file would reach `megabytes`;
    every REPLY_TOO_LONG_EVERY-th has a reply too long for any prompt to fit (the one quarantine `truncate` makes)."""
    from tunewise.artifacts.rows import Example

    source = [json.loads(line) for line in DIALOGSUM.read_text(encoding="utf-8").splitlines()]
    out, size, i = [], 0, 0
    while size < megabytes * 2**20:
        row = source[i % len(source)]
        reply = row["summary1"] if (i + 1) % REPLY_TOO_LONG_EVERY else " ".join([row["summary1"]] * 40)
        dialogues = "\n\n".join(source[(i + j) % len(source)]["dialogue"] for j in range(DIALOGUES_PER_EXAMPLE))
        ex = Example(id=f"big:{i + 1}", messages=[
            {"role": "user", "content": f"Summarize the first of these dialogues ({i}).\n\n{dialogues}"},
            {"role": "assistant", "content": reply}], meta={}, origin=f"big.jsonl:{i + 1}")
        line = json.dumps(asdict(ex), ensure_ascii=False)
        out.append(asdict(ex))
        size += len(line.encode()) + 1
        i += 1
    return out


def classification_rows(megabytes: float, questions_per_row: int = QUESTIONS_PER_ROW) -> tuple[list[dict], list[str]]:
    """Classification rows of several real banking77 questions each (distinct, with a slice field) up to
    `megabytes`."""
    from tunewise.artifacts.rows import Row

    with open(BANKING77 / "test.csv", encoding="utf-8", newline="") as f:
        source = [(r["text"], r["category"]) for r in csv.DictReader(f)]
    out, size, i = [], 0, 0
    while size < megabytes * 2**20:
        picked = [source[(i * 7 + j) % len(source)] for j in range(questions_per_row)]
        row = Row(id=f"t{i}", text=f"{i}: " + " ".join(t for t, _ in picked), label=picked[0][1],
                  meta={"channel": ("email", "chat", "web")[i % 3]}, origin=f"test.csv:{i + 2}")
        out.append(asdict(row))
        size += len(json.dumps(asdict(row), ensure_ascii=False).encode()) + 1
        i += 1
    return out, sorted({label for _, label in source})


def write_data(folder: Path, causal: list[dict], rows: list[dict], labels: list[str]) -> Path:
    folder.mkdir(parents=True)
    for name, records in (("train", causal), ("test", rows)):
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    (folder / "labels.json").write_text(json.dumps({"schema_version": 1, "labels": labels}))
    return folder


def test_causal_encoding_and_classifier_evaluation_run_in_less_memory_than_their_data(tmp_path):
    """16 MiB of chat examples encoded (chat template, loss masks, truncation, quarantine) and packed, and 16 MiB
    of classification rows tokenised, predicted by MiniLM, written out and grouped by slice, with the process's
    private memory capped at what the same code needed for a few rows plus 3/4 of the data's size; reading the
    file into memory under that cap fails. Every row is accounted for."""
    if not (BANKING77.is_dir() and DIALOGSUM.is_file()):
        pytest.skip("shared banking77 / dialogsum data not found")
    causal = causal_examples(DATA_MB)
    rows, labels = classification_rows(DATA_MB, QUESTIONS_PER_PREDICTED_ROW)
    big = write_data(tmp_path / "big", causal, rows, labels)
    # a few full batches of each step, so that the start-up measure includes the memory a batch needs
    small = write_data(tmp_path / "small", causal[:300], rows[:1000], labels)
    size = (big / "train.jsonl").stat().st_size
    allowance = size * 3 // 4  # the allocators' own slack varies by a few MiB from run to run
    proc = subprocess.run([sys.executable, "-c", CAPPED, str(small), str(big), str(tmp_path / "cache"),
                           str(CAUSAL_MAX_LENGTH), str(PACK_LENGTH), str(CLASSIFIER_MAX_LENGTH), str(allowance)],
                          env={**subprocess_env(), **STEADY_MALLOC}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not result["whole_file_fits"], result  # the cap binds
    assert result["cap"] - result["start_up"] < size

    too_long = len(causal) // REPLY_TOO_LONG_EVERY
    assert result["examples"] == len(causal)
    assert result["rejected"] == too_long > 0 and result["rejected_checks"] == ["too_long"]
    assert result["encoded"] + result["rejected"] == len(causal)
    totals = result["totals"]
    assert totals["examples"] == result["encoded"]
    assert 0 < totals["truncated_examples"] <= result["encoded"]  # long dialogues had their end cut, counted
    assert totals["tokens"] <= result["encoded"] * CAUSAL_MAX_LENGTH
    assert result["packed_examples"] == result["encoded"] and result["longest_packed"] <= PACK_LENGTH
    assert -(-totals["tokens"] // PACK_LENGTH) <= result["packed_rows"] < result["encoded"]

    predictions = [json.loads(line) for line in open(tmp_path / "cache" / "big" / "predictions.jsonl",
                                                     encoding="utf-8")]
    assert result["scored"] == result["probs_rows"] == len(predictions) == len(rows)
    assert [p["id"] for p in predictions] == [r["id"] for r in rows]
    assert [p["label"] for p in predictions] == [r["label"] for r in rows]
    assert all(p["pred"] in labels and abs(sum(p["probs"].values()) - 1) < 1e-3 for p in predictions)
    channels = [r["meta"]["channel"] for r in rows]
    assert result["slice_rows"] == {c: channels.count(c) for c in ("chat", "email", "web")}
    print(f"{size / 2**20:.1f} MiB per split; start-up {result['start_up'] / 2**20:.0f} MiB private memory, cap "
          f"{result['cap'] / 2**20:.0f} MiB, at the end {result['peak_data'] / 2**20:.0f} MiB")


def test_the_streamed_paths_give_what_the_in_memory_ones_give(tmp_path):
    """Row for row: the Arrow encoding and packing of causal examples equal `encode_all` and `pack` (the same
    ids, labels, truncation counts, quarantine records and packed rows), and the classifier's table prediction
    equals `predict_proba` + `prediction_rows` over the rows in memory."""
    if not (BANKING77.is_dir() and DIALOGSUM.is_file()):
        pytest.skip("shared banking77 / dialogsum data not found")
    from tunewise.artifacts.rows import Example, load_split, records_dataset
    from tunewise.evaluate.tables import SplitTable
    from tunewise.hardware import Placement
    from tunewise.models import resolve_base_model
    from tunewise.tasks import task_for
    from tunewise.tasks.causal import as_features, encode_all, encode_examples_dataset, pack, pack_dataset
    from tunewise.tasks.classification import predict_proba, prediction_rows

    source = [json.loads(line) for line in DIALOGSUM.read_text(encoding="utf-8").splitlines()[:60]]
    examples = [Example(id=f"d:{i}", messages=[{"role": "user", "content": r["dialogue"]},
                                               {"role": "assistant", "content": r["summary1"]}],
                        meta={"topic": r.get("topic1")}, origin=f"d.jsonl:{i + 1}") for i, r in enumerate(source)]
    (tmp_path / "causal").mkdir()
    (tmp_path / "causal" / "train.jsonl").write_text("".join(json.dumps(asdict(e)) + "\n" for e in examples))
    tok = task_for("chat").load_tokenizer(resolve_base_model("smollm2").path)
    for truncation in ("reject", "truncate"):
        expected, rejected = encode_all(tok, examples, task="chat", max_length=200, truncation=truncation,
                                        split="train")
        got = encode_examples_dataset(tok, records_dataset(tmp_path / "causal", "train", tmp_path / "rec",
                                                           kind="example"),
                                      task="chat", max_length=200, truncation=truncation, split="train",
                                      cache_file=tmp_path / f"{truncation}.arrow")
        assert got.rejected == rejected and got.examples == len(examples)
        assert bool(rejected) == (truncation == "reject")  # too long with reject: quarantined, the same records
        assert got.features().to_list() == [{**f, "length": len(f["input_ids"])} for f in as_features(expected)]
        assert got.totals()["truncated_tokens"] == sum(e.truncated for e in expected)
        assert [vars(e) for e in got.head(3)] == [vars(e) for e in expected[:3]]
        packed = pack_dataset(got.dataset, 512, tmp_path / f"{truncation}.packed.arrow", rows_per_batch=5)
        assert packed.to_list() == [{**r, "length": len(r["input_ids"])} for r in pack(expected, 512)]

    task = task_for("classification")
    minilm = resolve_base_model("minilm").path
    records, labels = classification_rows(0.08)
    write_data(tmp_path / "cls", [], records, labels)
    rows = load_split(tmp_path / "cls", "test")
    cls_tok = task.load_tokenizer(minilm)
    model = task.load_model(minilm, labels)
    cpu = Placement(device="cpu", precision="fp32", reason="test")
    scored = rows[:-3]  # evaluate.max_examples: the first rows
    expected = predict_proba(model, cls_tok, [r.text for r in scored], max_length=24, batch_size=32, placement=cpu)
    (tmp_path / "scratch").mkdir()
    table = SplitTable.read(tmp_path / "cls", tmp_path / "scratch", max_rows=len(scored))
    assert table.n_split == len(rows) and len(table) == len(scored)
    probs = table.predict_proba(model, cls_tok, max_length=24, batch_size=32, placement=cpu)
    np.testing.assert_array_equal(probs, expected)  # the same batches, so the same numbers
    table.write_predictions(tmp_path / "predictions.jsonl", task, labels, probs)
    assert (tmp_path / "predictions.jsonl").read_text(encoding="utf-8") == "".join(
        json.dumps(r, ensure_ascii=False) + "\n" for r in prediction_rows(scored, labels, expected))
    assert table.slice_groups(["channel"])["channel"]["chat"].tolist() == [
        i for i, r in enumerate(scored) if r.meta["channel"] == "chat"]
