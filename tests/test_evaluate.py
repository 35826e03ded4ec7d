"""Per-slice accuracy in the evaluate stage, on hand-made rows with known answers."""

from __future__ import annotations

import numpy as np

from tunewise.artifacts.metrics import SliceField
from tunewise.artifacts.rows import Row
from tunewise.evaluate.classification import MISSING_SLICE_VALUE, slice_accuracy
from tunewise.card.tables import slice_rows
from tunewise.recipe import validate_recipe


def _rows(channels):
    return [Row(id=str(i), text="t", label="a", meta={"channel": c}, origin=f"f:{i}") for i, c in enumerate(channels)]


def test_slice_accuracy_per_value_gap_and_missing_values():
    recipe = validate_recipe({"name": "s", "data": {"train": "x.jsonl", "slice_fields": ["channel"]},
                              "evaluate": {"bootstrap_samples": 200}})
    channels = ["chat"] * 10 + ["email"] * 10 + [None] * 4
    y = np.zeros(24, dtype=int)
    preds = np.array([0] * 5 + [1] * 5 + [0] * 10 + [0, 0, 0, 1])  # chat 50%, email 100%, missing 75%
    out = slice_accuracy(_rows(channels), y, preds, 2, ["channel"], recipe)["channel"]
    values = out["values"]
    assert set(values) == {"chat", "email", MISSING_SLICE_VALUE}
    assert values["chat"]["n"] == 10 and values["chat"]["accuracy"]["value"] == 0.5
    assert values["email"]["accuracy"]["value"] == 1.0
    assert values[MISSING_SLICE_VALUE]["accuracy"]["value"] == 0.75
    lo, hi = values["chat"]["accuracy"]["ci_low"], values["chat"]["accuracy"]["ci_high"]
    assert lo < 0.5 < hi
    assert out["accuracy_gap"] == 0.5

    rows = slice_rows({"channel": SliceField.model_validate(out)})  # as the card reads it from metrics.json
    assert [r["value"] for r in rows] == ["(missing)", "chat", "email"]
    assert rows[0]["gap_s"] == "0.500" and rows[1]["gap_s"] == ""
