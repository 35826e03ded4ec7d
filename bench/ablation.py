"""Classification ablation over seeds: which of tunewise's defaults costs accuracy, with paired tests.

    python bench/ablation.py --dataset banking77 --seeds 1,2,3                    # every cell, 8 epochs
    python bench/ablation.py --dataset sst2 --sst2-train 0 --epochs 2 --seeds 1,2,3 --cells default,fp32,careful
    python bench/ablation.py --quick --seeds 1,2 --cells default,random           # checks the script itself

Each cell is tunewise at its defaults with one or two recipe keys turned back (`CELLS`), or `careful`, the plain
HF Trainer baseline of bench/classification.py (fp32, random order, dynamic padding). Every (cell, seed) trains in
its own subprocess on the same data (sst2's subset is drawn with --data-seed, not the training seed) and is
appended to a results file as it finishes, so an interrupted ablation continues where it stopped (`--results`).

Reported per cell: test accuracy and macro-F1 as mean ± sd over seeds, and training examples per second. Against
the reference cell (--reference), per seed: the paired accuracy difference on the same test rows; over seeds: the
mean difference with a t interval (seed-to-seed spread, n - 1 degrees of freedom) and a two-level bootstrap that
resamples seeds and test rows together (both sources of noise). A default is "at least as accurate" when the
upper end of that interval is above 0 and its mean is not below -0.1 points.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _cpu import cpu_label  # bench/_cpu.py, beside this script
from _docs import replace_block  # bench/_docs.py, beside this script
from classification import child_hf_trainer, child_tunewise, load_dataset_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
# name: recipe overrides turned back from tunewise's defaults (one lever, or two together)
CELLS: dict[str, dict] = {
    "default": {},
    "fp32": {"train": {"precision": "fp32"}},
    "random": {"train": {"group_by_length": False}},
    "shuffled": {"train": {"shuffle_length_groups": True}},  # same batches, drawn in random order
    "fp32-random": {"train": {"precision": "fp32", "group_by_length": False}},
    "lr5e-5": {"train": {"lr": 5e-5}},
    "lr2e-4": {"train": {"lr": 2e-4}},
    "warmup0.1": {"train": {"warmup_fraction": 0.1}},
    "careful": None,  # the plain HF Trainer baseline, not tunewise
}


def child_main(work: str, cfg_json: str) -> None:
    work_path, cfg = Path(work), json.loads(cfg_json)
    overrides = CELLS[cfg["cell"]]
    if overrides is None:
        result = child_hf_trainer("careful", work_path, {**cfg, "run_glue_steps": 0})
        result["precision"] = "fp32"
    else:
        result = child_tunewise(work_path, cfg, name=f"ablation-{cfg['cell']}", train=overrides.get("train"),
                                evaluate={"bootstrap_samples": 200}, probes={"enabled": False})
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (work_path / "result.json").write_text(json.dumps(result))


def run_cell(work: Path, cfg: dict) -> dict:
    from tunewise.hardware import allocator_preload_env

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    preloaded = allocator_preload_env(env) if CELLS[cfg["cell"]] is not None else None
    if preloaded:  # tunewise cells start on the allocator the `tunewise` command would preload
        env = preloaded
    subprocess.run([sys.executable, __file__, "--child", str(work), json.dumps(cfg)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    result = json.loads((work / "result.json").read_text())
    result["allocator"] = preloaded["TUNEWISE_ALLOCATOR_RELAUNCHED"] if preloaded else "as this process started"
    return result


# ---------------------------------------------------------------- statistics over seeds


def accuracy(r: dict) -> float:
    return float(np.mean(np.array(r["y_true"]) == np.array(r["y_pred"])))


def macro_f1(r: dict) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(r["y_true"], r["y_pred"], average="macro", labels=list(range(r["n_classes"])),
                          zero_division=0))


def paired_over_seeds(cell: dict[int, dict], ref: dict[int, dict], seed: int = 0, resamples: int = 2000) -> dict:
    """Accuracy of `cell` minus `ref`, paired by seed and test row: the per-seed differences, their mean with a t
    interval over seeds, and a two-level bootstrap (seeds, then test rows) for the mean."""
    from scipy import stats

    seeds = sorted(set(cell) & set(ref))
    for s in seeds:
        if cell[s]["y_true"] != ref[s]["y_true"]:
            raise SystemExit(f"seed {s}: the cells were scored on different test rows; cannot pair")
    # per seed and test row: +1 only the cell is right, -1 only the reference, 0 both or neither
    deltas = np.array([(np.array(cell[s]["y_pred"]) == np.array(cell[s]["y_true"])).astype(float)
                       - (np.array(ref[s]["y_pred"]) == np.array(ref[s]["y_true"])).astype(float) for s in seeds])
    per_seed = deltas.mean(axis=1)
    n = len(seeds)
    mean = float(per_seed.mean())
    out = {"seeds": seeds, "per_seed": per_seed.tolist(), "mean": mean}
    if n >= 2:
        half = float(stats.t.ppf(0.975, n - 1) * per_seed.std(ddof=1) / np.sqrt(n))
        out.update(t_low=mean - half, t_high=mean + half)
    rng = np.random.default_rng(seed)
    rows = deltas.shape[1]
    boot = np.empty(resamples)
    for b in range(resamples):
        pick = rng.integers(0, n, n)
        boot[b] = np.mean([deltas[s, rng.integers(0, rows, rows)].mean() for s in pick])
    out.update(boot_low=float(np.quantile(boot, 0.025)), boot_high=float(np.quantile(boot, 0.975)))
    return out


def report(results: list[dict], reference: str, cells: list[str], speed_invalid: str = "") -> str:
    """The ablation table; `speed_invalid` says why the ex/s column is withheld (empty: it is valid)."""
    by_cell: dict[str, dict[int, dict]] = {}
    for r in results:
        by_cell.setdefault(r["cell"], {})[r["seed"]] = r
    lines = ["| cell | what differs from the defaults | seeds | accuracy % mean ± sd (per seed) | macro-F1 % mean ± sd "
             f"| train ex/s | − {reference}, accuracy pts: mean, t 95% CI, seeds×rows bootstrap 95% CI |",
             "|---|---|---:|---|---|---:|---|"]
    for name in cells:
        runs = by_cell.get(name)
        if not runs:
            continue
        acc = np.array([accuracy(r) for r in runs.values()]) * 100
        f1 = np.array([macro_f1(r) for r in runs.values()]) * 100
        speed = (f"{np.mean([r['examples'] / r['train_seconds'] for r in runs.values()]):.1f}" if not speed_invalid
                 else f"not valid ({speed_invalid})")
        sd = lambda a: f" ± {a.std(ddof=1):.2f}" if len(a) > 1 else ""  # noqa: E731
        what = "plain HF Trainer, fp32, random order" if CELLS[name] is None else (
            ", ".join(f"{k}={v}" for section in CELLS[name].values() for k, v in section.items()) or "—")
        cmp = "reference"
        if name != reference and reference in by_cell:
            d = paired_over_seeds(runs, by_cell[reference])
            t = f", t [{100 * d['t_low']:+.2f}, {100 * d['t_high']:+.2f}]" if "t_low" in d else ""
            cmp = f"{100 * d['mean']:+.2f}{t}, boot [{100 * d['boot_low']:+.2f}, {100 * d['boot_high']:+.2f}]"
        lines.append(f"| {name} | {what} | {len(acc)} | {acc.mean():.2f}{sd(acc)} "
                     f"({', '.join(f'{a:.2f}' for a in acc)}) | {f1.mean():.2f}{sd(f1)} | {speed} | {cmp} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=("banking77", "sst2"), default="banking77")
    ap.add_argument("--cells", default=",".join(CELLS), help=f"comma-separated, from {','.join(CELLS)}")
    ap.add_argument("--reference", default="careful", help="the cell every other one is compared with")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--epochs", type=float, default=None, help="default: 8 for banking77, 2 for sst2")
    ap.add_argument("--sst2-train", type=int, default=0, help="seeded sst2 train subset; 0: all 67,349 phrases")
    ap.add_argument("--data-seed", type=int, default=42, help="seed of the sst2 subset (the same for every cell)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="tiny slices and 1 epoch: checks the script, not the numbers")
    ap.add_argument("--results", default=None, help="JSONL of finished (cell, seed) runs; default under bench/results/")
    ap.add_argument("--shared-machine", action="store_true",
                    help="other work ran beside the ablation: report accuracy only (its ex/s would mislead)")
    ap.add_argument("--docs", default=str(ROOT / "docs" / "benchmarks.md"), help="markdown file to update ('' to skip)")
    ap.add_argument("--block", default=None,
                    help="name of the docs block to replace (default: the dataset/epochs tag, e.g. sst2-2ep)")
    ap.add_argument("--report-only", action="store_true",
                    help="report the (cell, seed) runs finished so far and train none of the missing ones")
    args = ap.parse_args()

    cells = args.cells.split(",")
    unknown = [c for c in cells if c not in CELLS]
    if unknown:
        raise SystemExit(f"--cells: unknown {', '.join(unknown)}; choose from {', '.join(CELLS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    epochs = 1 if args.quick else (args.epochs or (8 if args.dataset == "banking77" else 2))
    sst2_train = args.sst2_train or 10**9
    tag = f"{args.dataset}{'-quick' if args.quick else ''}-{epochs:g}ep" + (
        f"-{args.sst2_train}" if args.dataset == "sst2" and args.sst2_train else "")
    results_path = Path(args.results or ROOT / "bench" / "results" / f"ablation-{tag}.jsonl")
    results_path.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(x) for x in results_path.read_text().splitlines()] if results_path.is_file() else []
    have = {(r["cell"], r["seed"]) for r in done}

    from tunewise.hardware import cpu_facts

    cpu = cpu_label(cpu_facts())  # recorded with each run: a later --report-only may run on another machine
    train, test = load_dataset_rows(args.dataset, sst2_train, args.quick, args.data_seed)
    with tempfile.TemporaryDirectory(prefix=f"ablation-{args.dataset}-") as tmp:
        work = Path(tmp)
        write_jsonl(work / "train.jsonl", train)
        write_jsonl(work / "test.jsonl", test)
        for seed in seeds:  # seed-major: a cut-short ablation still has every cell for its first seeds
            for cell in cells:
                if (cell, seed) in have or args.report_only:
                    continue
                cfg = {"cell": cell, "seed": seed, "epochs": epochs, "lr": args.lr, "batch_size": args.batch_size}
                print(f"[{args.dataset}] {cell} seed {seed} ...", flush=True)
                t0 = time.perf_counter()
                res = run_cell(work, cfg)
                res.update(cell=cell, seed=seed, wall_seconds=time.perf_counter() - t0, train_rows=len(train),
                           test_rows=len(test), epochs=epochs, cpu=cpu)
                print(f"  accuracy {100 * accuracy(res):.2f}, {res['examples'] / res['train_seconds']:.1f} ex/s",
                      flush=True)
                with results_path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(res) + "\n")
                done.append(res)

    cpus = sorted({r.get("cpu", "not recorded") for r in done if r["cell"] in cells})
    table = report(done, args.reference, cells, speed_invalid="shared machine" if args.shared_machine
                   else "runs on different CPUs" if len(cpus) > 1 else "")
    command = "python bench/ablation.py " + shlex.join(a for a in sys.argv[1:] if a != "--report-only")
    finished = {(r["cell"], r["seed"]) for r in done}
    missing = [f"{c} seed {s}" for s in seeds for c in cells if (c, s) not in finished]
    text = (f"Reproduce: `{command}` ({time.strftime('%Y-%m-%d')}; {args.dataset}, {len(train):,} train and "
            f"{len(test):,} test rows, {epochs:g} epochs, lr {args.lr:g}, batch {args.batch_size}; trained on "
            f"{' and '.join(cpus) or 'no CPU yet'})"
            + (f". **Not run yet: {', '.join(missing)}.**" if missing else "") + f"\n\n{table}")
    print(text)
    if args.docs and not args.quick:
        replace_block(Path(args.docs), f"ablation.py:{args.block or tag}", text, "Classification: ablation over seeds")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3])
    else:
        main()
