"""Slice gaps and the held-out score in the evaluate stage, on hand-made rows with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tunewise.artifacts.metrics import SliceField
from tunewise.artifacts.rows import Row
from tunewise.errors import RunDirError
from tunewise.evaluate.classification import classification_slices, held_out_scores
from tunewise.evaluate.slices import MISSING_SLICE_VALUE, mean_scorers, slice_fields
from tunewise.recipe import validate_recipe


def _rows(channels):
    return [Row(id=str(i), text="t", label="a", meta={"channel": c}, origin=f"f:{i}") for i, c in enumerate(channels)]


def _recipe(**evaluate):
    return validate_recipe({"name": "s", "data": {"train": "x.jsonl", "slice_fields": ["channel"]},
                            "evaluate": {"bootstrap_samples": 400, **evaluate}})


def test_slices_per_group_gap_with_ci_and_too_small_groups():
    recipe = _recipe(min_slice_size=10)
    channels = ["chat"] * 40 + ["email"] * 40 + [None] * 4
    y = np.zeros(84, dtype=int)
    # chat 50% right, email 90% right, missing 75% right
    preds = np.array([0] * 20 + [1] * 20 + [0] * 36 + [1] * 4 + [0, 0, 0, 1])
    out = SliceField.model_validate(classification_slices(_rows(channels), y, preds, 2, recipe)["channel"])
    assert out.metrics == ["accuracy", "macro_f1"] and out.min_size == 10
    assert list(out.groups) == [MISSING_SLICE_VALUE, "chat", "email"]
    assert out.groups["chat"].n == 40 and out.groups["chat"].scores["accuracy"].value == 0.5
    assert out.groups["email"].scores["accuracy"].value == 0.9
    assert out.too_small == [MISSING_SLICE_VALUE] and not out.groups[MISSING_SLICE_VALUE].judged
    chat = out.groups["chat"].scores["accuracy"]
    assert chat.ci_low < 0.5 < chat.ci_high
    gap = out.gaps["accuracy"]
    # the too-small group (75%) is left out: the gap is email - chat, not a gap involving it
    assert gap.value == pytest.approx(0.4) and (gap.highest, gap.lowest) == ("email", "chat")
    assert 0.15 < gap.ci_low < 0.4 < gap.ci_high < 0.65 and gap.metric_range == 1.0
    assert out.gaps["macro_f1"] is not None


def test_gap_is_null_with_fewer_than_two_judged_groups():
    recipe = _recipe(min_slice_size=30)
    out = SliceField.model_validate(classification_slices(
        _rows(["chat"] * 40 + ["email"] * 5), np.zeros(45, dtype=int), np.zeros(45, dtype=int), 2, recipe)["channel"])
    assert out.too_small == ["email"] and out.gaps == {"accuracy": None, "macro_f1": None}
    # an identical score everywhere: a zero-width interval, never a missing one
    assert out.groups["chat"].scores["accuracy"].ci_low == out.groups["chat"].scores["accuracy"].ci_high == 1.0


def test_generation_slices_on_0_100_scores_keep_their_range():
    rng = np.random.default_rng(0)
    chrf = np.concatenate([rng.normal(60, 5, 50), rng.normal(40, 5, 50)])
    meta = [{"topic": "a"}] * 50 + [{"topic": "b"}] * 50
    out = SliceField.model_validate(slice_fields(meta, ["topic"], mean_scorers({"chrf": chrf}), min_size=20,
                                                 n_resamples=300, confidence=0.9, seed=1)["topic"])
    gap = out.gaps["chrf"]
    assert gap.metric_range == 100.0 and gap.value == pytest.approx(chrf[:50].mean() - chrf[50:].mean())
    assert gap.ci_low < gap.value < gap.ci_high and out.confidence == 0.9


def test_held_out_score_leaves_out_the_rows_the_audit_flagged(tmp_path):
    recipe = _recipe()
    rows = _rows(["chat"] * 20)
    y = np.zeros(20, dtype=int)
    preds = np.array([0] * 15 + [1] * 5)  # rows 15-19 wrong
    lines = [{"check": "leak", "kind": "near", "split": "test", "id": str(i), "origin": "t:1", "of": "x"}
             for i in (15, 16, 17)]
    lines += [{"check": "leak", "kind": "near", "split": "validation", "id": "0"},  # another split: kept
              {"check": "near_duplicate", "kind": "near", "split": "test", "id": "1", "cluster": 3}]
    (tmp_path / "flagged.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = held_out_scores(rows, y, preds, 2, recipe, tmp_path)
    assert out["flagged_rows"] == 3 and out["kept_rows"] == 17 and out["kinds"] == {"near": 3}
    assert out["metrics"]["accuracy"]["value"] == pytest.approx(15 / 17)
    assert held_out_scores(rows, y, preds, 2, recipe, None) is None  # no audit: nothing to leave out
    (tmp_path / "flagged.jsonl").write_text('{"check": "leak"}\n')
    with pytest.raises(RunDirError, match=r"flagged.jsonl:1: not a flagged-row line"):
        held_out_scores(rows, y, preds, 2, recipe, tmp_path)
