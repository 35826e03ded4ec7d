"""Monitoring on the shared trained run (`session_run`: MiniLM on six banking77 intents): the reference profile the
pipeline writes after training, `tunewise monitor` on an unshifted stream (held-out banking77 rows: quiet, exit 0),
on a shifted one (SST-2 movie-review sentences: alert, exit 1), and on a SQLite prediction log in the serving
stage's own layout (tunewise.artifacts.prediction_log) with hourly windows, feedback labels and the retrain command.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import BANKING77, SLICE_INTENTS, SLICE_TEST_PER_INTENT, SLICE_TRAIN_PER_INTENT
from tunewise.artifacts.metrics import Metrics
from tunewise.artifacts.monitor import DriftReport, ReferenceProfile
from tunewise.rundir import RunDir, sha256_file


def held_out_banking(per_intent: int, skip: int = SLICE_TRAIN_PER_INTENT, split: str = "train") -> list[dict]:
    """banking77 rows of the slice's intents that the slice did not take (never seen in training or testing)."""
    seen = {label: 0 for label in SLICE_INTENTS}
    rows = []
    with open(BANKING77 / f"{split}.csv", encoding="utf-8", newline="") as fh:
        for record in csv.DictReader(fh):
            label = record["category"]
            if label in seen:
                seen[label] += 1
                if skip < seen[label] <= skip + per_intent:
                    rows.append({"text": record["text"], "label": label})
    random.Random(7).shuffle(rows)
    return rows


def sst2_sentences(shared_data: Path, n: int) -> list[str]:
    with open(shared_data / "sst2" / "dev.jsonl", encoding="utf-8") as fh:
        return [json.loads(line)["sentence"].strip() for line in fh][:n]


@pytest.fixture(scope="module")
def run_copy(session_run, tmp_path_factory) -> Path:
    """A copy of the shared run: monitoring writes monitor/ and the manifest."""
    target = tmp_path_factory.mktemp("monitored") / session_run.name
    shutil.copytree(session_run, target)
    return target


def test_reference_profile_is_written_after_training_and_validates(session_run):
    profile = ReferenceProfile.read(session_run / "reference" / "profile.json")
    metrics = Metrics.read(session_run / "eval" / "metrics.json")
    assert profile.split == "test" and profile.rows == profile.split_rows == metrics.n_test
    # the same model on the same split: the reference accuracy is the evaluated one
    assert profile.performance.accuracy == pytest.approx(metrics.fine_tuned().metrics["accuracy"].value)
    assert sum(profile.categorical["prediction"].counts.values()) == profile.rows
    assert set(profile.categorical["label"].counts) == set(SLICE_INTENTS)
    for name in ("chars", "words", "tokens", "oov_rate", "confidence"):
        feature = profile.numeric[name]
        assert len(feature.values) == profile.rows
        assert feature.quantiles["p05"] <= feature.quantiles["p50"] <= feature.quantiles["p95"]
        assert sum(feature.psi_reference) == pytest.approx(1.0)
    assert 0 < profile.rates["oov_rate"] < 0.5  # held-out text has some words training never saw
    emb = np.load(session_run / "reference" / profile.embeddings.file)
    assert emb.shape == (profile.embeddings.rows, profile.embeddings.dim) == (profile.rows, 384)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    from tunewise.monitor.embed import default_precision

    assert profile.embeddings.precision == default_precision()  # bf16 where the CPU has it; windows follow it
    assert sha256_file(session_run / "reference" / profile.embeddings.file) == profile.embeddings.sha256
    vocab = (session_run / "reference" / "vocab.txt").read_text(encoding="utf-8").split()
    assert len(vocab) == profile.vocabulary.size and "card" in vocab


def test_unshifted_stream_stays_quiet_with_feedback_accuracy_and_quarantine(run_copy, tunewise, tmp_path):
    rows = held_out_banking(40)  # 240 rows, labelled: feedback
    log = tmp_path / "unshifted.jsonl"
    lines = [json.dumps(r) for r in rows]
    lines.insert(10, "{not json")                           # line 11
    lines.insert(20, json.dumps({"label": "card_arrival"}))  # line 21: no text
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")

    proc = tunewise("monitor", run_copy, "--log", log, "--window", "120")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "quiet: no drift" in proc.stdout
    report = DriftReport.read(run_copy / "monitor" / "drift.json")
    assert not report.alert and report.retrain is None
    assert report.rows_read == 240 and report.rows_quarantined == 2 and report.predicted_here == 240
    assert [w.rows for w in report.windows] == [120, 120] and all(w.tested for w in report.windows)
    assert {t.feature for t in report.windows[0].tests} >= {"chars", "words", "tokens", "oov_rate", "confidence",
                                                            "prediction", "label", "embedding", "accuracy"}
    quarantined = [json.loads(x) for x in (run_copy / "monitor" / "quarantine.jsonl").read_text().splitlines()]
    assert [(q["where"], q["field"]) for q in quarantined] == [(f"{log}:11", "(line)"), (f"{log}:21", "text")]
    assert f"{log}:11" in proc.stdout

    feedback = [json.loads(x) for x in (run_copy / "monitor" / "feedback.jsonl").read_text().splitlines()]
    assert len(feedback) == 240
    for w, part in zip(report.windows, (feedback[:120], feedback[120:])):
        expected = np.mean([f["prediction"] == f["label"] for f in part])
        perf = w.performance
        assert perf.n_labelled == 120 and perf.accuracy == pytest.approx(expected)
        assert perf.accuracy_ci[0] <= perf.accuracy <= perf.accuracy_ci[1]
        assert perf.macro_f1_ci[0] <= perf.macro_f1 <= perf.macro_f1_ci[1]
        assert f"accuracy {perf.accuracy:.3f}" in proc.stdout

    # A serving log grows and rotates: the run that was monitored must still verify, so it can still be served.
    with log.open("a", encoding="utf-8") as f:
        f.write(json.dumps(rows[0]) + "\n")
    assert RunDir.open(run_copy).verify() == []
    log.unlink()
    assert RunDir.open(run_copy).verify() == []


def test_shifted_stream_alerts_with_report_and_costed_retrain(run_copy, tunewise, shared_data, tmp_path):
    log = tmp_path / "shifted.jsonl"
    log.write_text("".join(json.dumps({"text": s}) + "\n" for s in sst2_sentences(shared_data, 200)),
                   encoding="utf-8")
    proc = tunewise("monitor", run_copy, "--log", log, "--window", "100")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "ALERT" in proc.stdout and "retrain:" in proc.stdout
    report = DriftReport.read(run_copy / "monitor" / "drift.json")
    assert report.alert and all(w.alert for w in report.windows)
    assert {"embedding", "oov_rate", "prediction"} <= set(report.drifted_features)
    embedding = next(t for t in report.windows[0].tests if t.feature == "embedding")
    assert embedding.statistic > embedding.effect["threshold"]
    cost = report.retrain.cost
    assert cost.seconds > 0 and cost.core_hours > 0 and cost.price > 0 and report.retrain.command is None
    page = (run_copy / "monitor" / "report.html").read_text(encoding="utf-8")
    assert "ALERT" in page and page.count("<svg") >= 6
    assert any(example in page for example in report.windows[0].examples)  # example texts of drifted windows
    assert report.windows[0].examples[0] in sst2_sentences(shared_data, 200)


def test_sqlite_prediction_log_hourly_windows_and_retrain_command(run_copy, shared_data, tmp_path):
    """A log in the serve stage's layout, written through its shared table definitions: the first hour is
    held-out banking77 traffic with the model's own predictions (some with feedback labels, one logged only as a
    hash), the second hour SST-2 sentences. Only the second window drifts."""
    from tunewise.artifacts import prediction_log as schema
    from tunewise.monitor import monitor_run
    from tunewise.monitor.model import RunModel
    from tunewise.recipe import load_recipe
    from tunewise.rundir import RunDir

    rd = RunDir.open(run_copy)
    banking = held_out_banking(20, skip=SLICE_TEST_PER_INTENT, split="test")  # 120 rows no other test uses
    texts = [r["text"] for r in banking] + sst2_sentences(shared_data, 220)[100:220]
    labels = json.loads((run_copy / "data" / "labels.json").read_text())["labels"]
    preds, conf, probs = RunModel(rd.recipe, rd.stage_dir("train"), labels, load_model=True).predict(texts)
    start = dt.datetime(2025, 3, 1, 9, 0, 0)
    db = tmp_path / "predictions.sqlite"
    engine = schema.open_log(schema.sqlite_url(db), create=True)
    with engine.begin() as conn:
        for i, text in enumerate(texts):
            ts = start + dt.timedelta(seconds=i * 3600 // 120)
            rid = f"r{i:05d}"
            conn.execute(schema.requests.insert().values(
                request_id=rid, ts=ts, endpoint="classify", key_name="test", status=200, latency_ms=5.0,
                model="banking6", run_id=run_copy.name, n_inputs=1))
            conn.execute(schema.predictions.insert().values(
                request_id=rid, idx=0, ts=ts, input_text=f"sha256:{i:064x}" if i == 5 else text, label=preds[i],
                max_prob=float(conf[i]), probabilities_json=json.dumps(dict(zip(labels, map(float, probs[i])))),
                feedback_label=banking[i]["label"] if i < 120 and i % 2 == 0 else None))
    engine.dispose()

    outcome = monitor_run(rd, str(db), window="1h", overrides=["monitor.chunk_rows=64"], progress=False)
    report = outcome.report
    assert report.source_kind == "sql" and report.predicted_here == 0  # the log carried the predictions
    assert report.rows_read == 239 and report.rows_quarantined == 1
    assert [w.rows for w in report.windows] == [119, 120]
    assert report.windows[0].start == "2025-03-01T09:00:00Z" and report.windows[1].start == "2025-03-01T10:00:00Z"
    assert not report.windows[0].alert and report.windows[1].alert
    assert "embedding" in report.windows[1].drifted
    assert report.windows[0].performance.n_labelled == 60  # the even rows 0..118
    quarantined = (run_copy / "monitor" / "quarantine.jsonl").read_text()
    assert "tunewise_predictions:r00005/0" in quarantined

    retrain = report.retrain
    assert retrain.feedback_rows == 60 and retrain.command.startswith("tunewise run ")
    import shlex

    words = shlex.split(retrain.command)
    recipe = load_recipe(words[2], words[3:])
    train_file = Path(recipe.data.train.path)
    assert train_file == (run_copy / "monitor" / "retrain" / "train.jsonl").resolve()
    train_rows = [json.loads(x) for x in train_file.read_text().splitlines()]
    original = (run_copy / "data" / "train.jsonl").read_text().splitlines()
    assert len(train_rows) == len(original) + 60 == retrain.cost.train_rows
    assert train_rows[-1] == {"text": banking[118]["text"], "label": banking[118]["label"]}
    assert Path(recipe.data.test.path).read_text().count("\n") == len(
        (run_copy / "data" / "test.jsonl").read_text().splitlines())


def test_statistics_match_their_definitions():
    """Holm's step-down and the vectorised macro-F1 the windows report, against direct computations."""
    from sklearn.metrics import f1_score

    from tunewise.monitor import stats

    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5])
    # Holm: sorted p_(i) * (m - i + 1), made monotone, capped at 1
    assert stats.holm(p).tolist() == pytest.approx([0.04, 0.09, 0.09, 0.025, 0.5])
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 300)
    pred = np.where(rng.random(300) < 0.7, y, rng.integers(0, 7, 300))
    value, (low, high) = stats.macro_f1_ci(y, pred, 8, resamples=500)
    assert value == pytest.approx(f1_score(y, pred, average="macro"))
    assert low < value < high
    # the domain classifier's closed-form leave-one-out scores are the refits' own, and its AUC roc_auc_score's
    from sklearn.linear_model import Ridge
    from sklearn.metrics import roc_auc_score

    x = rng.normal(size=(60, 5))
    is_window = (rng.random(60) < 0.3).astype(float)
    x[is_window == 1] += 0.3
    loo = stats.loo_decisions(x, is_window, 3.0)
    refits = [Ridge(alpha=3.0).fit(np.delete(x, i, 0), np.delete(is_window, i)).predict(x[i:i + 1])[0]
              for i in range(60)]
    assert loo == pytest.approx(refits, abs=1e-9)
    assert stats.auc_from_scores(loo, is_window)[0] == pytest.approx(roc_auc_score(is_window, refits))
    x[is_window == 1] += 0.4  # a 0.7-SD shift on 5 axes (population AUC 0.87) is seen
    assert stats.domain_auc(x[is_window == 0], x[is_window == 1]) > 0.75
    # a yes/no feature whose rare category appears only in the window is still tested (Fisher), not pooled away
    test = stats.categorical_test("empty", {"no": 500, "yes": 0}, {"no": 54, "yes": 6})
    assert test.test == "fisher" and test.p_value < 1e-4


def test_two_stage_embedding_test_embeds_the_second_half_only_when_unclear():
    """The domain test embeds half of a window's sample first and the rest only when that half's p-value is
    neither quiet (> SCREEN_P) nor decisive (<= DECISIVE_P); under no drift its p-values keep their level."""
    from tunewise.monitor.detect import DECISIVE_P, SCREEN_P, DriftDetector, EmbeddingSample, ReferenceData

    rng = np.random.default_rng(3)

    def rows(n: int, shift: float = 0.0) -> np.ndarray:
        x = rng.normal(size=(n, 40))
        x[:, :4] += shift
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    detector = DriftDetector(ReferenceData(numeric={}, categorical={}, embeddings=rows(200)), alpha=0.05,
                             permutations=200, min_rows=5, seed=0)
    drifted = EmbeddingSample.of_vectors(rows(80, shift=3.0))
    test = detector.embedding_test(drifted)
    assert test.effect["stage"] == 1 and drifted.embedded == 40 and test.p_value <= DECISIVE_P
    p_values, embedded = [], []
    for _ in range(100):  # no drift: window rows drawn like the reference's
        sample = EmbeddingSample.of_vectors(rows(80))
        test = detector.embedding_test(sample)
        assert sample.embedded == test.effect["rows_embedded"] == (40 if test.effect["stage"] == 1 else 80)
        p_values.append(test.p_value)
        embedded.append(sample.embedded)
    p_values = np.array(p_values)
    assert (p_values <= 0.05).mean() <= 0.1 and (p_values <= SCREEN_P).mean() <= 0.3  # level kept (100 draws)
    assert 40 < np.mean(embedded) < 56  # about one window in five embeds its second half


def test_jsonl_log_reader_quarantines_bad_lines_and_refuses_a_wrong_encoding(tmp_path):
    from tunewise.errors import DataError
    from tunewise.monitor import sources

    log = tmp_path / "log.jsonl"
    log.write_bytes(b'\xef\xbb\xbf{"text": "a"}\n\n{bad\n{"text": 3}\n{"text": "b"}\n')
    records = [r for chunk in sources.read_jsonl(log, 64) for r in chunk]
    assert [getattr(r, "text", None) or (r.where, r.field) for r in records] == [
        "a", (f"{log}:3", "(line)"), (f"{log}:4", "text"), "b"]
    log.write_bytes(b'{"text": "a"}\n{"text": "\xff"}\n')
    with pytest.raises(DataError, match=r"log\.jsonl:2: not UTF-8"):
        [r for chunk in sources.read_jsonl(log, 64) for r in chunk]
