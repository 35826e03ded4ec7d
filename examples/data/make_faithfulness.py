#!/usr/bin/env python3
"""Write the faithfulness checker's (summary, source, label) pairs from the two shared human-labelled sets.

    python examples/data/make_faithfulness.py            # -> runs/faithfulness-data/{train,validation,test}.jsonl
    tunewise run examples/faithfulness-checker.yaml      # fine-tunes the checker on them

Sources (read from ../shared/data, never copied into the repository):
- SummEdits (summedits/pairs.jsonl + docs.jsonl): the released split is kept — `evaluation` documents train the
  checker, `test` documents are the benchmark's test set. The released split is by document.
- dialogue_faithfulness (pairs.jsonl): FacEval + DiaSumFact, real model summaries of SAMSum/QMSum dialogues. No
  split is released, so documents are split here, seeded: 30% of documents to test. A document is the
  dialogue's `doc_id`; the same SAMSum dialogue has one doc_id in both sets, so it never straddles the split.

Only the inputs a checker may read are kept: `source` (with the QMSum `query` in front, which the summary
answers) and `summary`. SummEdits' `system`, `seed_id` and `edit_types`, and the dialogue set's `error_types`,
`sentences` and `system` leak the label and are never read. A document's summaries never straddle train and
test, nor train and validation (validation = a seeded 15% of the training documents, for early stopping).

Each row: id, summary, source, evidence (the parts of the source the checker reads for this summary, chosen by
`tunewise.faithfulness.text.evidence`, the same function the faithfulness stage uses), label (`faithful` /
`unfaithful`), doc_id, dataset (`summedits` / `dialogue`), domain (SummEdits domain, or faceval /
diasumfact-samsum / diasumfact-qmsum).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import defaultdict
from pathlib import Path

from tunewise.faithfulness.text import evidence

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
OUT = REPO / "runs" / "faithfulness-data"
# The only fields read from each file (everything else leaks the label or is not an input).
SUMMEDITS_FIELDS = ("id", "doc_id", "domain", "summary", "label", "split")
DIALOGUE_FIELDS = ("id", "dataset", "corpus", "doc_id", "source", "query", "summary", "label")
EVIDENCE_CHARS = 500  # about 115 MiniLM tokens: with the summary it fits model.max_length 192
DIALOGUE_TEST_FRACTION = 0.3
VALIDATION_FRACTION = 0.15


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _only(record: dict, fields: tuple[str, ...]) -> dict:
    return {f: record.get(f) for f in fields}


def _label(value: int) -> str:
    return "faithful" if int(value) == 1 else "unfaithful"


def _bucket(doc_id: str, seed: int) -> float:
    """A document's place in [0, 1), seeded and stable: the same document always lands on the same side."""
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).hexdigest()
    return int(digest[:12], 16) / 16 ** 12


def summedits_rows(shared: Path) -> list[dict]:
    docs = {d["doc_id"]: d["source"] for d in _read_jsonl(shared / "summedits" / "docs.jsonl")}
    rows = []
    for raw in _read_jsonl(shared / "summedits" / "pairs.jsonl"):
        p = _only(raw, SUMMEDITS_FIELDS)
        rows.append({"id": f"summedits-{p['id']}", "summary": p["summary"], "source": docs[p["doc_id"]],
                     "label": _label(p["label"]), "doc_id": p["doc_id"], "dataset": "summedits",
                     "domain": p["domain"], "split": "test" if p["split"] == "test" else "train"})
    return rows


def dialogue_rows(shared: Path, seed: int) -> list[dict]:
    rows = []
    for raw in _read_jsonl(shared / "dialogue_faithfulness" / "pairs.jsonl"):
        p = _only(raw, DIALOGUE_FIELDS)
        source = f"Query: {p['query']}\n{p['source']}" if p["query"] else p["source"]
        domain = "faceval" if p["dataset"] == "faceval" else f"diasumfact-{p['corpus'].lower()}"
        split = "test" if _bucket(p["doc_id"], seed) < DIALOGUE_TEST_FRACTION else "train"
        rows.append({"id": p["id"], "summary": p["summary"], "source": source, "label": _label(p["label"]),
                     "doc_id": p["doc_id"], "dataset": "dialogue", "domain": domain, "split": split})
    return rows


def split_rows(rows: list[dict], seed: int) -> dict[str, list[dict]]:
    """train / validation / test by document; validation is carved from the training documents."""
    out: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        split = row.pop("split")
        if split == "train" and _bucket("validation:" + row["doc_id"], seed) < VALIDATION_FRACTION:
            split = "validation"
        out[split].append(row)
    return out


def check_no_document_straddles(splits: dict[str, list[dict]]) -> None:
    """Refuse to write a split where a document (by id or by its exact source text) is on two sides."""
    seen: dict[str, str] = {}
    for name, rows in splits.items():
        for row in rows:
            for key in (row["doc_id"], hashlib.sha256(" ".join(row["source"].split()).encode()).hexdigest()):
                if seen.setdefault(key, name) != name:
                    raise SystemExit(f"document {row['doc_id']} is in both {seen[key]} and {name}: refusing to "
                                     f"write a leaking split")


def build(shared: Path, seed: int, evidence_chars: int) -> dict[str, list[dict]]:
    splits = split_rows(summedits_rows(shared) + dialogue_rows(shared, seed), seed)
    check_no_document_straddles(splits)
    for rows in splits.values():
        for row in rows:
            row["evidence"] = evidence(row["source"], row["summary"], evidence_chars)
    return dict(splits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared data folder")
    parser.add_argument("--out", type=Path, default=OUT, help="where to write train/validation/test.jsonl")
    parser.add_argument("--seed", type=int, default=13, help="seeds the dialogue set's document split")
    parser.add_argument("--evidence-chars", type=int, default=EVIDENCE_CHARS)
    args = parser.parse_args()
    splits = build(args.shared, args.seed, args.evidence_chars)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("train", "validation", "test"):
        rows = splits[name]
        with open(args.out / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        by = defaultdict(lambda: [0, 0])
        for r in rows:
            by[r["dataset"]][r["label"] == "faithful"] += 1
        facts = ", ".join(f"{d} {u + f} ({f} faithful)" for d, (u, f) in sorted(by.items()))
        print(f"{args.out / (name + '.jsonl')}: {len(rows)} rows, {len({r['doc_id'] for r in rows})} documents: "
              f"{facts}")


if __name__ == "__main__":
    main()
