#!/usr/bin/env python3
"""Build the injection guard's data (examples/injection-guard.yaml) from real, commercially usable sources.

deepset/prompt-injections alone teaches a shortcut: its benign rows are mostly questions and keyword queries, its
injections imperatives, so a classifier trained on it alone flags ordinary instructions ("Write a haiku about
autumn.") as injections. This script adds benign instruction-style and customer-query text from other sources:

  source              rows           licence       role
  prompt_injections   546 (all)      Apache-2.0    benign (343) and injection (203), ~30% German
  self_instruct_seed  175 (all)      Apache-2.0    benign: human-written task instructions (+ their input)
  banking77           3 per intent   CC-BY-4.0     benign: customer-support queries

and carves one stratified (source x label) test split. A further benign set is written but NEVER trained or tuned
on, for the guard's out-of-distribution false-positive check (`guard.benign_eval`):

  ood_benign.jsonl    self_instruct_human/user_oriented_instructions (252, Apache-2.0): instructions from other
                      tasks and apps than the seed tasks. (examples/data/helpdesk/test.jsonl is the other OOD set.)

The benign additions are English: the German share of the benign rows falls from ~30% to about half that, so
German benign text is under-represented (the card's per-language rows show its FPR). No non-commercial data
(dialogsum, multi30k) is used: the guard is meant for serving. Seeded and deterministic:

    python examples/data/make_guard_data.py      # writes examples/data/guard/{train,test,ood_benign}.jsonl

E-mail addresses, phone numbers and other PII the audit detects (the Self-Instruct inputs hold a few fictional
ones) are replaced by tunewise's own placeholders ([EMAIL], [PHONE]), as `tunewise serve` redacts them, so run it
with tunewise installed (.venv/bin/python). Rows: {"text", "label" (0 benign, 1 injection), "source"}.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections import defaultdict
from pathlib import Path

SEED = 20260517
TEST_FRACTION = 0.3
BANKING_PER_INTENT = 3
HERE = Path(__file__).resolve().parent
DEFAULT_SHARED = HERE.parents[2] / "shared" / "data"   # ../shared/data from the repository root
DEFAULT_OUT = HERE / "guard"


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def instruction_text(row: dict) -> str:
    """An instruction as a user would send it: the instruction, then its input (when it has one)."""
    return row["instruction"].strip() + (f"\n\n{row['input'].strip()}" if row.get("input", "").strip() else "")


def prompt_injections(shared: Path) -> list[dict]:
    return [{"text": r["text"], "label": int(r["label"]), "source": "prompt_injections"}
            for r in read_jsonl(shared / "prompt_injections" / "train.jsonl")]


def self_instruct(shared: Path, name: str, source: str) -> list[dict]:
    return [{"text": instruction_text(r), "label": 0, "source": source}
            for r in read_jsonl(shared / "self_instruct_human" / name)]


def banking77(shared: Path, rng: random.Random) -> list[dict]:
    """BANKING_PER_INTENT queries of each of the 77 intents (seeded), so no intent dominates."""
    by_intent: dict[str, list[str]] = defaultdict(list)
    with (shared / "banking77" / "train.csv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            by_intent[row["category"]].append(row["text"])
    return [{"text": t, "label": 0, "source": "banking77"}
            for intent in sorted(by_intent) for t in rng.sample(by_intent[intent], BANKING_PER_INTENT)]


def split(rows: list[dict], rng: random.Random) -> tuple[list[dict], list[dict]]:
    """A test split stratified by (source, label), then both sides shuffled (seeded)."""
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["source"], r["label"])].append(r)
    train, test = [], []
    for key in sorted(groups):
        group = groups[key][:]
        rng.shuffle(group)
        k = round(TEST_FRACTION * len(group))
        test += group[:k]
        train += group[k:]
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def dedupe(rows: list[dict]) -> list[dict]:
    """Drop exact repeats of a text (first kept), so no text is on both sides of the split."""
    seen, out = set(), []
    for r in rows:
        if r["text"] not in seen:
            seen.add(r["text"])
            out.append(r)
    return out


def redact_pii(rows: list[dict]) -> int:
    """Replace detected PII by typed placeholders in place; returns how many rows changed."""
    from tunewise.safety.pii import redact

    changed = 0
    for r in rows:
        text, spans = redact(r["text"])
        if spans:
            r["text"], changed = text, changed + 1
    return changed


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="the shared data folder (../shared/data)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where train/test/ood_benign.jsonl go")
    args = ap.parse_args(argv)
    rng = random.Random(SEED)
    rows = dedupe(prompt_injections(args.shared) + self_instruct(args.shared, "seed_tasks.flat.jsonl",
                                                                 "self_instruct_seed") + banking77(args.shared, rng))
    train, test = split(rows, rng)
    ood = dedupe(self_instruct(args.shared, "user_oriented_instructions.flat.jsonl", "self_instruct_user_oriented"))
    seen = {r["text"] for r in rows}
    ood = [r for r in ood if r["text"] not in seen]
    print(f"PII redacted in {redact_pii(train) + redact_pii(test) + redact_pii(ood)} rows")
    for name, part in (("train", train), ("test", test), ("ood_benign", ood)):
        write_jsonl(args.out / f"{name}.jsonl", part)
        counts: dict[str, int] = defaultdict(int)
        for r in part:
            counts[f"{r['source']}:{r['label']}"] += 1
        print(f"{args.out / name}.jsonl: {len(part)} rows {dict(sorted(counts.items()))}")


if __name__ == "__main__":
    main()
