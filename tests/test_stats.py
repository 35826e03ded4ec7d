"""Tests for tunewise.evaluate.stats, .calibration and .baselines."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from tunewise.evaluate.baselines import BASELINES, describe, fit_predict_proba
from tunewise.evaluate.calibration import brier_score, expected_calibration_error
from tunewise.evaluate.stats import (
    METRICS,
    accuracy,
    bootstrap_ci,
    macro_f1,
    paired_bootstrap,
    signature,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _noisy_predictions(rng, y, k, acc):
    """Predictions equal to y with probability `acc`, otherwise a uniformly random class."""
    return np.where(rng.random(y.shape[0]) < acc, y, rng.integers(0, k, y.shape[0]))


# ---------------------------------------------------------------------------------------------- metrics


def test_accuracy_golden():
    assert accuracy([0, 1, 2, 2], [0, 2, 2, 1]) == 0.5
    assert accuracy(np.array([3, 3]), np.array([3, 3])) == 1.0


def test_macro_f1_golden_with_absent_class():
    # class 0: tp=1, 2 true, 2 pred -> 2/4; class 1: tp=2, 2 true, 3 pred -> 4/5; class 2: 0; class 3 absent.
    value = macro_f1([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], n_classes=4)
    assert value == pytest.approx((0.5 + 0.8 + 0.0) / 3, abs=1e-15)


def test_macro_f1_counts_class_only_in_predictions():
    # class 0: tp=1, 2 true, 1 pred -> 2/3; class 1 predicted but never true -> F1 0; class 2 absent.
    assert macro_f1([0, 0], [0, 1], n_classes=3) == pytest.approx(1 / 3, abs=1e-15)


def test_metrics_match_sklearn_on_random_data():
    rng = np.random.default_rng(0)
    for _ in range(300):
        k = int(rng.integers(2, 15))
        n = int(rng.integers(1, 30))  # small n so many classes are absent from a sample
        y = rng.integers(0, k, n)
        p = rng.integers(0, k, n)
        assert accuracy(y, p) == pytest.approx(accuracy_score(y, p), abs=1e-12)
        assert macro_f1(y, p, k) == pytest.approx(f1_score(y, p, average="macro"), abs=1e-12)


def test_metrics_vectorized_over_bootstrap_resamples_match_sklearn():
    rng = np.random.default_rng(1)
    k, n, b = 12, 40, 64
    y = rng.integers(0, k, n)
    p = _noisy_predictions(rng, y, k, 0.6)
    idx = rng.integers(0, n, (b, n))  # resamples, many missing some classes
    yb, pb = y[idx], p[idx]
    f1_batch = macro_f1(yb, pb, k)
    acc_batch = accuracy(yb, pb)
    assert f1_batch.shape == acc_batch.shape == (b,)
    for row in range(b):
        assert f1_batch[row] == pytest.approx(f1_score(yb[row], pb[row], average="macro"), abs=1e-12)
        assert acc_batch[row] == pytest.approx(accuracy_score(yb[row], pb[row]), abs=1e-12)


def test_metrics_registry_has_uniform_signature():
    y, p = np.array([0, 1, 2, 1]), np.array([0, 1, 1, 1])
    assert set(METRICS) == {"accuracy", "macro_f1"}
    assert METRICS["accuracy"](y, p, 3) == 0.75
    assert METRICS["macro_f1"](y, p, 3) == pytest.approx(f1_score(y, p, average="macro"))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: macro_f1([0, 1], [0, 3], n_classes=3), r"'y_pred' .* < n_classes=3; got 3"),
        (lambda: macro_f1([0, 1], [0], n_classes=3), r"'y_pred' .* same shape"),
        (lambda: accuracy([0.5, 1.0], [0, 1]), r"'y_true' .* integer class indices"),
        (lambda: accuracy([-1, 1], [0, 1]), r"'y_true' .* >= 0"),
        (lambda: macro_f1([0, 1], [0, 1], n_classes=0), r"'n_classes' .* int >= 1; got 0"),
        (lambda: accuracy([], []), r"at least one example"),
    ],
)
def test_metric_input_errors_name_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_bootstrap_ci_contains_value_and_has_expected_keys(metric):
    rng = np.random.default_rng(2)
    k = 7
    y = rng.integers(0, k, 400)
    p = _noisy_predictions(rng, y, k, 0.7)
    res = bootstrap_ci(y, p, metric, n_classes=k, n_resamples=500, seed=3)
    assert set(res) == {"value", "ci_low", "ci_high", "n_resamples", "confidence", "method"}
    assert res["value"] == pytest.approx(METRICS[metric](y, p, k))
    assert res["ci_low"] < res["value"] < res["ci_high"]
    assert (res["n_resamples"], res["confidence"], res["method"]) == (500, 0.95, "percentile")


def test_bootstrap_ci_narrows_with_more_data():
    rng = np.random.default_rng(4)
    widths = []
    for n in (200, 5000):
        y = rng.integers(0, 5, n)
        p = _noisy_predictions(rng, y, 5, 0.8)
        res = bootstrap_ci(y, p, "accuracy", n_classes=5, n_resamples=500)
        widths.append(res["ci_high"] - res["ci_low"])
    assert widths[1] < widths[0] / 3  # width shrinks like 1/sqrt(n): sqrt(25) = 5


def test_bootstrap_ci_is_deterministic_for_a_seed():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, 300)
    p = _noisy_predictions(rng, y, 4, 0.6)
    a = bootstrap_ci(y, p, "macro_f1", n_classes=4, n_resamples=300, seed=11)
    b = bootstrap_ci(y, p, "macro_f1", n_classes=4, n_resamples=300, seed=11)
    c = bootstrap_ci(y, p, "macro_f1", n_classes=4, n_resamples=300, seed=12)
    assert a == b
    assert (a["ci_low"], a["ci_high"]) != (c["ci_low"], c["ci_high"])


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_bootstrap_ci_degenerate_distribution_gives_value_without_warnings(metric):
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        perfect = bootstrap_ci(y, y, metric, n_classes=3, n_resamples=200)
        all_same = bootstrap_ci(np.zeros(8, int), np.zeros(8, int), metric, n_classes=3, n_resamples=200)
    for res in (perfect, all_same):
        assert res["value"] == res["ci_low"] == res["ci_high"] == 1.0


def test_bootstrap_ci_on_banking77_sized_input_stays_finite():
    rng = np.random.default_rng(6)
    k, n = 77, 3080
    y = rng.integers(0, k, n)
    p = _noisy_predictions(rng, y, k, 0.9)
    res = bootstrap_ci(y, p, "macro_f1", n_classes=k, n_resamples=1000)
    assert np.isfinite([res["ci_low"], res["ci_high"]]).all()
    assert res["ci_low"] < res["value"] < res["ci_high"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_resamples": 5}, r"The 'n_resamples' parameter of bootstrap_ci must be an int >= 100; got 5\."),
        ({"confidence": 1.5}, r"'confidence' parameter of bootstrap_ci must be a float in \(0, 1\)"),
        ({"metric": "bleu"}, r"'metric' parameter of bootstrap_ci must be one of \['accuracy', 'macro_f1'\]"),
        ({"seed": -1}, r"'seed' parameter of bootstrap_ci must be an int >= 0"),
    ],
)
def test_bootstrap_ci_input_errors(kwargs, match):
    args = {"metric": "accuracy", "n_classes": 2, **kwargs}
    metric = args.pop("metric")
    with pytest.raises(ValueError, match=match):
        bootstrap_ci([0, 1, 1], [0, 1, 0], metric, **args)


def test_bootstrap_ci_needs_two_examples():
    with pytest.raises(ValueError, match="at least 2 examples"):
        bootstrap_ci([0], [0], "accuracy", n_classes=2)


# ---------------------------------------------------------------------------------------------- paired test


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_paired_bootstrap_finds_a_real_difference(metric):
    rng = np.random.default_rng(7)
    k = 6
    y = rng.integers(0, k, 500)
    strong = _noisy_predictions(rng, y, k, 0.9)
    weak = _noisy_predictions(rng, y, k, 0.6)
    res = paired_bootstrap(y, strong, weak, metric, n_classes=k, n_resamples=1000)
    assert set(res) == {"diff", "ci_low", "ci_high", "p_value", "n_resamples", "confidence"}
    assert res["diff"] == pytest.approx(METRICS[metric](y, strong, k) - METRICS[metric](y, weak, k))
    assert res["diff"] > 0
    assert 0 < res["ci_low"] < res["diff"] < res["ci_high"]
    assert res["p_value"] < 0.05
    assert res["p_value"] == pytest.approx(1 / 1001)  # no resample reverses the ranking: clipped floor

    swapped = paired_bootstrap(y, weak, strong, metric, n_classes=k, n_resamples=1000)
    assert swapped["diff"] == pytest.approx(-res["diff"])
    assert swapped["ci_high"] < 0
    assert swapped["p_value"] < 0.05


def test_paired_bootstrap_identical_systems():
    rng = np.random.default_rng(8)
    y = rng.integers(0, 4, 200)
    p = _noisy_predictions(rng, y, 4, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = paired_bootstrap(y, p, p.copy(), "macro_f1", n_classes=4, n_resamples=200)
    assert res["diff"] == 0.0
    assert res["ci_low"] == res["ci_high"] == 0.0
    assert res["p_value"] == 1.0


def test_paired_bootstrap_close_systems_are_not_significant():
    rng = np.random.default_rng(9)
    y = rng.integers(0, 4, 300)
    a = _noisy_predictions(rng, y, 4, 0.7)
    b = a.copy()
    b[:3] = (b[:3] + 1) % 4  # change three predictions
    res = paired_bootstrap(y, a, b, "accuracy", n_classes=4, n_resamples=1000)
    assert res["p_value"] > 0.05
    assert res["ci_low"] <= 0 <= res["ci_high"]


def test_paired_bootstrap_p_value_agrees_with_ci():
    # percentile CI excludes 0 at 95% exactly when < 2.5% of resamples fall past 0, i.e. p < 0.05
    rng = np.random.default_rng(10)
    for acc_b in (0.62, 0.66, 0.70, 0.74):
        y = rng.integers(0, 5, 400)
        a = _noisy_predictions(rng, y, 5, 0.72)
        b = _noisy_predictions(rng, y, 5, acc_b)
        res = paired_bootstrap(y, a, b, "accuracy", n_classes=5, n_resamples=2000, seed=1)
        assert 1 / 2001 <= res["p_value"] <= 1.0
        excludes_zero = res["ci_low"] > 0 or res["ci_high"] < 0
        if abs(res["p_value"] - 0.05) > 0.01:  # skip knife-edge cases where interpolation decides
            assert excludes_zero == (res["p_value"] < 0.05)


def test_paired_bootstrap_is_deterministic_and_checks_inputs():
    rng = np.random.default_rng(11)
    y = rng.integers(0, 3, 150)
    a = _noisy_predictions(rng, y, 3, 0.8)
    b = _noisy_predictions(rng, y, 3, 0.7)
    first = paired_bootstrap(y, a, b, "accuracy", n_classes=3, n_resamples=300, seed=4)
    assert first == paired_bootstrap(y, a, b, "accuracy", n_classes=3, n_resamples=300, seed=4)
    with pytest.raises(ValueError, match=r"'pred_b' parameter of paired_bootstrap must have the same shape"):
        paired_bootstrap(y, a, b[:-1], "accuracy", n_classes=3)
    with pytest.raises(ValueError, match=r"'n_resamples' parameter of paired_bootstrap must be an int >= 100"):
        paired_bootstrap(y, a, b, "accuracy", n_classes=3, n_resamples=10.0)


def test_signature_keeps_argument_order():
    assert signature(metric="accuracy", nrs=1000, ci=0.95, seed=0) == "metric:accuracy|nrs:1000|ci:0.95|seed:0"
    assert signature() == ""
    with pytest.raises(ValueError, match="'metric' parameter of signature"):
        signature(metric="a|b")


# ---------------------------------------------------------------------------------------------- calibration


def _calibration_example():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.5, 0.5]])
    y = np.array([0, 1, 1, 0])  # right, wrong, right, right (tie at 0.5 -> argmax 0)
    return y, probs


def test_ece_golden_two_bins():
    y, probs = _calibration_example()
    ece, bins = expected_calibration_error(y, probs, n_bins=2)
    # [0, .5]: conf .5, acc 1 -> .5 * 1/4; (.5, 1]: conf 2.3/3, acc 2/3 -> .1 * 3/4
    assert ece == pytest.approx(0.125 + 0.075, abs=1e-12)
    assert [b["count"] for b in bins] == [1, 3]
    assert bins[0] == {"lo": 0.0, "hi": 0.5, "count": 1, "accuracy": 1.0, "confidence": 0.5}
    assert bins[1]["accuracy"] == pytest.approx(2 / 3)
    assert bins[1]["confidence"] == pytest.approx(2.3 / 3)


def test_ece_golden_with_empty_bin():
    y, probs = _calibration_example()
    ece, bins = expected_calibration_error(y, probs, n_bins=4)
    # (.25,.5]: .5 vs 1 -> .125; (.5,.75]: .6 vs 1 -> .1; (.75,1]: .85 vs .5 -> .175
    assert ece == pytest.approx(0.4, abs=1e-12)
    assert bins[0] == {"lo": 0.0, "hi": 0.25, "count": 0, "accuracy": None, "confidence": None}
    assert [b["count"] for b in bins] == [0, 1, 1, 2]
    assert sum(b["count"] for b in bins) == len(y)


def test_ece_bins_are_right_closed():
    # confidence exactly on an edge belongs to the bin it closes: 0.7 -> (0.6, 0.7], 1.0 -> last bin
    _, bins = expected_calibration_error([0, 0], np.array([[0.7, 0.3], [1.0, 0.0]]), n_bins=10)
    counts = [b["count"] for b in bins]
    assert counts[6] == 1 and counts[9] == 1 and sum(counts) == 2
    assert bins[6]["hi"] == pytest.approx(0.7)


def test_ece_perfectly_calibrated_and_default_bins():
    probs = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    ece, bins = expected_calibration_error([0, 2], probs)
    assert ece == 0.0
    assert len(bins) == 15


def test_brier_score_golden():
    assert brier_score([0, 1], np.array([[1.0, 0.0], [0.5, 0.5]])) == pytest.approx(0.25)
    assert brier_score([0], np.array([[0.0, 1.0]])) == pytest.approx(2.0)
    rng = np.random.default_rng(12)
    probs = rng.dirichlet(np.ones(5), size=50)
    y = rng.integers(0, 5, 50)
    expected = np.mean(np.sum((probs - np.eye(5)[y]) ** 2, axis=1))
    assert brier_score(y, probs) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("y", "probs", "match"),
    [
        ([0, 1], [[0.5, 0.6], [0.5, 0.5]], r"'probs' .* rows that sum to 1; row 0"),
        ([0, 2], [[0.5, 0.5], [0.5, 0.5]], r"'y_true' .* class indices in \[0, 1\]"),
        ([0], [[0.5, 0.5], [0.5, 0.5]], r"'y_true' .* one label per row"),
        ([0], [0.5, 0.5], r"'probs' .* shape \(n, K\)"),
        ([0], [[1.5, -0.5]], r"'probs' .* in \[0, 1\]"),
    ],
)
def test_calibration_input_errors(y, probs, match):
    with pytest.raises(ValueError, match=match):
        brier_score(y, probs)
    with pytest.raises(ValueError, match=match):
        expected_calibration_error(y, probs)


def test_ece_rejects_bad_n_bins():
    with pytest.raises(ValueError, match=r"'n_bins' parameter of expected_calibration_error must be an int >= 1"):
        expected_calibration_error([0], [[1.0, 0.0]], n_bins=0)


# ---------------------------------------------------------------------------------------------- baselines

_TOY_TEXTS = ["refund my card", "card refund please", "where is my card", "card not arrived yet",
              "refund the payment", "my card has not arrived"]
_TOY_Y = np.array([0, 0, 2, 2, 0, 2])  # class 1 and 3 never appear in training


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_probabilities_cover_every_class(name):
    proba = fit_predict_proba(name, _TOY_TEXTS, _TOY_Y, ["refund", "card arrived?", "x"], n_classes=4, seed=0)
    assert proba.shape == (3, 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (proba[:, [1, 3]] == 0).all()
    assert describe(name)


def test_majority_predicts_training_prior():
    y = np.array([1, 1, 1, 0])
    proba = fit_predict_proba("majority", ["a", "b", "c", "d"], y, ["e", "f"], n_classes=3, seed=0)
    np.testing.assert_allclose(proba, [[0.25, 0.75, 0.0]] * 2)


def test_tfidf_logreg_is_deterministic_and_learns_toy_task():
    args = ("tfidf_logreg", _TOY_TEXTS, _TOY_Y, ["refund please", "card not arrived"])
    a = fit_predict_proba(*args, n_classes=4, seed=3)
    np.testing.assert_array_equal(a, fit_predict_proba(*args, n_classes=4, seed=3))
    assert list(a.argmax(axis=1)) == [0, 2]


def test_tfidf_logreg_with_one_training_class():
    proba = fit_predict_proba("tfidf_logreg", ["a", "b"], np.array([1, 1]), ["c"], n_classes=3, seed=0)
    np.testing.assert_array_equal(proba, [[0.0, 1.0, 0.0]])


def test_baseline_input_errors():
    with pytest.raises(ValueError, match=r"must be one of \['majority', 'tfidf_logreg'\]; got 'bert'"):
        fit_predict_proba("bert", _TOY_TEXTS, _TOY_Y, ["x"], n_classes=4, seed=0)
    with pytest.raises(ValueError, match=r"must be one of \['majority', 'tfidf_logreg'\]"):
        describe("bert")
    with pytest.raises(ValueError, match=r"'train_y' .* one label per training text"):
        fit_predict_proba("majority", _TOY_TEXTS, _TOY_Y[:-1], ["x"], n_classes=4, seed=0)
    with pytest.raises(ValueError, match=r"'train_y' .* class indices in \[0, 1\]"):
        fit_predict_proba("majority", _TOY_TEXTS, _TOY_Y, ["x"], n_classes=2, seed=0)
    with pytest.raises(ValueError, match=r"'test_texts' .* single str"):
        fit_predict_proba("majority", _TOY_TEXTS, _TOY_Y, "x", n_classes=4, seed=0)


def _read_banking77(split: str) -> tuple[list[str], list[str]]:
    with open(DATA / "banking77" / f"{split}.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["category"] for r in rows]


@pytest.mark.skipif(not (DATA / "banking77").is_dir(), reason=f"banking77 not found under {DATA}")
def test_tfidf_logreg_beats_majority_on_banking77_slice():
    train_x, train_c = _read_banking77("train")
    test_x, test_c = _read_banking77("test")
    classes = sorted(set(train_c))
    index = {c: i for i, c in enumerate(classes)}
    rng = np.random.default_rng(0)
    tr = rng.choice(len(train_x), 800, replace=False)  # the files are sorted by category: sample rows
    te = rng.choice(len(test_x), 300, replace=False)
    x_tr, y_tr = [train_x[i] for i in tr], np.array([index[train_c[i]] for i in tr])
    x_te, y_te = [test_x[i] for i in te], np.array([index[test_c[i]] for i in te])

    preds = {}
    for name in BASELINES:
        proba = fit_predict_proba(name, x_tr, y_tr, x_te, n_classes=len(classes), seed=0)
        assert proba.shape == (300, len(classes))
        preds[name] = proba.argmax(axis=1)
    assert accuracy(y_te, preds["majority"]) < 0.05
    assert accuracy(y_te, preds["tfidf_logreg"]) > 0.5
    res = paired_bootstrap(y_te, preds["tfidf_logreg"], preds["majority"], "accuracy", n_classes=len(classes))
    assert res["p_value"] < 0.05 and res["ci_low"] > 0
