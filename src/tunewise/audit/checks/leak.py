"""Check `leak`: validation and test rows that are in train, so their score does not measure generalisation.

Kinds, each row counted once, in this order: `exact` (the same text after normalisation), `near` (a verified
near-duplicate of a train text), and for tasks whose rows are prompt -> reply, `prompt` (the same prompt with
another reply) and `ngram` (a run of `audit.leak_ngram` words shared with a train prompt or reply).
"""

from __future__ import annotations

import numpy as np

from tunewise.audit.findings import EXAMPLES, CheckResult, Finding, plural
from tunewise.audit.scan import Scan, Split

Leak = tuple[int, int, str]  # (eval row, train row, detail)


def check(scan: Scan) -> CheckResult:
    result = CheckResult(status={"leak": "ran" if len(scan.splits) > 1 else "no validation or test split"})
    cfg = scan.recipe.audit
    words_for = {"exact": "an exact copy of a train row",
                 "near": f"a near-duplicate of a train row (Jaccard >= {cfg.near_duplicate_threshold:g})",
                 "prompt": "a repeat of a train prompt (with another reply)",
                 "ngram": f"sharing a {cfg.leak_ngram}-word run with a train prompt or reply"}
    ref = scan.ref
    for sp in scan.splits[1:]:
        for kind, items in _leaks(scan, sp).items():
            if not items:
                continue
            examples = [{**ref(g), "match": ref(p), "detail": d} for g, p, d in items[:EXAMPLES]]
            # an exact copy of a train row in test inflates the score for certain: that blocks. Near copies,
            # repeated prompts and shared n-grams need a person's judgement (short paraphrases are common in
            # intent data): they warn.
            severity = "blocking" if sp.name == "test" and kind == "exact" else "warning"
            result.findings.append(Finding(
                "leak", kind, severity, len(items),
                f"{len(items):,} of {plural(sp.n, sp.name + ' row')}: {words_for[kind]}",
                f"remove these rows from {sp.name} (or from train), so the {sp.name} score measures generalisation; "
                f"the pairs are in audit/flagged.jsonl", split=sp.name, examples=examples))
            for g, p, d in items:
                train_row = ref(p)
                result.flagged.append({"check": "leak", "kind": kind, **ref(g), "of": train_row["id"],
                                       "of_origin": train_row["origin"], "detail": d})
                if kind == "exact":
                    result.quarantine.append({"stage": "audit", "check": "leak", **ref(g),
                                              "reason": f"exact copy of train row {train_row['origin']} "
                                                        f"(id {train_row['id']})"}, g)
    return result


def _leaks(scan: Scan, sp: Split) -> dict[str, list[Leak]]:
    """The leaked rows of one eval split by kind; a row is reported under the first kind that finds it."""
    kinds: dict[str, list[Leak]] = {"exact": [], "near": [], "prompt": [], "ngram": []}
    rows, partner, sim, exact = scan.dups.leaks(scan.split("train").code, sp.code)
    for g, p, s, e in zip(rows.tolist(), partner.tolist(), sim.tolist(), exact.tolist()):
        kinds["exact" if e else "near"].append((g, p, "same text after normalisation" if e else f"Jaccard {s:.2f}"))
    if not scan.task.has_prompts:  # a plain text is its own prompt: nothing more to compare
        return kinds
    leaked = np.zeros(sp.n, dtype=bool)  # by local row number
    leaked[rows - sp.start] = True
    train = scan.split("train")
    # the first train row of each train prompt, then each eval prompt looked up among them
    prompts, first = np.unique(np.frombuffer(train.prompt_keys, dtype=np.uint64), return_index=True)
    keys = np.frombuffer(sp.prompt_keys, dtype=np.uint64)
    if len(prompts) and len(keys):
        pos = np.minimum(np.searchsorted(prompts, keys), len(prompts) - 1)
        repeat = (prompts[pos] == keys) & ~leaked
        for local in np.flatnonzero(repeat).tolist():
            kinds["prompt"].append((sp.start + local, train.start + int(first[pos[local]]),
                                    "same prompt, different reply"))
        leaked |= repeat
    n = scan.recipe.audit.leak_ngram
    hit_rows, hit_train, hit_side = scan.ngram_hits
    mine = (hit_rows >= sp.start) & (hit_rows < sp.start + sp.n)
    for g, train_row, side in zip(hit_rows[mine].tolist(), hit_train[mine].tolist(), hit_side[mine].tolist()):
        if not leaked[g - sp.start]:
            kinds["ngram"].append((g, train_row, f"shares a {n}-word run in its {'reply' if side else 'prompt'} "
                                                 f"with a train row"))
    return kinds
