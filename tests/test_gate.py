"""The release gate: rules judged against a real run's artifacts, `tunewise gate RUN` re-checks without retraining
(exit 3 on a failed rule, verify still passes), `tunewise run` exits 3 after writing everything, and the card cites
the gate and the governance evidence with hashes that `tunewise verify` re-checks."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tunewise.artifacts import Findings, Gate
from tunewise.artifacts.card import Citations
from tunewise.gate.rules import judge
from tunewise.recipe import validate_recipe
from tunewise.rundir import RunDir, sha256_file


@pytest.fixture()
def run_copy(session_run, tmp_path) -> Path:
    """A copy of the shared trained run, free to re-judge and tamper with."""
    return Path(shutil.copytree(session_run, tmp_path / session_run.name))


def gate_of(root: Path) -> Gate:
    return Gate.read(root / "gate" / "gate.json")


def test_tightened_rule_exits_3_and_says_which_rule_failed_and_why(run_copy, tunewise):
    before = RunDir.open(run_copy).manifest
    proc = tunewise("gate", run_copy, "gate.metrics.accuracy=0.999", "gate.beat_baselines=[majority]")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    gate = gate_of(run_copy)
    assert not gate.passed and [r.rule for r in gate.failed()] == ["metrics.accuracy"]
    acc = json.loads((run_copy / "eval/metrics.json").read_text())["models"]["fine_tuned"]["metrics"]["accuracy"]
    rule = gate.failed()[0]
    assert rule.value == acc["ci_low"] and rule.threshold == 0.999 and rule.evidence == "eval/metrics.json"
    assert rule.evidence_sha256 == sha256_file(run_copy / "eval/metrics.json")
    assert f"the lower bound {acc['ci_low']:.4f} is below the required 0.999" in rule.reason
    assert "FAIL  metrics.accuracy" in proc.stdout and "PASS  beat_baselines.majority" in proc.stdout
    assert "release gate failed: metrics.accuracy" in proc.stderr
    # nothing was retrained or re-scored; the new section is recorded, and the card shows the verdict
    after = RunDir.open(run_copy)
    for stage in ("train", "evaluate"):
        assert after.manifest["stages"][stage] == before["stages"][stage]
    assert after.recipe.gate.metrics == {"accuracy": 0.999}
    assert yaml.safe_load((run_copy / "recipe.yaml").read_text())["gate"]["metrics"] == {"accuracy": 0.999}
    change = after.manifest["recipe_changes"][-1]
    assert change["section"] == "gate" and "gate.metrics.accuracy=0.999" in change["by"]
    card = (run_copy / "card/README.md").read_text()
    assert "**Verdict: FAILED**" in card and "| `metrics.accuracy` |" in card
    assert tunewise("verify", run_copy).returncode == 0
    # loosening it passes (exit 0) without retraining either
    proc = tunewise("gate", run_copy, "gate.metrics.accuracy=0.1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert gate_of(run_copy).passed and "gate: passed" in proc.stdout
    assert tunewise("verify", run_copy).returncode == 0


def test_only_gate_keys_may_change(run_copy, tunewise):
    proc = tunewise("gate", run_copy, "train.epochs=1")
    assert proc.returncode == 2
    assert "changes only the gate section, but `train.epochs=1` changes `train.epochs`" in proc.stderr
    proc = tunewise("gate", run_copy, "gate.max_flip_rate=2")
    assert proc.returncode == 2 and "gate.max_flip_rate" in proc.stderr


def test_missing_evidence_fails_with_the_reason(session_run, tmp_path):
    recipe = RunDir.open(session_run).recipe.model_copy(update={"gate": validate_recipe({
        "name": "g", "data": {"train": "x.jsonl"},
        "gate": {"max_slice_gap": 0.1, "crows_pairs_band": [0.4, 0.6], "metrics": {"rougeL": 0.2},
                 "beat_baselines": ["base_model"]}}).gate})
    verdicts = {v.rule: v for v in judge(session_run, recipe)}
    assert all(not v.passed and v.value is None for v in verdicts.values())
    assert "sets no data.slice_fields" in verdicts["max_slice_gap"].reason
    assert "no fine-tuned `rougeL` score" in verdicts["metrics.rougeL"].reason
    assert "no paired comparison with base_model" in verdicts["beat_baselines.base_model"].reason
    assert verdicts["crows_pairs_band"].reason.startswith("no evidence:")
    # a run without its evaluate output: the metric rule fails naming the missing file
    bare = tmp_path / "bare"
    bare.mkdir()
    v = judge(bare, recipe.model_copy(update={"gate": validate_recipe(
        {"name": "g", "data": {"train": "x.jsonl"}, "gate": {"metrics": {"accuracy": 0.5}}}).gate}))
    assert [(x.rule, x.passed) for x in v] == [("metrics.accuracy", False)]
    assert "eval/metrics.json does not exist" in v[0].reason


def test_flip_rate_rule_reads_every_probed_family(session_run):
    probes = json.loads((session_run / "probes/probes.json").read_text())
    families = probes["counterfactual"] or {}
    rd = RunDir.open(session_run)
    loose = rd.recipe.model_copy(update={"gate": rd.recipe.gate.model_copy(update={"max_flip_rate": 1.0})})
    verdicts = judge(session_run, loose)
    if not families:  # no probed text mentions an identity term: the rule cannot pass
        assert [v.passed for v in verdicts] == [False] and "no probed test text" in verdicts[0].reason
        return
    assert {v.rule for v in verdicts} == {f"max_flip_rate.{f}" for f in families}
    assert all(v.passed and v.evidence == "probes/probes.json" for v in verdicts)
    assert {v.value for v in verdicts} == {f["flip_rate"]["value"] for f in families.values()}


def test_accepted_blocking_findings_need_a_reason(session_run, tmp_path):
    doc = json.loads((session_run / "audit/findings.json").read_text())
    finding = {"check": "leak", "kind": "exact", "severity": "blocking", "count": 2, "split": "test",
               "message": "2 of 90 test rows: an exact copy of a train row", "action": "remove them",
               "examples": [], "details": {}, "default_severity": "blocking", "allowed": True}
    doc["findings"].insert(0, finding)
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit/findings.json").write_text(json.dumps(doc))
    Findings.read(tmp_path / "audit/findings.json")  # still a valid findings file
    recipe = RunDir.open(session_run).recipe

    def verdict(gate: dict):
        gate_cfg = validate_recipe({"name": "g", "data": {"train": "x.jsonl"}, "gate": gate}).gate
        return judge(tmp_path, recipe.model_copy(update={"gate": gate_cfg}))[0]

    v = verdict({"no_blocking_findings": True})
    assert not v.passed and v.value == 1 and "accepted by audit.allow without a reason" in v.reason
    v = verdict({"no_blocking_findings": True, "accepted_findings": {"leak": "templated greetings, reviewed"}})
    assert v.passed and "'templated greetings, reviewed'" in v.reason
    doc["findings"][0]["allowed"] = False
    (tmp_path / "audit/findings.json").write_text(json.dumps(doc))
    v = verdict({"no_blocking_findings": True, "accepted_findings": {"leak": "a reason does not accept it"}})
    assert not v.passed and "blocking, not accepted: leak (exact, test, 2 rows)" in v.reason


def test_run_exits_3_after_writing_everything(session_run, session_recipe, tmp_path, tunewise):
    """`tunewise run` with a failing gate: the trained run is reused (the gate is not part of the run id), the gate
    and the card are rewritten, and the exit code is 3."""
    out = tmp_path / "runs"
    shutil.copytree(session_run, out / session_run.name)
    recipe = yaml.safe_load(session_recipe.read_text())
    recipe.update(output_dir=str(out), gate={"metrics": {"macro_f1": 0.9999}})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    proc = tunewise("run", path)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "train: inputs unchanged" in proc.stdout and "gate: FAILED" in proc.stdout
    assert "release gate failed" in proc.stderr and "metrics.macro_f1" in proc.stderr
    root = out / session_run.name
    assert "**Verdict: FAILED**" in (root / "card/README.md").read_text()
    assert "Release gate: FAILED" in (root / "report.html").read_text()
    assert tunewise("verify", root).returncode == 0


def test_card_cites_governance_evidence_that_verify_rechecks(run_copy, tunewise):
    card = (run_copy / "card/README.md").read_text()
    for heading in ("## Training cost", "### NIST AI RMF 1.0", "### ISO/IEC 42001:2023 Annex A", "## Release gate",
                    "## Ethical considerations", "## Evaluation data"):
        assert heading in card
    for ident in ("MEASURE 2.11", "MEASURE 2.12", "MANAGE 1.1", "MAP 2.3", "A.7.4", "A.7.5", "A.6.2.4"):
        assert f"| {ident} |" in card
    assert "| MEASURE 2.13 |" in card and "gap for the organisation" in card
    assert "project's own reading" in card
    citations = Citations.read(run_copy / "card/citations.json")
    cited = {c.path: c.sha256 for c in citations.files}
    recorded = {rel: h for rec in RunDir.open(run_copy).manifest["stages"].values()
                for rel, h in rec.get("outputs", {}).items()}
    assert {"eval/metrics.json", "audit/findings.json", "gate/gate.json", "data/summary.json"} <= set(cited)
    for path, sha in cited.items():  # every file the card cites exists and hashes as recorded
        if path != "recipe.yaml":
            assert recorded[path] == sha == sha256_file(run_copy / path)
    # the short hashes printed in the governance tables are those of the cited files
    for path, short in re.findall(r"`([\w./-]+\.(?:json|jsonl|md|yaml))` \(`([0-9a-f]{12})`\)", card):
        assert cited[path].startswith(short), path
    # the cost estimate states its assumptions
    assert "Assumptions (recipe `card.cost`): 10 W per CPU core" in card
    # verify names a cited file whose citation no longer matches the manifest
    doc = json.loads((run_copy / "card/citations.json").read_text())
    doc["files"][0]["sha256"] = "0" * 64
    (run_copy / "card/citations.json").write_text(json.dumps(doc))
    proc = tunewise("verify", run_copy)
    assert proc.returncode == 1
    assert f"{doc['files'][0]['path']}: cited by the model card with another sha256" in proc.stderr


# ---------------------------------------------------------------- serving evidence: p99 latency, guard detection


@pytest.fixture(scope="module")
def benched_run(session_run, tmp_path_factory) -> Path:
    """A hard-linked copy of the shared run (tunewise replaces files by rename, so the shared run is never written
    through the links) with a real serving benchmark: `tunewise serve` in a subprocess, loaded at 1 and 4 clients
    with a few requests each (enough to exercise the path, too few to mean anything as a measurement)."""
    import os

    from tunewise.serve.bench import benchmark

    root = Path(shutil.copytree(session_run, tmp_path_factory.mktemp("bench") / session_run.name,
                                copy_function=os.link))
    before = judge(root, _with_gate(root, max_p99_ms=60_000, p99_clients=4))  # before any benchmark
    outcome = benchmark(root, levels=[4, 1], requests=8, warmup=2, echo=lambda _: None)
    assert outcome.ran
    root.joinpath("before.json").write_text(json.dumps([v.model_dump(mode="json") for v in before]))
    return root


def _with_gate(root: Path, **gate):
    recipe = RunDir.open(root).recipe
    return recipe.model_copy(update={"gate": validate_recipe({"name": "g", "data": {"train": "x.jsonl"},
                                                              "gate": gate}).gate})


def test_serving_benchmark_is_a_typed_artifact_of_the_run(benched_run):
    from tunewise.artifacts.serve import ServeBenchmark, model_digest
    from tunewise.rundir import verify_run

    bench = ServeBenchmark.read(benched_run / "servebench" / "bench.json")
    rd = RunDir.open(benched_run)
    assert [lv.clients for lv in bench.levels] == [1, 4]  # ascending, whatever order was asked
    for lv in bench.levels:
        assert lv.requests == 8 and lv.ok == 8 and lv.errors == {}
        assert 0 < lv.p50_ms <= lv.p95_ms <= lv.p99_ms <= lv.max_ms
        assert lv.throughput_rps > 0 and lv.cpu_seconds > 0 and lv.cpu_s_per_1k > 0
    assert bench.model_digest == model_digest(rd.outputs_of("train")) and bench.run_id == benched_run.name
    assert bench.machine.cpu_model and bench.machine.cpus >= 1 and "torch" in bench.machine.libraries
    assert bench.settings["max_batch_requests"] == rd.recipe.serve.max_batch_requests
    assert bench.settings["rate_per_minute"] > rd.recipe.serve.rate_per_minute  # lifted: policy, not capacity
    assert bench.guard is None and bench.backend == "torch"
    assert not (benched_run / "logs").exists(), "benchmark traffic must not reach the run's prediction log"
    verify_run(benched_run)  # recorded in the manifest like any stage output


def test_serving_rules_block_until_measured_then_judge_the_benchmark(benched_run, tunewise):
    before = json.loads((benched_run / "before.json").read_text())
    assert [(v["rule"], v["passed"]) for v in before] == [("max_p99_ms", False)]
    assert ("not measured: servebench/bench.json does not exist; run `tunewise serve-bench"
            in before[0]["reason"])
    skip = judge(benched_run.parent / "nowhere", _with_gate(benched_run, max_p99_ms=50, serving_evidence="skip"))
    assert skip[0].passed and skip[0].skipped and "skipped (gate.serving_evidence: skip)" in skip[0].reason

    bench = json.loads((benched_run / "servebench/bench.json").read_text())
    p99 = bench["levels"][1]["p99_ms"]
    proc = tunewise("gate", benched_run, "gate.max_p99_ms=60000", "gate.p99_clients=4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rule = next(r for r in gate_of(benched_run).rules if r.rule == "max_p99_ms")
    assert rule.passed and rule.value == p99 and rule.field == "levels.1.p99_ms"
    assert rule.evidence_sha256 == sha256_file(benched_run / "servebench/bench.json")
    assert f"p99 {p99:.1f} ms at 4 clients (8 requests" in rule.reason

    proc = tunewise("gate", benched_run, "gate.max_p99_ms=0.001", "gate.min_guard_detection=0.9")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    failed = {r.rule: r for r in gate_of(benched_run).failed()}
    assert set(failed) == {"max_p99_ms", "min_guard_detection"}
    assert f"p99 {p99:.1f} ms at 4 clients" in failed["max_p99_ms"].reason and "above 0.001 ms" in failed["max_p99_ms"].reason
    assert "served without an injection guard (serve.guard.run is null)" in failed["min_guard_detection"].reason
    assert "FAIL  max_p99_ms" in proc.stdout and tunewise("verify", benched_run).returncode == 0
    # a level the benchmark did not measure is named, with the command that measures it
    v = judge(benched_run, _with_gate(benched_run, max_p99_ms=50, p99_clients=32))[0]
    assert not v.passed and "--clients 1,4,32" in v.reason


def test_serving_rules_refuse_a_benchmark_of_another_model(benched_run, tmp_path):
    for name in ("manifest.json", "recipe.yaml"):
        shutil.copy(benched_run / name, tmp_path / name)
    (tmp_path / "servebench").mkdir()
    doc = json.loads((benched_run / "servebench/bench.json").read_text())
    doc["model_digest"] = "0" * 64  # as if measured before the model was retrained
    (tmp_path / "servebench/bench.json").write_text(json.dumps(doc))
    v = judge(tmp_path, _with_gate(benched_run, max_p99_ms=60_000, p99_clients=4))[0]
    assert not v.passed and "measured an earlier model of this run" in v.reason


def test_guard_rule_reads_the_operating_point_at_the_configured_fpr(benched_run, tmp_path):
    """The guard's detection is copied from its run's guard/guard.json when benchmarked (no guard run is trained
    in this suite, so its operating points here are typed stand-ins; the arithmetic of the rule is what is tested)."""
    from tunewise.artifacts.guard import OperatingPoint, Rate
    from tunewise.artifacts.serve import GuardEvidence, ServeBenchmark

    def point(fpr: float, hits: int, ci: tuple[float, float]) -> OperatingPoint:
        rate = Rate(value=hits / 61, ci=ci, hits=hits, of=61)
        return OperatingPoint(target_fpr=fpr, threshold=0.5, validation_fpr=rate, validation_detection=rate,
                              test_detection=rate, test_fpr=Rate(value=0.03, ci=(0.01, 0.06), hits=7, of=224))
    bench = ServeBenchmark.read(benched_run / "servebench/bench.json")
    bench.guard = GuardEvidence(run_id="injection-guard-x", guard_json_sha256="a" * 64, endpoints=["classify"],
                                block=True, target_fpr=0.05, threshold=0.5, backend="torch", confidence=0.95,
                                operating_points=[point(0.01, 43, (0.58, 0.80)), point(0.05, 54, (0.78, 0.94))])
    for name in ("manifest.json", "recipe.yaml"):
        shutil.copy(benched_run / name, tmp_path / name)
    bench.write(tmp_path / "servebench")
    at_target = judge(tmp_path, _with_gate(benched_run, min_guard_detection=0.75))[0]
    assert at_target.passed and at_target.value == 0.78 and at_target.field.startswith("guard.operating_points.1")
    assert "detects 54 of 61 test injections" in at_target.reason
    at_1pct = judge(tmp_path, _with_gate(benched_run, min_guard_detection=0.75, guard_fpr=0.01))[0]
    assert not at_1pct.passed and at_1pct.value == 0.58 and "is below 0.75" in at_1pct.reason
    unreported = judge(tmp_path, _with_gate(benched_run, min_guard_detection=0.75, guard_fpr=0.02))[0]
    assert not unreported.passed and "reports detection at FPR 0.01, 0.05, not at 0.02" in unreported.reason
