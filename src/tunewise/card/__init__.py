"""The card stage: the model card and the run's HTML report. Reads data/, audit/, model/, eval/ through their typed
artifacts (tunewise.artifacts); writes card/ and report.html."""

import json
from pathlib import Path

from tunewise.rundir import RunDir, StageOutcome, atomic_write_text
from tunewise.stages import RunOptions

REPORT = "report.html"
TRAIN_LOG = "train_log.jsonl"  # the Trainer's log history, as the train stage writes it


def _read_jsonl(path: Path) -> list:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run(rd: RunDir, options: "RunOptions") -> StageOutcome:
    from tunewise.artifacts import DataSummary, Metrics, TrainSummary
    from tunewise.card.model_card import build_model_card, load_examples
    from tunewise.card.report import render_report
    from tunewise.tasks import task_for

    def write(out: Path) -> str:
        metrics = Metrics.read(rd.stage_dir("evaluate") / Metrics.FILE)
        train_summary = TrainSummary.read(rd.stage_dir("train") / TrainSummary.FILE)
        data_summary = DataSummary.read(rd.stage_dir("data") / DataSummary.FILE)
        train_log = _read_jsonl(rd.stage_dir("train") / TRAIN_LOG)
        # tasks with prompts show the first test examples with every model's output, from eval/predictions*.jsonl
        examples = load_examples(rd.root, metrics) if task_for(rd.recipe).has_prompts else None
        audit, datacard = _audit_for_card(rd)
        gov = governance_context(rd, metrics, train_summary)
        model_card = build_model_card(rd.recipe, metrics, train_summary, data_summary, examples=examples,
                                      datacard_path=datacard, audit=audit, gov=gov)
        card_text = str(model_card)
        atomic_write_text(out / "README.md", card_text)
        gov["citations"].write(out)
        audit_dir = rd.stage_dir("audit")
        plots = ([f.read_text(encoding="utf-8") for f in sorted(audit_dir.glob("*.svg"))]
                 if rd.recipe.audit.enabled and audit_dir.is_dir() else [])
        html = render_report(rd.recipe, metrics, train_log, train_summary, data_summary, card_text,
                             examples=examples, audit=audit, audit_plots=plots, gov=gov)
        atomic_write_text(rd.root / REPORT, html)
        return f"card: wrote {out / 'README.md'} and {rd.root / REPORT}"

    return rd.run_stage("card", write, force=options.force)


def _audit_for_card(rd: RunDir) -> tuple[dict, str | None]:
    """(the audit's card summary, the datacard's path relative to card/README.md); disabled audit: a note."""
    from tunewise.artifacts.findings import read_findings
    from tunewise.card.audit import DATACARD, audit_summary

    if not rd.recipe.audit.enabled:
        return audit_summary(None), None
    return audit_summary(read_findings(rd), DATACARD), DATACARD


def governance_context(rd: RunDir, metrics, train_summary) -> dict:
    """What only the run directory knows, for the card and the report: the gate verdict, the cost estimate, the
    NIST AI RMF and ISO/IEC 42001 tables with the hashes the manifest records, the probe, faithfulness and human-eval
    sections, and the folder paths are shown relative to. Every file cited goes into `citations`."""
    from tunewise.artifacts.card import Citation, Citations
    from tunewise.artifacts.gate import Gate
    from tunewise.card import faithfulness_section, governance, guard_section, humaneval_section, probes_section

    recorded = governance.Recorded.of(rd.manifest)
    cited: dict[str, list[str]] = {}

    def cite(path: str, why: str) -> None:
        cited.setdefault(path, [])
        if why not in cited[path]:
            cited[path].append(why)

    gate_file = rd.stage_dir("gate") / Gate.FILE
    gate = Gate.read(gate_file) if rd.is_done("gate") else None
    if gate is not None:
        cite(f"{rd.stage_dir('gate').name}/{Gate.FILE}", "release gate")
        for r in gate.rules:
            if r.evidence_sha256 is not None and recorded.hashes.get(r.evidence) == r.evidence_sha256:
                cite(r.evidence, f"gate rule {r.rule}")
    nist = governance.framework_rows(governance.NIST_ITEMS, recorded, lambda p, i: cite(p, f"NIST AI RMF {i}"))
    iso = governance.framework_rows(governance.ISO_ITEMS, recorded, lambda p, i: cite(p, f"ISO/IEC 42001 {i}"))
    if "model/train_summary.json" in recorded.hashes:
        cite("model/train_summary.json", "training cost")
    base = rd.manifest.get("recipe_dir")  # recorded by the pipeline; older runs: the folder above output_dir
    return {
        "gate": governance.gate_context(gate),
        "cost": governance.cost_rows(rd.recipe, train_summary, rd.manifest),
        "nist": nist, "iso": iso,
        "probes_md": probes_section.markdown(rd), "probes_html": probes_section.html(rd),
        "faithfulness_md": faithfulness_section.markdown(rd), "faithfulness_html": faithfulness_section.html(rd),
        "humaneval_md": humaneval_section.markdown(rd), "humaneval_html": humaneval_section.html(rd),
        "guard_md": guard_section.markdown(rd), "guard_html": guard_section.html(rd),
        "test_copy_sha": recorded.hashes.get(f"{rd.stage_dir('data').name}/test.jsonl"),
        "path_base": Path(base) if base else rd.root.resolve().parent.parent,
        "citations": Citations(files=[Citation(path=p, sha256=recorded.hashes[p], cited_for=why)
                                      for p, why in cited.items() if p in recorded.hashes]),
    }
