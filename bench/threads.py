"""Threads under contention: MiniLM training steps per second at each intra-op thread count, on a quiet machine and
with CPU-bound competitors beside it, and the count tunewise picks (tunewise.hardware.plan_threads: the CPUs in
the affinity mask, capped by the cgroup quota, shared among the processes; TUNEWISE_THREADS overrides).

    python bench/threads.py                 # full: 30 timed steps per cell; writes bench/results/threads.json and
                                            # its block of docs/benchmarks.md
    python bench/threads.py --quick         # 2 timed steps per cell, to check the script itself (writes no docs)

Run it on a QUIET machine: the point is the slow-down that other busy processes cause, so any load you do not
start yourself makes the numbers meaningless. Each cell runs in a fresh subprocess (OpenMP reads its thread count
once); competitors are plain Python busy loops started before the cell and killed after it.
Cells: threads 1..N (N = the CPUs this process may use) x competitors 0..C (C = --competitors, default 1).
Reported: median seconds per optimizer step (batch 32 x 64 tokens of banking77, fp32, AdamW) and the slow-down
against the same thread count alone.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "banking77" / "train.csv"
RESULTS = ROOT / "bench" / "results" / "threads.json"


def child(threads: int, steps: int, warmup: int) -> dict:
    """One cell: `threads` intra-op threads, `warmup` untimed then `steps` timed training steps."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunewise.models import resolve_base_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with open(DATA, encoding="utf-8") as fh:
        texts = [row["text"] for _, row in zip(range(32), csv.DictReader(fh))]
    path = resolve_base_model("minilm").path
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=77)
    batch = tokenizer(texts, padding="max_length", truncation=True, max_length=64, return_tensors="pt")
    batch["labels"] = torch.arange(32) % 77
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return {"threads": threads, "torch_threads": torch.get_num_threads(), "seconds_per_step": statistics.median(times),
            "steps": steps}


def busy() -> None:
    while True:
        pass


def run_cell(threads: int, competitors: int, steps: int, warmup: int) -> dict:
    spinners = [subprocess.Popen([sys.executable, __file__, "--busy"]) for _ in range(competitors)]
    try:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        out = subprocess.run([sys.executable, __file__, "--child", str(threads), "--steps", str(steps),
                              "--warmup", str(warmup)], env=env, capture_output=True, text=True, check=True)
        cell = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    return {**cell, "competitors": competitors}


def markdown(result: dict) -> str:
    rows = result["cells"]
    alone = {r["threads"]: r["seconds_per_step"] for r in rows if r["competitors"] == 0}
    lines = [f"CPU: {result['cpu']['model']} ({', '.join(result['cpu']['isa'])}); {result['usable_cpus']} usable CPUs "
             f"(affinity {result['cpu']['cpus_available']}, cgroup quota {result['cpu']['cpu_quota']}); "
             f"tunewise picks **{result['tunewise_threads']}** thread(s) for one process "
             f"({result['tunewise_reason']}).", "",
             "| intra-op threads | CPU-bound competitors | s / step (median) | slow-down vs alone |",
             "|---:|---:|---:|---:|"]
    for r in rows:
        mark = " (tunewise's pick)" if r["threads"] == result["tunewise_threads"] else ""
        lines.append(f"| {r['threads']}{mark} | {r['competitors']} | {r['seconds_per_step']:.3f} | "
                     f"{r['seconds_per_step'] / alone[r['threads']]:.2f}x |")
    lines += ["", f"MiniLM, batch 32 x 64 tokens, fp32, AdamW; {rows[0]['steps']} timed steps per cell after warm-up. "
              f"Reproduce: `python bench/threads.py` on a quiet machine."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 timed steps per cell; writes no docs")
    parser.add_argument("--competitors", type=int, default=1, help="most CPU-bound competitor processes")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--busy", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.busy:
        busy()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.warmup)))
        return
    sys.path.insert(0, str(ROOT / "src"))
    from tunewise.hardware import cpu_facts, cpu_quota, plan_threads

    steps, warmup = (2, 1) if args.quick else (args.steps, args.warmup)
    plan = plan_threads(1, {})  # what tunewise picks from affinity and quota alone
    quota = cpu_quota()
    cpus = len(os.sched_getaffinity(0))
    usable = cpus if quota is None else max(1, min(cpus, round(quota)))
    cells = []
    for competitors in range(args.competitors + 1):
        for threads in range(1, max(usable, 2) + 1):
            cell = run_cell(threads, competitors, steps, warmup)
            print(f"threads {threads}, competitors {competitors}: {cell['seconds_per_step']:.3f} s/step", flush=True)
            cells.append(cell)
    result = {"cpu": cpu_facts(), "usable_cpus": usable, "tunewise_threads": plan.threads,
              "tunewise_reason": plan.reason, "quick": args.quick, "cells": cells}
    table = markdown(result)
    print(table)
    if args.quick:
        return
    sys.path.insert(0, str(ROOT / "bench"))
    from _docs import record

    record(RESULTS, result, "threads", table, "Threads under contention")


if __name__ == "__main__":
    main()
