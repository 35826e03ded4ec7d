"""Typed artifacts: the committed JSON Schemas match the models; the models read back exactly what a real run
writes; a missing, damaged, other-version or misspelt file is refused with a message that names the file and the
stage to rerun; the audit gate works from the Findings model alone."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from tunewise.artifacts import (
    ARTIFACTS,
    SCHEMAS_DIR,
    CausalTrainSummary,
    ClassificationMetrics,
    ClassifierTrainSummary,
    DataSummary,
    ExportRecord,
    Findings,
    GenerationMetrics,
    Labels,
    Metrics,
    TrainSummary,
    require_audit_passed,
    schema_documents,
)
from tunewise.errors import AuditBlocked, RunDirError
from tunewise.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
REAL_FILES = [(DataSummary, "data/summary.json"), (Labels, "data/labels.json"), (Findings, "audit/findings.json"),
              (TrainSummary, "model/train_summary.json"), (Metrics, "eval/metrics.json")]

# A causal LM's train_summary.json as the train stage writes it (a real tiny chat run, mask preview shortened).
CAUSAL_TRAIN_SUMMARY = {
    "schema_version": 1, "task": "chat", "base_model": "smollm2", "base_model_path": "/cache/smollm2-hf",
    "base_model_hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "method": "lora", "precision": "bf16",
    "precision_reason": "CPU has AMX/AVX-512 bf16", "device": "cpu", "epochs_run": 0.05, "global_steps": 1,
    "resumed_from": None, "best_checkpoint": None, "best_metric": None, "early_stopped": False,
    "train_examples": 157, "validation_examples": 18, "truncated_train_examples": 8, "train_seconds": 12.61,
    "eval_seconds_during_training": 0.0, "final_train_loss": 2.1349, "parameters": 136358976,
    "base_model_gguf": "/cache/smollm2.gguf", "finetune": "lora",
    "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
    "base_weights_dtype": "float32", "packing": False,
    "gradient_checkpointing": False, "train_rows": 157, "quarantined_examples": 0, "truncated_prompt_tokens": 1024,
    "trained_tokens": 1403, "tokens_per_epoch": 28061, "trained_tokens_per_second": 111.3,
    "processed_tokens_per_second": 2225.5, "per_epoch": [{"epoch": 0.05, "eval_loss": 2.01,
                                                          "eval_mean_token_accuracy": 0.55, "step": 1}],
    "trainable_parameters": 4884480,
    "mask_preview": [{"id": "seed_task_0", "tokens": 57, "trained_tokens": 12, "truncated": 0,
                      "segments": [["<|im_start|>user\nHi", False], ["Hello!<|im_end|>", True]]}],
}
SCORE = {"value": 0.4, "ci_low": 0.3, "ci_high": 0.5, "n_resamples": 1000, "confidence": 0.95,
         "method": "percentile"}
GENERATION_METRICS = {
    "schema_version": 2, "task": "generation", "n_test": 252, "n_scored": 4, "signature": "tunewise:0.1.0|task:chat",
    "text_metric_signatures": {"rouge": "types:rougeL|score:fmeasure"},
    "generation": {"max_new_tokens": 8, "do_sample": False, "temperature": 1.0, "top_p": 1.0, "batch_size": 16,
                   "precision": "bf16", "device": "cpu", "chat_template": True},
    "models": {name: {"description": name, "predictions": f"eval/{name}.jsonl",
                      "generation_speed": {"seconds": 1.5, "new_tokens": 32, "new_tokens_per_second": 21.3},
                      "metrics": {"rougeL": SCORE}} for name in ("fine_tuned", "base_model")},
    "comparisons": [{"model": "fine_tuned", "baseline": "base_model", "metric": "rougeL", "diff": 0.0,
                     "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0, "n_resamples": 1000, "confidence": 0.95}],
    "slices": {"topic": {"metrics": ["rougeL"], "min_size": 2, "too_small": ["b"], "n_resamples": 1000,
                         "confidence": 0.95,
                         "groups": {"a": {"n": 3, "judged": True,
                                          "scores": {"rougeL": {"value": 0.4, "ci_low": 0.3, "ci_high": 0.5}}},
                                    "b": {"n": 1, "judged": False,
                                          "scores": {"rougeL": {"value": 0.2, "ci_low": None, "ci_high": None}}}},
                         "gaps": {"rougeL": None}}},
    "held_out": None,
}
EXPORT_RECORD = {"schema_version": 1, "how": "LoRA adapter (r=16) merged into the base weights", "merged": True,
                 "task": "chat", "base_model": "smollm2", "base_model_hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
                 "files": {"config.json": "ab" * 32},
                 "load_with": "transformers.AutoModelForCausalLM.from_pretrained(path)"}


def write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def read_error(cls, path: Path) -> str:
    with pytest.raises(RunDirError) as info:
        cls.read(path)
    return str(info.value)


# ---------------------------------------------------------------- the published schemas


def test_committed_schemas_match_the_models():
    folder = ROOT / SCHEMAS_DIR
    wanted = schema_documents()
    stale = [name for name, text in wanted.items()
             if not (folder / name).is_file() or (folder / name).read_text(encoding="utf-8") != text]
    extra = sorted(p.name for p in folder.glob("*") if p.name not in wanted)
    assert not stale and not extra, (f"{SCHEMAS_DIR} is out of date with tunewise.artifacts (stale: {stale}, "
                                     f"unknown: {extra}); run `python scripts/write_schemas.py` and commit the result")


def test_every_artifact_has_its_own_schema_file():
    names = [a.schema_name() for a in ARTIFACTS]
    assert len(set(names)) == len(names)
    assert "eval.metrics.v2" in names and "audit.findings.v1" in names
    for a in ARTIFACTS:
        schema = a.json_schema()
        assert schema["$id"].endswith(f"/{a.schema_name()}.json") and schema["description"]


# ---------------------------------------------------------------- real files round-trip


@pytest.mark.parametrize("cls, rel", REAL_FILES, ids=[rel for _, rel in REAL_FILES])
def test_models_read_back_what_a_real_run_wrote(session_run, cls, rel):
    path = session_run / rel
    doc = json.loads(path.read_text(encoding="utf-8"))
    model = cls.read(path)
    assert model.schema_version == cls.SCHEMA_VERSION == doc["schema_version"]
    assert model.to_json() == doc  # nothing added, nothing lost, nothing renamed


def test_the_summary_records_the_batch_order(session_run):
    """train_summary.json says how batches were drawn: length-grouped (the default), shuffled groups, or random."""
    from tunewise.recipe import TrainConfig

    assert TrainSummary.read(session_run / "model/train_summary.json").batch_order == "length-grouped"
    assert TrainConfig().batch_order() == "length-grouped"
    assert TrainConfig(shuffle_length_groups=True).batch_order() == "length-grouped-shuffled"
    assert TrainConfig(group_by_length=False, shuffle_length_groups=True).batch_order() == "random"


def test_kinds_are_told_apart_by_task(session_run, tmp_path):
    assert isinstance(Metrics.read(session_run / "eval/metrics.json"), ClassificationMetrics)
    assert isinstance(TrainSummary.read(session_run / "model/train_summary.json"), ClassifierTrainSummary)
    causal = TrainSummary.read(write(tmp_path / "train_summary.json", CAUSAL_TRAIN_SUMMARY))
    assert isinstance(causal, CausalTrainSummary) and causal.to_json() == CAUSAL_TRAIN_SUMMARY
    generation = Metrics.read(write(tmp_path / "metrics.json", GENERATION_METRICS))
    assert isinstance(generation, GenerationMetrics) and generation.to_json() == GENERATION_METRICS
    assert generation.slices["topic"].metrics == ["rougeL"] and generation.slices["topic"].gaps["rougeL"] is None
    assert generation.slices["topic"].groups["b"].scores["rougeL"].ci_low is None
    export = ExportRecord.read(write(tmp_path / "EXPORT.json", EXPORT_RECORD))
    assert export.to_json() == EXPORT_RECORD
    # a variant class reads only its own kind
    err = read_error(ClassificationMetrics, tmp_path / "metrics.json")
    assert "does not match the ClassificationMetrics schema" in err and "task" in err


def test_write_adds_the_schema_version_and_reads_back(tmp_path):
    labels = Labels(labels=["a", "b"], derived=True)
    path = labels.write(tmp_path)
    assert path == tmp_path / "labels.json"
    assert json.loads(path.read_text()) == {"schema_version": 1, "labels": ["a", "b"], "derived": True}
    assert Labels.read(path) == labels


# ---------------------------------------------------------------- clear errors


def test_a_file_without_schema_version_was_made_by_an_older_tunewise(session_run, tmp_path):
    doc = json.loads((session_run / "eval/metrics.json").read_text())
    del doc["schema_version"]
    err = read_error(Metrics, write(tmp_path / "metrics.json", doc))
    assert "made by an older tunewise" in err and "Rerun the evaluate stage" in err
    assert "`tunewise evaluate RUN --force`" in err and str(tmp_path / "metrics.json") in err


def test_an_unknown_schema_version_is_refused(session_run, tmp_path):
    doc = json.loads((session_run / "model/train_summary.json").read_text())
    doc["schema_version"] = 99
    err = read_error(TrainSummary, write(tmp_path / "train_summary.json", doc))
    assert "schema_version 99" in err and "reads TrainSummary schema_version 1" in err and "train stage" in err


def test_a_damaged_or_missing_file_is_named(tmp_path):
    damaged = tmp_path / "summary.json"
    damaged.write_text('{"schema_version": 1, "splits": {', encoding="utf-8")
    err = read_error(DataSummary, damaged)
    assert err.startswith(f"{damaged}: damaged") and "rerun the data stage (`tunewise run RECIPE --force`)" in err
    assert "not a DataSummary file" in read_error(DataSummary, write(tmp_path / "list.json", [1, 2]))
    assert "missing; the audit stage writes it" in read_error(Findings, tmp_path / "findings.json")


@pytest.mark.parametrize("where", ["top", "nested", "model"])
def test_an_extra_or_misspelt_key_is_refused(session_run, tmp_path, where):
    doc = json.loads((session_run / "eval/metrics.json").read_text())
    if where == "top":
        doc["n_scroed"] = doc.pop("n_scored")
    elif where == "nested":
        score = doc["models"]["fine_tuned"]["metrics"]["accuracy"]
        score["ci_lo"] = score.pop("ci_low")
    else:
        doc["models"]["majority"]["metrics"]["acuracy"] = doc["models"]["majority"]["metrics"].pop("accuracy")
    err = read_error(Metrics, write(tmp_path / "metrics.json", doc))
    assert "does not match the Metrics schema" in err
    assert {"top": "n_scroed", "nested": "ci_lo", "model": "acuracy"}[where] in err


def test_slices_score_every_group_on_the_field_metrics(tmp_path):
    doc = copy.deepcopy(GENERATION_METRICS)
    doc["slices"]["topic"]["groups"]["a"]["scores"]["chrf"] = doc["slices"]["topic"]["groups"]["a"]["scores"]["rougeL"]
    assert "group 'a' is scored on ['rougeL', 'chrf']" in read_error(Metrics, write(tmp_path / "m.json", doc))
    doc = copy.deepcopy(GENERATION_METRICS)
    doc["slices"]["topic"]["gaps"] = {"chrf": None}
    assert "gaps are given for ['chrf']" in read_error(Metrics, write(tmp_path / "m.json", doc))


def test_findings_accepts_what_the_audit_writes_and_nothing_else(session_run, tmp_path):
    doc = json.loads((session_run / "audit/findings.json").read_text())
    doc["summary"]["by_check"]["duplicate"]["stauts"] = "ok"
    assert "stauts" in read_error(Findings, write(tmp_path / "findings.json", doc))


# ---------------------------------------------------------------- the audit gate


BLOCKING = {"check": "leak", "kind": "exact", "severity": "blocking", "count": 2,
            "message": "2 of 90 test rows: an exact copy of a train row",
            "action": "remove these rows from test (or from train)", "split": "test",
            "examples": [{"id": "t-1", "split": "test", "origin": "/data/test.jsonl:3",
                          "match": {"id": "r-9", "split": "train", "origin": "/data/train.jsonl:9"},
                          "detail": "same text after normalisation"},
                         {"id": None, "split": "test", "origin": "/data/test.jsonl:5"}],
            "details": {}, "default_severity": "blocking", "allowed": False}


@pytest.fixture()
def gated_run(session_run, tmp_path) -> Path:
    root = tmp_path / session_run.name
    shutil.copytree(session_run, root, ignore=shutil.ignore_patterns("checkpoints", "*.safetensors"))
    return root


def test_inside_a_run_directory_the_way_out_names_the_run(gated_run):
    (gated_run / "eval/metrics.json").unlink()
    err = read_error(Metrics, gated_run / "eval/metrics.json")
    assert f"`tunewise evaluate {gated_run} --force`" in err
    doc = json.loads((gated_run / "data/summary.json").read_text())
    doc["schema_version"] = 0
    err = read_error(DataSummary, write(gated_run / "data/summary.json", doc))
    assert f"`tunewise run {gated_run / 'recipe.yaml'} --force`" in err  # the data stage has no command of its own


def test_the_gate_stops_on_a_blocking_finding_and_says_how_out(gated_run):
    path = gated_run / "audit/findings.json"
    require_audit_passed(RunDir.open(gated_run))  # the real run's audit passed
    doc = json.loads(path.read_text())
    doc["findings"].insert(0, BLOCKING)
    write(path, doc)
    with pytest.raises(AuditBlocked) as info:
        require_audit_passed(RunDir.open(gated_run), by="train")
    message = str(info.value)
    assert message.startswith("the data audit found 1 blocking problem(s); training did not start.")
    assert "  - leak (exact, test): 2 of 90 test rows" in message
    assert "      test: test.jsonl:3 (id t-1) <- train.jsonl:9 (id r-9) [same text after normalisation]" in message
    assert "      test: test.jsonl:5\n" in message
    assert f"Details: {path}." in message and "`audit.allow=[leak]`" in message
    doc["findings"][0]["allowed"] = True  # accepted by audit.allow: training may start
    write(path, doc)
    require_audit_passed(RunDir.open(gated_run))

