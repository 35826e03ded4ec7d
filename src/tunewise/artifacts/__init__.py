"""Typed artifacts: the JSON files one stage writes and another reads, as pydantic models with a schema_version.

Writers build a model and call `.write(folder)`; readers call `Model.read(path)`, which refuses a missing, damaged
or other-version file with the way out. The JSON Schemas under docs/schemas/ are generated from these models
(scripts/write_schemas.py). The data rows (data/*.jsonl) and their readers are in `tunewise.artifacts.rows`.
"""

import json

from tunewise.artifacts.base import Artifact, Open, Strict
from tunewise.artifacts.card import Citations
from tunewise.artifacts.data import DataSummary, Labels
from tunewise.artifacts.export import ExportRecord, OnnxRecord
from tunewise.artifacts.faithfulness import FaithfulnessResults
from tunewise.artifacts.findings import Findings, read_findings, require_audit_passed
from tunewise.artifacts.gate import Gate
from tunewise.artifacts.guard import GuardReport
from tunewise.artifacts.humaneval import HumanEvalResults
from tunewise.artifacts.metrics import ClassificationMetrics, GenerationMetrics, Metrics
from tunewise.artifacts.monitor import DriftReport, ReferenceProfile
from tunewise.artifacts.probes import Probes
from tunewise.artifacts.serve import ServeBenchmark, ServeRecord
from tunewise.artifacts.train import CausalTrainSummary, ClassifierTrainSummary, TrainSummary

# every artifact file, in pipeline order: the schemas under docs/schemas/ are written from this list
ARTIFACTS: tuple[type[Artifact], ...] = (DataSummary, Labels, Findings, TrainSummary, ReferenceProfile, Metrics, Probes, FaithfulnessResults, Gate, Citations, GuardReport,
                                         ExportRecord, OnnxRecord, DriftReport, ServeRecord, HumanEvalResults,
                                         ServeBenchmark)

SCHEMAS_DIR = "docs/schemas"  # relative to the repository root


def schema_documents() -> dict[str, str]:
    """docs/schemas/ as the models say it should be: file name -> text (one JSON Schema per artifact, and an
    index). scripts/write_schemas.py writes them; a test checks the committed ones against them."""
    docs = {f"{a.schema_name()}.json": json.dumps(a.json_schema(), indent=2, ensure_ascii=False) + "\n"
            for a in ARTIFACTS}
    lines = ["# Artifact schemas", "",
             "JSON Schemas of the files one tunewise stage writes and another reads, generated from the pydantic",
             "models in `tunewise.artifacts` by `scripts/write_schemas.py` (do not edit by hand). Every file carries",
             "`schema_version`; a reader refuses a file of another version, naming the stage to rerun.", "",
             "| file in a run directory | schema | written by | model |", "|---|---|---|---|"]
    for a in ARTIFACTS:
        lines.append(f"| `{a.folder()}/{a.FILE}` | [{a.schema_name()}.json]({a.schema_name()}.json) | {a.STAGE} | "
                     f"`tunewise.artifacts.{a.__name__}` |")
    docs["README.md"] = "\n".join(lines) + "\n"
    return docs


__all__ = ["ARTIFACTS", "SCHEMAS_DIR", "Artifact", "CausalTrainSummary", "Citations", "ClassificationMetrics", "Gate",
           "ClassifierTrainSummary", "DataSummary", "DriftReport", "ExportRecord", "FaithfulnessResults", "Findings", "GenerationMetrics", "GuardReport", "HumanEvalResults",
           "Labels", "Metrics", "OnnxRecord", "Open", "Probes", "ServeBenchmark", "ServeRecord", "ReferenceProfile", "Strict", "TrainSummary", "read_findings", "require_audit_passed", "schema_documents"]
