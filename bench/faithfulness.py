"""Faithfulness checker benchmark: balanced accuracy and ROC AUC, with CIs, per domain and overall, on the
SummEdits released test split and a document-grouped split of the dialogue set, next to the lexical baseline.

    python examples/data/make_faithfulness.py                 # the pairs (runs/faithfulness-data/)
    tunewise run examples/faithfulness-checker.yaml           # trains the checker (its own audit, eval and card)
    python bench/faithfulness.py                              # scores it; writes bench/results/faithfulness.json
    python bench/faithfulness.py --limit 60                   # a few rows per split, to check the script itself

Systems (all read only `source` and `summary`; no label-leaking field):
  lexical            count of summary tokens that are capitalised or hold a digit and are absent from the source
                     (SOURCE.md's baseline); rule "no such token => faithful"
  checker/summary    the checker on (summary, evidence for the whole summary): the input it was trained on
  checker/sentence   the checker per sentence (each with its own evidence), the summary's score = its worst sentence
  checker/truncate   the checker on (summary, the whole source), the pair cut at max_length from the source's end
  checker+checks     checker/summary, and a number (digits) absent from the source also flags (the stage's
                     transparent checks)

The threshold of each system is chosen on the checker's validation split (documents disjoint from train and
test) to maximise balanced accuracy, then applied unchanged to test. Intervals are 95% percentile bootstrap
intervals that resample documents (a document's summaries move together: they are not independent).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "runs" / "faithfulness-data"
RECIPE = ROOT / "examples" / "faithfulness-checker.yaml"
RESULTS = ROOT / "bench" / "results" / "faithfulness.json"
SYSTEMS = ("lexical", "checker/summary", "checker/sentence", "checker/truncate", "checker+checks")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def lexical_score(summary: str, source: str) -> float:
    """SOURCE.md's baseline: novel capitalised-or-digit tokens (higher = less faithful)."""
    import re

    words = {w.lower() for w in re.findall(r"\w+", source)}
    return float(sum(1 for t in re.findall(r"\w+", summary)
                     if (t[0].isupper() or any(c.isdigit() for c in t)) and t.lower() not in words))


def recorded_scores(checker, rows: list[dict], evidences: list[str]) -> np.ndarray | None:
    """P(unfaithful) per row from the checker run's own eval/predictions.jsonl, when it scored exactly these
    (summary, evidence) pairs (the checker's test split); None otherwise."""
    path = checker.root / "eval" / "predictions.jsonl"
    if not path.is_file():
        return None
    recorded = {p["id"]: p for p in read_jsonl(path)}
    hits = [recorded.get(r["id"]) for r in rows]
    if any(h is None or h["text"] != r["summary"] or h.get("text_pair") != ev
           for h, r, ev in zip(hits, rows, evidences)):
        return None
    return np.array([h["probs"]["unfaithful"] for h in hits])


def system_scores(rows: list[dict], checker, evidence_chars: int,
                  systems: tuple[str, ...] = SYSTEMS) -> dict[str, np.ndarray]:
    """Each system's unfaithfulness score per row (higher = less faithful)."""
    from tunewise.faithfulness.score import FLAGGING_KINDS
    from tunewise.faithfulness.text import evidence, sentence_spans, unsupported_facts

    out: dict[str, np.ndarray] = {"lexical": np.array([lexical_score(r["summary"], r["source"]) for r in rows])}
    evidences = [evidence(r["source"], r["summary"], evidence_chars) for r in rows]
    recorded = recorded_scores(checker, rows, evidences)  # the same pairs tunewise's evaluate stage scored
    out["checker/summary"] = (recorded if recorded is not None
                              else checker.score([r["summary"] for r in rows], evidences))
    if "checker/sentence" in systems:
        claims = [(i, s.text) for i, r in enumerate(rows) for s in sentence_spans(r["summary"])]
        probs = checker.score([c for _, c in claims],
                              [evidence(rows[i]["source"], c, evidence_chars) for i, c in claims])
        worst = np.zeros(len(rows))
        for (i, _), p in zip(claims, probs):
            worst[i] = max(worst[i], p)
        out["checker/sentence"] = worst
    if "checker/truncate" in systems:
        out["checker/truncate"] = checker.score([r["summary"] for r in rows], [r["source"] for r in rows])
    facts = np.array([any(u.kind in FLAGGING_KINDS for u in unsupported_facts(r["summary"], r["source"]))
                      for r in rows])
    out["checker+checks"] = np.where(facts, 1.0 + out["checker/summary"], out["checker/summary"])  # a fact flags
    return {s: out[s] for s in SYSTEMS if s in systems}


def balanced_accuracy(y_unfaithful: np.ndarray, flagged: np.ndarray) -> float:
    pos, neg = y_unfaithful == 1, y_unfaithful == 0
    if not pos.any() or not neg.any():
        return float("nan")
    return 0.5 * (flagged[pos].mean() + (~flagged[neg]).mean())


def roc_auc(y_unfaithful: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(set(y_unfaithful.tolist())) < 2:
        return float("nan")
    return float(roc_auc_score(y_unfaithful, score))


def best_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """The cut (flag when score >= cut) with the highest balanced accuracy on these rows."""
    candidates = np.unique(score)
    accs = [balanced_accuracy(y, score >= t) for t in candidates]
    return float(candidates[int(np.nanargmax(accs))])


def grouped_ci(y: np.ndarray, score: np.ndarray, flagged: np.ndarray, docs: list[str], seed: int,
               n_resamples: int) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of balanced accuracy and ROC AUC, resampling documents."""
    by_doc = defaultdict(list)
    for i, d in enumerate(docs):
        by_doc[d].append(i)
    groups = [np.array(v) for v in by_doc.values()]
    rng = np.random.default_rng(seed)
    bacc, auc = [], []
    for _ in range(n_resamples):
        idx = np.concatenate([groups[j] for j in rng.integers(0, len(groups), len(groups))])
        b = balanced_accuracy(y[idx], flagged[idx])
        a = roc_auc(y[idx], score[idx])
        if not np.isnan(b):
            bacc.append(b)
        if not np.isnan(a):
            auc.append(a)
    ci = lambda xs: (float(np.percentile(xs, 2.5)), float(np.percentile(xs, 97.5))) if xs else (float("nan"),) * 2
    return {"balanced_accuracy": ci(bacc), "roc_auc": ci(auc)}


def evaluate(rows: list[dict], scores: dict[str, np.ndarray], thresholds: dict[str, float], seed: int,
             n_resamples: int) -> dict:
    """Per subset (overall per dataset, and per domain): each system's scores with CIs."""
    y = np.array([r["label"] == "unfaithful" for r in rows], dtype=int)
    subsets: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        subsets[f"{r['dataset']} (all)"].append(i)
        subsets[f"{r['dataset']} / {r['domain']}"].append(i)
    out = {}
    for name in sorted(subsets, key=lambda s: (s.split(" ")[0], "(all)" not in s, s)):
        idx = np.array(subsets[name])
        docs = [rows[i]["doc_id"] for i in idx]
        entry = {"n": int(len(idx)), "documents": len(set(docs)), "unfaithful_share": float(y[idx].mean()),
                 "systems": {}}
        for system, score in scores.items():
            flagged = score[idx] >= thresholds[system]
            ci = grouped_ci(y[idx], score[idx], flagged, docs, seed, n_resamples)
            entry["systems"][system] = {
                "balanced_accuracy": balanced_accuracy(y[idx], flagged), "balanced_accuracy_ci": ci["balanced_accuracy"],
                "roc_auc": roc_auc(y[idx], score[idx]), "roc_auc_ci": ci["roc_auc"]}
        out[name] = entry
    return out


def markdown(results: dict, thresholds: dict[str, float], shown: tuple[str, ...]) -> str:
    lines = ["Balanced accuracy (threshold chosen on the checker's validation documents) and ROC AUC, each with a "
             "95% bootstrap CI over documents. `unf.` = share of unfaithful summaries.", "",
             "| subset | n | docs | unf. | " + " | ".join(f"{s} bal. acc." for s in shown) + " | "
             + " | ".join(f"{s} AUC" for s in shown) + " |",
             "|---|---:|---:|---:|" + "---|" * (2 * len(shown))]
    for name, e in results.items():
        cells = [f"**{name}**" if "(all)" in name else name, f"{e['n']:,}", str(e["documents"]),
                 f"{e['unfaithful_share']:.2f}"]
        for key in ("balanced_accuracy", "roc_auc"):
            for s in shown:
                v, (lo, hi) = e["systems"][s][key], e["systems"][s][f"{key}_ci"]
                cells.append(f"{v:.3f} [{lo:.2f}, {hi:.2f}]")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Thresholds (from validation): " + ", ".join(f"{s} {t:.3g}" for s, t in thresholds.items())]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checker", default=str(RECIPE), help="checker run directory or its recipe")
    parser.add_argument("--data", type=Path, default=DATA, help="make_faithfulness.py's output folder")
    parser.add_argument("--limit", type=int, default=None, help="first N rows of each split (a smoke test)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated subset of {', '.join(SYSTEMS)} (checker/sentence and checker/truncate "
                             f"each cost a pass of the checker over every summary)")
    args = parser.parse_args()

    from tunewise.faithfulness.checker import Checker, locate
    from tunewise.hardware import choose_placement
    from tunewise.recipe import FaithfulnessConfig

    cfg = FaithfulnessConfig(checker=str(Path(args.checker).resolve()))
    root = locate(cfg)
    checker = Checker.load(root, choose_placement("auto", "auto"))
    validation = read_jsonl(args.data / "validation.jsonl")[:args.limit]
    test = read_jsonl(args.data / "test.jsonl")
    if args.limit:  # a few rows of each dataset, so both sets are exercised
        test = [r for d in ("summedits", "dialogue") for r in [x for x in test if x["dataset"] == d][:args.limit]]
    print(f"checker {root}; validation {len(validation)} rows, test {len(test)} rows", file=sys.stderr)

    systems = tuple(s for s in args.systems.split(",") if s)
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown or "checker/summary" not in systems and "checker+checks" in systems:
        raise SystemExit(f"--systems: unknown {unknown} (or checker+checks without checker/summary); "
                         f"choose from {', '.join(SYSTEMS)}")
    val_scores = system_scores(validation, checker, cfg.evidence_chars, systems)
    y_val = np.array([r["label"] == "unfaithful" for r in validation], dtype=int)
    thresholds = {s: best_threshold(y_val, v) for s, v in val_scores.items()}
    if "checker+checks" in thresholds:  # the same cut as the checker alone; a fact flag is always over it
        thresholds["checker+checks"] = thresholds["checker/summary"]
    test_scores = system_scores(test, checker, cfg.evidence_chars, systems)
    results = evaluate(test, test_scores, thresholds, args.seed, args.resamples)
    at_half = {s: balanced_accuracy(np.array([r["label"] == "unfaithful" for r in test], dtype=int),
                                    test_scores[s] >= 0.5) for s in systems if s.startswith("checker")}
    payload = {"checker": str(root), "validation_rows": len(validation), "test_rows": len(test),
               "thresholds": thresholds, "balanced_accuracy_at_0.5_all_test": at_half, "subsets": results,
               "command": " ".join(["python bench/faithfulness.py", *sys.argv[1:]])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    table = markdown(results, thresholds, systems)
    print(table)
    print("\nbalanced accuracy at threshold 0.5 (all test rows): "
          + ", ".join(f"{s} {v:.3f}" for s, v in at_half.items()))
    if args.markdown:
        args.markdown.write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
