"""ONNX Runtime against torch for a fine-tuned encoder classifier: accuracy change and speed, on the run's test split.

(Not named onnx.py: a script beside `import onnx` would shadow the package.)

    python bench/onnx_speed.py RUN            # a tunewise classifier run, e.g. runs/banking77-xxxx; prints a table
    python bench/onnx_speed.py RUN --docs     # also writes its block of docs/benchmarks.md
    python bench/onnx_speed.py RUN --quick    # 64 test rows and one timing pass, to check the script itself

Backends, all on the CPU with the same thread count (the CPUs this process may use, or --threads):
  torch fp32      tunewise's own batched predict (length-sorted batches, dynamic padding), torch.inference_mode
  onnx fp32       `tunewise export RUN --onnx`: torch.onnx (dynamo) graph, ONNX Runtime, all graph optimisations
  onnx int8       `tunewise export RUN --onnx --int8`: the same with int8 weights (quantize_dynamic)

Accuracy and agreement use every test row (or --max-rows). Speed is measured twice: batch 1 (one request at a
time: examples/s and p50/p95 latency) and batch 32 (examples/s), after a warm-up, on the same texts for each
backend. Timings mean something only on a quiet machine: run it with nothing else busy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def read_test(run: Path, max_rows: int | None) -> tuple[list[str], list[str], list[str]]:
    from tunewise.artifacts.data import Labels

    rows = [json.loads(line) for line in (run / "data" / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = rows[:max_rows]
    labels = Labels.read(run / "data" / Labels.FILE).labels
    return [r["text"] for r in rows], [r["label"] for r in rows], labels


def timed(predict, texts: list[str], batch: int, repeats: int) -> dict:
    """examples/s over `repeats` passes (batch 1: also per-request latency percentiles), after one warm-up pass."""
    predict(texts[:batch * 2])
    latencies, t0, cpu0 = [], time.perf_counter(), time.process_time()
    for _ in range(repeats):
        for i in range(0, len(texts), batch):
            s = time.perf_counter()
            predict(texts[i:i + batch])
            latencies.append(time.perf_counter() - s)
    total, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    # CPU time of this process (all its threads): unlike examples/s, it stays meaningful on a busy machine
    out = {"examples_per_s": repeats * len(texts) / total, "cpu_ms_per_example": cpu / (repeats * len(texts)) * 1e3}
    if batch == 1:
        out |= {"p50_ms": float(np.percentile(latencies, 50) * 1e3), "p95_ms": float(np.percentile(latencies, 95) * 1e3)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a tunewise classification run directory")
    ap.add_argument("--threads", type=int, default=None, help="threads for both backends (default: the CPUs this process may use)")
    ap.add_argument("--max-rows", type=int, default=None, help="score only the first N test rows")
    ap.add_argument("--timing-rows", type=int, default=256, help="test rows timed per backend")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over the timing rows")
    ap.add_argument("--quick", action="store_true", help="64 rows, 1 repeat: checks the script, not the machine")
    ap.add_argument("--docs", action="store_true", help="write the table into docs/benchmarks.md")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    args = ap.parse_args()
    if args.quick:
        args.max_rows, args.timing_rows, args.repeats = 64, 32, 1

    import torch

    from tunewise.hardware import choose_placement
    from tunewise.onnx_backend import OnnxClassifier, cpu_threads, export_onnx
    from tunewise.recipe import load_recipe
    from tunewise.tasks.classification import load_model, load_tokenizer, predict_proba

    threads = args.threads or cpu_threads()
    torch.set_num_threads(threads)
    recipe = load_recipe(args.run / "recipe.yaml", [])
    max_length = recipe.model.max_length
    texts, gold, labels = read_test(args.run, args.max_rows)
    truth = np.array([labels.index(g) for g in gold])
    model_dir = args.run / "model"
    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    fp32 = choose_placement("cpu", "fp32")

    def torch_predict(batch: list[str]) -> np.ndarray:
        return predict_proba(model, tokenizer, batch, max_length=max_length, batch_size=32, placement=fp32)

    backends = {"torch fp32": torch_predict}
    exported = {}
    with tempfile.TemporaryDirectory(prefix="tunewise-onnx-bench-") as tmp:
        for int8 in (False, True):
            name = f"onnx {'int8' if int8 else 'fp32'}"
            t0 = time.perf_counter()
            made = export_onnx(model_dir, Path(tmp) / name.replace(" ", "_"), int8=int8)
            exported[name] = {"export_s": time.perf_counter() - t0, "size_mb": made.size_mb}
            clf = OnnxClassifier(made.folder, max_length=max_length, batch_size=32, threads=threads)
            backends[name] = clf.predict_proba
            if int8:  # ONNX Runtime's default, busy-waiting pool threads, against tunewise's (see OnnxClassifier)
                spin = OnnxClassifier(made.folder, max_length=max_length, batch_size=32, threads=threads, spinning=True)
                backends[f"{name}, spinning threads"] = spin.predict_proba
        reference = torch_predict(texts)
        results = {}
        timing_texts = texts[:args.timing_rows]
        for name, predict in backends.items():
            probs = reference if name == "torch fp32" else predict(texts)
            results[name] = {
                "accuracy": float((probs.argmax(1) == truth).mean()),
                "agreement_with_torch": float((probs.argmax(1) == reference.argmax(1)).mean()),
                "max_abs_prob_diff": float(np.abs(probs - reference).max()),
                "batch1": timed(predict, timing_texts, 1, args.repeats),
                "batch32": timed(predict, timing_texts, 32, args.repeats),
                **exported.get(name, {}),
            }
    facts = {"run": str(args.run), "rows": len(texts), "timing_rows": len(timing_texts), "repeats": args.repeats,
             "threads": threads, "cpu": platform.processor() or platform.machine(), "max_length": max_length,
             "quick": args.quick}
    table = render(results, facts)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"facts": facts, "results": results}, indent=2), encoding="utf-8")
    if args.docs:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _docs import replace_block

        replace_block(ROOT / "docs" / "benchmarks.md", "onnx_speed", table, "ONNX Runtime backend (classifiers)")


def render(results: dict, facts: dict) -> str:
    base = results["torch fp32"]
    lines = [f"`python bench/onnx_speed.py {facts['run']}` — {facts['rows']} test rows for accuracy; "
             f"{facts['timing_rows']} rows x {facts['repeats']} passes timed; {facts['threads']} threads; "
             f"max_length {facts['max_length']}" + (" (--quick: checks the script only)" if facts["quick"] else ""),
             "",
             "| backend | accuracy | change vs torch | same label as torch | batch 1 ex/s | p50 ms | p95 ms | "
             "batch 32 ex/s | speed-up b1 / b32 | CPU-ms/ex b1 / b32 | size MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        b1, b32 = r["batch1"], r["batch32"]
        lines.append(f"| {name} | {r['accuracy']:.4f} | {r['accuracy'] - base['accuracy']:+.4f} | "
                     f"{r['agreement_with_torch']:.1%} | {b1['examples_per_s']:.1f} | {b1['p50_ms']:.1f} | "
                     f"{b1['p95_ms']:.1f} | {b32['examples_per_s']:.1f} | "
                     f"{b1['examples_per_s'] / base['batch1']['examples_per_s']:.2f}x / "
                     f"{b32['examples_per_s'] / base['batch32']['examples_per_s']:.2f}x | "
                     f"{b1['cpu_ms_per_example']:.2f} / {b32['cpu_ms_per_example']:.2f} | {r.get('size_mb', '')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
