"""End to end on real data and the real MiniLM: one shared `tunewise run` (conftest.session_run) checked from every
side. Tests that rerun stages or tamper with files work on a copy of the shared run directory."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import copy_run
from tunewise.recipe import load_recipe, validate_recipe
from tunewise.rundir import sha256_file

SHA256 = re.compile(r"[0-9a-f]{64}")


@pytest.fixture(scope="module")
def run(session_run) -> Path:
    return session_run


@pytest.fixture(scope="module")
def manifest(run) -> dict:
    return json.loads((run / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def metrics(run) -> dict:
    return json.loads((run / "eval" / "metrics.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def predictions(run, jsonl) -> list[dict]:
    return jsonl(run / "eval" / "predictions.jsonl")


@pytest.fixture
def run_copy(run, tmp_path) -> Path:
    """A private copy of the shared run directory (its external inputs are the same data files; weights hard-linked)."""
    return copy_run(run, tmp_path / run.name)


# ---------------------------------------------------------------- what the run directory holds


def test_run_directory_layout(run, session_recipe):
    assert run.name == f"banking6-{load_recipe(session_recipe).fingerprint()}"
    for rel in ("manifest.json", "recipe.yaml", "report.html", "data/train.jsonl", "data/validation.jsonl",
                "data/test.jsonl", "data/labels.json", "data/summary.json", "data/quarantine.jsonl",
                "model/config.json", "model/model.safetensors", "model/train_summary.json", "model/train_log.jsonl",
                "eval/predictions.jsonl", "eval/metrics.json", "eval/predictions_majority.jsonl",
                "eval/predictions_tfidf_logreg.jsonl", "card/README.md", "audit/findings.json", "audit/datacard.md",
                "audit/flagged.jsonl", "audit/quarantine.jsonl"):
        assert (run / rel).is_file(), rel
    assert not list(run.rglob("*.tmp")), "atomic writes must not leave temp files"


def test_manifest_records_lineage(run, manifest, session_recipe, banking_slice):
    assert manifest["run_id"] == run.name
    assert manifest["seed"] == 13
    assert "git_revision" in manifest  # a commit id, or null outside a git checkout
    assert manifest["git_revision"] is None or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", manifest["git_revision"])
    for package in ("python", "tunewise", "torch", "transformers", "scikit-learn", "numpy"):
        assert manifest["packages"].get(package), package
    # the resolved recipe, the same one recipe.yaml holds
    resolved = load_recipe(session_recipe)
    assert manifest["recipe"] == resolved.model_dump(mode="json")
    assert validate_recipe(yaml.safe_load((run / "recipe.yaml").read_text(encoding="utf-8"))) == resolved
    assert manifest["recipe_fingerprint"] == resolved.fingerprint()
    # every stage finished, with sha256 of its outputs, and the data stage with sha256 of its inputs
    stages = manifest["stages"]
    assert list(stages) == ["data", "audit", "train", "reference", "evaluate", "probes", "gate", "card"]
    for name, record in stages.items():
        assert record["status"] == "done", name
        assert record["outputs"], name
        for rel, digest in record["outputs"].items():
            assert SHA256.fullmatch(digest) and sha256_file(run / rel) == digest, rel
    assert stages["data"]["external_inputs"] == {str(p.resolve()): sha256_file(p) for p in banking_slice.values()}
    assert "eval/metrics.json" in stages["evaluate"]["outputs"]
    assert "model/model.safetensors" in stages["train"]["outputs"]
    assert {"report.html", "card/README.md"} <= set(stages["card"]["outputs"])
    assert {"audit/findings.json", "audit/datacard.md"} <= set(stages["audit"]["outputs"])


def test_model_card_links_the_datasheet_and_summarises_the_audit(run):
    card = (run / "card" / "README.md").read_text(encoding="utf-8")
    assert "[dataset card](../audit/datacard.md)" in card and "### Data audit" in card
    assert "| leak |" in card and "| pii |" in card  # one row per check, with its status and counts
    datasheet = (run / "audit" / "datacard.md").read_text(encoding="utf-8")
    assert "## Motivation" in datasheet and "## Maintenance" in datasheet
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "<h2>Data audit</h2>" in html and "audit/datacard.md" in html and "<td>leak</td>" in html


def test_model_card_names_the_cpu_kind_it_was_trained_on(run):
    """Bit-identical reruns need the same CPU kind, and one model name covers several ("AMD EPYC")."""
    from tunewise.hardware import cpu_facts

    hardware = json.loads((run / "model" / "train_summary.json").read_text())["hardware"]
    card = (run / "card" / "README.md").read_text(encoding="utf-8")
    assert f"Trained on {hardware['cpu_model']} (" in card
    assert hardware["cpu_id"] == cpu_facts()["cpu_id"]
    if hardware["cpu_id"]:  # Linux: from /proc/cpuinfo
        assert hardware["cpu_id"] in card


def test_report_is_self_contained_with_inline_svg_plots(run):
    html = (run / "report.html").read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html")
    assert html.count("<svg") >= 7  # loss curves, confusion matrix, CI forest, reliability diagram + 3 audit plots
    assert "<?xml" not in html
    # nothing is fetched from elsewhere: no external scripts, stylesheets, images or fonts
    assert not re.search(r"""<(script|img|iframe)[^>]+src\s*=""", html, re.I)
    assert not re.search(r"""<link[^>]+href\s*=\s*["']?(https?:)?//""", html, re.I)
    assert not re.search(r"""url\(\s*["']?(https?:)?//""", html, re.I)
    assert "banking6" in html and "card_arrival" in html


def test_model_card_has_model_index_with_the_measured_metrics(run, metrics):
    text = (run / "card" / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n", 2)[1])
    assert front["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert front["pipeline_tag"] == "text-classification"
    [entry] = front["model-index"]
    [result] = entry["results"]
    assert result["task"]["type"] == "text-classification"
    by_type = {m["type"]: m["value"] for m in result["metrics"]}
    ft = metrics["models"]["fine_tuned"]["metrics"]
    assert by_type["accuracy"] == pytest.approx(ft["accuracy"]["value"], abs=5e-5)
    assert by_type["f1"] == pytest.approx(ft["macro_f1"]["value"], abs=5e-5)


# ---------------------------------------------------------------- predictions and metrics agree


def test_predictions_line_up_with_the_test_rows(run, predictions, jsonl, banking_slice):
    test_rows = jsonl(run / "data" / "test.jsonl")
    assert [p["id"] for p in predictions] == [r["id"] for r in test_rows]
    assert [p["text"] for p in predictions] == [r["text"] for r in test_rows]
    assert [p["label"] for p in predictions] == [r["label"] for r in test_rows]
    # and data/test.jsonl is the test file, in its order
    assert [r["text"] for r in test_rows] == [r["text"] for r in jsonl(banking_slice["test"])]


def test_accuracy_recomputed_from_predictions_equals_metrics_json(predictions, metrics):
    assert metrics["n_test"] == len(predictions) == 90
    correct = [p["pred"] == p["label"] for p in predictions]
    assert [p["correct"] for p in predictions] == correct
    assert sum(correct) / len(correct) == metrics["models"]["fine_tuned"]["metrics"]["accuracy"]["value"]
    # the confusion matrix counts the same predictions
    labels = metrics["labels"]
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    for p in predictions:
        matrix[labels.index(p["label"]), labels.index(p["pred"])] += 1
    assert matrix.tolist() == metrics["confusion_matrix"]


def test_every_prediction_is_a_probability_distribution_over_the_labels(predictions, metrics):
    for p in predictions:
        assert list(p["probs"]) == metrics["labels"]
        assert math.isclose(sum(p["probs"].values()), 1.0, abs_tol=1e-4), p["id"]
        assert all(0.0 <= v <= 1.0 for v in p["probs"].values())
        assert p["pred"] == max(p["probs"], key=p["probs"].get)
        assert p["confidence"] == p["probs"][p["pred"]]


def test_fine_tuned_model_beats_the_majority_baseline(metrics):
    models = metrics["models"]
    ft = models["fine_tuned"]["metrics"]["accuracy"]
    majority = models["majority"]["metrics"]["accuracy"]
    assert majority["value"] == pytest.approx(1 / 6)  # balanced slice: 15 test rows per intent
    assert ft["ci_low"] <= ft["value"] <= ft["ci_high"]
    assert ft["ci_low"] > majority["value"], "the accuracy CI should exclude the majority baseline"
    [paired] = [c for c in metrics["comparisons"] if c["baseline"] == "majority" and c["metric"] == "accuracy"]
    assert paired["diff"] > 0 and paired["ci_low"] > 0 and paired["p_value"] < 0.05


def test_saved_model_reloads_with_plain_transformers(run, predictions):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(run / "model")
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    model.eval()
    rows = predictions[::9]  # 10 rows across all intents
    with torch.inference_mode():
        batch = tokenizer([p["text"] for p in rows], padding=True, truncation=True, max_length=48,
                          return_tensors="pt")
        probs = torch.softmax(model(**batch).logits, dim=-1).numpy()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    assert labels == json.loads((run / "data" / "labels.json").read_text())["labels"]
    for p, row in zip(rows, probs):
        assert labels[int(row.argmax())] == p["pred"], p["id"]
        assert row.tolist() == pytest.approx([p["probs"][label] for label in labels], abs=1e-4)


# ---------------------------------------------------------------- rerunning


def test_same_recipe_again_skips_every_stage(tunewise, run, session_recipe):
    before = (run / "manifest.json").read_bytes()
    proc = tunewise("run", session_recipe)
    assert proc.returncode == 0, proc.stderr
    for stage in ("data", "audit", "train", "evaluate", "card"):
        assert re.search(rf"^{stage}: inputs unchanged since .*; nothing to do$", proc.stdout, re.M), proc.stdout
    assert f"run directory: {run}" in proc.stdout
    assert (run / "manifest.json").read_bytes() == before


def test_verify_passes_then_names_a_tampered_file(tunewise, run, run_copy, manifest):
    proc = tunewise("verify", run)
    assert proc.returncode == 0, proc.stderr
    recorded = sum(len(r["outputs"]) + len(r["external_inputs"]) for r in manifest["stages"].values())
    checked = re.search(r"all (\d+) recorded files match manifest\.json", proc.stdout)
    assert checked and int(checked.group(1)) >= recorded, proc.stdout

    with open(run_copy / "eval" / "metrics.json", "ab") as fh:
        fh.write(b" ")
    proc = tunewise("verify", run_copy)
    assert proc.returncode == 1
    assert "eval/metrics.json: modified" in proc.stderr
    assert "2 artifact(s) do not match" in proc.stderr  # the file, and the card's citation of it
    assert "eval/metrics.json: cited by the model card with another sha256" in proc.stderr


def test_evaluate_force_reruns_only_evaluation_and_reproduces_the_metrics(tunewise, run_copy, metrics, jsonl,
                                                                         predictions):
    before = json.loads((run_copy / "manifest.json").read_text())
    proc = tunewise("evaluate", run_copy, "--force")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("evaluate: 90 test rows")
    after = json.loads((run_copy / "manifest.json").read_text())
    assert after["stages"]["evaluate"]["started"] >= before["stages"]["evaluate"]["finished"]
    for stage in ("data", "audit", "train", "card"):
        assert after["stages"][stage] == before["stages"][stage], f"{stage} should not have rerun"
    assert json.loads((run_copy / "eval" / "metrics.json").read_text()) == metrics
    assert jsonl(run_copy / "eval" / "predictions.jsonl") == predictions
    assert after["stages"]["evaluate"]["outputs"] == before["stages"]["evaluate"]["outputs"]  # byte-identical
    assert tunewise("verify", run_copy).returncode == 0


def test_evaluate_max_examples_scores_the_first_rows_of_a_classifier(run_copy, predictions, tmp_path):
    """evaluate.max_examples used to be ignored for classification; it now scores the first N rows, says so, and
    gives the same predictions for them as the full evaluation."""
    from tunewise.evaluate.classification import evaluate_classifier
    from tunewise.rundir import RunDir

    rd = RunDir.open(run_copy)
    recipe = rd.recipe.model_copy(update={"evaluate": rd.recipe.evaluate.model_copy(update={"max_examples": 25})})
    out = tmp_path / "eval"
    out.mkdir()
    line = evaluate_classifier(recipe, rd.stage_dir("data"), rd.stage_dir("train"), out)
    assert line.startswith("evaluate: 25 of 90 test rows")
    subset = json.loads((out / "metrics.json").read_text())
    assert (subset["n_test"], subset["n_scored"]) == (90, 25) and "|scored:25|" in subset["signature"]
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [p["id"] for p in predictions[:25]]
    assert [r["pred"] for r in rows] == [p["pred"] for p in predictions[:25]]


# Same seed in a fresh output folder, kill -9 and --resume, and a half-written checkpoint: tests/test_faults.py
# (test_kill_9_then_resume_ends_where_an_uninterrupted_run_ends compares the two runs file by file).
