"""Checks `duplicate` and `near_duplicate`: rows of a split that repeat an earlier row of the same split exactly
(after normalisation), and clusters of near-same texts (verified Jaccard over word shingles). Exact repeats after
the first are recommended for removal (quarantine.jsonl); near-duplicate clusters are for a person to look at."""

from __future__ import annotations

from collections import Counter

from tunewise.audit.findings import EXAMPLES, CheckResult, Finding, plural
from tunewise.audit.scan import Scan, Split


def check(scan: Scan) -> CheckResult:
    result = CheckResult(status={"duplicate": "ran", "near_duplicate": "ran"},
                         measures={"exact_group_sizes": [], "near_cluster_sizes": []})
    for sp in scan.splits:  # per split, exact repeats then near clusters: the order of flagged.jsonl
        _exact(scan, sp, result)
        _near(scan, sp, result)
    return result


def _exact(scan: Scan, sp: Split, result: CheckResult) -> None:
    rows, first = scan.dups.exact_duplicates(sp.code)
    result.measures["exact_group_sizes"] += [repeats + 1 for repeats in Counter(first.tolist()).values()]
    if not len(rows):
        return
    ref = scan.ref
    examples = [{**ref(g), "match": ref(f), "detail": "same text after normalisation"}
                for g, f in zip(rows[:EXAMPLES].tolist(), first[:EXAMPLES].tolist())]
    result.findings.append(Finding(
        "duplicate", "exact", "warning", len(rows),
        f"{plural(len(rows), sp.name + ' row')} repeat{'s' if len(rows) == 1 else ''} an earlier {sp.name} "
        f"row exactly, after Unicode and whitespace normalisation ({plural(len(set(first.tolist())), 'text')} "
        f"repeated)",
        "remove the repeats (listed in audit/quarantine.jsonl), or keep them on purpose: repeats weigh "
        "their text more in training and in the metrics", split=sp.name, examples=examples))
    for g, f in zip(rows.tolist(), first.tolist()):
        original, row = ref(f), ref(g)
        result.flagged.append({"check": "duplicate", "kind": "exact", **row, "of": original["id"]})
        result.quarantine.append({"stage": "audit", "check": "duplicate", **row,
                                  "reason": f"exact duplicate of {original['origin']} (id {original['id']}); the "
                                            f"first occurrence is kept"}, g)


def _near(scan: Scan, sp: Split, result: CheckResult) -> None:
    dups, ref = scan.dups, scan.ref
    clusters = dups.near_clusters(sp.code)
    extra = 0  # texts beyond the first of each cluster
    examples = []
    for c_id, members in enumerate(clusters):
        distinct = len(set(dups.keys[members].tolist()))
        extra += distinct - 1
        result.measures["near_cluster_sizes"].append(len(members))
        firsts = [members[0]] + [m for m in members[1:] if dups.keys[m] != dups.keys[members[0]]][:1]
        if len(examples) < EXAMPLES:
            examples.append({**ref(firsts[0]), "match": ref(firsts[-1]),
                             "detail": f"cluster of {len(members)} rows, {distinct} different texts"})
        for g in members.tolist():
            result.flagged.append({"check": "near_duplicate", "kind": "near", **ref(g), "cluster": f"{sp.name}:{c_id}"})
    if not clusters:
        return
    threshold = scan.recipe.audit.near_duplicate_threshold
    result.findings.append(Finding(
        "near_duplicate", "near", "info", extra,
        f"{plural(extra, sp.name + ' text')} near-duplicate{'s' if extra == 1 else ''} another {sp.name} "
        f"text (Jaccard >= {threshold:g} over word {scan.shingle_words}-gram shingles), in "
        f"{plural(len(clusters), 'cluster')}",
        "look at the clusters in audit/flagged.jsonl (rows of one cluster share a `cluster` id); keep one "
        "row per cluster unless the differences matter", split=sp.name, examples=examples,
        details={"clusters": len(clusters), "largest": max(len(m) for m in clusters)}))
