"""The faithfulness checker and stage: sentence-pair input, the leak-free document-grouped data prep, a small
checker trained by tunewise itself on real SummEdits rows, and the stage's artifact on a generation run."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tunewise.artifacts.faithfulness import FaithfulnessResults
from tunewise.artifacts.rows import Row
from tunewise.errors import RecipeError, RunDirError, TunewiseError
from tunewise.recipe import FaithfulnessConfig, load_recipe

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
LEAKING = {"summedits": ("system", "seed_id", "edit_types"), "dialogue_faithfulness": ("error_types", "sentences",
                                                                                        "system", "group_idx")}


def _make_faithfulness():
    """examples/data/make_faithfulness.py as a module."""
    spec = importlib.util.spec_from_file_location("make_faithfulness", REPO / "examples" / "data" / "make_faithfulness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def faith_splits(shared_data):
    if not (shared_data / "summedits" / "pairs.jsonl").is_file():
        pytest.skip("summedits not in the shared data")
    return _make_faithfulness().build(shared_data, seed=13, evidence_chars=500)


# ---------------------------------------------------------------- sentence-pair input


def test_pair_input_encodes_as_a_tokenizer_text_pair(tmp_path):
    from tunewise.models import resolve_base_model
    from tunewise.tasks import task_for

    recipe = load_recipe(_recipe_file(tmp_path, {"data": {"train": "t.jsonl", "text_field": "summary",
                                                          "text_pair_field": "source"},
                                                 "model": {"base": "minilm", "max_length": 24}}))
    task = task_for(recipe)
    tok = task.load_tokenizer(resolve_base_model("minilm").path)
    summary, source = "Anna paid 40 dollars.", " ".join(["The shop sold bread and milk to Anna for 40 dollars."] * 6)
    rows = [Row("a", summary, "faithful", {}, "t.jsonl:1", text_pair=source)]
    dataset, truncated = task.encode(tok, rows, recipe, split="train", labels=["faithful", "unfaithful"])
    ids, types = dataset[0]["input_ids"], dataset[0]["token_type_ids"]
    assert truncated == 1 and len(ids) == 24
    assert ids.count(tok.sep_token_id) == 2 and ids[0] == tok.cls_token_id
    first = tok(summary)["input_ids"]
    assert ids[:len(first)] == first  # the summary survives whole; the longer source is what got cut
    assert set(types[:len(first)]) == {0} and set(types[len(first):]) == {1}
    assert ids == tok(summary, source, truncation=True, max_length=24)["input_ids"]


def test_pair_field_is_read_checked_and_written(tmp_path):
    from tunewise.data import read_labeled_file
    from tunewise.data.prepare import prepare_data

    train = tmp_path / "t.jsonl"
    train.write_text("".join(json.dumps({"summary": f"s{i}", "source": f"doc {i}", "label": "ab"[i % 2]}) + "\n"
                             for i in range(20)) + json.dumps({"summary": "s", "label": "a"}) + "\n")
    with pytest.raises(TunewiseError, match=r"t\.jsonl:21.*'source'.*data\.text_pair_field"):
        read_labeled_file(train, text_field="summary", text_pair_field="source", label_field="label")
    rows, bad = read_labeled_file(train, text_field="summary", text_pair_field="source", label_field="label",
                                  on_error="quarantine", max_quarantine_fraction=0.5)
    assert [(r.text, r.text_pair) for r in rows[:2]] == [("s0", "doc 0"), ("s1", "doc 1")] and len(bad) == 1
    recipe = load_recipe(_recipe_file(tmp_path, {"data": {"train": str(train), "text_field": "summary",
                                                          "text_pair_field": "source", "on_error": "quarantine",
                                                          "max_quarantine_fraction": 0.5}}))
    prepare_data(recipe, tmp_path / "data")
    record = json.loads((tmp_path / "data" / "train.jsonl").read_text().splitlines()[0])
    assert record["text"].startswith("s") and record["text_pair"].startswith("doc ")
    with pytest.raises(RecipeError, match="distinct"):
        load_recipe(_recipe_file(tmp_path, {"data": {"train": "t.jsonl", "text_pair_field": "text"}}))
    with pytest.raises(RecipeError, match="classification only"):
        load_recipe(_recipe_file(tmp_path, {"task": "generation", "data": {"train": "t.jsonl",
                                                                           "text_pair_field": "source"}}))


def _recipe_file(folder: Path, raw: dict) -> Path:
    path = folder / f"r{len(list(folder.glob('r*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump({"name": "pairs", **raw}), encoding="utf-8")
    return path


# ---------------------------------------------------------------- data prep


def test_data_prep_never_splits_a_document(faith_splits):
    docs = {name: {r["doc_id"] for r in rows} for name, rows in faith_splits.items()}
    assert not docs["train"] & docs["test"] and not docs["train"] & docs["validation"]
    assert not docs["validation"] & docs["test"]
    sources = {name: {" ".join(r["source"].split()) for r in rows} for name, rows in faith_splits.items()}
    assert not sources["train"] & sources["test"]
    test = faith_splits["test"]
    assert sum(r["dataset"] == "summedits" for r in test) == 2617  # SummEdits' released test split, all of it
    assert {r["dataset"] for r in faith_splits["train"]} == {"summedits", "dialogue"}
    for rows in faith_splits.values():
        for r in rows:
            assert set(r) == {"id", "summary", "source", "evidence", "label", "doc_id", "dataset", "domain"}
            assert r["label"] in ("faithful", "unfaithful") and len(r["evidence"]) <= 500 + 200


def test_data_prep_never_reads_a_leaking_field(shared_data, faith_splits, tmp_path):
    """Scrambling every label-leaking field in a copy of the shared sets changes nothing in the output."""
    rng = np.random.default_rng(0)
    for folder, fields in LEAKING.items():
        src = shared_data / folder
        (tmp_path / folder).mkdir()
        for f in src.glob("*.jsonl"):
            rows = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines()]
            for r in rows:
                for field in fields:
                    if field in r:
                        r[field] = str(rng.integers(1 << 30))
            (tmp_path / folder / f.name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert _make_faithfulness().build(tmp_path, seed=13, evidence_chars=500) == faith_splits


# ---------------------------------------------------------------- text pieces


def test_sentences_evidence_and_transparent_checks():
    from tunewise.faithfulness.text import evidence, sentence_spans, unsupported_facts

    text = 'Anna said "no." Then Bob paid $1,200 on March 3!\nok'
    spans = sentence_spans(text)
    assert [s.text for s in spans] == ['Anna said "no."', "Then Bob paid $1,200 on March 3!", "ok"]
    assert all(text[s.start:s.end] == s.text for s in spans)
    facts = unsupported_facts("Bob paid 1200 dollars and Carl paid three in May.", "bob paid $1,200. Two paid.")
    assert [(f.text, f.kind) for f in facts] == [("Carl", "name"), ("three", "number_word"), ("May", "date")]
    source = "\n".join(f"Speaker{i}: we discussed topic {i} at length today" for i in range(40)) + \
        "\nSpeaker99: the invoice for the zebra project is overdue"
    ev = evidence(source, "The zebra project invoice is overdue.", 200)
    assert "zebra project is overdue" in ev and ev.startswith("Speaker0:") and len(ev) <= 260


# ---------------------------------------------------------------- a small checker, trained by tunewise


@pytest.fixture(scope="session")
def small_checker(faith_splits, tunewise, tmp_path_factory) -> Path:
    """A small MiniLM checker trained with `tunewise run` on 120 real SummEdits training pairs (fp32, 2 epochs; 40
    more carved off for validation, where `threshold: auto` picks its cut)."""
    folder = tmp_path_factory.mktemp("checker")
    summedits = [r for r in faith_splits["train"] if r["dataset"] == "summedits"]
    for name, rows in (("train", summedits[:160]), ("test", faith_splits["validation"][:40])):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    recipe = {"name": "checker-small", "task": "classification", "seed": 13, "intended_use": "research",
              "output_dir": str(folder / "runs"),
              "data": {"train": {"path": "train.jsonl", "license": "Apache-2.0", "source": "summedits slice",
                                 "contains_personal_data": False},
                       "test": {"path": "test.jsonl", "license": "Apache-2.0"},
                       "text_field": "summary", "text_pair_field": "evidence", "label_field": "label",
                       "labels": ["faithful", "unfaithful"], "validation_fraction": 0.25},
              "model": {"base": "minilm", "max_length": 128},
              "train": {"epochs": 2, "batch_size": 16, "lr": 1e-4, "precision": "fp32", "device": "cpu",
                        "early_stopping_patience": None},
              "evaluate": {"bootstrap_samples": 200, "baselines": ["majority"]},
              "audit": {"enabled": False}, "probes": {"enabled": False}}  # the checker's probes are not tested here
    path = folder / "checker.yaml"
    path.write_text("# tunewise run checker.yaml\n" + yaml.safe_dump(recipe), encoding="utf-8")
    proc = tunewise("run", path, cwd=folder)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (root,) = (folder / "runs").iterdir()
    return root


def _with_number_changed(summary: str, source: str) -> tuple[str, str] | None:
    """The summary with its first number that the source states replaced by one the source never mentions."""
    for m in re.finditer(r"\d+", summary):
        if m.group(0) in source:
            new = str(int(m.group(0)) * 7 + 3)
            if new not in source:
                return summary[:m.start()] + new + summary[m.end():], new
    return None


def test_checker_ranks_a_changed_number_above_the_faithful_original(small_checker, faith_splits):
    from tunewise.faithfulness.checker import Checker
    from tunewise.faithfulness.score import score_outputs
    from tunewise.hardware import choose_placement

    checker = Checker.load(small_checker, choose_placement("cpu", "fp32"))
    originals = [r for r in faith_splits["test"] if r["dataset"] == "summedits" and r["label"] == "faithful"
                 and _with_number_changed(r["summary"], r["source"])][:12]
    assert len(originals) == 12
    changed = [_with_number_changed(r["summary"], r["source"]) for r in originals]
    sources = [r["source"] for r in originals]
    cfg = FaithfulnessConfig(checker=str(small_checker), evidence_chars=500, threshold=0.5)
    before = score_outputs([r["summary"] for r in originals], sources, checker, cfg)
    after = score_outputs([text for text, _ in changed], sources, checker, cfg)

    def rank(rec: dict) -> tuple:  # what the stage flags first: a failed check, then the checker's score
        return ("number" in rec["flagged_by"], rec["score"])

    for rec_before, rec_after, (_, new) in zip(before, after, changed):
        assert rank(rec_after) > rank(rec_before)
        assert rec_after["flagged"] and new in [u["text"] for u in rec_after["unsupported"] if u["kind"] == "number"]
        assert "number" not in rec_before["flagged_by"]
        assert 0.0 <= rec_after["score"] <= 1.0 and len(rec_after["sentences"]) >= 1
    # the model itself reads the pair: its score moves when only the number changes
    assert any(abs(a["summary_score"] - b["summary_score"]) > 1e-4 for a, b in zip(after, before))


def test_a_missing_checker_names_the_command_that_trains_it(tmp_path):
    from tunewise.faithfulness.checker import locate

    recipe = tmp_path / "checker.yaml"
    recipe.write_text("# python make.py && tunewise run checker.yaml\nname: c\ndata: {train: t.jsonl}\n")
    with pytest.raises(RunDirError, match=r"not trained yet.*`python make\.py && tunewise run checker\.yaml`"):
        locate(FaithfulnessConfig(checker=str(recipe)))
    with pytest.raises(RecipeError, match="no such run directory or recipe file"):
        locate(FaithfulnessConfig(checker=str(tmp_path / "nowhere")))
    with pytest.raises(RecipeError, match="needs a checker"):
        locate(FaithfulnessConfig())


# ---------------------------------------------------------------- the stage on a generation run


@pytest.fixture(scope="module")
def generation_run(small_checker, tmp_path_factory):
    """A summarization run whose data/train/evaluate hold realistically shaped outputs on real DialogSum dialogues
    (the card tests' run: annotator summaries as the fine-tuned outputs, the dialogue's first 30 words as the base
    model's), with the faithfulness stage run for real on it."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_release_generation import DATA_SUMMARY, TRAIN_SUMMARY, _rows, make_eval, make_recipe

    from tunewise.rundir import RunDir, atomic_write_json, atomic_write_jsonl
    from tunewise.stages import RunOptions, get

    rows = _rows()
    recipe = make_recipe(tmp_path_factory.mktemp("gen"))
    recipe.evaluate.faithfulness.checker = str(small_checker)
    recipe.evaluate.faithfulness.evidence_chars = 500
    metrics, ft_lines, base_lines = make_eval(rows)
    ft_lines[1]["prediction"] += " They paid 9731 dollars in Zanzibar."  # an invented number and place
    rd = RunDir.for_recipe(recipe)
    rd.run_stage("data", lambda out: atomic_write_json(out / "summary.json", DATA_SUMMARY))
    rd.run_stage("train", lambda out: atomic_write_json(out / "train_summary.json", TRAIN_SUMMARY))

    def evaluate(out: Path) -> None:
        atomic_write_json(out / "metrics.json", metrics)
        atomic_write_jsonl(out / "predictions.jsonl", ft_lines)
        atomic_write_jsonl(out / "predictions_base_model.jsonl", base_lines)

    rd.run_stage("evaluate", evaluate)
    stage = get("faithfulness")
    assert stage.enabled(recipe)
    outcome = stage.run(rd, RunOptions())
    return {"rd": rd, "outcome": outcome, "ft_lines": ft_lines, "again": lambda: stage.run(rd, RunOptions())}


def test_stage_writes_its_artifact_side_by_side(generation_run, jsonl):
    rd, outcome = generation_run["rd"], generation_run["outcome"]
    assert outcome.ran and "faithfulness:" in outcome.message and "fine_tuned vs base_model" in outcome.message
    res = FaithfulnessResults.read(rd.stage_dir("faithfulness") / FaithfulnessResults.FILE)
    assert res.model_order() == ["fine_tuned", "base_model"] and res.n_scored == 40
    assert res.settings.source == "prompt-template column `dialogue`"
    assert res.settings.threshold_source.startswith("auto: the best balanced accuracy") and 0 < res.settings.threshold < 1
    for name in res.models:  # the flags follow the cut the stage chose
        for s in jsonl(rd.root / res.models[name].scores):
            assert all(x["flagged"] == (x["score"] >= res.settings.threshold) for x in s["sentences"])
    for name, m in res.models.items():
        assert m.flagged.n == 40 and m.flagged.ci_low <= m.flagged.value <= m.flagged.ci_high
        scores = jsonl(rd.root / m.scores)
        assert len(scores) == 40 and m.flagged.value == pytest.approx(np.mean([s["flagged"] for s in scores]))
        assert m.sentences == sum(len(s["sentences"]) for s in scores)
    (c,) = res.comparisons
    assert c.diff == pytest.approx(res.models["fine_tuned"].flagged.value - res.models["base_model"].flagged.value)
    assert c.ci_low <= c.diff <= c.ci_high and c.n == 40
    invented = next(s for s in jsonl(rd.stage_dir("faithfulness") / "scores.jsonl")
                    if s["id"] == generation_run["ft_lines"][1]["id"])
    assert invented["flagged"] and "number" in invented["flagged_by"]
    assert {("9731", "number"), ("Zanzibar", "name")} <= {(u["text"], u["kind"]) for u in invented["unsupported"]}
    assert res.checker.run_id == Path(res.checker.run).name and len(res.checker.model_sha256) == 64
    assert generation_run["again"]().ran is False  # unchanged inputs: nothing to do


def test_card_section_shows_shares_and_escaped_highlights(generation_run):
    from tunewise.card import faithfulness_section

    rd = generation_run["rd"]
    md = faithfulness_section.markdown(rd)
    assert md.startswith("## Faithfulness to the source") and "| `fine_tuned` |" in md and "| `base_model` |" in md
    assert "paired over the same 40 prompts" in md
    html = faithfulness_section.html(rd)
    assert '<mark class="faith-fact faith-number" title="a number the source never mentions">9731</mark>' in html
    assert "<script>" not in html  # the hostile output (example 0) is escaped wherever it appears
    assert faithfulness_section.markdown(type(rd)(rd.root / "nowhere", rd.recipe, rd.manifest)) is None
