"""The audit stage: reads data/ (as the data stage wrote it) and the recipe, writes audit/.

audit/
  findings.json        every finding (check, kind, severity, count, message, action, example rows), the summary
                       per check and severity, the policy (intended_use, allow, severity overrides), statistics,
                       and the signature of the settings that produced them
  flagged.jsonl        one line per flagged row and finding: check, kind, split, id, origin, and what it matches
  quarantine.jsonl     the data stage's quarantined rows (stage "data") and the rows the audit recommends removing
                       (stage "audit": exact duplicates after the first, near-empty rows, exact copies of train rows
                       in an eval split). Nothing is deleted from data/: the audit recommends, the user decides.
  datacard.md          a datasheet for the dataset (Gebru et al.), filled from the recipe and these statistics
  label_distribution.svg, length_histogram.svg, duplicate_clusters.svg
  redacted/<split>.jsonl   with audit.redact_pii: the split with PII replaced by [EMAIL], [CARD], ...

The data are streamed in batches: per row the audit keeps its id, origin, a few integers and the duplicate
index's compact keys (see dedup.py), never all texts at once.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import tunewise
from tunewise.audit import dedup, labels as label_checks, leakage, length, pii, provenance
from tunewise.audit.findings import EXAMPLES, FINDINGS_FILE, Finding, apply_policy, plural, summary, summary_lines
from tunewise.audit.normalize import content_chars, exact_form, key64, snippet, words
from tunewise.data.prepare import load_labels
from tunewise.errors import DataError
from tunewise.recipe import Recipe
from tunewise.rundir import atomic_write_json, atomic_write_jsonl, atomic_write_text

SPLITS = ("train", "validation", "test")
CODES = {name: i for i, name in enumerate(SPLITS)}
BATCH = 8192
LABEL_NOISE_MAX_ROWS = 20_000
PLACEHOLDERS = {"na", "n a", "null", "none", "nan", "undefined", "todo", "tbd", "test", "xxx", "lorem ipsum"}
LENGTH_WARN_RATE = 0.01
FLAGGED_FILE = "flagged.jsonl"
QUARANTINE_FILE = "quarantine.jsonl"
DATACARD_FILE = "datacard.md"
PLOTS = {"labels": "label_distribution.svg", "lengths": "length_histogram.svg", "duplicates": "duplicate_clusters.svg"}


@dataclass
class Split:
    """What the audit keeps of one split while streaming it."""

    name: str
    start: int  # global row number of its first row
    path: Path
    ids: list[str] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    lengths: list[np.ndarray] = field(default_factory=list)
    near_empty: list[int] = field(default_factory=list)  # local row numbers
    pii: list[tuple[int, list[pii.Match]]] = field(default_factory=list)
    prompt_keys: list[int] = field(default_factory=list)
    label_counts: Counter = field(default_factory=Counter)

    @property
    def n(self) -> int:
        return len(self.ids)

    def row(self, local: int) -> dict[str, Any]:
        return {"id": self.ids[local], "split": self.name, "origin": self.origins[local]}


# ---------------------------------------------------------------- reading data/


def _batches(path: Path) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                batch.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not a row written by the data stage ({exc.msg}); the file was "
                                f"damaged: run the data stage again (`tunewise run RECIPE --force`)") from None
            if len(batch) == BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def _sides(record: dict[str, Any], causal: bool) -> tuple[str, str, str]:
    """(prompt, target, whole) texts of a record: for classification all three are the text."""
    if not causal:
        return record["text"], record["text"], record["text"]
    messages = record["messages"]
    prompt = "\n".join(m["content"] for m in messages if m["role"] != "assistant")
    target = next((m["content"] for m in reversed(messages) if m["role"] == "assistant"), "")
    return prompt, target, "\n".join(m["content"] for m in messages)


def _near_empty(text: str) -> bool:
    return content_chars(text) < 2 or " ".join(words(text)) in PLACEHOLDERS


class _LineWriter:
    """Write a JSONL file line by line into a temp file, renamed into place on close (atomic, streaming)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        self.fh = os.fdopen(fd, "w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self.fh.write(json.dumps(record, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self.fh.close()
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.path)


# ---------------------------------------------------------------- the stage


def run_audit(recipe: Recipe, data_dir: Path, out: Path) -> str:
    """Audit data_dir (the data stage's folder) into out. Returns the printed summary."""
    cfg = recipe.audit
    data_dir, out = Path(data_dir), Path(out)
    summary_path = data_dir / "summary.json"
    try:
        data_summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{summary_path}: missing or damaged ({exc}); run the data stage first") from None
    causal = recipe.causal
    label_names: list[str] = [] if causal else load_labels(data_dir)
    label_index = {name: i for i, name in enumerate(label_names)}

    splits: list[Split] = []
    start = 0
    for name in SPLITS:
        path = data_dir / f"{name}.jsonl"
        if path.is_file():
            splits.append(Split(name, 0, path))
    median_words = _median_words(splits[0].path, causal)
    shingle_words = cfg.shingle_words or dedup.shingle_words_for(median_words)
    index = dedup.DuplicateIndex(cfg.near_duplicate_threshold, shingle_words=shingle_words,
                                 seed=recipe.seed % (2**32 - 1) or 1)
    ngrams = leakage.NgramIndex(cfg.leak_ngram) if causal else None
    tokenizer, length_unit = length.load_tokenizer(recipe.model.base)
    counter = length.LengthCounter(tokenizer)
    noise_rows = _noise_sample(splits[0], recipe) if not causal and cfg.label_noise else set()
    noise_texts_by_row: dict[int, str] = {}

    for sp in splits:
        sp.start = start
        redacted = _LineWriter(out / "redacted" / f"{sp.name}.jsonl") if cfg.redact_pii else None
        for batch in _batches(sp.path):
            base = sp.start + sp.n
            prompts, targets, wholes = zip(*(_sides(r, causal) for r in batch))
            for r in batch:
                sp.ids.append(str(r.get("id")))
                sp.origins.append(str(r.get("origin")))
            index.add(CODES[sp.name], list(wholes))
            if ngrams is not None:
                rows = np.arange(base, base + len(batch))
                if sp.name == "train":
                    ngrams.add_train(rows, list(prompts), list(targets))
                else:
                    ngrams.add_eval(rows, list(prompts), list(targets))
                sp.prompt_keys.extend(key64(exact_form(p)) for p in prompts)
                sp.lengths.append(counter.conversations([r["messages"] for r in batch]))
            else:
                for r in batch:
                    y = label_index.get(r["label"], -1)
                    sp.labels.append(y)
                    sp.label_counts[r["label"]] += 1
                sp.lengths.append(counter.texts(list(wholes)))
            for i, r in enumerate(batch):
                local = base - sp.start + i
                if _near_empty(targets[i]) or (causal and _near_empty(prompts[i])):
                    sp.near_empty.append(local)
                if sp.name == "train" and (base + i) in noise_rows:
                    noise_texts_by_row[base + i] = wholes[i]
                hits = pii.find_pii(wholes[i])
                if hits:
                    sp.pii.append((local, hits))
                if redacted is not None:
                    redacted.write(_redacted(r, causal) if hits else r)
        if redacted is not None:
            redacted.close()
        start += sp.n

    dups = index.finish()
    by_name = {sp.name: sp for sp in splits}
    findings: list[Finding] = []
    checks_run: dict[str, str] = {}
    flagged: list[dict[str, Any]] = []
    quarantine = _data_quarantine(data_dir)
    stats: dict[str, Any] = {"splits": {}, "data_quarantined": len(quarantine)}

    def locate(g: int) -> tuple[Split, int]:
        for sp in splits:
            if sp.start <= g < sp.start + sp.n:
                return sp, g - sp.start
        raise IndexError(g)

    def ref(g: int) -> dict[str, Any]:
        sp, local = locate(g)
        return sp.row(local)

    # -- duplicates and near-duplicates, per split
    exact_group_sizes: list[int] = []
    near_sizes: list[int] = []
    for sp in splits:
        rows, first = dups.exact_duplicates(CODES[sp.name])
        exact_group_sizes += list(Counter(first.tolist()).values())
        if len(rows):
            examples = [{**ref(g), "match": ref(f), "detail": "same text after normalisation"}
                        for g, f in zip(rows[:EXAMPLES].tolist(), first[:EXAMPLES].tolist())]
            findings.append(Finding(
                "duplicate", "exact", "warning", len(rows),
                f"{plural(len(rows), sp.name + ' row')} repeat{'s' if len(rows) == 1 else ''} an earlier {sp.name} "
                f"row exactly, after Unicode and whitespace normalisation ({plural(len(set(first.tolist())), 'text')} "
                f"repeated)",
                "remove the repeats (listed in audit/quarantine.jsonl), or keep them on purpose: repeats weigh "
                "their text more in training and in the metrics", split=sp.name, examples=examples))
            for g, f in zip(rows.tolist(), first.tolist()):
                flagged.append({"check": "duplicate", "kind": "exact", **ref(g), "of": ref(f)["id"]})
                quarantine.append({"stage": "audit", "check": "duplicate", **ref(g),
                                   "reason": f"exact duplicate of {ref(f)['origin']} (id {ref(f)['id']}); the first "
                                             f"occurrence is kept"})
        clusters = dups.near_clusters(CODES[sp.name])
        extra = 0
        examples = []
        for c_id, members in enumerate(clusters):
            distinct = len(set(dups.keys[members].tolist()))
            extra += distinct - 1
            near_sizes.append(len(members))
            firsts = [members[0]] + [m for m in members[1:] if dups.keys[m] != dups.keys[members[0]]][:1]
            if len(examples) < EXAMPLES:
                examples.append({**ref(firsts[0]), "match": ref(firsts[-1]),
                                 "detail": f"cluster of {len(members)} rows, {distinct} different texts"})
            for g in members.tolist():
                flagged.append({"check": "near_duplicate", "kind": "near", **ref(g), "cluster": f"{sp.name}:{c_id}"})
        if clusters:
            findings.append(Finding(
                "near_duplicate", "near", "info", extra,
                f"{plural(extra, sp.name + ' text')} near-duplicate{'s' if extra == 1 else ''} another {sp.name} "
                f"text (Jaccard >= {cfg.near_duplicate_threshold:g} over word {shingle_words}-gram shingles), in "
                f"{plural(len(clusters), 'cluster')}",
                "look at the clusters in audit/flagged.jsonl (rows of one cluster share a `cluster` id); keep one "
                "row per cluster unless the differences matter", split=sp.name, examples=examples,
                details={"clusters": len(clusters), "largest": max(len(m) for m in clusters)}))
    checks_run.update(duplicate="ran", near_duplicate="ran")

    # -- leakage: eval rows that are in train
    ngram_hits = ngrams.finish() if ngrams is not None else {}
    for sp in splits[1:]:
        rows, partner, sim, exact = dups.leaks(CODES["train"], CODES[sp.name])
        kinds: dict[str, list[tuple[int, int, str]]] = {"exact": [], "near": [], "prompt": [], "ngram": []}
        leaked = set()
        for g, p, s, e in zip(rows.tolist(), partner.tolist(), sim.tolist(), exact.tolist()):
            kinds["exact" if e else "near"].append((g, p, "same text after normalisation" if e else f"Jaccard {s:.2f}"))
            leaked.add(g)
        if causal:
            train_prompts: dict[int, int] = {}
            tr = by_name["train"]
            for local, key in enumerate(tr.prompt_keys):
                train_prompts.setdefault(key, tr.start + local)
            for local, key in enumerate(sp.prompt_keys):
                g = sp.start + local
                if g not in leaked and key in train_prompts:
                    kinds["prompt"].append((g, train_prompts[key], "same prompt, different reply"))
                    leaked.add(g)
            for g in range(sp.start, sp.start + sp.n):
                if g in ngram_hits and g not in leaked:
                    train_row, side = ngram_hits[g]
                    kinds["ngram"].append((g, train_row, f"shares a {cfg.leak_ngram}-word run in its "
                                                         f"{'reply' if side else 'prompt'} with a train row"))
                    leaked.add(g)
        words_for = {"exact": "an exact copy of a train row",
                     "near": f"a near-duplicate of a train row (Jaccard >= {cfg.near_duplicate_threshold:g})",
                     "prompt": "a repeat of a train prompt (with another reply)",
                     "ngram": f"sharing a {cfg.leak_ngram}-word run with a train prompt or reply"}
        for kind, items in kinds.items():
            if not items:
                continue
            examples = [{**ref(g), "match": ref(p), "detail": d} for g, p, d in items[:EXAMPLES]]
            # an exact copy of a train row in test inflates the score for certain: that blocks. Near copies,
            # repeated prompts and shared n-grams need a person's judgement (short paraphrases are common in
            # intent data): they warn.
            severity = "blocking" if sp.name == "test" and kind == "exact" else "warning"
            findings.append(Finding(
                "leak", kind, severity, len(items),
                f"{len(items):,} of {plural(sp.n, sp.name + ' row')}: {words_for[kind]}",
                f"remove these rows from {sp.name} (or from train), so the {sp.name} score measures generalisation; "
                f"the pairs are in audit/flagged.jsonl", split=sp.name, examples=examples))
            for g, p, d in items:
                flagged.append({"check": "leak", "kind": kind, **ref(g), "of": ref(p)["id"],
                                "of_origin": ref(p)["origin"], "detail": d})
                if kind == "exact":
                    quarantine.append({"stage": "audit", "check": "leak", **ref(g),
                                       "reason": f"exact copy of train row {ref(p)['origin']} (id {ref(p)['id']})"})
    checks_run["leak"] = "ran" if len(splits) > 1 else "no validation or test split"

    # -- labels
    if causal:
        for check in ("label_conflict", "label_noise", "imbalance"):
            checks_run[check] = f"not applicable to task {recipe.task}"
    else:
        all_labels = np.array([y for sp in splits for y in sp.labels], dtype=np.int64)
        groups, n_rows = label_checks.conflicts(dups, all_labels)
        checks_run["label_conflict"] = "ran"
        if groups:
            examples = []
            for grp in groups[:EXAMPLES]:
                a = grp[0]
                b = next((x for x in grp[1:] if all_labels[x] != all_labels[a]), grp[-1])
                examples.append({**ref(a), "label": label_names[all_labels[a]],
                                 "match": {**ref(b), "label": label_names[all_labels[b]]},
                                 "detail": f"labels {label_names[all_labels[a]]} / {label_names[all_labels[b]]}"})
            findings.append(Finding(
                "label_conflict", "conflict", "warning", n_rows,
                f"{plural(len(groups), 'group')} of the same or near-same text carry different labels "
                f"({plural(n_rows, 'row')})",
                "decide the right label for each group and fix the data (the groups are in audit/flagged.jsonl)",
                examples=examples))
            for c_id, grp in enumerate(groups):
                for g in grp:
                    flagged.append({"check": "label_conflict", "kind": "conflict", **ref(g),
                                    "label": label_names[all_labels[g]], "group": c_id})
        findings += _noise(recipe, splits[0], noise_texts_by_row, all_labels, label_names, flagged, ref, checks_run)
        counts = {name: splits[0].label_counts.get(name, 0) for name in label_names}
        small, top, top_label = label_checks.imbalance(counts, cfg.imbalance_ratio)
        checks_run["imbalance"] = "ran"
        if small:
            findings.append(Finding(
                "imbalance", "minority_classes", "warning", len(small),
                f"{len(small)} of {len(counts)} classes have fewer than 1/{cfg.imbalance_ratio:g} of the largest "
                f"class's {top:,} train rows ({top_label}): " + ", ".join(f"{c} ({counts[c]})" for c in small[:8])
                + (" ..." if len(small) > 8 else ""),
                "collect more rows for these classes, or weigh them; read their per-class scores with care",
                split="train", examples=[{"id": None, "split": "train", "origin": None, "label": c,
                                          "detail": f"{counts[c]} rows"} for c in small[:EXAMPLES]],
                details={"counts": counts, "ratio": top / max(1, min(counts.values()))}))

    # -- length
    max_length = recipe.model.max_length
    lengths = {sp.name: (np.concatenate(sp.lengths) if sp.lengths else np.empty(0, dtype=np.int64)) for sp in splits}
    over_rows = [(sp, int(i)) for sp in splits for i in np.flatnonzero(lengths[sp.name] > max_length)]
    total_rows = sum(sp.n for sp in splits)
    checks_run["length"] = "ran"
    if over_rows:
        rate = len(over_rows) / max(1, total_rows)
        longest = sorted(over_rows, key=lambda x: -int(lengths[x[0].name][x[1]]))[:EXAMPLES]
        cut = "have the end of their prompt cut (model.truncation=truncate)" if causal else "are cut at the end"
        findings.append(Finding(
            "length", "over_max_length", "warning" if rate >= LENGTH_WARN_RATE else "info", len(over_rows),
            f"{plural(len(over_rows), 'row')} ({rate:.1%}) longer than model.max_length={max_length} ({length_unit}); "
            f"in training they {cut}",
            f"raise model.max_length (costs time and memory), or shorten these rows",
            examples=[{**sp.row(i), "detail": f"{int(lengths[sp.name][i])} tokens"} for sp, i in longest],
            details={"truncation_rate": rate, "unit": length_unit}))
        for sp, i in over_rows:
            flagged.append({"check": "length", "kind": "over_max_length", **sp.row(i),
                            "tokens": int(lengths[sp.name][i])})

    # -- empty
    checks_run["empty"] = "ran"
    for sp in splits:
        if sp.near_empty:
            findings.append(Finding(
                "empty", "near_empty", "warning", len(sp.near_empty),
                f"{plural(len(sp.near_empty), sp.name + ' row')} empty or near-empty (under 2 letters or digits, "
                f"or a placeholder such as 'N/A')",
                "remove them (listed in audit/quarantine.jsonl) or fill them in", split=sp.name,
                examples=[{**sp.row(i)} for i in sp.near_empty[:EXAMPLES]]))
            for i in sp.near_empty:
                flagged.append({"check": "empty", "kind": "near_empty", **sp.row(i)})
                quarantine.append({"stage": "audit", "check": "empty", **sp.row(i),
                                   "reason": "empty or near-empty text"})

    # -- PII
    files = data_summary.get("files") or {}
    split_files = {name: info.get("source_file") for name, info in (data_summary.get("splits") or {}).items()}
    source_of = {sp.name: _source_split(data_summary, sp.name) for sp in splits}  # carved splits: their file is train's
    declared = {name: (files.get(source) or {}).get("contains_personal_data") for name, source in source_of.items()}
    checks_run["pii"] = "ran"
    for kind in pii.PII_KINDS:
        hits = [(sp, local, [m for m in ms if m.kind == kind]) for sp in splits for local, ms in sp.pii]
        hits = [(sp, local, ms) for sp, local, ms in hits if ms]
        if not hits:
            continue
        per_split = Counter(sp.name for sp, _, _ in hits)
        undeclared = sorted({source_of[sp.name] for sp, _, _ in hits if declared[sp.name] is not True})
        severity = "blocking" if undeclared else "warning"
        declared_words = ("; " + ", ".join(f"data.{s} declares contains_personal_data: "
                                           f"{_yaml_bool((files.get(s) or {}).get('contains_personal_data'))}"
                                           for s in undeclared)) if undeclared else ""
        findings.append(Finding(
            "pii", kind, severity, len(hits),
            f"{plural(len(hits), 'row')} with {pii.KIND_WORDS[kind]} ("
            + ", ".join(f"{s} {c:,}" for s, c in per_split.items()) + ")" + declared_words,
            "remove or redact these values (audit.redact_pii=true writes redacted copies to audit/redacted/); if the "
            "data may hold personal data and you have a legal basis, declare `contains_personal_data: true` on the "
            "file (the finding then becomes a warning)",
            examples=[{**sp.row(local), "detail": ", ".join(dict.fromkeys(m.masked for m in ms))}
                      for sp, local, ms in hits[:EXAMPLES]],
            details={"per_split": dict(per_split), "matches": sum(len(ms) for _, _, ms in hits)}))
        for sp, local, ms in hits:
            flagged.append({"check": "pii", "kind": kind, **sp.row(local),
                            "values": list(dict.fromkeys(m.masked for m in ms))})

    # -- licence and provenance, per data file
    checks_run.update(license="ran", provenance="ran")
    for split_name, facts in files.items():
        for v in provenance.judge(split_name, facts, recipe.intended_use, cfg.missing_license):
            findings.append(Finding("license", v.kind, v.severity or "info", 1, v.message, v.action, split=split_name,
                                    examples=[{"id": None, "split": split_name, "origin": facts.get("path"),
                                               "detail": f"license: {facts.get('license')}"}]))
        for v in provenance.declarations(split_name, facts):
            findings.append(Finding("provenance", v.kind, v.severity or "info", 1, v.message, v.action,
                                    split=split_name, examples=[{"id": None, "split": split_name,
                                                                 "origin": facts.get("path")}]))

    apply_policy(findings, cfg)
    _add_texts(findings, quarantine, splits, causal)

    # -- statistics for the dataset card
    for sp in splits:
        ln = lengths[sp.name]
        stats["splits"][sp.name] = {
            "rows": sp.n,
            "file": split_files.get(sp.name),
            "label_counts": {name: sp.label_counts.get(name, 0) for name in label_names} if not causal else None,
            "length": _length_stats(ln, max_length),
            "exact_duplicates": int(len(dups.exact_duplicates(CODES[sp.name])[0])),
            "near_empty": len(sp.near_empty),
            "pii_rows": len(sp.pii),
            "pii_by_kind": dict(Counter(m.kind for _, ms in sp.pii for m in ms)),
        }
    stats["length_unit"] = length_unit
    stats["near_duplicates"] = {"shingle_words": shingle_words, "threshold": cfg.near_duplicate_threshold,
                                "num_perm": dedup.NUM_PERM, "bands": dups.bands, "rows_per_band": dups.rows_per_band,
                                "candidate_pairs": dups.candidates, "verified_pairs": int(len(dups.edges)),
                                "median_words": median_words}
    if ngrams is not None:
        stats["ngram_template_ngrams_ignored"] = ngrams.template_ngrams

    doc = {
        "version": 1,
        "signature": _signature(recipe, data_summary, shingle_words, dups, length_unit),
        "policy": {"intended_use": recipe.intended_use, "allow": list(cfg.allow),
                   "severity_overrides": dict(cfg.severity), "missing_license": cfg.missing_license},
        "summary": summary(findings, checks_run),
        "findings": [f.to_json() for f in findings],
        "stats": stats,
        "files": {"flagged": FLAGGED_FILE, "quarantine": QUARANTINE_FILE, "datacard": DATACARD_FILE,
                  "plots": list(PLOTS.values()), **({"redacted": "redacted/"} if cfg.redact_pii else {})},
    }
    atomic_write_json(out / FINDINGS_FILE, doc)
    atomic_write_jsonl(out / FLAGGED_FILE, flagged)
    atomic_write_jsonl(out / QUARANTINE_FILE, quarantine)
    _write_plots(out, splits, lengths, max_length, length_unit, exact_group_sizes, near_sizes, cfg.imbalance_ratio,
                 causal, label_names)
    from tunewise.audit.datacard import render_datacard

    atomic_write_text(out / DATACARD_FILE, render_datacard(recipe, data_summary, doc))
    lines = summary_lines(doc)
    lines.append(f"  findings: {out / FINDINGS_FILE}")
    lines.append(f"  datacard: {out / DATACARD_FILE}")
    return "\n".join(lines)


# ---------------------------------------------------------------- helpers


def _median_words(path: Path, causal: bool, limit: int = 5000) -> float:
    """Median words per example over the first rows of train: picks the shingle size when not set."""
    counts = []
    for batch in _batches(path):
        for r in batch:
            counts.append(len(_sides(r, causal)[2].split()))
        if len(counts) >= limit:
            break
    return float(np.median(counts)) if counts else 0.0


def _noise_sample(train: Split, recipe: Recipe) -> set[int]:
    """Global row numbers of the train rows given to the label-noise model (train is global rows 0..n-1)."""
    with open(train.path, encoding="utf-8") as fh:
        n = sum(1 for line in fh if line.strip())
    if n <= LABEL_NOISE_MAX_ROWS:
        return set(range(n))
    rng = np.random.default_rng(recipe.seed)
    return set(rng.choice(n, LABEL_NOISE_MAX_ROWS, replace=False).tolist())


def _noise(recipe: Recipe, train: Split, texts: dict[int, str], all_labels: np.ndarray, label_names: list[str],
           flagged: list[dict[str, Any]], ref: Any, checks_run: dict[str, str]) -> list[Finding]:
    if not recipe.audit.label_noise:
        checks_run["label_noise"] = "disabled (audit.label_noise=false)"
        return []
    rows = np.array(sorted(texts), dtype=np.int64)
    if len(rows) < 20:
        checks_run["label_noise"] = f"too few train rows ({len(rows)}) for out-of-fold predictions"
        return []
    ranked, suggested, prob = label_checks.noise_candidates([texts[g] for g in rows.tolist()], all_labels[rows],
                                                            recipe.seed)
    checks_run["label_noise"] = "ran"
    if not len(ranked):
        return []
    cand = rows[ranked]
    sampled = f" (checked on a seeded sample of {len(rows):,} of {train.n:,} train rows)" if len(rows) < train.n else ""
    examples = [{**ref(g), "label": label_names[all_labels[g]], "suggested": label_names[s],
                 "detail": f"labelled {label_names[all_labels[g]]}, model says {label_names[s]} ({p:.2f})"}
                for g, s, p in zip(cand[:EXAMPLES].tolist(), suggested[:EXAMPLES].tolist(), prob[:EXAMPLES].tolist())]
    for g, s, p in zip(cand.tolist(), suggested.tolist(), prob.tolist()):
        flagged.append({"check": "label_noise", "kind": "candidate", **ref(g), "label": label_names[all_labels[g]],
                        "suggested": label_names[s], "probability": round(float(p), 4)})
    return [Finding(
        "label_noise", "candidate", "info", len(cand),
        f"{plural(len(cand), 'train row')} look{'s' if len(cand) == 1 else ''} mislabelled to a cross-validated "
        f"TF-IDF model{sampled}: candidates to review, not proven errors",
        "review the candidates in audit/flagged.jsonl, most suspicious first; fix the labels that are wrong",
        split="train", examples=examples, details={"method": label_checks.NOISE_MODEL, "checked_rows": len(rows)})]


def _redacted(record: dict[str, Any], causal: bool) -> dict[str, Any]:
    out = dict(record)
    if causal:
        out["messages"] = [{**m, "content": pii.redact(m["content"])} for m in record["messages"]]
        if record.get("references"):
            out["references"] = [pii.redact(r) for r in record["references"]]
    else:
        out["text"] = pii.redact(record["text"])
    return out


def _data_quarantine(data_dir: Path) -> list[dict[str, Any]]:
    path = data_dir / "quarantine.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            q = json.loads(line)
            out.append({"stage": "data", "check": "invalid_row", "split": q.get("split"), "id": None,
                        "origin": f"{q.get('file')}:{q.get('line')}", "field": q.get("field"),
                        "reason": q.get("reason"), "raw": q.get("raw")})
    return out


def _source_split(data_summary: dict[str, Any], split: str) -> str:
    """The recipe slot whose file a split came from: train for a carved split."""
    info = (data_summary.get("splits") or {}).get(split) or {}
    return "train" if info.get("carved_from") else split


def _yaml_bool(v: bool | None) -> str:
    return "null (not declared)" if v is None else str(v).lower()


def _add_texts(findings: list[Finding], quarantine: list[dict[str, Any]], splits: list[Split], causal: bool) -> None:
    """Second pass: attach a text excerpt to example rows and audit-quarantined rows (PII examples stay masked)."""
    wanted: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def want(row: dict[str, Any]) -> None:
        if row.get("id") is not None and row.get("split"):
            wanted.setdefault((row["split"], row["id"]), []).append(row)

    for f in findings:
        if f.check in ("pii", "license", "provenance", "imbalance"):
            continue
        for ex in f.examples:
            want(ex)
            if isinstance(ex.get("match"), dict):
                want(ex["match"])
    for q in quarantine:
        if q["stage"] == "audit":
            want(q)
    if not wanted:
        return
    for sp in splits:
        if not any(key[0] == sp.name for key in wanted):
            continue
        for batch in _batches(sp.path):
            for r in batch:
                rows = wanted.get((sp.name, str(r.get("id"))))
                if rows:
                    text = _sides(r, causal)[2]
                    for row in rows:
                        row["text"] = snippet(text, 500 if row.get("stage") else 160)


def _length_stats(values: np.ndarray, max_length: int) -> dict[str, Any]:
    if not len(values):
        return {"p50": None, "p95": None, "max": None, "over_max_length": 0, "truncation_rate": 0.0}
    return {"p50": int(np.percentile(values, 50)), "p95": int(np.percentile(values, 95)), "max": int(values.max()),
            "over_max_length": int((values > max_length).sum()),
            "truncation_rate": float((values > max_length).mean())}


def _signature(recipe: Recipe, data_summary: dict[str, Any], shingle_words: int, dups: dedup.Duplicates,
               length_unit: str) -> str:
    cfg = recipe.audit
    digests = "+".join((f.get("sha256") or "hf")[:12] for f in (data_summary.get("files") or {}).values())
    tok = "tokenizer" if length_unit.startswith("tokens of") else "estimate"
    return (f"tunewise:{tunewise.__version__}|audit|norm:nfkc+ws|near:minhash(perm={dedup.NUM_PERM},b={dups.bands},"
            f"r={dups.rows_per_band},shingle=word{shingle_words})+exact-jaccard>={cfg.near_duplicate_threshold:g}|"
            f"ngram:{cfg.leak_ngram}|noise:{'cleanlab' if cfg.label_noise and not recipe.causal else 'off'}|"
            f"len:{recipe.model.base}:{tok}|seed:{recipe.seed}|data:sha256={digests}")


def _write_plots(out: Path, splits: list[Split], lengths: dict[str, np.ndarray], max_length: int, unit: str,
                 exact_sizes: list[int], near_sizes: list[int], ratio: float, causal: bool,
                 label_names: list[str]) -> None:
    from tunewise.audit import plots

    counts = {} if causal else {sp.name: {name: sp.label_counts.get(name, 0) for name in label_names} for sp in splits}
    atomic_write_text(out / PLOTS["labels"], plots.label_distribution(counts, ratio))
    measured = "tokens" if unit.startswith("tokens of") else "estimated tokens"
    atomic_write_text(out / PLOTS["lengths"], plots.length_histogram(lengths, max_length, measured))
    atomic_write_text(out / PLOTS["duplicates"], plots.duplicate_clusters([s + 1 for s in exact_sizes], near_sizes))
