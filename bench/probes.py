"""Probes benchmark: how long the probes stage adds to a run, and CrowS-Pairs scoring speed on CPU.

    tunewise run examples/helpdesk.yaml                        # a classifier run (the probes stage is part of it)
    tunewise run examples/dialogsum.yaml                       # a causal LoRA run
    python bench/probes.py --run runs/helpdesk-* --run runs/dialogsum-*   # reruns `tunewise probes RUN --force`
    python bench/probes.py --crows-only --limit 60             # CrowS-Pairs throughput alone, a few pairs

For each run: the probes stage's wall time (forced rerun, in a copy of the run so the original is untouched) and
its headline numbers. Then CrowS-Pairs on the base SmolLM2: sentence pairs per second at the stage's batching and
precision (bf16 where the CPU has AMX). Results go to bench/results/probes.json. Timings mean something only on
a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "probes.json"
CROWS = ROOT.parent / "shared" / "data" / "crows_pairs"


def time_stage(run: Path) -> dict:
    """Rerun the probes stage on a copy of `run`; its wall time and headline numbers."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / run.name
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("checkpoints"))
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "tunewise", "probes", str(copy), "--force"],
                              capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"tunewise probes {run} failed:\n{proc.stdout}\n{proc.stderr}")
        doc = json.loads((copy / "probes" / "probes.json").read_text())
    out = {"run": run.name, "task": doc["task"], "seconds": round(seconds, 1), "n_probed": doc["n_probed"],
           "stage_output": proc.stdout.strip().splitlines()}
    if doc["counterfactual"]:
        out["flip_rate"] = {k: v["flip_rate"] for k, v in doc["counterfactual"].items()}
    if doc["crows_pairs"]:
        c = doc["crows_pairs"]
        out["crows_pairs"] = {"base": c["base"]["overall"], "finetuned": c["finetuned"]["overall"],
                              "difference": c["difference"]}
    return out


def crows_speed(limit: int | None, batch_size: int) -> dict:
    from tunewise.hardware import choose_placement
    from tunewise.models import resolve_base_model
    from tunewise.probes import crows
    from tunewise.tasks import task_for
    from tunewise.tasks.causal import for_inference

    task = task_for("generation")
    placement = choose_placement()
    path = resolve_base_model("smollm2").path
    model, tok = for_inference(task.load_model(path), placement), task.load_tokenizer(path)
    pairs = crows.read_pairs(crows.csv_path(CROWS), limit)
    t0 = time.perf_counter()
    scores = crows.score_pairs(model, tok, pairs, batch_size=batch_size, device=placement.device)
    seconds = time.perf_counter() - t0
    return {"pairs": len(pairs), "seconds": round(seconds, 2), "pairs_per_second": round(len(pairs) / seconds, 1),
            "precision": placement.precision, "batch_size": batch_size,
            "stereotype_preference": round(float((scores[:, 0] > scores[:, 1]).mean()), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", type=Path, default=[], help="a finished run directory (repeatable)")
    ap.add_argument("--crows-only", action="store_true", help="only the CrowS-Pairs throughput")
    ap.add_argument("--limit", type=int, default=None, help="CrowS-Pairs pairs to score (default: all 1,508)")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    results = {"runs": [] if args.crows_only else [time_stage(r) for r in args.run],
               "crows_pairs_speed": crows_speed(args.limit, args.batch_size)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
