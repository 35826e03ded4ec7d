"""Peak memory against data size: the data stage, the audit, and the train stage's input pipeline on JSONL files
of growing size (real banking77 rows, repeated with their own ids and a few words of other rows appended, so
neither dedup nor the audit collapses them; one malformed line in 1,000, quarantined).

Each measurement runs in a fresh process and reports its peak anonymous memory (RssAnon, sampled every 20 ms; the
resident peak VmHWM, which also counts pages of memory-mapped files, is in the JSON):
  data    the data stage alone (read, validate, quarantine, derive labels, unique ids, carve, write)
  audit   `tunewise audit RECIPE`: the data stage and the audit (duplicates, MinHash near-duplicates, lengths in
          MiniLM tokens, PII, label noise on a 20k-row sample, ...) in one process
  train   what the classifier's train stage does with the data before and while training: the train split as
          memory-mapped Arrow, tokenised into an Arrow file, then every batch drawn through a DataLoader with the
          stage's collator (no model: the model's memory does not depend on the data)
The growth of each peak between the smallest and the largest file, per row, is what the stage holds per row.

    python bench/streaming.py                       # 16, 64 and 256 MiB (needs ~3 GB of disk in --workdir)
    python bench/streaming.py --sizes 2,4 --no-docs # a quick check that it runs

Run it on a quiet machine: the figures are memory, not time, but a busy machine makes the large sizes slow.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BANKING77 = ROOT.parent / "shared" / "data" / "banking77"
RESULTS = ROOT / "bench" / "results" / "streaming.json"

# Peak anonymous memory (heap, numpy and torch buffers), sampled every 20 ms: what the process must hold. Pages of
# memory-mapped Arrow files count in the resident size too, but they are the page cache's, which the kernel drops
# under pressure, so the resident peak (VmHWM) is reported beside it, not instead of it.
PEAK = '''
import threading, time
_anon = [0]
def _status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
def _sample():
    while True:
        _anon[0] = max(_anon[0], _status("RssAnon"))
        time.sleep(0.02)
threading.Thread(target=_sample, daemon=True).start()
def peak_mib():
    return {"anon": max(_anon[0], _status("RssAnon")), "resident": _status("VmHWM")}
'''

DATA = PEAK + '''
import json, sys
from pathlib import Path
from tunewise.data.prepare import prepare_data
from tunewise.recipe import load_recipe
message = prepare_data(load_recipe(sys.argv[1]), Path(sys.argv[2]))
print(json.dumps({"peak_mib": peak_mib(), "message": message}))
'''

AUDIT = PEAK + '''
import json, sys
from tunewise.cli import app
try:
    app(["audit", sys.argv[1]], standalone_mode=False)
except SystemExit:
    pass
print(json.dumps({"peak_mib": peak_mib()}))
'''

TRAIN_INPUT = PEAK + '''
import json, sys
from pathlib import Path
from torch.utils.data import DataLoader
from tunewise.artifacts.rows import load_labels, rows_dataset
from tunewise.models import resolve_base_model
from tunewise.recipe import load_recipe
from tunewise.tasks import task_for
from tunewise.tasks.classification import encode_rows_dataset
recipe = load_recipe(sys.argv[1]); data, cache = Path(sys.argv[2]), Path(sys.argv[3])
task = task_for(recipe)
tokenizer = task.load_tokenizer(resolve_base_model(recipe.model.base).path)
rows = rows_dataset(data, "train", cache / "rows")
encoded, _ = encode_rows_dataset(tokenizer, rows, load_labels(data), recipe.model.max_length, cache / "train.arrow")
encoded = encoded.remove_columns("length")
batches = sum(1 for _ in DataLoader(encoded, batch_size=32, shuffle=True, collate_fn=task.collator(tokenizer)))
print(json.dumps({"peak_mib": peak_mib(), "rows": len(encoded), "batches": batches}))
'''


def varied_banking77(path: Path, megabytes: float, seed: int = 0) -> dict[str, int]:
    with open(BANKING77 / "train.csv", encoding="utf-8", newline="") as fh:
        rows = [(r["text"], r["category"]) for r in csv.DictReader(fh)]
    rng = random.Random(seed)
    vocabulary = [w for text, _ in rows[:3000] for w in text.split()]
    size, n, bad = 0, 0, 0
    with open(path, "w", encoding="utf-8") as fh:
        while size < megabytes * 2**20:
            if n % 1000 == 999:
                line, bad = '{"id": "broken", "text": \n', bad + 1
            else:
                text, label = rows[n % len(rows)]
                extra = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(4, 16)))
                line = json.dumps({"id": f"b77-{n}", "text": f"{text} {extra}", "label": label}) + "\n"
            fh.write(line)
            size += len(line.encode("utf-8"))
            n += 1
    return {"lines": n, "bad": bad, "bytes": size}


def measure(script: str, *args: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT / "src")}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "seconds": round(time.perf_counter() - t0, 1)}


def run_size(folder: Path, megabytes: float) -> dict:
    folder.mkdir(parents=True)
    data_file = folder / "train.jsonl"
    written = varied_banking77(data_file, megabytes)
    recipe = folder / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "streaming", "output_dir": str(folder / "runs"), "model": {"base": "minilm", "max_length": 64},
        "data": {"train": {"path": str(data_file), "license": "CC-BY-4.0", "source": "banking77 (varied copies)",
                           "contains_personal_data": False},
                 "on_error": "quarantine", "validation_fraction": 0.05, "test_fraction": 0.05}}),
        encoding="utf-8")
    data = measure(DATA, str(recipe), str(folder / "data"))
    audit = measure(AUDIT, str(recipe))
    train = measure(TRAIN_INPUT, str(recipe), str(folder / "data"), str(folder / "cache"))
    summary = json.loads((folder / "data" / "summary.json").read_text())
    kept = sum(split["rows"] for split in summary["splits"].values())
    assert kept + summary["quarantined_total"] == written["lines"], (kept, summary["quarantined_total"], written)
    result = {"file_mib": round(written["bytes"] / 2**20, 1), "rows": written["lines"],
              "quarantined": summary["quarantined_total"], "train_rows": train["rows"],
              "peak_mib": {"data": round(data["peak_mib"]["anon"]), "data+audit": round(audit["peak_mib"]["anon"]),
                           "train input": round(train["peak_mib"]["anon"])},
              "peak_resident_mib": {"data": round(data["peak_mib"]["resident"]),
                                    "data+audit": round(audit["peak_mib"]["resident"]),
                                    "train input": round(train["peak_mib"]["resident"])},
              "seconds": {"data": data["seconds"], "data+audit": audit["seconds"], "train input": train["seconds"]}}
    shutil.rmtree(folder)  # gigabytes at the large sizes
    return result


def table(results: list[dict]) -> str:
    stages = ["data", "data+audit", "train input"]
    lines = ["| data file | rows | " + " | ".join(f"peak anonymous memory: {s}" for s in stages) + " |",
             "|---:|---:|" + "---:|" * len(stages)]
    for r in results:
        lines.append(f"| {r['file_mib']:,.0f} MiB | {r['rows']:,} | "
                     + " | ".join(f"{r['peak_mib'][s]:,} MiB" for s in stages) + " |")
    if len(results) > 1:
        a, b = results[0], results[-1]
        per_row = {s: (b["peak_mib"][s] - a["peak_mib"][s]) * 2**20 / (b["rows"] - a["rows"]) for s in stages}
        per_byte = {s: (b["peak_mib"][s] - a["peak_mib"][s]) / (b["file_mib"] - a["file_mib"]) for s in stages}
        lines.append("| growth | per row | " + " | ".join(f"{per_row[s]:,.0f} B ({per_byte[s]:.2f} MiB per MiB "
                                                           f"of data)" for s in stages) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,64,256", help="data file sizes in MiB, comma-separated")
    parser.add_argument("--workdir", type=Path, default=None, help="where the files go (default: a temp folder)")
    parser.add_argument("--no-docs", action="store_true", help="print only; do not write docs/benchmarks.md")
    args = parser.parse_args()
    if not BANKING77.is_dir():
        raise SystemExit(f"banking77 not found at {BANKING77}")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="tunewise-streaming-"))
    results = []
    for size in [float(s) for s in args.sizes.split(",")]:
        results.append(run_size(work / f"{size:g}mib", size))
        print(json.dumps(results[-1]), flush=True)
    print(table(results))
    if not args.no_docs:
        sys.path.insert(0, str(ROOT / "bench"))
        from _docs import record

        body = (f"`python bench/streaming.py --sizes {args.sizes}`. Peak anonymous memory of a fresh process per "
                f"stage; the growth row is what each stage holds per row of data.\n\n{table(results)}")
        record(RESULTS, {"results": results}, "streaming.py", body, "Data larger than memory")


if __name__ == "__main__":
    main()
