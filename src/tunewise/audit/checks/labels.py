"""Checks `label_conflict`, `label_noise` and `imbalance`, for tasks whose rows carry a class label (see
audit/labels.py for the methods). A task without labels reports them as not applicable."""

from __future__ import annotations

import numpy as np

from tunewise.audit import labels as methods
from tunewise.audit.findings import EXAMPLES, CheckResult, Finding, plural
from tunewise.audit.scan import Scan

CHECKS = ("label_conflict", "label_noise", "imbalance")
MIN_NOISE_ROWS = 20  # fewer train rows cannot give out-of-fold predictions worth ranking


def check(scan: Scan) -> CheckResult:
    if not scan.task.has_labels:
        return CheckResult(status={name: f"not applicable to task {scan.task.name}" for name in CHECKS})
    labels = scan.label_array
    result = CheckResult()
    result.extend(_conflicts(scan, labels))
    result.extend(_noise(scan, labels))
    result.extend(_imbalance(scan))
    return result


def _conflicts(scan: Scan, labels: np.ndarray) -> CheckResult:
    result = CheckResult(status={"label_conflict": "ran"})
    groups, n_rows = methods.conflicts(scan.dups, labels)
    if not groups:
        return result
    names, ref = scan.label_names, scan.ref
    examples = []
    for grp in groups[:EXAMPLES]:
        a = grp[0]
        b = next((x for x in grp[1:] if labels[x] != labels[a]), grp[-1])
        examples.append({**ref(a), "label": names[labels[a]], "match": {**ref(b), "label": names[labels[b]]},
                         "detail": f"labels {names[labels[a]]} / {names[labels[b]]}"})
    result.findings.append(Finding(
        "label_conflict", "conflict", "warning", n_rows,
        f"{plural(len(groups), 'group')} of the same or near-same text carry different labels "
        f"({plural(n_rows, 'row')})",
        "decide the right label for each group and fix the data (the groups are in audit/flagged.jsonl)",
        examples=examples))
    for c_id, grp in enumerate(groups):
        for g in grp:
            result.flagged.append({"check": "label_conflict", "kind": "conflict", **ref(g),
                                   "label": names[labels[g]], "group": c_id})
    return result


def _noise(scan: Scan, labels: np.ndarray) -> CheckResult:
    if not scan.recipe.audit.label_noise:
        return CheckResult(status={"label_noise": "disabled (audit.label_noise=false)"})
    texts = scan.noise_texts
    rows = np.array(sorted(texts), dtype=np.int64)
    if len(rows) < MIN_NOISE_ROWS:
        return CheckResult(status={"label_noise": f"too few train rows ({len(rows)}) for out-of-fold predictions"})
    result = CheckResult(status={"label_noise": "ran"})
    ranked, suggested, prob = methods.noise_candidates([texts[g] for g in rows.tolist()], labels[rows],
                                                       scan.recipe.seed)
    if not len(ranked):
        return result
    names, ref = scan.label_names, scan.ref
    cand = rows[ranked]
    n_train = scan.split("train").n
    sampled = f" (checked on a seeded sample of {len(rows):,} of {n_train:,} train rows)" if len(rows) < n_train else ""
    examples = [{**ref(g), "label": names[labels[g]], "suggested": names[s],
                 "detail": f"labelled {names[labels[g]]}, model says {names[s]} ({p:.2f})"}
                for g, s, p in zip(cand[:EXAMPLES].tolist(), suggested[:EXAMPLES].tolist(), prob[:EXAMPLES].tolist())]
    for g, s, p in zip(cand.tolist(), suggested.tolist(), prob.tolist()):
        result.flagged.append({"check": "label_noise", "kind": "candidate", **ref(g), "label": names[labels[g]],
                               "suggested": names[s], "probability": round(float(p), 4)})
    result.findings.append(Finding(
        "label_noise", "candidate", "info", len(cand),
        f"{plural(len(cand), 'train row')} look{'s' if len(cand) == 1 else ''} mislabelled to a cross-validated "
        f"TF-IDF model{sampled}: candidates to review, not proven errors",
        "review the candidates in audit/flagged.jsonl, most suspicious first; fix the labels that are wrong",
        split="train", examples=examples, details={"method": methods.NOISE_MODEL, "checked_rows": len(rows)}))
    return result


def _imbalance(scan: Scan) -> CheckResult:
    result = CheckResult(status={"imbalance": "ran"})
    ratio = scan.recipe.audit.imbalance_ratio
    counts = scan.label_counts_by_split["train"]
    small, top, top_label = methods.imbalance(counts, ratio)
    if small:
        result.findings.append(Finding(
            "imbalance", "minority_classes", "warning", len(small),
            f"{len(small)} of {len(counts)} classes have fewer than 1/{ratio:g} of the largest "
            f"class's {top:,} train rows ({top_label}): " + ", ".join(f"{c} ({counts[c]})" for c in small[:8])
            + (" ..." if len(small) > 8 else ""),
            "collect more rows for these classes, or weigh them; read their per-class scores with care",
            split="train", examples=[{"id": None, "split": "train", "origin": None, "label": c,
                                      "detail": f"{counts[c]} rows"} for c in small[:EXAMPLES]],
            details={"counts": counts, "ratio": top / max(1, min(counts.values()))}))
    return result
