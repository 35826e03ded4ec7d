"""Audit benchmark: exact duplicates + near-duplicates + train/test leakage at 10k, 100k and 1M short texts.

    python bench/audit.py                                 # 10k, 100k, 1M; writes bench/results/audit.json + docs
    python bench/audit.py --sizes 10000 100000            # the development sizes
    python bench/audit.py --sizes 10000 --reference-max 10000 --no-docs

Texts are built from real sentences in ../shared/data (banking77, sst2, multi30k en+de, dialogsum turns,
self-instruct, prompt_injections, crows_pairs): each base text joins the first half of one real sentence to the
second half of another, so that a million texts are mostly distinct, as a real corpus is. Into these we plant,
per size: 5% exact duplicates (with whitespace and invisible-character variants), 5% paraphrase-level
near-duplicates (a word inserted, dropped, swapped or replaced, with casing and punctuation changes), and a test
split (10% of the rows) of which 2% are exact and 2% paraphrased copies of train rows. The recall of each
planted kind is reported next to the cost.

Each size runs in its own subprocess, which streams train.jsonl and test.jsonl (as the data stage writes them)
through tunewise.audit's DuplicateIndex, the same code the audit stage runs, then extracts the duplicates, the
near-duplicate clusters and the leaked test rows. Peak RSS is that process's own maximum resident set (Python,
numpy and datasketch included; their baseline is reported too). At sizes up to --reference-max the same texts
also go through plain datasketch (one MinHash per text + MinHashLSH insert and query, same shingles, same
threshold) in the same process, for a speed ratio and the agreement of the near-duplicate pairs.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from tunewise.audit.planted import paraphrase as _planted_paraphrase
from _docs import replace_block  # bench/_docs.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FILLERS = ["please", "actually", "really", "now", "just", "again", "today"]
SYNONYMS = {"card": "cards", "money": "funds", "help": "assist", "get": "receive", "want": "wish", "man": "guy",
            "woman": "lady", "film": "movie", "movie": "film", "big": "large", "small": "little", "the": "a",
            "is": "was", "are": "were", "my": "the"}
INVISIBLE = ["\u200b", "\u00a0", "  ", " \t", "\ufeff"]


# ---------------------------------------------------------------- building the corpus


def real_sentences() -> list[str]:
    """Distinct real sentences of at least 5 words from the shared data sets."""
    out: list[str] = []

    def jsonl(path: Path, *keys: str) -> None:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                r = json.loads(line)
                out.extend(str(r[k]) for k in keys if r.get(k))

    for split in ("train", "test"):
        with open(DATA / "banking77" / f"{split}.csv", encoding="utf-8", newline="") as fh:
            out.extend(r["text"] for r in csv.DictReader(fh))
    jsonl(DATA / "sst2" / "train.jsonl", "sentence")
    for name in ("train", "val", "test_2016_flickr", "test_2017_flickr", "test_2017_mscoco"):
        jsonl(DATA / "multi30k_en_de" / f"{name}.jsonl", "en", "de")
    for name in ("dev", "test"):
        with open(DATA / "dialogsum" / f"dialogsum.{name}.jsonl", encoding="utf-8") as fh:
            for line in fh:
                for turn in json.loads(line)["dialogue"].splitlines():
                    out.append(turn.split(":", 1)[-1].strip())
    jsonl(DATA / "self_instruct_human" / "seed_tasks.flat.jsonl", "instruction")
    jsonl(DATA / "prompt_injections" / "train.jsonl", "text")
    with open(DATA / "crows_pairs" / "crows_pairs_anonymized.csv", encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            out += [r["sent_more"], r["sent_less"]]
    return sorted({" ".join(s.split()) for s in out if len(s.split()) >= 5})


def paraphrase(text: str, rng: random.Random) -> str:
    return _planted_paraphrase(text, rng, fillers=FILLERS, synonyms=SYNONYMS)


def variant(text: str, rng: random.Random) -> str:
    """The same text after normalisation: whitespace and invisible characters added."""
    words = text.split(" ")
    i = rng.randrange(1, len(words))
    return " ".join(words[:i]) + " " + rng.choice(INVISIBLE) + " ".join(words[i:]) + rng.choice(["", " ", "\n"])


def build(n: int, pool: list[str], seed: int, folder: Path) -> dict:
    """Write train.jsonl and test.jsonl (n rows in all) and return the planted truth (row ids)."""
    rng = random.Random(seed)
    n_test = n // 10
    n_train = n - n_test
    n_dup, n_near = n_train // 20, n_train // 20
    n_leak = max(1, n_test // 50)
    base = []
    for _ in range(n_train - n_dup - n_near + n_test - 2 * n_leak):
        a, b = rng.choice(pool).split(), rng.choice(pool).split()
        base.append(" ".join(a[: max(3, len(a) // 2)] + b[len(b) // 2:]))
    train = [{"id": f"b{i}", "text": t} for i, t in enumerate(base[: n_train - n_dup - n_near])]
    test = [{"id": f"t{i}", "text": t} for i, t in enumerate(base[n_train - n_dup - n_near:])]
    truth: dict[str, list] = {"duplicate": [], "near_duplicate": [], "leak_exact": [], "leak_near": []}
    long_rows = [r for r in train if len(r["text"].split()) >= 8]
    for k in range(n_dup):
        src = rng.choice(long_rows)
        train.append({"id": f"dup{k}", "text": variant(src["text"], rng)})
        truth["duplicate"].append((f"dup{k}", src["id"]))
    for k in range(n_near):
        src = rng.choice(long_rows)
        train.append({"id": f"near{k}", "text": paraphrase(src["text"], rng)})
        truth["near_duplicate"].append((f"near{k}", src["id"]))
    for k in range(n_leak):
        src = rng.choice(long_rows)
        test.append({"id": f"leak{k}", "text": variant(src["text"], rng)})
        truth["leak_exact"].append((f"leak{k}", src["id"]))
        src = rng.choice(long_rows)
        test.append({"id": f"nleak{k}", "text": paraphrase(src["text"], rng)})
        truth["leak_near"].append((f"nleak{k}", src["id"]))
    rng.shuffle(train)
    rng.shuffle(test)
    (folder / "truth.json").write_text(json.dumps(truth), encoding="utf-8")
    for name, rows in (("train", train), ("test", test)):
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps({"id": r["id"], "text": r["text"], "label": "x", "meta": {},
                                     "origin": f"{name}.jsonl"}, ensure_ascii=False) + "\n")
    return {"train_rows": len(train), "test_rows": len(test), "truth": truth}


# ---------------------------------------------------------------- the measured child


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(folder: str, threshold: float, reference: bool) -> None:
    import numpy as np

    from tunewise.audit.dedup import DuplicateIndex

    base_rss = rss_mb()
    folder_p = Path(folder)
    t0 = time.perf_counter()
    index = DuplicateIndex(threshold, shingle_words=1)
    ids: list[str] = []
    texts_for_reference: list[str] = []
    for code, name in ((0, "train"), (2, "test")):
        batch: list[str] = []
        with open(folder_p / f"{name}.jsonl", encoding="utf-8") as fh:
            for line in fh:
                r = json.loads(line)
                ids.append(r["id"])
                batch.append(r["text"])
                if reference:
                    texts_for_reference.append(r["text"])
                if len(batch) == 8192:
                    index.add(code, batch)
                    batch = []
        if batch:
            index.add(code, batch)
    t_index = time.perf_counter()
    dups = index.finish()
    dup_rows, dup_first = dups.exact_duplicates(0)
    clusters = dups.near_clusters(0)
    leak_rows, leak_partner, _, leak_exact = dups.leaks(0, 2)
    t_done = time.perf_counter()
    peak = rss_mb()
    # recall of the planted problems (not timed): a copy counts as found when it lands in its source's exact group
    # (duplicates), its source's near-duplicate cluster (near-duplicates), or is flagged as leaked from its source's
    # group or cluster (leaks)
    row = {rid: i for i, rid in enumerate(ids)}
    cluster = np.full(len(ids), -1, dtype=np.int64)
    for c, members in enumerate(clusters):
        cluster[members] = c
    leaked = dict(zip(leak_rows.tolist(), zip(leak_partner.tolist(), leak_exact.tolist())))
    rep = dups.rep

    def related(a: int, b: int) -> bool:
        return bool(rep[a] == rep[b] or (cluster[a] >= 0 and cluster[a] == cluster[b]))

    truth = json.loads((folder_p / "truth.json").read_text())
    hits = {
        "duplicate": [rep[row[c]] == rep[row[s]] for c, s in truth["duplicate"]],
        "near_duplicate": [related(row[c], row[s]) for c, s in truth["near_duplicate"]],
        "leak_exact": [row[c] in leaked and leaked[row[c]][1] and rep[leaked[row[c]][0]] == rep[row[s]]
                       for c, s in truth["leak_exact"]],
        "leak_near": [row[c] in leaked and related(leaked[row[c]][0], row[s]) for c, s in truth["leak_near"]],
    }
    result = {
        "recall": {k: round(sum(map(bool, v)) / max(1, len(v)), 4) for k, v in hits.items()},
        "seconds": t_done - t0, "seconds_index": t_index - t0, "seconds_finish": t_done - t_index,
        "peak_rss_mb": peak, "baseline_rss_mb": base_rss, "rows": len(ids),
        "candidate_pairs": dups.candidates, "verified_pairs": int(len(dups.edges)),
        "bands": dups.bands, "rows_per_band": dups.rows_per_band,
        "exact_duplicates": int(len(dup_rows)), "near_clusters": len(clusters), "leaked_test_rows": int(len(leak_rows)),
    }
    if reference:
        result["reference"] = datasketch_reference(texts_for_reference, ids, threshold, index, dups)
    print(json.dumps(result))


def datasketch_reference(texts: list[str], ids: list[str], threshold: float, index, dups) -> dict:
    """Plain datasketch: MinHash.update_batch per text + MinHashLSH insert/query over the same word sets."""
    from datasketch import MinHash, MinHashLSH

    from tunewise.audit.normalize import NON_WORD, exact_form

    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    sketches = []
    for i, text in enumerate(texts):
        words = {w.encode() for w in NON_WORD.sub(" ", exact_form(text).casefold()).split()}
        m = MinHash(num_perm=128)
        m.update_batch(words)
        sketches.append(m)
        lsh.insert(i, m)
    pairs = set()
    for i, m in enumerate(sketches):
        for j in lsh.query(m):
            if j != i and m.jaccard(sketches[j]) >= threshold:
                pairs.add((min(i, j), max(i, j)))
    seconds = time.perf_counter() - t0
    ours = {(int(a), int(b)) for a, b in dups.edges.tolist()}
    # compare on distinct texts: the reference indexes every row, ours one row per exact-duplicate group
    rep = dups.rep
    theirs = {(int(min(rep[a], rep[b])), int(max(rep[a], rep[b]))) for a, b in pairs if rep[a] != rep[b]}
    return {"seconds": seconds, "pairs": len(theirs), "ours": len(ours), "both": len(ours & theirs),
            "only_reference": len(theirs - ours), "only_ours": len(ours - theirs)}


# ---------------------------------------------------------------- the parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--reference-max", type=int, default=10_000, help="run plain datasketch too up to this size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "audit.json"))
    ap.add_argument("--docs", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args()
    command = "python bench/audit.py" + ("" if args.sizes == [10_000, 100_000, 1_000_000] else
                                         " --sizes " + " ".join(map(str, args.sizes)))
    pool = real_sentences()
    print(f"pool: {len(pool):,} distinct real sentences", file=sys.stderr)
    results = {"command": command, "date": time.strftime("%Y-%m-%d"), "threshold": args.threshold,
               "pool_sentences": len(pool), "machine": {"cpus": _cpus(), "platform": platform.platform(),
                                                        "python": platform.python_version()},
               "sizes": []}
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix=f"audit-bench-{n}-") as tmp:
            built = build(n, pool, args.seed, Path(tmp))
            cmd = [sys.executable, __file__, "--child", tmp, str(args.threshold), str(int(n <= args.reference_max))]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"size {n}: child failed\n{proc.stderr}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
        entry = dict(r)
        entry.update(size=n, train_rows=built["train_rows"], test_rows=built["test_rows"],
                     planted={k: len(v) for k, v in built["truth"].items()},
                     microseconds_per_row=1e6 * r["seconds"] / n)
        results["sizes"].append(entry)
        print(f"{n:>9,} rows: {r['seconds']:7.1f} s, peak RSS {r['peak_rss_mb']:6.0f} MB, recall {entry['recall']}",
              file=sys.stderr)
    sizes = results["sizes"]
    for prev, cur in zip(sizes, sizes[1:]):
        cur["growth"] = {"rows": cur["size"] / prev["size"], "time": cur["seconds"] / prev["seconds"],
                         "rss": cur["peak_rss_mb"] / prev["peak_rss_mb"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = markdown(results)
    print(table)
    if not args.no_docs:
        update_docs(Path(args.docs), table, results)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


def markdown(results: dict) -> str:
    lines = ["| rows (train + test) | time s | µs / row | growth: rows → time | peak RSS MB (baseline) "
             "| candidates → verified pairs | recall dup / near / leak exact / leak near | plain datasketch |",
             "|---:|---:|---:|---|---:|---|---|---|"]
    for s in results["sizes"]:
        g = s.get("growth")
        growth = f"×{g['rows']:.0f} → ×{g['time']:.1f}" if g else "—"
        rc = s["recall"]
        ref = s.get("reference")
        ref_s = (f"{ref['seconds']:.1f} s ({ref['seconds'] / s['seconds']:.1f}× slower); pairs: {ref['both']:,} "
                 f"shared, {ref['only_reference']:,} only datasketch, {ref['only_ours']:,} only ours") if ref else "—"
        lines.append(f"| {s['size']:,} ({s['train_rows']:,} + {s['test_rows']:,}) | {s['seconds']:.1f} "
                     f"| {s['microseconds_per_row']:.0f} | {growth} "
                     f"| {s['peak_rss_mb']:.0f} ({s['baseline_rss_mb']:.0f}) "
                     f"| {s['candidate_pairs']:,} → {s['verified_pairs']:,} "
                     f"| {rc['duplicate']:.3f} / {rc['near_duplicate']:.3f} / {rc['leak_exact']:.3f} / "
                     f"{rc['leak_near']:.3f} | {ref_s} |")
    return "\n".join(lines)


def update_docs(path: Path, table: str, results: dict) -> None:
    replace_block(path, "audit.py",
                  f"Reproduce: `{results['command']}` ({results['machine']['cpus']} CPUs; {results['date']}; "
                  f"threshold {results['threshold']}, {results['pool_sentences']:,} real sentences in the pool)\n\n"
                  f"{table}", "Data audit: exact + near-duplicate + leakage detection at scale")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1")
    else:
        main()
