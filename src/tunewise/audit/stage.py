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

The stage orchestrates: one streaming pass over data/ (scan.py), every check on what it collected (checks/),
the recipe's policy (findings.py), then a second pass for the example excerpts, and the writes. Nothing is held
per row in memory beyond a few numbers in arrays: flagged and quarantine lines are written to disk as the checks
make them (spill.py) and copied into audit/ from there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import tunewise
from tunewise.artifacts import Findings
from tunewise.audit import dedup, plots
from tunewise.audit.checks import run_checks
from tunewise.audit.datacard import render_datacard
from tunewise.artifacts.findings import FINDINGS_FILE
from tunewise.audit.findings import Finding, apply_policy, summary, summary_lines
from tunewise.audit.scan import Excerpts, Scan, attach_texts, data_quarantine, scan
from tunewise.audit.spill import JsonLog
from tunewise.recipe import Recipe
from tunewise.rundir import AtomicJsonlWriter, atomic_write_text

FLAGGED_FILE = "flagged.jsonl"
QUARANTINE_FILE = "quarantine.jsonl"
DATACARD_FILE = "datacard.md"
PLOTS = {"labels": "label_distribution.svg", "lengths": "length_histogram.svg", "duplicates": "duplicate_clusters.svg"}
NO_EXCERPT = ("pii", "license", "provenance", "imbalance")  # masked values, whole files, classes: no row text


def run_audit(recipe: Recipe, data_dir: Path, out: Path) -> str:
    """Audit data_dir (the data stage's folder) into out. Returns the printed summary."""
    cfg = recipe.audit
    data_dir, out = Path(data_dir), Path(out)
    collected = scan(recipe, data_dir, out / "redacted" if cfg.redact_pii else None)
    result = run_checks(collected)
    findings = apply_policy(result.findings, cfg)
    quarantine = data_quarantine(data_dir)
    stats = _statistics(collected, data_quarantined=len(quarantine))
    quarantine += result.quarantine
    excerpts = attach_texts(collected, _excerpt_rows(findings), quarantine.keys)

    doc = {
        "signature": _signature(collected),
        "policy": {"intended_use": recipe.intended_use, "allow": list(cfg.allow),
                   "severity_overrides": dict(cfg.severity), "missing_license": cfg.missing_license},
        "summary": summary(findings, result.status),
        "findings": [f.to_json() for f in findings],
        "stats": stats,
        "files": {"flagged": FLAGGED_FILE, "quarantine": QUARANTINE_FILE, "datacard": DATACARD_FILE,
                  "plots": list(PLOTS.values()), **({"redacted": "redacted/"} if cfg.redact_pii else {})},
    }
    Findings(**doc).write(out)  # the typed artifact: validated on the way out, with its schema_version
    _write_lines(out / FLAGGED_FILE, result.flagged)
    _write_lines(out / QUARANTINE_FILE, quarantine, excerpts)
    _write_plots(out, collected, result.measures)
    atomic_write_text(out / DATACARD_FILE, render_datacard(recipe, collected.data_summary, doc,
                                                               data_dir=data_dir))
    lines = summary_lines(doc)
    lines.append(f"  findings: {out / FINDINGS_FILE}")
    lines.append(f"  datacard: {out / DATACARD_FILE}")
    return "\n".join(lines)


def _excerpt_rows(findings: list[Finding]) -> list[dict[str, Any]]:
    """The example rows (and the rows they match) that get a text excerpt."""
    rows = []
    for f in findings:
        if f.check in NO_EXCERPT:
            continue
        for ex in f.examples:
            rows.append(ex)
            if isinstance(ex.get("match"), dict):
                rows.append(ex["match"])
    return rows


def _write_lines(path: Path, lines: JsonLog, excerpts: Excerpts | None = None) -> None:
    """Copy lines from disk into a JSONL file; with `excerpts`, each line keyed by a row gets its text."""
    with AtomicJsonlWriter(path) as writer:
        for key, line in zip(lines.keys, lines):
            text = excerpts.get(key) if excerpts is not None and key >= 0 else None
            writer.write(line if text is None else {**line, "text": text})


def _statistics(scan: Scan, *, data_quarantined: int) -> dict[str, Any]:
    """findings.json's `stats`: per split and for the near-duplicate search, for the dataset card."""
    cfg, dups = scan.recipe.audit, scan.dups
    max_length = scan.recipe.model.max_length
    stats: dict[str, Any] = {"splits": {}, "data_quarantined": data_quarantined}
    for sp in scan.splits:
        stats["splits"][sp.name] = {
            "rows": sp.n,
            "file": scan.data_summary.splits[sp.name].source_file,
            "label_counts": scan.label_counts_by_split.get(sp.name),  # None for a task without labels
            "length": _length_stats(sp.lengths, max_length),
            "exact_duplicates": int(len(dups.exact_duplicates(sp.code)[0])),
            "near_empty": len(sp.near_empty),
            "pii_rows": len(sp.pii),
            "pii_by_kind": dict(sp.pii_by_kind),
        }
    stats["length_unit"] = scan.length_unit
    stats["near_duplicates"] = {"shingle_words": scan.shingle_words, "threshold": cfg.near_duplicate_threshold,
                                "num_perm": dedup.NUM_PERM, "bands": dups.bands, "rows_per_band": dups.rows_per_band,
                                "candidate_pairs": dups.candidates, "verified_pairs": int(len(dups.edges)),
                                "median_words": scan.median_words}
    if scan.template_ngrams is not None:  # only tasks with prompts build the n-gram index
        stats["ngram_template_ngrams_ignored"] = scan.template_ngrams
    return stats


def _length_stats(values: np.ndarray, max_length: int) -> dict[str, Any]:
    if not len(values):
        return {"p50": None, "p95": None, "max": None, "over_max_length": 0, "truncation_rate": 0.0}
    return {"p50": int(np.percentile(values, 50)), "p95": int(np.percentile(values, 95)), "max": int(values.max()),
            "over_max_length": int((values > max_length).sum()),
            "truncation_rate": float((values > max_length).mean())}


def _signature(scan: Scan) -> str:
    """The settings and data digests the findings depend on."""
    recipe, dups = scan.recipe, scan.dups
    cfg = recipe.audit
    digests = "+".join((f.sha256 or "hf")[:12] for f in scan.data_summary.files.values())
    tok = "tokenizer" if scan.length_unit.startswith("tokens of") else "estimate"
    noise = "cleanlab" if cfg.label_noise and scan.task.has_labels else "off"  # label noise needs labels
    return (f"tunewise:{tunewise.__version__}|audit|norm:nfkc+ws|near:minhash(perm={dedup.NUM_PERM},b={dups.bands},"
            f"r={dups.rows_per_band},shingle=word{scan.shingle_words})+exact-jaccard>={cfg.near_duplicate_threshold:g}|"
            f"ngram:{cfg.leak_ngram}|noise:{noise}|len:{recipe.model.base}:{tok}|seed:{recipe.seed}|"
            f"data:sha256={digests}")


def _write_plots(out: Path, scan: Scan, measures: dict[str, Any]) -> None:
    labels = plots.label_distribution(scan.label_counts_by_split, scan.recipe.audit.imbalance_ratio)
    atomic_write_text(out / PLOTS["labels"], labels)
    measured = "tokens" if scan.length_unit.startswith("tokens of") else "estimated tokens"
    lengths = {sp.name: sp.lengths for sp in scan.splits}
    atomic_write_text(out / PLOTS["lengths"], plots.length_histogram(lengths, scan.recipe.model.max_length, measured))
    atomic_write_text(out / PLOTS["duplicates"], plots.duplicate_clusters(measures["exact_group_sizes"],
                                                                          measures["near_cluster_sizes"]))
