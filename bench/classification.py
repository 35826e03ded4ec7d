"""Classification benchmark: tunewise against two plain-Trainer baselines, same model, data, epochs and seed.

    python bench/classification.py                      # banking77 + sst2, writes docs/benchmarks.md
    python bench/classification.py --quick              # a few hundred rows, to check the script itself

Systems (each runs in its own subprocess so peak RSS is its own):
  run_glue      HF Trainer, every example padded to max_length 128, fp32 (as transformers' run_glue.py does by default).
                At 5-10x slower it cannot finish 8 banking77 epochs in a session, so by default it trains for
                --run-glue-steps steps only: its throughput is measured on those steps, and its accuracy is not
                reported (it sees exactly the careful baseline's batches, seed for seed, and padding is masked, so
                its accuracy is the careful one's up to float rounding). --run-glue-steps 0 runs it in full.
  careful       HF Trainer, dynamic padding (DataCollatorWithPadding), fp32
  tunewise      `tunewise.run` on the same data: bf16 autocast where supported, length-grouped dynamic batches

Throughput is training examples per second of the training loop (epochs x rows / train seconds), excluding
model loading and evaluation. Accuracy and macro-F1 come with 95% bootstrap CIs on the test split.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _docs import replace_block  # bench/_docs.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SYSTEMS = ("run_glue", "careful", "tunewise")


def load_dataset_rows(name: str, sst2_train: int, quick: bool, seed: int) -> tuple[list[dict], list[dict]]:
    """Rows as {"text", "label"}; sst2 train is a seeded random subset (its dev set is the test)."""
    rng = np.random.default_rng(seed)
    if name == "banking77":
        def read(split):
            with open(DATA / "banking77" / f"{split}.csv", encoding="utf-8") as fh:
                return [{"text": r["text"], "label": r["category"]} for r in csv.DictReader(fh)]
        train, test = read("train"), read("test")
    elif name == "sst2":
        def read(split):
            with open(DATA / "sst2" / f"{split}.jsonl", encoding="utf-8") as fh:
                return [{"text": (r := json.loads(line))["sentence"], "label": str(r["label"])} for line in fh]
        train, test = read("train"), read("dev")
        train = [train[i] for i in sorted(rng.choice(len(train), size=min(sst2_train, len(train)), replace=False))]
    else:
        raise SystemExit(f"unknown dataset {name}")
    if quick:
        train = [train[i] for i in sorted(rng.choice(len(train), size=min(600, len(train)), replace=False))]
        seen = {r["label"] for r in train}
        test = [r for r in test if r["label"] in seen]
        test = [test[i] for i in sorted(rng.choice(len(test), size=min(300, len(test)), replace=False))]
    return train, test


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


# ---------------------------------------------------------------- one system, in a child process


def child_hf_trainer(system: str, work: Path, cfg: dict) -> dict:
    """The two baselines: plain transformers Trainer scripts, fp32."""
    import torch
    from datasets import Dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, default_data_collator, set_seed)

    from tunewise.models import resolve_base_model

    torch.set_num_threads(os.cpu_count() or 1)
    train = [json.loads(x) for x in (work / "train.jsonl").read_text().splitlines()]
    test = [json.loads(x) for x in (work / "test.jsonl").read_text().splitlines()]
    labels = sorted({r["label"] for r in train})
    l2i = {lab: i for i, lab in enumerate(labels)}
    path = resolve_base_model("minilm").path
    set_seed(cfg["seed"])
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=l2i)
    pad = "max_length" if system == "run_glue" else False

    def encode(rows):
        enc = tok([r["text"] for r in rows], truncation=True, max_length=128, padding=pad)
        return Dataset.from_dict({**enc, "labels": [l2i[r["label"]] for r in rows]})

    collator = default_data_collator if system == "run_glue" else DataCollatorWithPadding(tok)
    max_steps = cfg["run_glue_steps"] if system == "run_glue" and cfg["run_glue_steps"] else -1
    args = TrainingArguments(output_dir=str(work / f"out_{system}"), num_train_epochs=cfg["epochs"], max_steps=max_steps,
                             per_device_train_batch_size=cfg["batch_size"], per_device_eval_batch_size=128,
                             learning_rate=cfg["lr"], weight_decay=0.01, warmup_steps=0.06, seed=cfg["seed"],
                             save_strategy="no", eval_strategy="no", report_to="none", use_cpu=True,
                             logging_steps=100, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=encode(train), data_collator=collator)
    t0 = time.perf_counter()
    result = trainer.train()
    train_seconds = time.perf_counter() - t0
    examples = result.global_step * cfg["batch_size"] if max_steps > 0 else len(train) * cfg["epochs"]
    if max_steps > 0:
        return {"train_seconds": train_seconds, "examples": examples, "steps_only": result.global_step}
    out = trainer.predict(encode(test))
    # score against the label_ids the Trainer returns, never the dataset's order
    return {"train_seconds": train_seconds, "examples": examples,
            "y_true": out.label_ids.tolist(), "y_pred": out.predictions.argmax(-1).tolist(), "n_classes": len(labels)}


def child_tunewise(work: Path, cfg: dict, *, name: str = "bench", train: dict | None = None,
                   evaluate: dict | None = None, **sections: dict) -> dict:
    """`tunewise.run` on work/{train,test}.jsonl; `train`, `evaluate` and `sections` add to or override the
    recipe (bench/ablation.py turns defaults back this way). Returns timing and the test predictions."""
    import tunewise
    from tunewise.recipe import validate_recipe

    recipe = validate_recipe({
        "name": name, "seed": cfg["seed"], "output_dir": str(work / "runs"),
        "data": {"train": str(work / "train.jsonl"), "test": str(work / "test.jsonl"), "validation_fraction": 0.0},
        "model": {"base": "minilm", "max_length": 128},
        "train": {"epochs": cfg["epochs"], "lr": cfg["lr"], "batch_size": cfg["batch_size"], **(train or {})},
        "evaluate": {"baselines": [], "bootstrap_samples": 1000, **(evaluate or {})},
        # the plain-Trainer systems do not audit, and banking77's test split holds exact copies of train rows
        # (which the audit blocks); the audit has its own benchmark, bench/audit.py
        "audit": {"enabled": False},
        **sections,
    })
    root = tunewise.run(recipe, echo=lambda s: None)
    summary = json.loads((root / "model" / "train_summary.json").read_text())
    preds = [json.loads(x) for x in (root / "eval" / "predictions.jsonl").read_text().splitlines()]
    labels = json.loads((root / "data" / "labels.json").read_text())["labels"]
    l2i = {lab: i for i, lab in enumerate(labels)}
    return {"train_seconds": summary["train_seconds"] - summary["eval_seconds_during_training"],
            "examples": summary["train_examples"] * cfg["epochs"], "precision": summary["precision"],
            "y_true": [l2i[p["label"]] for p in preds], "y_pred": [l2i[p["pred"]] for p in preds],
            "n_classes": len(labels)}


def child_main(system: str, work: str, cfg_json: str) -> None:
    work_path, cfg = Path(work), json.loads(cfg_json)
    result = child_tunewise(work_path, cfg) if system == "tunewise" else child_hf_trainer(system, work_path, cfg)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (work_path / f"result_{system}.json").write_text(json.dumps(result))


# ---------------------------------------------------------------- orchestration


def run_system(system: str, work: Path, cfg: dict) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--child", system, str(work), json.dumps(cfg)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    res = json.loads((work / f"result_{system}.json").read_text())
    res["wall_seconds"] = time.perf_counter() - t0
    return res


def score(res: dict, seed: int) -> dict:
    from tunewise.evaluate.stats import bootstrap_ci

    if "y_true" not in res:
        return {"accuracy": None, "macro_f1": None, "steps_only": res["steps_only"]}
    y, p = np.array(res["y_true"]), np.array(res["y_pred"])
    return {m: bootstrap_ci(y, p, m, n_classes=res["n_classes"], n_resamples=1000, seed=seed)
            for m in ("accuracy", "macro_f1")}


def paired(a: dict, b: dict, seed: int) -> dict:
    """Paired bootstrap of accuracy, tunewise minus a baseline, on the same test rows (same label order)."""
    from tunewise.evaluate.stats import paired_bootstrap

    if sorted(a["y_true"]) != sorted(b["y_true"]):
        raise SystemExit("the systems were scored on different test sets")
    # the HF baselines return label_ids in test order (no length grouping at predict time); tunewise writes test order
    if a["y_true"] != b["y_true"]:
        raise SystemExit("test rows are in a different order; cannot pair")
    return paired_bootstrap(np.array(a["y_true"]), np.array(a["y_pred"]), np.array(b["y_pred"]), "accuracy",
                            n_classes=a["n_classes"], n_resamples=1000, seed=seed)


def fmt_ci(m: dict | None) -> str:
    if m is None:
        return "not trained to the end (see notes)"
    return f"{100 * m['value']:.2f} [{100 * m['ci_low']:.2f}, {100 * m['ci_high']:.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="banking77,sst2")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--banking77-epochs", type=float, default=8)
    ap.add_argument("--sst2-epochs", type=float, default=2)
    ap.add_argument("--sst2-train", type=int, default=8000, help="size of the seeded sst2 train subset")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--run-glue-steps", type=int, default=150, help="time-box the run_glue baseline to this many steps (0: full epochs)")
    ap.add_argument("--quick", action="store_true", help="tiny slices and 1 epoch: checks the script, not the numbers")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "classification.json"))
    ap.add_argument("--docs", default=str(ROOT / "docs" / "benchmarks.md"), help="markdown file to update ('' to skip)")
    args = ap.parse_args()

    results = {"command": "python " + " ".join([str(Path(sys.argv[0]).relative_to(ROOT)
                                                     if Path(sys.argv[0]).is_absolute() else sys.argv[0]), *sys.argv[1:]]),
               "machine": {"cpus": os.cpu_count()}, "datasets": {}}
    for name in args.datasets.split(","):
        epochs = 1 if args.quick else (args.banking77_epochs if name == "banking77" else args.sst2_epochs)
        cfg = {"seed": args.seed, "epochs": epochs, "lr": args.lr, "batch_size": args.batch_size,
               "run_glue_steps": 10 if args.quick else args.run_glue_steps}
        train, test = load_dataset_rows(name, args.sst2_train, args.quick, args.seed)
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
            work = Path(tmp)
            write_jsonl(work / "train.jsonl", train)
            write_jsonl(work / "test.jsonl", test)
            entry = {"train_rows": len(train), "test_rows": len(test), **cfg, "systems": {}}
            raw = {}
            for system in args.systems.split(","):
                print(f"[{name}] {system} ...", flush=True)
                res = raw[system] = run_system(system, work, cfg)
                entry["systems"][system] = {
                    "train_examples_per_second": res["examples"] / res["train_seconds"],
                    "train_seconds": res["train_seconds"], "wall_seconds": res["wall_seconds"],
                    "peak_rss_mb": res["peak_rss_mb"], "precision": res.get("precision", "fp32"), **score(res, args.seed)}
                s = entry["systems"][system]
                print(f"  {s['train_examples_per_second']:.1f} ex/s, accuracy {fmt_ci(s['accuracy'])}, "
                      f"peak RSS {s['peak_rss_mb']:.0f} MB", flush=True)
            tw = entry["systems"].get("tunewise")
            for system, s in entry["systems"].items():
                if tw:
                    s["speedup_of_tunewise"] = tw["train_examples_per_second"] / s["train_examples_per_second"]
                if tw and system != "tunewise" and raw[system].get("y_true") is not None:
                    s["tunewise_minus_this"] = paired(raw["tunewise"], raw[system], args.seed)
            results["datasets"][name] = entry

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    table = markdown_table(results)
    print(table)
    if args.docs and not args.quick:
        update_docs(Path(args.docs), table, results["command"])


def fmt_paired(d: dict | None) -> str:
    if not d:
        return "—"
    return f"{100 * d['diff']:+.2f} [{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}], p={d['p_value']:.3f}"


def markdown_table(results: dict) -> str:
    lines = ["| dataset | system | precision | train ex/s | tunewise speed-up | accuracy % [95% CI] | macro-F1 % [95% CI] "
             "| tunewise − this, accuracy pts [95% CI], p | peak RSS MB |",
             "|---|---|---|---:|---:|---|---|---|---:|"]
    for name, entry in results["datasets"].items():
        for system, s in entry["systems"].items():
            steps = f" ({s['steps_only']} steps)" if s.get("steps_only") else ""
            lines.append(f"| {name} ({entry['train_rows']:,} train, {entry['test_rows']:,} test, {entry['epochs']:g} ep) "
                         f"| {system}{steps} | {s['precision']} | {s['train_examples_per_second']:.1f} "
                         f"| {s.get('speedup_of_tunewise', float('nan')):.2f}x | {fmt_ci(s['accuracy'])} "
                         f"| {fmt_ci(s['macro_f1'])} | {fmt_paired(s.get('tunewise_minus_this'))} | {s['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def update_docs(path: Path, table: str, command: str) -> None:
    """Replace the classification section of docs/benchmarks.md (between its markers) with this run's table."""
    replace_block(path, "classification.py",
                  f"Reproduce: `{command}` (on a 2-core CPU machine; {time.strftime('%Y-%m-%d')})\n\n{table}",
                  "Classification: tunewise vs plain Trainer")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
