"""The faithfulness checker and stage: SmolLM2 read as a likelihood scorer (its KV-cache path against a plain
forward pass), the checker's judgement on real SummEdits and dialogue pairs with facts swapped in, the benchmark's
leak-free document split, and the stage's artifact on a generation run. Sentence-pair input for classification
(data.text_pair_field) is tested here too."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tunewise.artifacts.faithfulness import FaithfulnessResults
from tunewise.artifacts.rows import Row
from tunewise.errors import RecipeError, TunewiseError
from tunewise.recipe import FaithfulnessConfig, load_recipe

REPO = Path(__file__).resolve().parents[1]
N_OUTPUTS = 8  # outputs per model in the stage test
LEAKING = {"summedits": ("system", "seed_id", "edit_types"), "dialogue_faithfulness": ("error_types", "sentences",
                                                                                        "system", "group_idx")}


def _bench():
    """bench/faithfulness.py as a module."""
    spec = importlib.util.spec_from_file_location("bench_faithfulness", REPO / "bench" / "faithfulness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def bench_rows(shared_data):
    if not (shared_data / "summedits" / "pairs.jsonl").is_file():
        pytest.skip("summedits not in the shared data")
    return _bench().load_rows(shared_data)


@pytest.fixture(scope="session")
def checker():
    from tunewise.faithfulness.checker import BUILTIN_CHECKERS, Checker

    return Checker.load(BUILTIN_CHECKERS["smollm2"], threads=1)


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


# ---------------------------------------------------------------- the benchmark's split


def test_benchmark_split_never_splits_a_document(bench_rows):
    train = [r for r in bench_rows if r["part"] == "train"]
    test = [r for r in bench_rows if r["part"] == "test"]
    assert not {r["doc_id"] for r in train} & {r["doc_id"] for r in test}
    assert not {" ".join(r["source"].split()) for r in train} & {" ".join(r["source"].split()) for r in test}
    assert sum(r["dataset"] == "summedits" for r in test) == 2617  # SummEdits' released test split, all of it
    assert sum(r["dataset"] == "summedits" for r in train) == 624  # its `evaluation` split
    assert {r["dataset"] for r in train} == {r["dataset"] for r in test} == {"summedits", "dialogue"}
    for r in bench_rows:
        assert set(r) == {"id", "source", "query", "summary", "unfaithful", "doc_id", "dataset", "domain", "part"}


def test_benchmark_never_reads_a_leaking_field(shared_data, bench_rows, tmp_path):
    """Scrambling every label-leaking field in a copy of the shared sets changes nothing the benchmark reads."""
    rng = np.random.default_rng(0)
    for folder, fields in LEAKING.items():
        (tmp_path / folder).mkdir()
        for f in (shared_data / folder).glob("*.jsonl"):
            rows = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines()]
            for r in rows:
                for field in fields:
                    if field in r:
                        r[field] = str(rng.integers(1 << 30))
            (tmp_path / folder / f.name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert _bench().load_rows(tmp_path) == bench_rows


# ---------------------------------------------------------------- text pieces


def test_sentences_and_transparent_checks():
    from tunewise.faithfulness.features import low_support_spans
    from tunewise.faithfulness.text import sentence_spans, unsupported_facts

    text = 'Anna said "no." Then Bob paid $1,200 on March 3!\nok'
    spans = sentence_spans(text)
    assert [s.text for s in spans] == ['Anna said "no."', "Then Bob paid $1,200 on March 3!", "ok"]
    assert all(text[s.start:s.end] == s.text for s in spans)
    facts = unsupported_facts("Bob paid 1200 dollars and Carl paid three in May.", "bob paid $1,200. Two paid.")
    assert [(f.text, f.kind) for f in facts] == [("Carl", "name"), ("three", "number_word"), ("May", "date")]
    # a low-support span covers whole words and merges neighbours
    offsets = [(0, 3), (3, 7), (7, 12), (12, 13)]  # "Bob", " ate", " pies", "."
    spans = low_support_spans("Bob ate pies.", offsets, np.array([-1.0, -5.0, -6.0, -0.1]),
                              np.array([-2.0, -3.0, -4.0, -0.1]))
    assert [(s.text, s.kind) for s in spans] == [("ate pies", "low_support")]


def test_a_checker_file_is_validated(tmp_path):
    from tunewise.faithfulness.checker import BUILTIN_CHECKERS, CheckerModel, locate

    assert locate(FaithfulnessConfig(checker="smollm2")) == BUILTIN_CHECKERS["smollm2"]
    with pytest.raises(RecipeError, match="needs a checker"):
        locate(FaithfulnessConfig())
    with pytest.raises(RecipeError, match="no such checker"):
        locate(FaithfulnessConfig(checker=str(tmp_path / "nowhere.json")))
    raw = json.loads(BUILTIN_CHECKERS["smollm2"].read_text())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**raw, "features": ["pmi_mean", "vibes"]}))
    with pytest.raises(RecipeError, match=r"bad\.json: field `features` names \['vibes'\]"):
        CheckerModel.read(bad)
    bad.write_text(json.dumps({**raw, "format": "other"}))
    with pytest.raises(RecipeError, match=r"bad\.json: field `format`"):
        CheckerModel.read(bad)
    recipe = load_recipe(_recipe_file(tmp_path, {"task": "generation", "data": {"train": "t.jsonl"},
                                                 "evaluate": {"faithfulness": {"checker": "smollm2"}}}))
    assert recipe.evaluate.faithfulness.checker == "smollm2"  # a built-in name is not resolved as a path


# ---------------------------------------------------------------- the likelihood scorer and the checker


def test_cached_source_scoring_equals_a_plain_forward_pass(checker):
    """The source's KV cache, repeated over a right-padded batch, gives each summary token the log-probability a
    single forward pass over source + summary gives it."""
    import torch

    from tunewise.faithfulness.likelihood import SOURCE_HEADER, SUMMARY_HEADER

    scorer = checker.scorer
    source = "Anna: I paid 40 dollars for the bread.\nBen: That is a lot. Where did you buy it?\nAnna: At the market."
    summaries = ["Anna paid 40 dollars for bread at the market.", "Ben paid 90 dollars.", "Anna shops."]
    scored = scorer.score(source, summaries)
    prefix = scorer._ids(SOURCE_HEADER.format(source=source)) + scorer._ids(SUMMARY_HEADER)
    for summary, ts in zip(summaries, scored):
        ids = scorer._ids(summary)
        with torch.inference_mode():
            logp = scorer.model(input_ids=torch.tensor([prefix + ids])).logits[0].float().log_softmax(-1)
        plain = np.array([logp[len(prefix) - 1 + j, t].item() for j, t in enumerate(ids)])
        np.testing.assert_allclose(ts.conditional, plain, atol=2e-3)
        assert [summary[a:b] for a, b in ts.offsets] and ts.offsets[-1][1] == len(summary)
    # the source makes its own number likelier than an invented one
    def pmi_of(k: int, word: str) -> np.ndarray:  # the tokens overlapping `word` (digits may be split)
        start = summaries[k].index(word)
        return scored[k].pmi[[i for i, (a, b) in enumerate(scored[k].offsets) if a < start + len(word) and b > start]]

    assert pmi_of(0, "40").mean() > 1.0 > pmi_of(1, "90").mean()


def _swap_in(summary: str, source: str) -> tuple[str, str] | None:
    """The summary with its first name (a capitalised word the source states, not at the start) replaced by a
    name the source never mentions."""
    import re

    for m in re.finditer(r"(?<=\s)[A-Z][a-z]{2,}", summary):
        if m.group(0) in source and "Gwendolyn" not in source:
            return summary[:m.start()] + "Gwendolyn" + summary[m.end():], "Gwendolyn"
    return None


def test_checker_prefers_the_source_s_facts_on_real_pairs(checker, bench_rows):
    """Faithful real summaries (SummEdits and dialogue training rows) against the same summaries with a number or
    a name swapped for one the source never states: the swapped ones score higher and show the inserted
    words as unsupported spans; the invented number is flagged."""
    from tunewise.faithfulness.score import score_outputs

    faithful = [r for r in bench_rows if r["part"] == "train" and not r["unfaithful"] and not r["query"]
                and len(r["source"]) < 1500]
    with_name = [r for r in faithful if _swap_in(r["summary"], r["source"])][:4]
    assert len(with_name) == 4
    originals = [r["summary"] for r in with_name] + ["Anna paid 40 dollars for the bread."]
    swapped = [_swap_in(r["summary"], r["source"])[0] for r in with_name] + ["Anna paid 4,870 dollars for the bread."]
    sources = [r["source"] for r in with_name] + ["Anna: I paid 40 dollars for the bread.\nBen: That is a lot."]
    cfg = FaithfulnessConfig(checker="smollm2", threshold=checker.threshold("sentence")[0])
    before = score_outputs(originals, sources, checker, cfg)
    after = score_outputs(swapped, sources, checker, cfg)
    for b, a, new in zip(before, after, ["Gwendolyn"] * 4 + ["4,870"]):
        assert a["summary_score"] > b["summary_score"]
        assert any(new in u["text"] for u in a["unsupported"])
        assert 0.0 <= a["score"] <= 1.0 and len(a["sentences"]) >= 1
    assert after[-1]["flagged"] and "number" in after[-1]["flagged_by"] and not before[-1]["flagged"]
    assert sum(a["score"] > b["score"] for a, b in zip(after, before)) >= 4  # the worst sentence, too


def test_checker_ranks_seeds_above_their_unfaithful_edits(checker, shared_data):
    """SummEdits test documents: a verified seed summary against its edits that annotators marked inconsistent
    (seed_id and the label pick the pairs here; the checker sees only source and summary)."""
    docs = {d["doc_id"]: d["source"] for d in map(json.loads, open(shared_data / "summedits" / "docs.jsonl"))}
    pairs = [json.loads(line) for line in open(shared_data / "summedits" / "pairs.jsonl")]
    by_id = {p["id"]: p for p in pairs}
    chosen = []
    for p in pairs:  # the first unfaithful edit of each of the first short test documents
        if (p["split"] == "test" and p["label"] == 0 and p["system"] == "edit" and len(docs[p["doc_id"]]) < 1200
                and p["doc_id"] not in {c[0]["doc_id"] for c in chosen}):
            chosen.append((by_id[p["seed_id"]], p))
        if len(chosen) == 8:
            break
    seeds = checker.assess([s["summary"] for s, _ in chosen], [docs[s["doc_id"]] for s, _ in chosen])
    edits = checker.assess([e["summary"] for _, e in chosen], [docs[e["doc_id"]] for _, e in chosen])
    wins = sum(e.summary_score > s.summary_score for s, e in zip(seeds, edits))
    assert wins >= 6, [(s.summary_score, e.summary_score) for s, e in zip(seeds, edits)]


# ---------------------------------------------------------------- the stage on a generation run


@pytest.fixture(scope="module")
def generation_run(tmp_path_factory):
    """A summarization run whose data/train/evaluate hold realistically shaped outputs on real DialogSum dialogues
    (the card tests' run: annotator summaries as the fine-tuned outputs, the dialogue's first 30 words as the base
    model's), with the faithfulness stage run for real on it."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_release_generation import DATA_SUMMARY, TRAIN_SUMMARY, _rows, make_eval, make_recipe

    from tunewise.rundir import RunDir, atomic_write_json, atomic_write_jsonl
    from tunewise.stages import RunOptions, get

    rows = _rows()
    recipe = make_recipe(tmp_path_factory.mktemp("gen"))
    recipe.evaluate.faithfulness.checker = "smollm2"
    metrics, ft_lines, base_lines = make_eval(rows)
    # the first N_OUTPUTS prompts only: SmolLM2 reads every source on CPU, so fewer outputs keep the test short
    ft_lines = ft_lines[:N_OUTPUTS]
    kept = {line["id"] for line in ft_lines}
    base_lines = [line for line in base_lines if line["id"] in kept]  # the same prompts, paired
    metrics["n_scored"] = N_OUTPUTS
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
    assert res.model_order() == ["fine_tuned", "base_model"] and res.n_scored == N_OUTPUTS
    assert res.settings.source == "prompt-template column `dialogue`"
    assert res.settings.threshold_source.startswith("auto: the cut with the best balanced accuracy")
    assert 0 < res.settings.threshold < 1
    for name in res.models:  # the flags follow the cut the stage chose
        for s in jsonl(rd.root / res.models[name].scores):
            assert all(x["flagged"] == (x["score"] >= res.settings.threshold) for x in s["sentences"])
    for name, m in res.models.items():
        assert m.flagged.n == N_OUTPUTS and m.flagged.ci_low <= m.flagged.value <= m.flagged.ci_high
        scores = jsonl(rd.root / m.scores)
        assert len(scores) == N_OUTPUTS and m.flagged.value == pytest.approx(np.mean([s["flagged"] for s in scores]))
        assert m.sentences == sum(len(s["sentences"]) for s in scores)
    (c,) = res.comparisons
    assert c.diff == pytest.approx(res.models["fine_tuned"].flagged.value - res.models["base_model"].flagged.value)
    assert c.ci_low <= c.diff <= c.ci_high and c.n == N_OUTPUTS
    invented = next(s for s in jsonl(rd.stage_dir("faithfulness") / "scores.jsonl")
                    if s["id"] == generation_run["ft_lines"][1]["id"])
    assert invented["flagged"] and "number" in invented["flagged_by"]
    assert {("9731", "number"), ("Zanzibar", "name")} <= {(u["text"], u["kind"]) for u in invented["unsupported"]}
    import hashlib

    shipped = Path(res.checker.path)
    assert res.checker.lm == "smollm2" and res.checker.sha256 == hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert res.checker.features == json.loads(shipped.read_text())["features"]  # the artifact names what scored
    assert generation_run["again"]().ran is False  # unchanged inputs: nothing to do


def test_card_section_shows_shares_and_escaped_highlights(generation_run):
    from tunewise.card import faithfulness_section

    rd = generation_run["rd"]
    md = faithfulness_section.markdown(rd)
    assert md.startswith("## Faithfulness to the source") and "| `fine_tuned` |" in md and "| `base_model` |" in md
    assert f"paired over the same {N_OUTPUTS} prompts" in md and "`smollm2` log-probabilities" in md
    html = faithfulness_section.html(rd)
    assert '<mark class="faith-fact faith-number" title="a number the source never mentions">9731</mark>' in html
    assert "<script>" not in html  # the hostile output (example 0) is escaped wherever it appears
    assert faithfulness_section.markdown(type(rd)(rd.root / "nowhere", rd.recipe, rd.manifest)) is None
