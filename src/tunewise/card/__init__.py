"""Stage 4: the model card and the run's HTML report. Reads data/, audit/, model/, eval/; writes card/ and
report.html."""

import json
from pathlib import Path

from tunewise.rundir import RunDir, StageOutcome, atomic_write_text

REPORT = "report.html"


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def _read_jsonl(path: Path) -> list:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def card(rd: RunDir, *, force: bool = False) -> StageOutcome:
    from tunewise.release.model_card import build_model_card, load_examples
    from tunewise.release.report import render_report
    from tunewise.release.tables import is_causal

    def write(out: Path) -> str:
        metrics = _read_json(rd.stage_dir("evaluate") / "metrics.json")
        train_summary = _read_json(rd.stage_dir("train") / "train_summary.json")
        data_summary = _read_json(rd.stage_dir("data") / "summary.json")
        train_log = _read_jsonl(rd.stage_dir("train") / "train_log.jsonl")
        # generation and chat: the first test examples with every model's output, from eval/predictions*.jsonl
        examples = load_examples(rd.root, metrics) if is_causal(metrics) else None
        audit, datacard = _audit_for_card(rd)
        model_card = build_model_card(rd.recipe, metrics, train_summary, data_summary, examples=examples,
                                      datacard_path=datacard, audit=audit)
        card_text = str(model_card)
        atomic_write_text(out / "README.md", card_text)
        audit_dir = rd.stage_dir("audit")
        plots = ([f.read_text(encoding="utf-8") for f in sorted(audit_dir.glob("*.svg"))]
                 if rd.recipe.audit.enabled and audit_dir.is_dir() else [])
        html = render_report(rd.recipe, metrics, train_log, train_summary, data_summary, card_text,
                             examples=examples, audit=audit, audit_plots=plots)
        atomic_write_text(rd.root / REPORT, html)
        return f"card: wrote {out / 'README.md'} and {rd.root / REPORT}"

    upstream = ["data", "audit", "train", "evaluate"] if rd.recipe.audit.enabled else ["data", "train", "evaluate"]
    return rd.run_stage("card", write, upstream=upstream, extra_outputs=[REPORT], force=force)


def _audit_for_card(rd: RunDir) -> tuple[dict | None, str | None]:
    """(the audit's card summary, the datacard's path relative to card/README.md); disabled audit: a note."""
    from tunewise.audit import load_findings
    from tunewise.audit.findings import card_summary

    if not rd.recipe.audit.enabled:
        return card_summary(None), None
    datacard = "../audit/datacard.md"
    return card_summary(load_findings(rd), datacard), datacard
