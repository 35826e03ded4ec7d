"""Faithfulness checker benchmark: fit the likelihood checker on training documents and score it, next to the
lexical baseline, on the SummEdits released `test` split and the held-out 30% of the dialogue documents:
balanced accuracy and ROC AUC, each with a 95% bootstrap CI over documents, per domain and overall.

    python bench/faithfulness.py                                   # all rows (one SmolLM2 pass per summary, cached)
    python bench/faithfulness.py --fit-out src/tunewise/faithfulness/smollm2_checker.json   # also ship the fit
    python bench/faithfulness.py --limit-docs 3                    # a few documents per part: checks the script

Data (read from ../shared/data; each checker input is `source`, `summary` and, for QMSum, `query`; the fields that
leak the label — SummEdits' system/seed_id/edit_types, the dialogue set's system/error_types/sentences/group_idx —
are never read):
  train  SummEdits split `evaluation` (34 documents) + 70% of the dialogue documents (seeded hash of doc_id)
  test   SummEdits split `test` + the other 30% of the dialogue documents; no document is on both sides.

Everything that is chosen — the feature set, the regularisation C, the thresholds — is chosen on the training
documents only, by 5-fold cross-validation grouped by document (out-of-fold predictions); test is scored once.
The SmolLM2 token scores are cached per source under --cache (delete it to recompute).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "faithfulness.json"
DIALOGUE_TEST_FRACTION, SEED = 0.3, 13
LEXICAL = ["novel_content", "novel_numbers", "novel_names", "novel_negation", "log_tokens"]
LIKELIHOOD = ["pmi_mean", "pmi_q10", "pmi_min_word", "cond_mean", "cond_q10", "low_tokens", "log_tokens"]
LIKELIHOOD_ROBUST = ["pmi_min_word", "pmi_q10", "low_tokens"]  # the within-document signals, without levels
VARIANTS = {"lexical features": LEXICAL, "likelihood features": LIKELIHOOD,
            "all features": list(dict.fromkeys(LIKELIHOOD + LEXICAL)),
            "low-PMI + lexical features": LIKELIHOOD_ROBUST + LEXICAL,
            "min-word PMI + lexical features": ["pmi_min_word"] + LEXICAL}
C_GRID = (0.03, 0.3, 3.0)


# ---------------------------------------------------------------- data


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _bucket(doc_id: str) -> float:
    return int(hashlib.sha256(f"{SEED}:{doc_id}".encode()).hexdigest()[:12], 16) / 16 ** 12


def load_rows(shared: Path) -> list[dict]:
    """Both sets as rows of the fields a checker may read, plus label (1 = unfaithful), doc_id, dataset, domain
    and part (train/test)."""
    docs = {d["doc_id"]: d["source"] for d in _read_jsonl(shared / "summedits" / "docs.jsonl")}
    rows = []
    for p in _read_jsonl(shared / "summedits" / "pairs.jsonl"):
        rows.append({"id": p["id"], "source": docs[p["doc_id"]], "query": None, "summary": p["summary"],
                     "unfaithful": 1 - int(p["label"]), "doc_id": p["doc_id"], "dataset": "summedits",
                     "domain": p["domain"], "part": "test" if p["split"] == "test" else "train"})
    for p in _read_jsonl(shared / "dialogue_faithfulness" / "pairs.jsonl"):
        domain = "faceval" if p["dataset"] == "faceval" else f"diasumfact-{p['corpus'].lower()}"
        rows.append({"id": p["id"], "source": p["source"], "query": p.get("query"), "summary": p["summary"],
                     "unfaithful": 1 - int(p["label"]), "doc_id": p["doc_id"], "dataset": "dialogue",
                     "domain": domain, "part": "test" if _bucket(p["doc_id"]) < DIALOGUE_TEST_FRACTION else "train"})
    return rows


def check_no_document_straddles(rows: list[dict]) -> None:
    side: dict[str, str] = {}
    for r in rows:
        for key in (r["doc_id"], hashlib.sha256(" ".join(r["source"].split()).encode()).hexdigest()):
            if side.setdefault(key, r["part"]) != r["part"]:
                raise SystemExit(f"document {r['doc_id']} is in both train and test: refusing a leaking split")


# ---------------------------------------------------------------- LM token scores, cached


def token_scores(rows: list[dict], cache: Path, cached_only: bool, threads: int | None) -> dict[str, tuple]:
    """id -> (offsets, conditional, unconditional): from the cache, else computed (one source pass per group)."""
    cache.mkdir(parents=True, exist_ok=True)
    found: dict[str, tuple] = {}
    for f in cache.glob("*.pkl"):
        with open(f, "rb") as fh:
            for rid, (summary, offsets, cond, uncond, *_rest) in pickle.load(fh).items():
                found[rid] = (summary, offsets, cond, uncond)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        hit = found.get(r["id"])
        if hit is None or hit[0] != r["summary"]:
            groups[(r["source"], r["query"])].append(r)
    if groups and not cached_only:
        from tunewise.faithfulness.likelihood import LikelihoodScorer

        scorer = LikelihoodScorer.load(threads=threads, batch_size=16)
        start = time.time()
        for n, ((source, query), members) in enumerate(groups.items()):
            res = scorer.score(source, [r["summary"] for r in members], query)
            entry = {r["id"]: (r["summary"], x.offsets, x.conditional, x.unconditional, x.truncated_source)
                     for r, x in zip(members, res)}
            name = hashlib.sha1(f"{source}|{query}".encode()).hexdigest()[:16]
            with open(cache / f"bench-{name}.pkl", "wb") as fh:
                pickle.dump(entry, fh)
            found.update({k: v[:4] for k, v in entry.items()})
            print(f"  scored {n + 1}/{len(groups)} sources ({time.time() - start:.0f} s)", file=sys.stderr)
    return {k: v[1:] for k, v in found.items()}


# ---------------------------------------------------------------- features and the fit


def feature_rows(rows: list[dict], scores: dict[str, tuple]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per row: the whole summary's FEATURES, and a matrix of its sentences' FEATURES."""
    from tunewise.faithfulness.features import claim_features
    from tunewise.faithfulness.text import sentence_spans

    whole, sentences = [], []
    for r in rows:
        offsets, cond, uncond = scores[r["id"]]
        source = r["source"] if not r["query"] else f"{r['query']}\n{r['source']}"
        whole.append(claim_features(r["summary"], source, offsets, cond, uncond))
        spans = sentence_spans(r["summary"]) or [None]
        sentences.append(np.array([claim_features(r["summary"], source, offsets, cond, uncond, s) for s in spans]))
    return np.array(whole), sentences


def fit(X: np.ndarray, y: np.ndarray, C: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight="balanced", max_iter=2000)).fit(X, y)


def unit_scores(model, X: np.ndarray, sentences: list[np.ndarray], cols: list[int]) -> dict[str, np.ndarray]:
    """P(unfaithful) of each summary: of the whole text (`summary`), and of its worst sentence (`sentence`)."""
    stacked = model.predict_proba(np.concatenate(sentences)[:, cols])[:, 1]  # one call: sentences of all rows
    ends = np.cumsum([len(s) for s in sentences])
    return {"summary": model.predict_proba(X[:, cols])[:, 1],
            "sentence": np.array([part.max() for part in np.split(stacked, ends[:-1])])}


def balanced_accuracy(y: np.ndarray, flagged: np.ndarray) -> float:
    pos, neg = y == 1, y == 0
    if not pos.any() or not neg.any():
        return float("nan")
    return 0.5 * (flagged[pos].mean() + (~flagged[neg]).mean())


def mean_over_datasets(y: np.ndarray, flagged: np.ndarray, datasets: np.ndarray) -> float:
    """The selection criterion: balanced accuracy averaged over the two datasets (each target counts once)."""
    return float(np.nanmean([balanced_accuracy(y[datasets == d], flagged[datasets == d]) for d in np.unique(datasets)]))


def best_threshold(y: np.ndarray, score: np.ndarray, datasets: np.ndarray) -> tuple[float, float]:
    cuts = np.unique(np.quantile(score, np.linspace(0.02, 0.98, 97)))
    values = [mean_over_datasets(y, score >= c, datasets) for c in cuts]
    best = int(np.nanargmax(values))
    return float(cuts[best]), float(values[best])


def out_of_fold(X, sentences, y, groups, cols, C, folds=5) -> dict[str, np.ndarray]:
    from sklearn.model_selection import GroupKFold

    oof = {"summary": np.zeros(len(y)), "sentence": np.zeros(len(y))}
    for tr, te in GroupKFold(n_splits=min(folds, len(set(groups)))).split(X, y, groups):
        model = fit(X[tr][:, cols], y[tr], C)
        part = unit_scores(model, X[te], [sentences[i] for i in te], cols)
        for unit in oof:
            oof[unit][te] = part[unit]
    return oof


# ---------------------------------------------------------------- evaluation


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half; equal to sklearn's roc_auc_score, and fast enough
    for the bootstrap)."""
    from scipy.stats import rankdata

    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float((rankdata(score)[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def grouped_ci(y, score, flagged, docs, n_resamples: int, seed: int = SEED) -> dict[str, list[float]]:
    """95% percentile intervals of balanced accuracy and ROC AUC, resampling documents (a document's summaries
    move together: they are not independent)."""
    by_doc = defaultdict(list)
    for i, d in enumerate(docs):
        by_doc[d].append(i)
    groups = [np.array(v) for v in by_doc.values()]
    rng = np.random.default_rng(seed)
    bacc, auc = [], []
    for _ in range(n_resamples):
        idx = np.concatenate([groups[j] for j in rng.integers(0, len(groups), len(groups))])
        bacc.append(balanced_accuracy(y[idx], flagged[idx]))
        auc.append(roc_auc(y[idx], score[idx]))
    ci = lambda xs: [float(np.nanpercentile(xs, 2.5)), float(np.nanpercentile(xs, 97.5))]
    return {"balanced_accuracy_ci": ci(bacc), "roc_auc_ci": ci(auc)}


def lexical_score(summary: str, source: str) -> float:
    """SOURCE.md's baseline: novel capitalised-or-digit tokens (rule: any => unfaithful)."""
    import re

    words = {w.lower() for w in re.findall(r"\w+", source)}
    return float(sum(1 for t in re.findall(r"\w+", summary)
                     if (t[0].isupper() or any(c.isdigit() for c in t)) and t.lower() not in words))


def evaluate(rows: list[dict], systems: dict[str, tuple[np.ndarray, float]], n_resamples: int) -> dict:
    y = np.array([r["unfaithful"] for r in rows])
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
        for system, (score, cut) in systems.items():
            flagged = score[idx] >= cut
            entry["systems"][system] = {"balanced_accuracy": balanced_accuracy(y[idx], flagged),
                                        "roc_auc": roc_auc(y[idx], score[idx]),
                                        **grouped_ci(y[idx], score[idx], flagged, docs, n_resamples)}
        out[name] = entry
    return out


def markdown(results: dict, shown: list[str]) -> str:
    lines = ["| subset | n | docs | unf. | " + " | ".join(f"{s}: bal. acc. [95% CI] / AUC" for s in shown) + " |",
             "|---|---:|---:|---:|" + "---|" * len(shown)]
    for name, e in results.items():
        cells = [f"**{name}**" if "(all)" in name else name, f"{e['n']:,}", str(e["documents"]),
                 f"{e['unfaithful_share']:.2f}"]
        for s in shown:
            v = e["systems"][s]
            lo, hi = v["balanced_accuracy_ci"]
            cells.append(f"{v['balanced_accuracy']:.3f} [{lo:.2f}, {hi:.2f}] / {v['roc_auc']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/faith/lm"), help="cached SmolLM2 token scores")
    parser.add_argument("--cached-only", action="store_true",
                        help="score only rows whose token scores are cached (a partial run; the row counts say so)")
    parser.add_argument("--limit-docs", type=int, default=None, help="first N documents of each dataset and part")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables to this file")
    parser.add_argument("--fit-out", type=Path, default=None, help="write the fitted checker (JSON) here")
    args = parser.parse_args()

    rows = load_rows(args.shared)
    check_no_document_straddles(rows)
    if args.limit_docs:
        keep: dict[tuple, list[str]] = defaultdict(list)
        for r in rows:
            ids = keep[(r["dataset"], r["part"])]
            if r["doc_id"] not in ids and len(ids) < args.limit_docs:
                ids.append(r["doc_id"])
        rows = [r for r in rows if r["doc_id"] in keep[(r["dataset"], r["part"])]]
    scores = token_scores(rows, args.cache, args.cached_only, args.threads)
    missing = sum(r["id"] not in scores for r in rows)
    rows = [r for r in rows if r["id"] in scores]
    train = [r for r in rows if r["part"] == "train"]
    test = [r for r in rows if r["part"] == "test"]
    print(f"train {len(train)} rows ({len({r['doc_id'] for r in train})} docs), test {len(test)} rows "
          f"({len({r['doc_id'] for r in test})} docs); {missing} rows without token scores left out", file=sys.stderr)

    from tunewise.faithfulness.features import FEATURES

    X_tr, S_tr = feature_rows(train, scores)
    X_te, S_te = feature_rows(test, scores)
    y_tr = np.array([r["unfaithful"] for r in train])
    g_tr = np.array([r["doc_id"] for r in train])
    d_tr = np.array([r["dataset"] for r in train])

    # selection: every (feature set, C, unit) by grouped out-of-fold balanced accuracy on train only
    cv: dict[str, dict] = {}
    for variant, feats in VARIANTS.items():
        cols = [FEATURES.index(f) for f in feats]
        for C in C_GRID:
            oof = out_of_fold(X_tr, S_tr, y_tr, g_tr, cols, C)
            for unit, score in oof.items():
                cut, value = best_threshold(y_tr, score, d_tr)
                cv[f"{variant} | C={C} | {unit}"] = {"variant": variant, "C": C, "unit": unit, "cut": cut,
                                                     "cv_balanced_accuracy": value, "cv_auc": roc_auc(y_tr, score)}
    for key, v in sorted(cv.items(), key=lambda kv: -kv[1]["cv_balanced_accuracy"]):
        print(f"  CV {key}: balanced acc. {v['cv_balanced_accuracy']:.3f}, AUC {v['cv_auc']:.3f}", file=sys.stderr)

    # each variant at its best (C, unit) by CV, fitted on all training rows, scored once on test
    systems = {"lexical baseline": (np.array([lexical_score(r["summary"], r["source"]) for r in test]), 1.0)}
    chosen = {}
    for variant in VARIANTS:
        best = max((v for v in cv.values() if v["variant"] == variant), key=lambda v: v["cv_balanced_accuracy"])
        cols = [FEATURES.index(f) for f in VARIANTS[variant]]
        model = fit(X_tr[:, cols], y_tr, best["C"])
        systems[variant] = (unit_scores(model, X_te, S_te, cols)[best["unit"]], best["cut"])
        chosen[variant] = {**best, "model": model}
    winner = max(chosen, key=lambda v: chosen[v]["cv_balanced_accuracy"])
    results = evaluate(test, systems, args.resamples)
    shown = list(systems)
    table = markdown(results, shown)
    payload = {"command": " ".join(["python bench/faithfulness.py", *sys.argv[1:]]),
               "train_rows": len(train), "test_rows": len(test), "rows_without_scores": missing,
               "selected": winner, "cross_validation": cv,
               "chosen": {v: {k: c[k] for k in ("C", "unit", "cut", "cv_balanced_accuracy", "cv_auc")}
                          for v, c in chosen.items()},
               "subsets": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(table)
    print(f"\nselected by grouped CV on train: {winner} "
          f"(C={chosen[winner]['C']}, unit {chosen[winner]['unit']}, cut {chosen[winner]['cut']:.3f})")
    if args.markdown:
        args.markdown.write_text(table + "\n", encoding="utf-8")
    if args.fit_out:
        write_checker(args.fit_out, chosen[winner], winner, train, results, cv, X_tr, S_tr, y_tr, d_tr, g_tr)


def write_checker(path: Path, chosen: dict, variant: str, train: list[dict], results: dict, cv: dict,
                  X_tr, S_tr, y_tr, d_tr, g_tr) -> None:
    """The fitted combination as the checker file the stage reads, with a cut for each unit (out-of-fold)."""
    from tunewise.faithfulness.checker import CheckerModel
    from tunewise.faithfulness.features import FEATURES

    feats = VARIANTS[variant]
    cols = [FEATURES.index(f) for f in feats]
    scaler, lr = chosen["model"].named_steps["standardscaler"], chosen["model"].named_steps["logisticregression"]
    oof = out_of_fold(X_tr, S_tr, y_tr, g_tr, cols, chosen["C"])
    cuts = {unit: best_threshold(y_tr, oof[unit], d_tr) for unit in ("summary", "sentence")}
    docs = {d: len({r["doc_id"] for r in train if r["dataset"] == d}) for d in ("summedits", "dialogue")}
    CheckerModel(
        name="faithfulness-lr-" + "-".join(variant.replace("+", "").split()[:-1]).lower(), lm="smollm2", features=feats,
        mean=scaler.mean_.tolist(), scale=scaler.scale_.tolist(), coef=lr.coef_[0].tolist(),
        intercept=float(lr.intercept_[0]),
        thresholds={u: c for u, (c, _) in cuts.items()},
        threshold_note="auto: the cut with the best balanced accuracy (mean over SummEdits and the dialogue set) on "
                       "out-of-fold predictions for the checker's training documents (" +
                       ", ".join(f"{u} {v:.3f}" for u, (_, v) in cuts.items()) + ")",
        fitted_on={"description": f"{len(train)} human-labelled summaries of {sum(docs.values())} documents: "
                                  f"SummEdits split evaluation ({docs['summedits']} docs) and 70% of the "
                                  f"FacEval + DiaSumFact dialogue documents ({docs['dialogue']} docs)",
                   "rows": len(train), "C": chosen["C"], "class_weight": "balanced",
                   "cv_balanced_accuracy": chosen["cv_balanced_accuracy"]},
        benchmark={
            name: {"balanced_accuracy": round(e["systems"][variant]["balanced_accuracy"], 4),
                   "balanced_accuracy_ci": [round(x, 4) for x in e["systems"][variant]["balanced_accuracy_ci"]],
                   "roc_auc": round(e["systems"][variant]["roc_auc"], 4), "n": e["n"]}
            for name, e in results.items() if "(all)" in name} | {"unit": chosen["unit"]},
    ).write(path)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
