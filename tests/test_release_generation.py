"""Card stage for generation runs: a run directory shaped like the train and evaluate stages write it for a causal LM
(metrics from real dialogsum text through tunewise.evaluate.text_metrics), then the real `card` stage over it.

Checks: the model-index parses with huggingface_hub and carries BLEU/chrF/ROUGE for the right task; the body shows
every score with its CI for fine-tuned and base model, the paired comparisons with p-values, the sacrebleu
signatures, the generation settings, the per-epoch validation table, the slices and the example generations
(escaped); report.html renders the same, escaped, self-contained.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard
from markupsafe import escape

from tunewise.artifacts import DataSummary, Metrics, TrainSummary
from tunewise.card import governance, model_card, report, tables
from tunewise.card import run as card_stage
from tunewise.gate import run as gate_stage
from tunewise.card.sections import GenerationSection, sections_for
from tunewise.evaluate import text_metrics as tm
from tunewise.evaluate.slices import mean_scorers, slice_fields
from tunewise.recipe import Recipe
from tunewise.rundir import RunDir, atomic_write_json, atomic_write_jsonl
from tunewise.stages import RunOptions

DIALOGSUM = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dialogsum" / "dialogsum.test.jsonl"
N_TEST, N_SCORED = 60, 40
PROMPT = "Summarize the dialogue.\n\n{dialogue}"
# what a model could emit: markup that must be shown as text, a table-breaking pipe, markdown emphasis
HOSTILE = '<script>alert("x")</script> <img src=x onerror=alert(1)> | *shouting* & [link](http://evil.test)'
SACRE_VERSION = tm.text_metric_signatures(["bleu"])["bleu"].rsplit(":", 1)[1]


def _rows() -> list[dict]:
    if not DIALOGSUM.is_file():
        pytest.skip(f"shared data not found at {DIALOGSUM} (the repository expects ../shared/data next to it)")
    return [json.loads(line) for line in DIALOGSUM.read_text(encoding="utf-8").splitlines()[:N_TEST]]


def make_recipe(output_dir: Path, **card_fields) -> Recipe:
    return Recipe.model_validate({
        "name": "dialog-sum", "task": "generation", "output_dir": str(output_dir), "seed": 7,
        "data": {"train": {"path": "/data/dialogsum/train.jsonl", "source": "DialogSum (Chen et al. 2021)",
                           "license": "CC-BY-NC-SA-4.0", "contains_personal_data": False},
                 "test": {"path": "/data/dialogsum/test.jsonl", "source": "DialogSum (Chen et al. 2021)",
                          "license": "CC-BY-NC-SA-4.0", "contains_personal_data": False,
                          "completion_field": "summary1", "reference_fields": ["summary2", "summary3"]},
                 "prompt_template": PROMPT, "completion_field": "summary", "slice_fields": ["length"]},
        "model": {"base": "smollm2", "max_length": 512},
        "train": {"epochs": 3, "batch_size": 4, "lr": 2e-4},
        "evaluate": {"max_examples": N_SCORED, "bootstrap_samples": 300},
        "audit": {"enabled": False},  # these tests build the card from hand-made stage outputs
        "probes": {"enabled": False},
        "gate": {"metrics": {"rougeL": 0.99}},  # a rule the hand-made scores fail: the card shows why
        "card": {"intended_use": "Summarising customer dialogues for support agents.",
                 "task_type": "summarization", **card_fields},
    })


def make_eval(rows: list[dict], seed: int = 7) -> tuple[dict, list[dict], list[dict]]:
    """metrics.json and both predictions files, computed with the real text metrics on dialogsum.

    fine_tuned outputs: annotator 1's summary (a strong system); base_model: the dialogue's first 30 words (a weak,
    realistic zero-shot-like output). References: annotators 2 and 3. Example 0's output is hostile markup.
    """
    scored = rows[:N_SCORED]
    refs = [[r["summary2"], r["summary3"]] for r in scored]
    ft = [r["summary1"] for r in scored]
    ft[0] = HOSTILE
    base = [" ".join(r["dialogue"].split()[:30]) for r in scored]
    kw = {"n_resamples": 300, "seed": seed}
    st_ft, st_base = tm.text_stats(ft, refs), tm.text_stats(base, refs)
    length = ["long" if len(r["dialogue"].split()) > 180 else "short" for r in scored]
    per_row = {"rougeL": np.array([x["rougeL"] for x in st_ft.per_example()])}
    slices = slice_fields([{"length": v} for v in length], ["length"], mean_scorers(per_row), min_size=5,
                          n_resamples=300, confidence=0.95, seed=seed)
    comparisons = [{"model": "fine_tuned", "baseline": "base_model", **c}
                   for c in tm.compare_stats(st_ft, st_base, **kw)]
    speed = {"seconds": 80.2, "new_tokens": 4000, "new_tokens_per_second": 49.9}
    metrics = {
        "schema_version": 2, "task": "generation", "n_test": N_TEST, "n_scored": N_SCORED,
        "signature": "tunewise:0.1.0|task:generation|boot:percentile|n:300|conf:0.95|seed:7|test:sha256=0a1b2c3d4e5f",
        "text_metric_signatures": tm.text_metric_signatures(n_refs=2),
        "generation": {"max_new_tokens": 128, "do_sample": False, "temperature": 1.0, "top_p": 1.0, "batch_size": 16,
                       "precision": "bf16", "device": "cpu", "chat_template": True},
        "models": {
            "fine_tuned": {"description": "smollm2 + LoRA r16", "predictions": "eval/predictions.jsonl",
                           "generation_speed": speed, "metrics": tm.score_stats(st_ft, **kw)},
            "base_model": {"description": "smollm2 zero-shot on the same prompts",
                           "predictions": "eval/predictions_base_model.jsonl",
                           "generation_speed": speed, "metrics": tm.score_stats(st_base, **kw)},
        },
        "comparisons": comparisons,
        "slices": slices,
        "held_out": None,
    }

    def lines(preds: list[str], stats: tm.TextStats) -> list[dict]:
        per = stats.per_example()
        return [{"id": r["fname"], "prompt": PROMPT.format(dialogue=r["dialogue"]), "reference": rf[0],
                 "references": rf,
                 "prediction": p, "chrf": round(s["chrf"], 4), "rougeL": round(s["rougeL"], 4),
                 "meta": {"length": lv}, "origin": {"file": "test.jsonl", "line": i + 1}}
                for i, (r, rf, p, s, lv) in enumerate(zip(scored, refs, preds, per, length))]

    # the base model's file in reverse order: the card must join outputs by id, not by position
    return metrics, lines(ft, st_ft), lines(base, st_base)[::-1]


TRAIN_SUMMARY = {
    "schema_version": 1, "task": "generation", "base_model": "smollm2", "base_model_path": "/cache/smollm2-hf",
    "base_model_hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "base_model_gguf": "/cache/smollm2.gguf",
    "method": "lora", "finetune": "lora",
    "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}, "precision": "bf16",
    "precision_reason": "CPU has AMX bf16 tiles", "device": "cpu", "base_weights_dtype": "bfloat16",
    "packing": False,
    "gradient_checkpointing": False, "epochs_run": 3.0, "global_steps": 300, "resumed_from": None,
    "best_checkpoint": "model/checkpoints/checkpoint-200", "best_metric": {"name": "loss", "value": 1.7321},
    "early_stopped": False, "train_examples": 400, "train_rows": 400, "validation_examples": 50,
    "quarantined_examples": 0, "truncated_train_examples": 0, "truncated_prompt_tokens": 0, "trained_tokens": 612345,
    "tokens_per_epoch": 204115, "train_seconds": 1002.4, "eval_seconds_during_training": 20.1,
    "trained_tokens_per_second": 611.3, "processed_tokens_per_second": 650.2, "final_train_loss": 1.61,
    "per_epoch": [{"epoch": 1.0, "eval_loss": 1.9012, "eval_mean_token_accuracy": 0.5712, "step": 100},
                  {"epoch": 2.0, "eval_loss": 1.7321, "eval_mean_token_accuracy": 0.6034, "step": 200},
                  {"epoch": 3.0, "eval_loss": 1.7455, "eval_mean_token_accuracy": 0.6051, "step": 300}],
    "parameters": 136358976, "trainable_parameters": 4884480, "mask_preview": [],
}
TYPED_TRAIN_SUMMARY = TrainSummary.from_json(TRAIN_SUMMARY)


def train_log() -> list[dict]:
    log = []
    for step in range(10, 301, 10):
        log.append({"step": step, "epoch": step / 100, "loss": round(2.6 * 0.995 ** step + 1.2, 4),
                    "learning_rate": 2e-4 * (1 - step / 300)})
    for e in TRAIN_SUMMARY["per_epoch"]:
        log.append({"step": e["step"], "epoch": e["epoch"], "eval_loss": e["eval_loss"],
                    "eval_mean_token_accuracy": e["eval_mean_token_accuracy"]})
    log.append({"step": 300, "epoch": 3.0, "train_runtime": 1002.4, "train_loss": 1.61})
    return log


DATA_SUMMARY = {
    "schema_version": 1,
    "splits": {"train": {"rows": 400, "quarantined": 0, "label_counts": None, "duplicate_ids_renamed": 0,
                         "source_file": "/data/dialogsum/train.jsonl", "sha256": "ab" * 32, "carved_from": None},
               "validation": {"rows": 50, "quarantined": 0, "label_counts": None, "duplicate_ids_renamed": 0,
                              "source_file": "/data/dialogsum/train.jsonl", "sha256": "ab" * 32,
                              "carved_from": "train"},
               "test": {"rows": N_TEST, "quarantined": 0, "label_counts": None, "duplicate_ids_renamed": 0,
                        "source_file": "/data/dialogsum/test.jsonl", "sha256": "cd" * 32, "carved_from": None}},
    "files": {split: {"path": f"/data/dialogsum/{split}.jsonl", "sha256": sha * 32,
                      "source": "DialogSum (Chen et al. 2021)", "license": "CC-BY-NC-SA-4.0",
                      "contains_personal_data": False, "max_rows": None}
              for split, sha in (("train", "ab"), ("test", "cd"))},
    "carved": {"validation": {"from": "train", "fraction": 0.1, "seed": 7, "rows": 50}},
    "labels": None, "on_error": "fail", "max_quarantine_fraction": 0.05, "quarantined_total": 0,
}
TYPED_DATA_SUMMARY = DataSummary.from_json(DATA_SUMMARY)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """A run directory whose data/train/evaluate stages hold realistically shaped outputs; then the real card stage."""
    rows = _rows()
    root_dir = tmp_path_factory.mktemp("runs")
    recipe = make_recipe(root_dir)
    rd = RunDir.for_recipe(recipe)
    metrics, ft_lines, base_lines = make_eval(rows)

    def data(out: Path) -> str:
        atomic_write_json(out / "summary.json", DATA_SUMMARY)
        return "data: fake"

    def train(out: Path) -> str:
        atomic_write_json(out / "train_summary.json", TRAIN_SUMMARY)
        atomic_write_jsonl(out / "train_log.jsonl", train_log())
        return "train: fake"

    def evaluate(out: Path) -> str:
        atomic_write_json(out / "metrics.json", metrics)
        atomic_write_jsonl(out / "predictions.jsonl", ft_lines)
        atomic_write_jsonl(out / "predictions_base_model.jsonl", base_lines)
        return "evaluate: fake"

    rd.run_stage("data", data)
    rd.run_stage("train", train)
    rd.run_stage("evaluate", evaluate)
    assert gate_stage(rd, RunOptions()).ran
    outcome = card_stage(rd, RunOptions())
    assert outcome.ran
    return {"rd": rd, "recipe": recipe, "metrics": metrics, "typed": Metrics.from_json(metrics),
            "ft_lines": ft_lines, "base_lines": base_lines,
            "card_path": rd.stage_dir("card") / "README.md", "report_path": rd.root / "report.html"}


def _section(text: str, heading: str) -> str:
    """The markdown from `heading` up to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    start = text.index(heading + "\n")
    rest = text[start + len(heading) + 1:]
    m = re.search(rf"^#{{1,{len(level)}}} ", rest, flags=re.M)
    return rest[: m.start()] if m else rest


# ---------------------------------------------------------------- model-index


def test_model_index_parses_with_text_metrics(run):
    parsed = ModelCard.load(run["card_path"])
    ft = run["metrics"]["models"]["fine_tuned"]["metrics"]
    results = {(r.metric_type, r.metric_config): r for r in parsed.data.eval_results}
    assert set(results) == {("bleu", None), ("chrf", None), ("rouge", "rouge1"), ("rouge", "rouge2"),
                            ("rouge", "rougeL"), ("exact_match", None)}  # length ratio is a diagnostic, not indexed
    assert results[("bleu", None)].metric_value == pytest.approx(ft["bleu"]["value"], abs=1e-4)
    assert results[("chrf", None)].metric_value == pytest.approx(ft["chrf"]["value"], abs=1e-4)
    assert results[("rouge", "rougeL")].metric_value == pytest.approx(ft["rougeL"]["value"], abs=1e-4)
    assert results[("rouge", "rougeL")].metric_name == "ROUGE-L"
    for r in results.values():
        assert r.task_type == "summarization" and r.task_name == "Summarization"
        assert r.dataset_split == "test" and r.verified is False
        assert r.dataset_name.startswith("test.jsonl")
    assert parsed.data.pipeline_tag == "text-generation"
    assert parsed.data.library_name == "peft"  # the run saves a LoRA adapter
    assert parsed.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert {"tunewise", "text-generation", "summarization", "lora"} <= set(parsed.data.tags)
    assert sorted(parsed.data.metrics) == ["bleu", "chrf", "exact_match", "rouge"]


def test_task_type_defaults_to_text_generation(run, tmp_path):
    recipe = make_recipe(tmp_path, task_type=None)
    md = model_card.build_model_card(recipe, run["typed"], TYPED_TRAIN_SUMMARY, TYPED_DATA_SUMMARY)
    parsed = ModelCard(str(md))
    assert {r.task_type for r in parsed.data.eval_results} == {"text-generation"}
    assert "summarization" not in parsed.data.tags


# ---------------------------------------------------------------- card body


def test_card_metrics_table_has_both_models_with_cis(run):
    text = run["card_path"].read_text(encoding="utf-8")
    metrics = run["metrics"]["models"]
    body = _section(text, "### Metrics")
    assert "| metric | scale | fine_tuned | 95% CI | base_model | 95% CI |" in body
    for name, label, d in (("bleu", "BLEU", 2), ("chrf", "chrF", 2), ("rouge1", "ROUGE-1", 3),
                           ("rouge2", "ROUGE-2", 3), ("rougeL", "ROUGE-L", 3), ("exact_match", "exact match", 3),
                           ("length_ratio", "length ratio", 3)):
        ft, base = metrics["fine_tuned"]["metrics"][name], metrics["base_model"]["metrics"][name]
        row = (f"| {label} | {tables.METRIC_SCALES[name]} | **{ft['value']:.{d}f}** | {ft['ci_low']:.{d}f} – "
               f"{ft['ci_high']:.{d}f} | {base['value']:.{d}f} | {base['ci_low']:.{d}f} – {base['ci_high']:.{d}f} |")
        assert row in body, row
    assert "`base_model`: smollm2 zero-shot on the same prompts" in body
    # the intro and headline follow the generation wording, with the scored subset stated
    assert ("A summarization model fine-tuned from `smollm2` (HuggingFaceTB/SmolLM2-135M-Instruct) "
            "with LoRA adapters") in text
    assert f"Evaluated on {N_SCORED} test examples (of {N_TEST})" in text  # no audit: not called held out
    bleu = metrics["fine_tuned"]["metrics"]["bleu"]
    assert f"- **BLEU:** {bleu['value']:.2f} (95% CI {bleu['ci_low']:.2f}–{bleu['ci_high']:.2f})" in text


def test_card_comparisons_signatures_settings_and_training(run):
    text = run["card_path"].read_text(encoding="utf-8")
    comp = {c["metric"]: c for c in run["metrics"]["comparisons"]}
    c = comp["rougeL"]
    assert c["p_value"] < 0.01 and c["ci_low"] > 0  # the human summaries beat the dialogue lead
    assert (f"| fine_tuned | base_model | ROUGE-L | {c['diff']:+.3f} | {c['ci_low']:+.3f} – {c['ci_high']:+.3f} | "
            f"{tables.fmt_p(c['p_value'])} | yes |") in text
    b = comp["bleu"]
    assert f"| fine_tuned | base_model | BLEU | {b['diff']:+.2f} | {b['ci_low']:+.2f} – {b['ci_high']:+.2f} |" in text
    assert "significant at the 95% level" in text
    sigs = _section(text, "### Metric signatures")
    assert f"| BLEU | `nrefs:2\\|case:mixed\\|eff:no\\|tok:13a\\|smooth:exp\\|version:{SACRE_VERSION}` |" in sigs
    assert "| chrF | `nrefs:2\\|case:mixed\\|eff:yes\\|nc:6\\|nw:0\\|space:no" in sigs
    assert "stemmer:porter" in sigs
    settings = _section(text, "### Generation settings")
    assert f"| Test examples scored | {N_SCORED} of {N_TEST} |" in settings
    assert "| Decoding | greedy (do_sample false) |" in settings and "| Max new tokens | 128 |" in settings
    training = _section(text, "## Training procedure")
    assert "| Method | lora (r 16, alpha 32, dropout 0.05, modules all-linear) |" in training
    assert "| Trained tokens | 612,345 |" in training and "611.3 trained tokens/s" in training
    assert "136,358,976 (4,884,480 trained, 3.58%)" in training
    assert "| 1 | 100 | 1.9012 | 0.571 |" in training and "| 2 | 200 | **1.7321** | 0.603 |" in training
    assert "| 3 | 300 | 1.7455 | 0.605 |" in training
    # classification-only sections are gone
    for heading in ("### Calibration", "### Per-class results", "Labels ("):
        assert heading not in text
    assert 'pipeline("text-generation"' in text and "max_new_tokens=128" in text
    assert "PeftModel.from_pretrained" in text
    limitations = _section(text, "### Limitations")
    assert f"Only the first {N_SCORED} of {N_TEST} test examples" in limitations
    assert "do not measure factual accuracy" in limitations
    assert "test set is small (40 scored examples" in limitations and "ROUGE-L interval is" in limitations


def test_card_slices_use_the_generation_metric(run):
    text = run["card_path"].read_text(encoding="utf-8")
    section = _section(text, "### Slice gaps")
    info = run["metrics"]["slices"]["length"]
    gap = info["gaps"]["rougeL"]
    assert (f"| length | ROUGE-L | {gap['value']:.3f} | {gap['ci_low']:.3f}–{gap['ci_high']:.3f} | "
            f"{gap['highest']} vs {gap['lowest']} |") in section
    for value, g in info["groups"].items():
        r = g["scores"]["rougeL"]
        assert f"| length | {value} | {g['n']} | {r['value']:.3f} | {r['ci_low']:.3f}–{r['ci_high']:.3f} |" in section


def test_card_example_generations_are_escaped(run):
    text = run["card_path"].read_text(encoding="utf-8")
    section = _section(text, "### Example generations")
    ft, base = run["ft_lines"], {r["id"]: r for r in run["base_lines"]}
    assert section.count("**Example ") == 5
    for i, line in enumerate(ft[:5]):
        assert f"**Example {i + 1}** (`{line['id'].replace('_', chr(92) + '_')}`)" in section
        # the base model's output is joined by id, although its file is in reverse order
        base_words = base[line["id"]]["prediction"].split()[:4]
        assert " ".join(base_words).replace("#", "#") in section.replace("\\_", "_")
    # hostile output: no live tag, no broken table, no live link or emphasis
    assert "<script" not in text and "<img" not in text
    assert "&lt;script&gt;alert(\"x\")&lt;/script&gt;" in section
    assert "\\| \\*shouting\\* &amp; \\[link\\](http://evil.test)" in section
    for row in [r for r in section.splitlines() if r.startswith("| **fine_tuned**")]:
        assert len(re.findall(r"(?<!\\)\|", row)) == 5  # 4 cells: the pipe in the output is escaped
    # long prompts are shortened in the middle, and dialogue turns stay on their own lines
    assert " … " in section and "<br>" in section
    assert "Summarize the dialogue." in section


def test_report_renders_generation_sections_escaped(run):
    page = run["report_path"].read_text(encoding="utf-8")
    Path("/tmp/tunewise_report_generation_check.html").write_text(page, encoding="utf-8")
    outside_card = re.sub(r'<pre class="card">.*?</pre>', "", page, flags=re.S)
    assert "<script" not in page.lower() and "<img" not in outside_card
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &lt;img src=x onerror=alert(1)&gt;" in outside_card
    assert "[link](http://evil.test)" in outside_card  # shown literally (escaped HTML, not a link)
    assert not re.search(r'href="(?!#)', outside_card)  # only the SVGs' internal references
    # the three plots: training curves and one forest per scale, ids unique across the inlined SVGs
    assert outside_card.count("<svg") == 4
    for title in ("Training curves", "BLEU, chrF (0–100) with 95% bootstrap CIs", "validation token accuracy",
                  "ROUGE-1, ROUGE-2, ROUGE-L, exact match (0–1) with 95% bootstrap CIs"):
        assert title in page, title
    referenced = re.findall(r'(?:url\(#|href="#)([\w-]+)', page)
    defined = re.findall(r'\sid="([\w-]+)"', page)
    assert referenced and all(defined.count(i) == 1 for i in set(referenced))
    # tables: metrics with CIs for both models, comparisons, settings, epochs, signatures, examples, slices
    ft = run["metrics"]["models"]["fine_tuned"]["metrics"]["chrf"]
    assert f'<td class="n ftv">{ft["value"]:.2f}</td><td>{ft["ci_low"]:.2f} – {ft["ci_high"]:.2f}</td>' in page
    assert "Paired comparisons (model − baseline)" in page and "base_model" in page
    assert "greedy (do_sample false)" in page and "Validation after each epoch" in page
    assert '<tr class="ft"><td class="n">2</td><td class="n">200</td><td class="n">1.7321</td>' in page
    assert f"nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|version:{SACRE_VERSION}" in page
    assert page.count('<div class="example">') == 5
    for line in run["ft_lines"][:5]:
        assert f"<code>{line['id']}</code>" in page
        assert str(escape(line["reference"]))[:60] in page
    assert "#Person1#: " in page  # dialogue turns kept (pre-wrap), not collapsed
    assert "<h2>Slice gaps</h2>" in page and "Largest slice gap per field" in page
    # the gate verdict with its reasons, the cost estimate and both governance tables are in the report too
    assert "<h2>Release gate: FAILED</h2>" in page and "the lower bound" in page
    assert "<h2>Training cost</h2>" in page and "gCO₂e/kWh" in page
    assert "NIST AI RMF 1.0" in page and "ISO/IEC 42001:2023 Annex A" in page
    assert str(run["rd"].root.resolve()) not in outside_card  # no absolute local path in a shared report
    for absent in ("Reliability diagram", "Confusion matrix", "Per-class results", "Calibration</h3>"):
        assert absent not in page
    for url in re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", outside_card, flags=re.I):
        assert not url.lower().startswith(("http://", "https://", "//")), url


# ---------------------------------------------------------------- the pieces


def test_load_examples_joins_by_id_and_stays_inside_the_run(run, tmp_path):
    metrics = run["metrics"]
    examples = model_card.load_examples(run["rd"].root, run["typed"], limit=3)
    assert [e["id"] for e in examples] == [r["id"] for r in run["ft_lines"][:3]]
    base = {r["id"]: r for r in run["base_lines"]}
    for e in examples:
        assert list(e["outputs"]) == ["fine_tuned", "base_model"]
        assert e["outputs"]["base_model"]["prediction"] == base[e["id"]]["prediction"]
        assert len(e["references"]) == 2
    # a predictions path outside the run directory, or a missing file, is skipped (not read, not a crash)
    outside = tmp_path / "secret.jsonl"
    outside.write_text(json.dumps({"id": run["ft_lines"][0]["id"], "prediction": "SECRET"}) + "\n")
    evil = json.loads(json.dumps(metrics))
    evil["models"]["base_model"]["predictions"] = str(Path("..") / ".." / ".." / outside)
    evil["models"]["fine_tuned"]["predictions"] = "eval/missing.jsonl"
    assert model_card.load_examples(run["rd"].root, Metrics.from_json(evil)) == []
    evil["models"]["fine_tuned"]["predictions"] = "eval/predictions.jsonl"
    got = model_card.load_examples(run["rd"].root, Metrics.from_json(evil))
    assert len(got) == 5 and all(list(e["outputs"]) == ["fine_tuned"] for e in got)


def test_example_rows_clip_and_chat_prompts():
    long = "word " * 400
    rows = tables.example_rows([{"id": 1, "prompt": [{"role": "system", "content": "Be brief."},
                                                     {"role": "user", "content": long + "END"}],
                                 "references": ["ref a", "ref b"],
                                 "outputs": {"fine_tuned": {"prediction": "out", "chrf": 51.234, "rougeL": 0.5}}}],
                               prompt_chars=200)
    r = rows[0]
    assert r["prompt"].startswith("system: Be brief.\nuser: word") and r["prompt"].endswith("END")
    assert r["prompt_truncated"] and len(r["prompt"]) <= 203 and " … " in r["prompt"]
    assert r["more_references"] == 1 and r["outputs"][0]["chrf_s"] == "51.2" and r["outputs"][0]["rougeL_s"] == "0.500"


def with_slices(metrics: dict, slices: dict) -> Metrics:
    return Metrics.from_json({**metrics, "slices": slices})


def test_slice_tables_generic_metrics_too_small_groups_and_digits(run):
    group = lambda n, v, lo, hi, judged: {"n": n, "judged": judged,  # noqa: E731
                                          "scores": {"chrf": {"value": v, "ci_low": lo, "ci_high": hi}}}
    metrics = with_slices(run["metrics"], {"topic": {
        "metrics": ["chrf"], "min_size": 3, "n_resamples": 300, "confidence": 0.9, "too_small": ["c"],
        "groups": {"a": group(3, 41.0, 30.0, 50.0, True), "b": group(4, 20.0, 10.0, 25.0, True),
                   "c": group(1, 5.0, None, None, False)},
        "gaps": {"chrf": {"value": 21.0, "ci_low": 8.0, "ci_high": 36.0, "highest": "a", "lowest": "b",
                          "metric_range": 100.0}}}})
    gaps = governance.gap_rows(metrics)
    assert [(r["metric_label"], r["gap_s"], r["ci_s"], r["between"], r["too_small"]) for r in gaps] == [
        ("chrF", "21.00", "8.00–36.00", "a vs b", "c (n=1)")]
    rows = governance.group_rows(metrics)
    assert [(r["value"], r["judged"], r["cells"][0]["value_s"], r["cells"][0]["ci_s"]) for r in rows] == [
        ("a", True, "41.00", "30.00–50.00"), ("b", True, "20.00", "10.00–25.00"), ("c", False, "5.00", "—")]
    # the forest plot and the gate read chrF gaps on the 0-1 scale
    assert governance.gap_forest_rows(metrics) == [("chrF gap", "topic", 0.21, 0.08, 0.36)]
    assert tables.digits("bleu") == 2 and tables.digits("accuracy") == 3
    # the card's header names the slices' own confidence level, not a fixed 95%
    md = model_card.build_model_card(run["recipe"], metrics, TYPED_TRAIN_SUMMARY, TYPED_DATA_SUMMARY).text
    assert "| field | metric | largest gap | 90% CI |" in md and "| topic | c (too small) | 1 |" in md


def test_generation_and_chat_use_the_generation_section(run):
    assert [type(s) for s in sections_for(run["recipe"])] == [GenerationSection]


def test_report_without_prediction_files_says_so(run):
    recipe, metrics = run["recipe"], run["typed"]
    md = model_card.build_model_card(recipe, metrics, TYPED_TRAIN_SUMMARY, TYPED_DATA_SUMMARY)
    assert "### Example generations" not in md.text
    page = report.render_report(recipe, metrics, [], TYPED_TRAIN_SUMMARY, TYPED_DATA_SUMMARY, str(md))
    assert "No prediction files were found for this run." in page and "no training log" in page


def test_chat_run_without_baseline(run, tmp_path):
    """A chat run scored without the base-model baseline: text-generation task, no comparison, no 'against' claim."""
    recipe = Recipe.model_validate({"name": "support-chat", "task": "chat", "output_dir": str(tmp_path),
                                    "data": {"train": "/data/chat/train.jsonl"}, "model": {"base": "smollm2"},
                                    "evaluate": {"baselines": []}})
    metrics = json.loads(json.dumps(run["metrics"]))
    metrics.update(task="chat", comparisons=[], n_scored=N_TEST)
    del metrics["models"]["base_model"]
    metrics = Metrics.from_json(metrics)
    md = model_card.build_model_card(recipe, metrics, TYPED_TRAIN_SUMMARY, TYPED_DATA_SUMMARY)
    parsed = ModelCard(str(md))
    assert {r.task_type for r in parsed.data.eval_results} == {"text-generation"}
    assert "A chat model fine-tuned from `smollm2`" in md.text
    # no audit ran, so the card does not call the test split held out
    assert f"Evaluated on {N_TEST} test examples:" in md.text and "against the base model" not in md.text
    assert "not known to be held out" in md.text
    assert "_No comparisons were run._" in md.text
    assert "| metric | scale | fine_tuned | 95% CI |\n" in md.text
    assert "OpenAI-style messages, loss on assistant turns" in md.text
    page = report.render_report(recipe, metrics, train_log(), TYPED_TRAIN_SUMMARY, TYPED_DATA_SUMMARY, str(md))
    assert "No comparisons were run." in page and page.count("<svg") == 4  # 3 + the slice-gap forest
