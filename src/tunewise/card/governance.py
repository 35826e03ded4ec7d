"""What the card tells a governance reviewer, read off the run directory: the release-gate verdict, the slice gaps,
the training cost with its assumptions, and the NIST AI RMF 1.0 and ISO/IEC 42001 Annex A tables that map each
item a training run can evidence to the file that evidences it (with the sha256 the manifest records).

The mapping is the project's own reading of the two frameworks: a run evidences the technical part of an item;
the organisation's policies, roles and processes around it are marked as gaps for the organisation to fill, never
as met. Every cited file goes into card/citations.json, which `tunewise verify` re-checks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewise.artifacts.gate import Gate
from tunewise.artifacts.metrics import Metrics
from tunewise.artifacts.train import CausalTrainSummary, TrainSummary
from tunewise.card import tables
from tunewise.recipe import Recipe

# ---------------------------------------------------------------- framework items a run can speak to

# (id, short title as published, files that evidence it (first existing ones are cited), how the run evidences it,
#  status when evidenced: "evidenced" or "partly" — partly: the run holds the technical record, the organisation
#  still owns the policy or process the item asks for)
NIST_ITEMS: tuple[tuple[str, str, tuple[str, ...], str, str], ...] = (
    ("GOVERN 1.1", "Legal and regulatory requirements involving AI are understood, managed, and documented.",
     (), "", "gap"),
    ("GOVERN 4.2", "Organizational teams document the risks and potential impacts of the AI technology they design, "
                   "develop, deploy, evaluate, and use, and they communicate about the impacts more broadly.",
     ("audit/findings.json", "gate/gate.json"), "the data audit's findings and the release-gate verdict are "
                                                "recorded; communicating them is the organisation's", "partly"),
    ("GOVERN 6.1", "Policies and procedures are in place that address AI risks associated with third-party "
                   "entities, including risks of infringement of a third-party's intellectual property or other "
                   "rights.",
     ("data/summary.json", "audit/findings.json"), "each data file's declared source and licence, checked against "
                                                   "the intended use (audit check `license`)", "partly"),
    ("MAP 1.1", "Intended purposes, potentially beneficial uses, context-specific laws, norms and expectations, and "
                "prospective settings in which the AI system will be deployed are understood and documented.",
     ("recipe.yaml",), "card.intended_use and card.out_of_scope_use of the recipe of record", "partly"),
    ("MAP 2.1", "The specific tasks and methods used to implement the tasks that the AI system will support are "
                "defined (e.g., classifiers, generative models, recommenders).",
     ("model/train_summary.json", "recipe.yaml"), "task, base model, fine-tuning method and settings",
     "evidenced"),
    ("MAP 2.2", "Information about the AI system's knowledge limits and how system output may be utilized and "
                "overseen by humans is documented.",
     ("eval/metrics.json",), "per-class / per-slice weaknesses and limitations read off the test scores", "partly"),
    ("MAP 2.3", "Scientific integrity and TEVV considerations are identified and documented, including those "
                "related to experimental design, data collection and selection (e.g., availability, "
                "representativeness, suitability), system trustworthiness, and construct validation.",
     ("data/summary.json", "audit/findings.json", "audit/datacard.md"),
     "split design and provenance, the data audit (duplicates, leakage, label noise) and the datasheet",
     "evidenced"),
    ("MAP 4.1", "Approaches for mapping AI technology and legal risks of its components – including the use of "
                "third-party data or software – are in place, followed, and documented, as are risks of "
                "infringement of a third party's intellectual property or other rights.",
     ("audit/findings.json",), "licence and provenance checks of every data file", "partly"),
    ("MEASURE 2.1", "Test sets, metrics, and details about the tools used during TEVV are documented.",
     ("eval/metrics.json", "data/summary.json"), "test split with its hash, metric signature, tool versions",
     "evidenced"),
    ("MEASURE 2.3", "AI system performance or assurance criteria are measured qualitatively or quantitatively and "
                    "demonstrated for conditions similar to deployment setting(s). Measures are documented.",
     ("eval/metrics.json", "gate/gate.json"), "test metrics with bootstrap CIs, paired tests against baselines, "
                                              "and the gate's criteria", "evidenced"),
    ("MEASURE 2.5", "The AI system to be deployed is demonstrated to be valid and reliable. Limitations of the "
                    "generalizability beyond the conditions under which the technology was developed are "
                    "documented.",
     ("eval/metrics.json", "audit/findings.json"), "CIs, calibration, the score without test rows leaked from "
                                                   "train", "evidenced"),
    ("MEASURE 2.6", "The AI system is evaluated regularly for safety risks – as identified in the MAP function. ...",
     ("probes/probes.json",), "robustness to input noise; regular re-evaluation is the organisation's", "partly"),
    ("MEASURE 2.7", "AI system security and resilience – as identified in the MAP function – are evaluated and "
                    "documented.",
     ("probes/probes.json",), "resilience to typo, casing, punctuation and whitespace noise (security testing "
                              "is not done by a training run)", "partly"),
    ("MEASURE 2.9", "The AI model is explained, validated, and documented, and AI system output is interpreted "
                    "within its context – as identified in the MAP function – to inform responsible use and "
                    "governance.",
     ("eval/metrics.json",), "validation on the test split, per-class results, calibration, example outputs "
                             "(no explanation method is applied)", "partly"),
    ("MEASURE 2.10", "Privacy risk of the AI system – as identified in the MAP function – is examined and "
                     "documented.",
     ("audit/findings.json",), "PII scan of every split and the declared personal-data status", "partly"),
    ("MEASURE 2.11", "Fairness and bias – as identified in the MAP function – are evaluated and results are "
                     "documented.",
     ("eval/metrics.json", "probes/probes.json"), "slice scores and gaps with CIs, counterfactual and "
                                                  "CrowS-Pairs probes", "evidenced"),
    ("MEASURE 2.12", "Environmental impact and sustainability of AI model training and management activities – as "
                     "identified in the MAP function – are assessed and documented.",
     ("model/train_summary.json",), "training time and device, with the card's energy and CO2 estimate",
     "evidenced"),
    ("MEASURE 2.13", "Effectiveness of the employed TEVV metrics and processes in the MEASURE function are "
                     "evaluated and documented.", (), "", "gap"),
    ("MEASURE 3.1", "Approaches, personnel, and documentation are in place to regularly identify and track existing, "
                    "unanticipated, and emergent AI risks based on factors such as intended and actual performance "
                    "in deployed contexts.", (), "", "gap"),
    ("MANAGE 1.1", "A determination is made as to whether the AI system achieves its intended purposes and stated "
                   "objectives and whether its development or deployment should proceed.",
     ("gate/gate.json",), "the release gate's rule-by-rule verdict", "evidenced"),
    ("MANAGE 4.1", "Post-deployment AI system monitoring plans are implemented, including mechanisms for capturing "
                   "and evaluating input from users and other relevant AI actors, appeal and override, "
                   "decommissioning, incident response, recovery, and change management.",
     ("reference/",), "the reference profile that drift monitoring compares traffic against; the plan itself is "
                      "the organisation's", "partly"),
    ("MANAGE 4.3", "Incidents and errors are communicated to relevant AI actors, including affected communities. "
                   "Processes for tracking, responding to, and recovering from incidents and errors are followed "
                   "and documented.", (), "", "gap"),
)

ISO_ITEMS: tuple[tuple[str, str, tuple[str, ...], str, str], ...] = (
    ("A.4.3", "Data resources", ("data/summary.json",), "the data files, their sizes, hashes and provenance",
     "partly"),
    ("A.4.5", "System and computing resources", ("model/train_summary.json",), "device, precision and training "
                                                                              "time", "partly"),
    ("A.5.2", "AI system impact assessment process", (), "", "gap"),
    ("A.5.3", "Documentation of AI system impact assessments", ("eval/metrics.json", "probes/probes.json",
                                                                "gate/gate.json"),
     "slice gaps, bias probes and the gate verdict as inputs to the organisation's impact assessment", "partly"),
    ("A.5.4", "Assessing AI system impact on individuals or groups of individuals", ("eval/metrics.json",
                                                                                   "probes/probes.json"),
     "per-group scores with CIs and counterfactual probes", "partly"),
    ("A.5.5", "Assessing societal impacts of AI systems", (), "", "gap"),
    ("A.6.2.2", "AI system requirements and specification", ("recipe.yaml",), "the recipe, its gate rules "
                                                                             "(acceptance criteria)", "partly"),
    ("A.6.2.3", "Documentation of AI system design and development", ("model/train_summary.json", "recipe.yaml"),
     "the resolved recipe and the training record", "evidenced"),
    ("A.6.2.4", "AI system verification and validation", ("eval/metrics.json", "gate/gate.json"),
     "test metrics with CIs, paired tests, the release gate", "evidenced"),
    ("A.6.2.5", "AI system deployment", (), "", "gap"),
    ("A.6.2.6", "AI system operation and monitoring", ("reference/",), "the monitoring reference profile",
     "partly"),
    ("A.6.2.7", "AI system technical documentation", ("model/train_summary.json", "eval/metrics.json"),
     "this card and the run's typed records", "evidenced"),
    ("A.7.2", "Data for development and enhancement of AI system", ("data/summary.json",),
     "the train, validation and test data used, with hashes", "evidenced"),
    ("A.7.3", "Acquisition of data", ("data/summary.json",), "each file's declared source and licence", "partly"),
    ("A.7.4", "Quality of data for AI systems", ("audit/findings.json", "audit/datacard.md"),
     "the data audit: duplicates, leakage, label noise, length, PII", "evidenced"),
    ("A.7.5", "Data provenance", ("data/summary.json",), "source, licence and sha256 of every data file",
     "evidenced"),
    ("A.7.6", "Data preparation", ("data/summary.json", "data/quarantine.jsonl"),
     "validation, quarantine and seeded splits", "evidenced"),
    ("A.8.2", "System documentation and information for users", ("eval/metrics.json",),
     "this model card and report.html", "partly"),
    ("A.8.3", "External reporting", (), "", "gap"),
    ("A.8.4", "Communication of incidents", (), "", "gap"),
    ("A.8.5", "Information for interested parties", ("gate/gate.json",), "this card, with the gate verdict",
     "partly"),
    ("A.9.4", "Intended use of the AI system", ("recipe.yaml",), "card.intended_use / out_of_scope_use",
     "partly"),
)


@dataclass
class Recorded:
    """The files of the run the manifest records (path relative to the run directory -> sha256)."""

    hashes: dict[str, str]

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> "Recorded":
        hashes = {rel: digest for rec in manifest.get("stages", {}).values() if rec.get("status") == "done"
                  for rel, digest in rec.get("outputs", {}).items()}
        if manifest.get("recipe_sha256"):
            hashes["recipe.yaml"] = manifest["recipe_sha256"]
        return cls(hashes)

    def resolve(self, wanted: str) -> list[tuple[str, str]]:
        """(path, sha256) of a recorded file; for a folder (`reference/`), its JSON files."""
        if wanted.endswith("/"):
            return [(p, h) for p, h in sorted(self.hashes.items()) if p.startswith(wanted) and p.endswith(".json")]
        return [(wanted, self.hashes[wanted])] if wanted in self.hashes else []


def framework_rows(items, recorded: Recorded, cite) -> list[dict[str, Any]]:
    """Rows of a governance table: evidenced (or partly) with the files and their hashes, else a gap."""
    rows = []
    for ident, title, files, how, status in items:
        found = [pair for f in files for pair in recorded.resolve(f)]
        for path, _ in found:
            cite(path, ident)
        rows.append({"id": ident, "title": title, "status": status if found else "gap",
                     "how": how if found else "not evidenced by a training run: a gap for the organisation to fill",
                     "files": [{"path": p, "sha256": h, "short": h[:12]} for p, h in found]})
    return rows


# ---------------------------------------------------------------- cost


def cost_rows(recipe: Recipe, ts: TrainSummary, manifest: dict[str, Any]) -> dict[str, Any]:
    """Wall time, device, work done, and the energy / CO2 / money estimate with its assumptions."""
    c = recipe.card.cost
    platform = manifest.get("platform", {})
    cpu = platform.get("cpu", {}) if isinstance(platform.get("cpu"), dict) else {}
    cores = cpu.get("omp_num_threads") or cpu.get("cpus_available") or platform.get("cpu_count") or 1
    try:
        cores = max(1, int(cores))
    except (TypeError, ValueError):
        cores = 1
    hours = ts.train_seconds / 3600
    run_seconds = sum(float(r.get("seconds", 0.0)) for r in manifest.get("stages", {}).values())
    if ts.device == "cuda":
        watts, units, price = c.watts_per_gpu, "1 GPU", c.price_per_gpu_hour
        power_words = f"1 GPU × {c.watts_per_gpu:g} W"
    else:
        watts, units, price = cores * c.watts_per_cpu_core, f"{cores} CPU core(s)", cores * c.price_per_core_hour
        power_words = f"{cores} core(s) × {c.watts_per_cpu_core:g} W"
    kwh = hours * watts * c.pue / 1000
    work = (f"{ts.trained_tokens:,} trained tokens" if isinstance(ts, CausalTrainSummary)
            else f"{ts.train_examples:,} examples × {ts.epochs_run:g} epochs = "
                 f"{round(ts.train_examples * ts.epochs_run):,} examples processed")
    rows = [
        ("Training wall time", f"{ts.train_seconds:,.1f} s ({hours:.4f} h); all stages of the run: "
                               f"{run_seconds:,.1f} s"),
        ("Device", f"{ts.device} ({cpu.get('model', 'unknown CPU')}; {units} assumed in use), {ts.precision}"),
        ("Work done", work),
        ("Energy (estimate)", f"{kwh * 1000:,.2f} Wh = {power_words} × PUE {c.pue:g} × {hours:.4f} h"),
        ("CO₂e (estimate)", f"{kwh * c.grid_gco2_per_kwh:,.2f} g at {c.grid_gco2_per_kwh:g} gCO₂e/kWh"),
        ("Cost (estimate)", f"{hours * price:,.4f} {c.currency} at {price:g} {c.currency}/h for {units}"),
    ]
    assumptions = (f"Assumptions (recipe `card.cost`): {c.watts_per_cpu_core:g} W per CPU core, {c.watts_per_gpu:g} W "
                   f"per GPU, PUE {c.pue:g}, {c.grid_gco2_per_kwh:g} gCO₂e/kWh, {c.price_per_core_hour:g} "
                   f"{c.currency} per core-hour, {c.price_per_gpu_hour:g} {c.currency} per GPU-hour. The energy is "
                   f"an estimate from wall time and assumed power, not a measurement; it covers training only.")
    return {"rows": rows, "assumptions": assumptions, "kwh": kwh, "gco2": kwh * c.grid_gco2_per_kwh,
            "money": hours * price}


# ---------------------------------------------------------------- gate and slice gaps


def gate_context(gate: Gate | None) -> dict[str, Any] | None:
    if gate is None:
        return None
    return {"passed": gate.passed, "n_rules": len(gate.rules), "n_failed": len(gate.failed()),
            "judged_at": gate.judged_at,
            "rules": [{"rule": r.rule, "requirement": r.requirement, "passed": r.passed,
                       "verdict": "pass" if r.passed else "FAIL", "reason": r.reason, "evidence": r.evidence,
                       "sha": (r.evidence_sha256 or "")[:12] or "—"} for r in gate.rules]}


def gap_rows(metrics: Metrics) -> list[dict[str, Any]]:
    """One row per slice field × metric: the largest gap with its CI, between which groups, and the too-small."""
    rows = []
    for field, info in metrics.slices.items():
        for metric, gap in info.gaps.items():
            d = tables.digits(metric)
            rows.append({"field": field, "metric": metric, "metric_label": tables.metric_label(metric),
                         "gap_s": tables.fmt(gap.value, d) if gap else "—",
                         "ci_s": f"{tables.fmt(gap.ci_low, d)}–{tables.fmt(gap.ci_high, d)}" if gap else "—",
                         "between": f"{gap.highest} vs {gap.lowest}" if gap else
                                    "fewer than two groups large enough to judge",
                         "too_small": ", ".join(f"{v} (n={info.groups[v].n})" for v in info.too_small) or "none",
                         "min_size": info.min_size, "value": gap.value if gap else None,
                         "ci_low": gap.ci_low if gap else None, "ci_high": gap.ci_high if gap else None})
    return rows


def gap_forest_rows(metrics: Metrics) -> list[tuple]:
    """(metric, field, gap, ci_low, ci_high) for the slice-gap forest plot, grouped by metric, on the 0-1 scale
    (chrF gaps divided by 100) so that one axis serves every metric."""
    rows = []
    for field, info in metrics.slices.items():
        for metric, gap in info.gaps.items():
            if gap is not None:
                k = gap.metric_range
                rows.append((f"{tables.metric_label(metric)} gap", field, gap.value / k, gap.ci_low / k,
                             gap.ci_high / k))
    return sorted(rows, key=lambda r: r[0])


def group_rows(metrics: Metrics) -> list[dict[str, Any]]:
    """Per field and group: n, judged, and each slice metric's value with its CI (the card's slice table)."""
    rows = []
    for field, info in metrics.slices.items():
        for value, g in info.groups.items():
            cells = []
            for metric, s in g.scores.items():
                d = tables.digits(metric)
                cells.append({"metric": metric, "value_s": tables.fmt(s.value, d),
                              "ci_s": f"{tables.fmt(s.ci_low, d)}–{tables.fmt(s.ci_high, d)}"
                              if s.ci_low is not None else "—"})
            rows.append({"field": field, "value": value, "n": g.n, "judged": g.judged, "cells": cells})
    return rows


def held_out_context(metrics: Metrics) -> dict[str, Any] | None:
    h = metrics.held_out
    if h is None:
        return None
    kinds = ", ".join(f"{n} {k}" for k, n in h.kinds.items())
    scores = {tables.metric_label(k): f"{tables.fmt(s.value, tables.digits(k))} ({tables.pct(s.confidence)} CI "
                                      f"{tables.fmt(s.ci_low, tables.digits(k))}–"
                                      f"{tables.fmt(s.ci_high, tables.digits(k))})"
              for k, s in h.metrics.items()}
    return {"flagged": h.flagged_rows, "kept": h.kept_rows, "kinds": kinds, "scores": scores}


# ---------------------------------------------------------------- paths shown in a shared card


def shown_path(path: str | None, base: Path | None) -> str:
    """A local path as a shared card may show it: relative to the recipe's folder when the file lies under it,
    else only its name (never the author's absolute file system); `hf:` ids and relative paths as they are."""
    if not path:
        return "—"
    if path.startswith("hf:") or not os.path.isabs(path):
        return path
    if base is not None:
        rel = os.path.relpath(path, base)
        if not rel.startswith(".."):
            return rel
    return f".../{Path(path).name}"
