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

    return rd.run_stage("card", write, force=options.force)


def _audit_for_card(rd: RunDir) -> tuple[dict, str | None]:
    """(the audit's card summary, the datacard's path relative to card/README.md); disabled audit: a note."""
    from tunewise.artifacts.findings import read_findings
    from tunewise.card.audit import DATACARD, audit_summary

    if not rd.recipe.audit.enabled:
        return audit_summary(None), None
    return audit_summary(read_findings(rd), DATACARD), DATACARD
