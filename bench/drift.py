"""Drift-detector benchmark with known truth on real data (../shared/data): the monitor's own tests
(tunewise.monitor.detect / stats), Holm-corrected over every test of a window, as `tunewise monitor` does.

    python bench/drift.py                         # the accuracy figures: >= 200 trials per cell; writes JSON + table
    python bench/drift.py --quick                 # a few trials, to check the script itself
    python bench/drift.py --timing RUN            # seconds per 100k logged rows through `tunewise monitor`'s code
                                                  # on RUN (a classification run with reference/), at windows 500
                                                  # and 1000 (--windows), on a banking77 log (the baseline's) and
                                                  # one of the run's own texts (--streams), against the named
                                                  # baseline; quiet machine

Scenarios (reference and window never share a row):
  no_shift_sst2, no_shift_banking77   reference and window are disjoint random draws from the same data: every
                                      alert is a false alarm (labels and feedback accuracy are tested too)
  strong       reference SST-2 sentences, window banking77 queries
  short_long   reference SST-2 sentences of at most the median word count, window the longer ones
  mix10, mix20 reference SST-2, window SST-2 with 10% / 20% banking77 queries mixed in

Features per row, as the monitor computes them: chars, words, MiniLM tokens, OOV rate against the training
vocabulary, the model's prediction and confidence, and a MiniLM embedding sample (100 rows per window, 500 for
the reference) for the domain classifier, tested in two stages as the monitor does (50 rows first, the other 50
only when the first half is unclear); each cell also records what the one-stage test on all 100 rows and on 50
rows would have decided on the same windows, and the rows the two-stage test embedded. The bench's "model" is
a TF-IDF + logistic regression classifier fitted
on a disjoint training part of the reference data (MiniLM fine-tuning per dataset would add minutes and change
nothing the tests see: they compare prediction and confidence distributions, whatever made them). Embeddings are
computed once per row and reused across trials; each of 10 references per dataset gets its own permutation null.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tunewise.monitor import stats  # noqa: E402
from tunewise.monitor.detect import (DECISIVE_P, SCREEN_P, DriftDetector, EmbeddingSample, ReferenceData,  # noqa: E402
                                    WindowData)
from tunewise.monitor.features import TextFeatures, build_vocabulary  # noqa: E402

WINDOWS = (100, 500, 2000)
REFERENCE_ROWS = 2000
REFERENCE_EMBEDDED = 500
WINDOW_EMBEDDED = 100
ALPHA = 0.05
PERMUTATIONS = 200
REFERENCES = 10  # distinct references per dataset; trials cycle through them


def read_sst2() -> list[dict]:
    with open(DATA / "sst2" / "train.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    # whole-ish sentences: GLUE's train set also holds short treebank phrases, unlike anything served
    return [{"text": r["sentence"].strip(), "label": str(r["label"])} for r in rows if len(r["sentence"].split()) >= 5]


def read_banking() -> list[dict]:
    rows = []
    for split in ("train", "test"):
        with open(DATA / "banking77" / f"{split}.csv", encoding="utf-8") as fh:
            rows += [{"text": r["text"], "label": r["category"]} for r in csv.DictReader(fh)]
    return rows


class Pool:
    """A dataset's rows with every per-row feature computed once: the model part (vocabulary, TF-IDF model) is
    fitted on `train_rows` held apart from the pool."""

    def __init__(self, name: str, rows: list[dict], train_rows: list[dict], tokenizer, embedder, seed: int):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        self.name = name
        self.texts = [r["text"] for r in rows]
        self.labels = np.array([r["label"] for r in rows])
        vocab, _ = build_vocabulary((r["text"] for r in train_rows), 30000)
        t0 = time.perf_counter()
        self.features = TextFeatures(vocab, tokenizer)(self.texts)
        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        clf = LogisticRegression(max_iter=1000, C=5.0)
        clf.fit(vec.fit_transform([r["text"] for r in train_rows]), [r["label"] for r in train_rows])
        self.vec, self.clf = vec, clf
        print(f"[{name}] {len(rows):,} rows: features {time.perf_counter() - t0:.1f}s", flush=True)
        t0 = time.perf_counter()
        self.embeddings = embedder(self.texts)
        print(f"[{name}] embeddings {time.perf_counter() - t0:.1f}s", flush=True)

    def predict_with(self, model: "Pool", idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`model`'s predictions (label, confidence) on this pool's rows idx (the whole pool predicted once)."""
        cache = self.__dict__.setdefault("_predictions", {})
        if model.name not in cache:
            probs = model.clf.predict_proba(model.vec.transform(self.texts))
            top = probs.argmax(1)
            cache[model.name] = (model.clf.classes_[top], probs[np.arange(len(top)), top])
        labels, confidence = cache[model.name]
        return labels[idx], confidence[idx]


def reference_data(pool: Pool, idx: np.ndarray, rng: np.random.Generator) -> ReferenceData:
    pred, conf = pool.predict_with(pool, idx)
    numeric = {k: v[idx] for k, v in pool.features.items()}
    numeric["confidence"] = conf
    categorical = {"prediction": _counts(pred), "label": _counts(pool.labels[idx])}
    emb_idx = rng.choice(idx, REFERENCE_EMBEDDED, replace=False)
    correct = pred == pool.labels[idx]
    return ReferenceData(numeric=numeric, categorical=categorical, embeddings=pool.embeddings[emb_idx],
                         accuracy=float(correct.mean()), accuracy_n=len(idx))


def _counts(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


def window_data(parts: list[tuple[Pool, np.ndarray]], model: Pool, rng: np.random.Generator,
                with_feedback: bool) -> WindowData:
    from collections import Counter

    numeric: dict[str, list[np.ndarray]] = {}
    preds, labels, embs = [], [], []
    for pool, idx in parts:
        for k, v in pool.features.items():
            numeric.setdefault(k, []).append(v[idx])
        pred, conf = pool.predict_with(model, idx)
        numeric.setdefault("confidence", []).append(conf)
        preds.append(pred)
        labels.append(pool.labels[idx])
        embs.append(pool.embeddings[idx])
    emb = np.vstack(embs)
    emb = emb[rng.choice(len(emb), min(WINDOW_EMBEDDED, len(emb)), replace=False)]
    pred, lab = np.concatenate(preds), np.concatenate(labels)
    categorical = {"prediction": Counter(map(str, pred))}
    data = WindowData(numeric={k: np.concatenate(v) for k, v in numeric.items()}, categorical=categorical,
                      embeddings=EmbeddingSample.of_vectors(emb))
    if with_feedback:
        categorical["label"] = Counter(map(str, lab))
        data.correct = pred == lab
    return data


def trial_alerts(detector: DriftDetector, window: WindowData) -> tuple[bool, list[str], dict[str, tuple[bool, bool]]]:
    """The monitor's decision on one window (two-stage embedding test), and what the one-stage embedding test on
    the whole sample and on half of it would have decided on the same window: {variant: (any alert, embedding
    alert)}, plus the rows the two-stage test embedded under "rows_embedded"."""
    tests = detector.test(window)
    p = [t.p_value for t in tests]
    adjusted = stats.holm(p)
    variants: dict = {}
    at = next((i for i, t in enumerate(tests) if t.feature == "embedding"), None)
    if at is not None:
        variants["rows_embedded"] = tests[at].effect["rows_embedded"]
        n_win = detector.embedding_sizes(window.embeddings.rows)[1]
        for name, rows in (("one_stage_full", n_win), ("one_stage_half", n_win // 2)):
            alt = list(p)
            alt[at] = detector.domain_test(window.embeddings.first(rows)).p_value
            adj = stats.holm(alt)
            variants[name] = (bool((adj <= ALPHA).any()), bool(adj[at] <= ALPHA))
    return bool((adjusted <= ALPHA).any()), [t.feature for t, a in zip(tests, adjusted) if a <= ALPHA], variants


def wilson(k: int, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
    return float(ci.low), float(ci.high)


def run_accuracy(args) -> dict:
    from tunewise.models import resolve_base_model
    from tunewise.monitor.embed import Embedder, default_precision
    from transformers import AutoTokenizer

    rng = np.random.default_rng(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model("minilm").path)
    embedder = Embedder(default_precision())  # what a new run's reference and its monitor use
    sst, bank = read_sst2(), read_banking()
    rng.shuffle(sst)
    rng.shuffle(bank)
    n_pool = args.pool
    sst_pool = Pool("sst2", sst[:n_pool], sst[n_pool:n_pool + 20000], tokenizer, embedder, args.seed)
    bank_pool = Pool("banking77", bank[:n_pool], bank[n_pool:], tokenizer, embedder, args.seed)
    words = sst_pool.features["words"]
    median = float(np.median(words))
    short_idx, long_idx = np.flatnonzero(words <= median), np.flatnonzero(words > median)

    # references: REFERENCES per (dataset, subset) and their detectors (each calibrates its own null once)
    def detectors(pool: Pool, candidates: np.ndarray, key: str):
        out = []
        for r in range(REFERENCES if not args.quick else 2):
            ref_idx = rng.choice(candidates, min(REFERENCE_ROWS, len(candidates) // 2), replace=False)
            det = DriftDetector(reference_data(pool, ref_idx, rng), alpha=ALPHA, permutations=PERMUTATIONS,
                                min_rows=50, seed=args.seed + r)
            out.append((ref_idx, det))
        print(f"  references for {key} ready", flush=True)
        return out

    all_sst, all_bank = np.arange(len(sst_pool.texts)), np.arange(len(bank_pool.texts))
    refs = {"sst2": detectors(sst_pool, all_sst, "sst2"), "banking77": detectors(bank_pool, all_bank, "banking77"),
            "sst2_short": detectors(sst_pool, short_idx, "sst2_short")}

    def draw(candidates: np.ndarray, exclude: np.ndarray, n: int) -> np.ndarray:
        """n rows never in the reference, without replacement (a repeated row would let the domain classifier
        recognise it across folds, and would shrink the window's effective size below what the tests assume)."""
        free = np.setdiff1d(candidates, exclude, assume_unique=False)
        if len(free) < n:
            raise SystemExit(f"the pool leaves {len(free)} rows outside the reference, fewer than a window of {n}: "
                             f"raise --pool")
        return rng.choice(free, n, replace=False)

    scenarios = {
        "no_shift_sst2": ("sst2", lambda ref, w: [(sst_pool, draw(all_sst, ref, w))], True, sst_pool),
        "no_shift_banking77": ("banking77", lambda ref, w: [(bank_pool, draw(all_bank, ref, w))], True, bank_pool),
        "strong": ("sst2", lambda ref, w: [(bank_pool, draw(all_bank, np.array([], int), w))], False, sst_pool),
        "short_long": ("sst2_short", lambda ref, w: [(sst_pool, draw(long_idx, ref, w))], False, sst_pool),
        "mix10": ("sst2", lambda ref, w: [(sst_pool, draw(all_sst, ref, w - w // 10)),
                                          (bank_pool, draw(all_bank, np.array([], int), w // 10))], False, sst_pool),
        "mix20": ("sst2", lambda ref, w: [(sst_pool, draw(all_sst, ref, w - w // 5)),
                                          (bank_pool, draw(all_bank, np.array([], int), w // 5))], False, sst_pool),
    }
    cells = [(name, w) for name in scenarios for w in WINDOWS]
    if args.cells:
        wanted = {c.strip() for c in args.cells.split(",") if c.strip()}
        unknown = wanted - {f"{name}@{w}" for name, w in cells}
        if unknown:
            raise SystemExit(f"--cells: unknown {', '.join(sorted(unknown))}; cells are SCENARIO@WINDOW, e.g. "
                             f"strong@500 (scenarios {', '.join(scenarios)}; windows {WINDOWS})")
        cells = [(name, w) for name, w in cells if f"{name}@{w}" in wanted]
    results = {}
    for name, w in cells:
        ref_key, make, feedback, model = scenarios[name]
        t0 = time.perf_counter()
        alerts, features, embedded = 0, {}, []
        variants = {v: {"alerts": 0, "embedding_alerts": 0} for v in ("one_stage_full", "one_stage_half")}
        for t in range(args.trials):
            ref_idx, det = refs[ref_key][t % len(refs[ref_key])]
            data = window_data(make(ref_idx, w), model, rng, feedback)
            alert, which, other = trial_alerts(det, data)
            alerts += alert
            for f in which:
                features[f] = features.get(f, 0) + 1
            embedded.append(other.pop("rows_embedded", 0.0))
            for v, (any_alert, emb_alert) in other.items():
                variants[v]["alerts"] += any_alert
                variants[v]["embedding_alerts"] += emb_alert
        low, high = wilson(alerts, args.trials)
        results[f"{name}@{w}"] = {"scenario": name, "window": w, "trials": args.trials, "alerts": alerts,
                                  "rate": alerts / args.trials, "ci95": [low, high],
                                  "features": dict(sorted(features.items(), key=lambda kv: -kv[1])),
                                  "rows_embedded_mean": float(np.mean(embedded)),
                                  "embedding_test_variants": variants}
        print(f"{name:20s} window {w:5d}: alert rate {alerts / args.trials:.3f} [{low:.3f}, {high:.3f}] "
              f"({time.perf_counter() - t0:.0f}s) {results[f'{name}@{w}']['features']}; embedded "
              f"{np.mean(embedded):.0f} rows/window; one-stage embedding alerts: whole sample "
              f"{variants['one_stage_full']['embedding_alerts']}, half "
              f"{variants['one_stage_half']['embedding_alerts']}", flush=True)
    return {"settings": {"alpha": ALPHA, "reference_rows": REFERENCE_ROWS, "reference_embedded": REFERENCE_EMBEDDED,
                         "window_embedded": WINDOW_EMBEDDED, "permutations": PERMUTATIONS,
                         "references_per_dataset": REFERENCES, "trials": args.trials, "pool": n_pool,
                         "embedding_test": {"stages": 2, "screen_p": SCREEN_P, "decisive_p": DECISIVE_P},
                         "sst2_median_words": median, "seed": args.seed},
            "results": results}


# The same command on a quiet 2-core machine (AMX CPU) before the speed-up (commit 25372fe: 5-fold logistic-regression
# domain classifier, 1,000 fits for its null; float32 MiniLM): seconds per 100k rows by window size.
TIMING_BASELINE = {"commit": "25372fe", "seconds_per_100k": {"500": 115.9, "1000": 64.9}}
TIMING_TARGET_S = 60.0


def timing_texts(rd, stream: str) -> list[str]:
    """The texts a timing log draws from: `banking77` (all of banking77: the baseline's stream; a shift for any
    run but a banking77 one, so the embedding test mostly stops at its first stage) or `run` (the run's own
    training texts: no shift in the texts, so the embedding test's second stage runs in about one window in five,
    as on quiet traffic)."""
    if stream == "banking77":
        return [r["text"] for r in read_banking()]
    if stream == "run":
        with open(rd.stage_dir("data") / "train.jsonl", encoding="utf-8") as fh:
            return [json.loads(line)["text"] for line in fh if line.strip()]
    raise SystemExit(f"--streams: unknown stream {stream!r} (banking77, run)")


def run_timing(run_dir: Path, rows: int, windows: list[str], streams: list[str]) -> dict:
    """Seconds (wall and process CPU, children included) for `rows` logged rows (with the server's predictions, as
    the serving log holds them) through `tunewise monitor`'s own code on a real run, once per stream and window
    size."""
    import resource
    import tempfile

    from tunewise.artifacts.monitor import ReferenceProfile
    from tunewise.monitor import monitor_run
    from tunewise.rundir import RunDir

    def cpu_seconds() -> float:
        return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                   for f in ("ru_utime", "ru_stime"))

    rd = RunDir.open(run_dir)
    labels = json.loads((rd.stage_dir("data") / "labels.json").read_text())["labels"]
    profile = ReferenceProfile.read(rd.stage_dir("reference") / ReferenceProfile.FILE)
    cells = []
    with tempfile.TemporaryDirectory() as tmp:
        for stream in streams:
            texts = timing_texts(rd, stream)
            rng = np.random.default_rng(0)
            log = Path(tmp) / f"{stream}.jsonl"
            with open(log, "w", encoding="utf-8") as fh:
                for i in range(rows):
                    fh.write(json.dumps({"text": texts[int(rng.integers(len(texts)))],
                                         "prediction": labels[int(rng.integers(len(labels)))],
                                         "confidence": float(rng.uniform(0.3, 1.0))}) + "\n")
            for window in windows:
                t0, c0 = time.perf_counter(), cpu_seconds()
                outcome = monitor_run(rd, str(log), window=window, progress=False)
                seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
                per_100k = seconds * 100_000 / rows
                base = TIMING_BASELINE["seconds_per_100k"].get(str(window)) if stream == "banking77" else None
                embedding = [t for w in outcome.report.windows for t in w.tests if t.feature == "embedding"]
                embedded = float(np.mean([t.effect.get("rows_embedded", 0.0) for t in embedding])) if embedding else 0
                cells.append({"stream": stream, "window": window, "windows": len(outcome.report.windows),
                              "seconds": round(seconds, 1), "seconds_per_100k": round(per_100k, 1),
                              "cpu_seconds_per_100k": round(cpu * 100_000 / rows, 1),
                              "rows_embedded_per_window": round(embedded, 1),
                              "embedding_alerts": sum("embedding" in w.drifted for w in outcome.report.windows),
                              "target_s": TIMING_TARGET_S, "meets_target": per_100k <= TIMING_TARGET_S,
                              "baseline_seconds_per_100k": base,
                              "speedup_vs_baseline": round(base / per_100k, 2) if base else None})
                print(f"{stream} window {window}: {per_100k:.1f} s per 100k rows "
                      f"({cells[-1]['cpu_seconds_per_100k']:.1f} CPU-s, {embedded:.0f} rows embedded per window), "
                      f"target {TIMING_TARGET_S:.0f} s, baseline {TIMING_BASELINE['commit']} {base} s", flush=True)
    # rows sampled per window for the domain test: the window's side (at most half the reference sample); its first
    # stage embeds half of them, the second stage the rest
    embedded = min(rd.recipe.monitor.window_embedding_sample, max(2, profile.embeddings.rows // 2))
    return {"rows": rows, "run": str(run_dir), "reference_embeddings": profile.embeddings.rows,
            "window_rows_sampled": embedded, "embedding_precision": profile.embeddings.precision,
            "baseline": TIMING_BASELINE, "cells": cells, "cpus": len(os.sched_getaffinity(0)),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_average_1min": round(os.getloadavg()[0], 2)}


def table(result: dict) -> str:
    lines = ["| scenario | truth | window 100 | window 500 | window 2000 |", "|---|---|---|---|---|"]
    truth = {"no_shift_sst2": "no shift (false alarms)", "no_shift_banking77": "no shift (false alarms)",
             "strong": "shift", "short_long": "shift", "mix10": "shift", "mix20": "shift"}
    for name in truth:
        cells = []
        for w in WINDOWS:
            r = result["results"].get(f"{name}@{w}")
            cells.append(f"{r['rate']:.1%} [{r['ci95'][0]:.1%}, {r['ci95'][1]:.1%}]" if r else "")
        lines.append(f"| {name} | {truth[name]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--pool", type=int, default=8000, help="rows per dataset in the pool (embedded once)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cells", default="", help="only these cells, comma-separated SCENARIO@WINDOW (e.g. "
                        "strong@500,mix20@2000); default all")
    parser.add_argument("--timing", type=Path, help="a run directory: time the monitor on --rows logged rows")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--windows", default="500,1000", help="--timing: window sizes, comma-separated")
    parser.add_argument("--streams", default="banking77,run", help="--timing: logs to time, comma-separated: "
                        "banking77 (the baseline's), run (the run's own training texts: quiet traffic)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "drift.json")
    args = parser.parse_args()
    if args.timing:
        result = run_timing(args.timing, args.rows, [w.strip() for w in args.windows.split(",") if w.strip()],
                            [s.strip() for s in args.streams.split(",") if s.strip()])
        print(json.dumps(result, indent=2))
        out = args.out.with_name("drift_timing.json")
    else:
        if args.quick:
            args.trials, args.pool = min(args.trials, 10), min(args.pool, 4200)
        result = run_accuracy(args)
        print(table(result))
        out = args.out if not args.quick else Path("/tmp") / "drift_quick.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
