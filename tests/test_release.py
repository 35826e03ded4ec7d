"""Card-stage rendering: plots (SVG), model card (model-index round-trip), report.html (self-contained, escaped)."""

from __future__ import annotations

import importlib
import json
import random
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from pydantic import ValidationError

from tunewise.artifacts import DataSummary, Metrics, TrainSummary
from tunewise.card import plots, report, tables
from tunewise.recipe import Recipe

card_mod = importlib.import_module("tunewise.card.model_card")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LABELS6 = ["refund_request", "card_lost", "balance_inquiry", "transfer_failed", "change_pin", "exchange_rate"]
SIGNATURE = ("tunewise:0.1.0|task:classification|boot:percentile|n:1000|conf:0.95|seed:42|"
             "test:sha256=1a2b3c4d5e6f|sklearn:1.9.1|scipy:1.17.1")
REPORT_CHECK = Path("/tmp/tunewise_report_check.html")


# ---------------------------------------------------------------- fixtures that follow the artifact schemas


def labels77() -> list[str]:
    """Banking77's real intent names when the shared data is there (long names test the layout), else synthetic."""
    cats = SHARED / "banking77" / "categories.json"
    if cats.is_file():
        return json.loads(cats.read_text())
    return [f"intent_{i:02d}_{w}" for i, w in enumerate(["card_payment_fee_charged", "top_up_failed"] * 39)][:77]


def confusion(labels: list[str], support: int, seed: int, weak: int = 2) -> list[list[int]]:
    """Mostly diagonal counts; the first `weak` classes leak a lot into their neighbour."""
    rng = random.Random(seed)
    k = len(labels)
    m = [[0] * k for _ in range(k)]
    for i in range(k):
        wrong = rng.randint(8, 14) if i < weak else rng.randint(0, 3)
        m[i][i] = support - wrong
        for _ in range(wrong):
            j = (i + 1) % k if i < weak else rng.randrange(k)
            m[i][j if j != i else (i + 1) % k] += 1
    return m


def per_class(labels: list[str], m: list[list[int]]) -> dict:
    out = {}
    for i, label in enumerate(labels):
        tp, pred, true = m[i][i], sum(row[i] for row in m), sum(m[i])
        p, r = (tp / pred if pred else 0.0), tp / true
        out[label] = {"precision": round(p, 4), "recall": round(r, 4),
                      "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0, "support": true}
    return out


def metric(value: float, half: float) -> dict:
    return {"value": value, "ci_low": round(max(0.0, value - half), 4), "ci_high": round(min(1.0, value + half), 4),
            "n_resamples": 1000, "confidence": 0.95, "method": "percentile"}


def calibration(ece: float, n: int) -> dict:
    bins = []
    for i in range(15):
        lo, hi = round(i / 15, 4), round((i + 1) / 15, 4)
        count = 0 if i < 5 else (n // 40 if i < 13 else n // 4)
        conf = (lo + hi) / 2
        bins.append({"lo": lo, "hi": hi, "count": count,
                     "accuracy": None if not count else round(min(1.0, conf - 0.04 + 0.01 * (i % 3)), 4),
                     "confidence": None if not count else round(conf, 4)})
    return {"ece": ece, "brier": 0.11, "bins": bins}


def make_metrics(labels: list[str], support: int = 40, seed: int = 0) -> dict:
    m = confusion(labels, support, seed)
    n = len(labels) * support
    acc = round(sum(m[i][i] for i in range(len(labels))) / n, 4)
    pc = per_class(labels, m)
    mf1 = round(sum(r["f1"] for r in pc.values()) / len(pc), 4)
    gap = acc - 1 / len(labels)  # fine-tuned minus majority
    model = lambda desc, a, f, e: {"description": desc, "predictions": "eval/predictions.jsonl",  # noqa: E731
                                   "metrics": {"accuracy": metric(a, 0.03), "macro_f1": metric(f, 0.035)},
                                   "calibration": calibration(e, n)}
    return {
        "schema_version": 2, "task": "classification", "n_test": n, "n_scored": n, "labels": labels,
        "signature": SIGNATURE,
        "models": {
            "fine_tuned": model("minilm fine-tuned (full, bf16 autocast)", acc, mf1, 0.031),
            "majority": model("predicts the most frequent training label", round(1 / len(labels), 4),
                              round(1 / len(labels) ** 2, 4), 0.4),
            "tfidf_logreg": model("TF-IDF word+char n-grams, logistic regression", round(acc - 0.02, 4),
                                  round(mf1 - 0.02, 4), 0.06),
        },
        "comparisons": [
            {"model": "fine_tuned", "baseline": "tfidf_logreg", "metric": "accuracy", "diff": 0.02,
             "ci_low": -0.01, "ci_high": 0.05, "p_value": 0.2, "n_resamples": 1000, "confidence": 0.95},
            {"model": "fine_tuned", "baseline": "majority", "metric": "accuracy", "diff": round(gap, 4),
             "ci_low": round(gap - 0.04, 4), "ci_high": round(gap + 0.04, 4),
             "p_value": 0.0, "n_resamples": 1000, "confidence": 0.95},
        ],
        "slices": {},
        "held_out": None,
        "per_class": pc,
        "confusion_matrix": m,
    }


def make_train_log(steps: int = 200, eval_every: int = 25) -> list[dict]:
    log = []
    for step in range(10, steps + 1, 10):
        log.append({"step": step, "epoch": step / 25, "loss": round(2.2 * 0.985 ** step + 0.05, 4),
                    "learning_rate": 1e-4 * (1 - step / steps), "grad_norm": 3.1})
        if step % eval_every == 0:
            log.append({"step": step, "epoch": step / 25, "eval_loss": round(1.9 * 0.99 ** step + 0.2, 4),
                        "eval_accuracy": round(0.95 - 0.6 * 0.98 ** step, 4),
                        "eval_macro_f1": round(0.93 - 0.65 * 0.98 ** step, 4)})
    # Trainer's closing summary entry has no `loss`: the plot must ignore it
    log.append({"step": steps, "epoch": 8.0, "train_runtime": 41.2, "train_loss": 0.61})
    return log


TRAIN_SUMMARY = TrainSummary.from_json({
    "schema_version": 1, "task": "classification", "base_model": "minilm", "base_model_path": "/opt/models/minilm",
    "base_model_hub_id": "sentence-transformers/all-MiniLM-L6-v2", "method": "full", "precision": "bf16",
    "precision_reason": "CPU has AMX/AVX-512 bf16", "device": "cpu", "epochs_run": 8.0, "global_steps": 200,
    "resumed_from": None, "best_checkpoint": "model/checkpoints/checkpoint-200",
    "best_metric": {"name": "macro_f1", "value": 0.91}, "early_stopped": False, "train_examples": 720,
    "validation_examples": 80, "truncated_train_examples": 0, "train_seconds": 41.2,
    "eval_seconds_during_training": 1.2, "train_examples_per_second": 140.1, "final_train_loss": 0.61,
    "parameters": 22713216, "labels": LABELS6})


TRAIN_SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
TEST_SHA = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"


def make_data_summary(labels: list[str], test_license: str | None = None) -> dict:
    counts = {label: 720 // len(labels) for label in labels}
    split = lambda rows, quarantined, file, sha, carved: {  # noqa: E731
        "rows": rows, "quarantined": quarantined, "label_counts": counts, "duplicate_ids_renamed": 0,
        "source_file": file, "sha256": sha, "carved_from": carved}
    return {
        "schema_version": 1,
        "splits": {
            "train": split(720, 3, "/data/support/train.jsonl", TRAIN_SHA, None),
            "validation": split(80, 0, "/data/support/train.jsonl", TRAIN_SHA, "train"),
            "test": split(240, 1, "/data/support/test.jsonl", TEST_SHA, None),
        },
        "files": {
            "train": {"path": "/data/support/train.jsonl", "sha256": TRAIN_SHA, "source": "support-team export 2024-05",
                      "license": "CC0-1.0", "contains_personal_data": False, "max_rows": None},
            "test": {"path": "/data/support/test.jsonl", "sha256": TEST_SHA, "source": None, "license": test_license,
                     "contains_personal_data": None, "max_rows": None},
        },
        "carved": {"validation": {"from": "train", "fraction": 0.1, "seed": 42, "rows": 80}},
        "labels": {"count": len(labels), "derived": False},
        "on_error": "fail", "max_quarantine_fraction": 0.05, "quarantined_total": 4,
    }


def make_recipe(**card) -> Recipe:
    return Recipe.model_validate({
        "name": "support-intents",
        "data": {"train": {"path": "/data/support/train.jsonl", "source": "support-team export 2024-05",
                           "license": "CC0-1.0", "contains_personal_data": False},
                 "test": "/data/support/test.jsonl", "labels": LABELS6},
        "model": {"base": "minilm"},
        "card": {"intended_use": "Routing customer-support messages to the right queue.",
                 "out_of_scope_use": "Decisions about refunds without a human in the loop.",
                 "limitations": ["English only."], "authors": "Support ML team", **card},
    })


@pytest.fixture(scope="module")
def bundle():
    """(recipe, metrics, train log, train summary, data summary), the artifacts typed as the card stage reads them."""
    metrics = Metrics.from_json(make_metrics(LABELS6))
    return make_recipe(), metrics, make_train_log(), TRAIN_SUMMARY, DataSummary.from_json(make_data_summary(LABELS6))


def svg_texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)  # raises if the SVG is not well-formed XML
    return ["".join(el.itertext()) for el in root.iter("{http://www.w3.org/2000/svg}text")]


# ---------------------------------------------------------------- plots


def test_loss_curves_plots_train_and_validation_series():
    texts = svg_texts(plots.loss_curves(make_train_log()))
    for label in ("train loss", "validation loss", "validation accuracy", "validation macro-F1", "step",
                  "validation score"):
        assert label in texts


def test_loss_curves_empty_log_says_so():
    texts = svg_texts(plots.loss_curves([]))
    assert "no training log" in texts


def test_confusion_matrix_small_k_annotates_counts(bundle):
    _, metrics, *_ = bundle
    texts = svg_texts(plots.confusion_matrix(LABELS6, metrics.confusion_matrix))
    for label in LABELS6:
        assert texts.count(label) == 2  # x and y tick labels
    diagonal = {str(metrics.confusion_matrix[i][i]) for i in range(6)}
    assert diagonal <= set(texts)
    assert "share of the true class" in texts


def test_confusion_matrix_77_classes_has_no_cell_numbers():
    labels = labels77()
    m = confusion(labels, 40, seed=3)
    svg = plots.confusion_matrix(labels, m)
    texts = svg_texts(svg)
    assert all(texts.count(label) == 2 for label in labels)
    numeric = [t for t in texts if t.isdigit()]
    assert len(numeric) < 15  # only axis ticks, not 77x77 cell counts
    assert len(svg) < 400_000  # the cells are one embedded image, not 5,929 paths


def test_plot_text_with_dollar_is_literal():
    labels = ["fee_$5", "fee_$10", "other"]
    texts = svg_texts(plots.confusion_matrix(labels, [[5, 1, 0], [0, 6, 0], [1, 0, 4]]))
    assert "fee_$5" in texts and "fee_$10" in texts


def test_ci_forest_rows_for_every_model_and_metric(bundle):
    from tunewise.card.sections import ClassificationSection

    _, metrics, log, *_ = bundle
    texts = svg_texts(ClassificationSection().plots(metrics, log)["ci_forest"])
    for model in ("fine_tuned", "majority", "tfidf_logreg"):
        for metric in ("accuracy", "macro_f1"):
            assert f"{metric} · {model}" in texts
    ft = metrics.models["fine_tuned"].metrics["accuracy"]
    assert f"{ft.value:.3f}  [{ft.ci_low:.3f}, {ft.ci_high:.3f}]" in texts
    assert any("95% bootstrap CIs" in t and "n = 240" in t for t in texts)


def test_reliability_diagram_shows_ece_and_counts(bundle):
    _, metrics, *_ = bundle
    cal = metrics.to_json()["models"]["fine_tuned"]["calibration"]
    texts = svg_texts(plots.reliability_diagram(cal["bins"], cal["ece"]))
    assert any("ECE 0.031" in t for t in texts)
    assert {str(b["count"]) for b in cal["bins"] if b["count"]} <= set(texts)
    assert "perfect calibration" in texts
    assert "no calibration data" in svg_texts(plots.reliability_diagram([], None))


def test_svgs_are_deterministic(bundle):
    _, metrics, log, *_ = bundle
    from tunewise.card.sections import forest_rows

    assert plots.ci_forest(forest_rows(metrics), title="t") == plots.ci_forest(forest_rows(metrics), title="t")
    assert plots.loss_curves(log) == plots.loss_curves(log)


# ---------------------------------------------------------------- model card


def test_card_model_index_round_trips(bundle):
    recipe, metrics, _, summary, data = bundle
    card = card_mod.build_model_card(recipe, metrics, summary, data)
    parsed = ModelCard(str(card))
    results = {r.metric_type: r for r in parsed.data.eval_results}
    ft = metrics.fine_tuned().metrics
    assert results["accuracy"].metric_value == pytest.approx(ft["accuracy"].value, abs=1e-4)
    assert results["f1"].metric_value == pytest.approx(ft["macro_f1"].value, abs=1e-4)
    assert results["f1"].metric_config == "macro"
    for r in results.values():
        assert r.task_type == "text-classification"
        assert r.dataset_split == "test"
        assert r.verified is False
    assert parsed.data.model_name == "support-intents"
    assert parsed.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert parsed.data.library_name == "transformers"
    assert {"tunewise", "text-classification"} <= set(parsed.data.tags)
    assert parsed.data.license == "apache-2.0"
    assert parsed.data.language == ["en"]


def test_card_sections_and_content(bundle):
    recipe, metrics, _, summary, data = bundle
    text = card_mod.build_model_card(recipe, metrics, summary, data, datacard_path="../audit/datacard.md").text
    headings = re.findall(r"^#{2,3} (.+)$", text, flags=re.M)
    # the Mitchell et al. sections, in full
    for section in ("Model details", "Intended use", "Out-of-scope use", "Factors", "Metrics", "Evaluation data",
                    "Training data", "Quantitative analyses", "Paired comparisons", "Calibration", "Slice gaps",
                    "Bias probes", "Ethical considerations", "Caveats and recommendations", "Limitations",
                    "Recommendations", "Training procedure", "Reproducibility", "How to use"):
        assert section in headings, section
    assert "Routing customer-support messages" in text
    assert "[dataset card](../audit/datacard.md)" in text
    assert SIGNATURE in text
    assert f"`{recipe.fingerprint()}`" in text
    assert "tunewise run runs/support-intents-" in text
    assert 'pipeline("text-classification"' in text
    assert "`9f86d081884c`" in text and "train.jsonl" in text and "CC0-1.0" in text
    assert "English only." in text  # recipe limitation
    assert "test set is small (240 examples" in text
    # comparisons in plain words: one excludes zero, one does not
    assert "cannot tell them apart at the 95% level" in text
    assert "significant at the 95% level" in text
    assert "| tfidf_logreg | accuracy | +0.020 | -0.010 – +0.050 | 0.200 | no |" in text


def test_card_per_class_worst_first_and_low_f1_limitation(bundle):
    recipe, metrics, _, summary, data = bundle
    text = card_mod.build_model_card(recipe, metrics, summary, data).text
    section = text.split("### Per-class results", 1)[1].split("### Slice gaps", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| label")]
    f1s = [float(r.split("|")[4]) for r in rows]
    assert len(rows) == 6 and f1s == sorted(f1s)
    weak = [label for label, r in metrics.per_class.items() if r.f1 < 0.8]
    assert weak, "fixture should have weak classes"
    limitations = text.split("### Limitations", 1)[1]
    assert all(label in limitations for label in weak)
    assert "below 0.80" in limitations


def test_undeclared_licence_and_personal_data_warn(bundle):
    recipe, metrics, _, summary, _ = bundle
    undeclared = DataSummary.from_json(make_data_summary(LABELS6))
    text = card_mod.build_model_card(recipe, metrics, summary, undeclared).text
    assert "| test | test.jsonl | 240 | 1 | not declared | not declared | not declared |" in text
    assert "licence of the test data (test.jsonl) is not declared" in text
    assert "does not declare whether it contains personal data" in text
    # validation is carved from train: it inherits train's declared provenance, so no warning for it
    assert "validation and" not in text and "licence of the train" not in text
    declared = make_data_summary(LABELS6, test_license="CC-BY-4.0")
    declared["files"]["test"].update(source="vendor", contains_personal_data=False)
    declared = DataSummary.from_json(declared)
    assert "Warning" not in card_mod.build_model_card(recipe, metrics, summary, declared).text


def test_a_sparse_data_summary_is_refused_not_filled_in():
    """The card never guesses what the data stage did: a summary missing what it always writes does not validate."""
    sparse = {"schema_version": 1, "splits": {"train": {"rows": 10}, "test": {"rows": 5}}}
    with pytest.raises(ValidationError) as info:
        DataSummary.from_json(sparse)
    assert "splits.train.quarantined" in str(info.value) and "files" in str(info.value)


def test_hub_ids_for_base_model_and_datasets(tmp_path):
    assert card_mod.hub_base_model("minilm") == "sentence-transformers/all-MiniLM-L6-v2"
    assert card_mod.hub_base_model("org/some-model") == "org/some-model"
    assert card_mod.hub_base_model(str(tmp_path)) is None
    assert card_mod.hub_base_model("./models/x") is None
    recipe = Recipe.model_validate({"name": "b77", "data": {"train": "hf:PolyAI/banking77:train",
                                                            "test": "hf:PolyAI/banking77:test"}})
    assert card_mod.hub_datasets(recipe) == ["PolyAI/banking77"]
    hub = make_data_summary(LABELS6)
    hub["splits"]["test"].update(source_file="hf:PolyAI/banking77:test", sha256=None)
    hub["files"]["test"].update(path="hf:PolyAI/banking77:test", sha256=None)
    ds_type, ds_name = card_mod._test_dataset(recipe, DataSummary.from_json(hub))
    assert ds_type == ds_name == "PolyAI/banking77"


# ---------------------------------------------------------------- report


def _render(bundle, **card):
    recipe, metrics, log, summary, data = bundle
    if card:
        recipe = make_recipe(**card)
    md = card_mod.build_model_card(recipe, metrics, summary, data, datacard_path="../audit/datacard.md")
    return report.render_report(recipe, metrics, log, summary, data, str(md))


def test_report_is_self_contained_and_has_four_plots(bundle):
    html = _render(bundle)
    REPORT_CHECK.write_text(html, encoding="utf-8")
    for url in re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", html, flags=re.I):
        assert not url.lower().startswith(("http://", "https://", "//")), url
    assert "<script" not in html.lower()
    assert "<link" not in html.lower() and "@import" not in html and "url(http" not in html
    assert html.count("<svg") == 4 and "<?xml" not in html and "<!DOCTYPE svg" not in html
    # beyond the SVG namespace names and the card's own text, no URL appears at all
    outside_card = re.sub(r'<pre class="card">.*?</pre>', "", html, flags=re.S)
    assert "http" not in re.sub(r'xmlns(:\w+)?="http[^"]*"', "", outside_card)
    # ids that SVG parts refer to (clip paths, markers) must not clash between the inlined plots
    referenced = re.findall(r'(?:url\(#|href="#)([\w-]+)', html)
    defined = re.findall(r'\sid="([\w-]+)"', html)
    assert referenced and all(defined.count(i) == 1 for i in set(referenced))
    for title in ("Training curves", "Confusion matrix (test)", "Test metrics with 95% bootstrap CIs",
                  "Reliability diagram"):
        assert title in html
    assert "support-intents" in html and "Routing customer-support messages" in html
    assert '<details>' in html and '<pre class="card">' in html and "## Reproducibility" in html
    assert SIGNATURE in html
    assert "licence of the test data (test.jsonl) is not declared" in html
    assert "0.200" in html and "tfidf_logreg" in html  # comparison table


def test_report_escapes_user_text(bundle):
    html = _render(bundle, intended_use='<script>alert("x")</script> & <b>bold</b>')
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(" in html
    assert "<b>bold</b>" not in html


def test_report_77_labels_and_empty_log():
    labels = labels77()
    metrics = Metrics.from_json(make_metrics(labels, support=40, seed=5))
    data = DataSummary.from_json(make_data_summary(labels))
    recipe = make_recipe()
    md = card_mod.build_model_card(recipe, metrics, TRAIN_SUMMARY, data)
    html = report.render_report(recipe, metrics, [], TRAIN_SUMMARY, data, str(md))
    assert html.count("<svg") == 4
    assert "no training log" in html
    assert all(label in html for label in labels)
    assert "classes have a test F1 below 0.80" in md.text


def test_tables_format_missing_values():
    assert tables.fmt(None) == "—" and tables.fmt(float("nan")) == "—"
    assert tables.fmt(0.02, signed=True) == "+0.020"
    assert tables.fmt_p(0.0) == "< 0.001"
