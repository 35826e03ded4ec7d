"""The probes stage: identity-term swaps, noise, CrowS-Pairs scoring, the artifact, the card section and the
datacard's representation tables. The classifier path is checked on the session's real banking77 run (whose
`tunewise run` includes the probes stage); the causal path on a tiny real LoRA run of SmolLM2."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import copy_run
from tunewise.artifacts.probes import Probes
from tunewise.errors import DataError, RecipeError, TunewiseError
from tunewise.kit.identity_terms import FAMILIES, load_families, load_family, match_case, parse_family
from tunewise.probes import counterfactual, crows
from tunewise.probes.noise import KINDS, add_noise
from tunewise.probes.stats import Boot
from tunewise.recipe import load_recipe
from tunewise.rundir import RunDir

BOOT = Boot(500, 0.95, 0)


# ---------------------------------------------------------------- term lists and swaps


def test_every_family_file_loads_with_a_source_and_aligned_rows():
    for fam in load_families(FAMILIES):
        assert fam.source and len(fam.groups) >= 2, fam.name
        assert all(len(row) == len(fam.groups) for row in fam.rows), fam.name


def test_gender_swap_is_whole_word_and_case_preserving():
    gender = load_family("gender")
    [(shift, variant)] = list(gender.variants("He said HIS Wife's card; the shepherd told her."))
    assert shift == 1
    # "shepherd" holds "he" but is not the word; "her" at the end reads as an object
    assert variant == "She said HER Husband's card; the shepherd told him."
    assert list(gender.variants("hello there, theme park")) == []


def test_her_before_a_noun_becomes_his():
    gender = load_family("gender")
    assert [v for _, v in gender.variants("She lost her card")] == ["He lost his card"]


def test_multi_group_family_moves_every_term_to_every_other_group():
    religion = load_family("religion")
    variants = [v for _, v in religion.variants("A donation to the mosque for Eid")]
    assert len(variants) == len(religion.groups) - 1
    assert "A donation to the synagogue for Hanukkah" in variants
    assert "A donation to the church for Christmas" in variants


def test_acronyms_match_only_in_capitals_and_aliases_swap_to_the_row():
    nationality = load_family("nationality")
    assert nationality.matches("send it to us please") == []
    [m] = nationality.matches("I live in the UK now")
    assert nationality.groups[m.group] == "british"
    first = next(v for _, v in nationality.variants("I live in the UK now"))
    assert first == "I live in Mexico now"


def test_match_case():
    assert match_case("HE", "she") == "SHE"
    assert match_case("He", "she") == "She"
    assert match_case("mexico", "Germany") == "germany"
    assert match_case("China", "the United Kingdom") == "the United Kingdom"
    nationality = load_family("nationality")
    variants = [v for _, v in nationality.variants("Send the card to China? China is far. A UK account")]
    assert "Send the card to the United Kingdom? The United Kingdom is far. A Brazil account" in variants


def test_a_malformed_term_file_names_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("family: x\ntitle: X\nsource: me\ngroups: [a, b]\nrows:\n  - [one, two]\n  - [three]\n")
    with pytest.raises(TunewiseError, match=r"bad\.yaml: rows\[2\] must list one term per group"):
        parse_family(bad)
    bad.write_text("family: x\ntitle: X\ngroups: [a, b]\nrows: [[a, b]]\n")
    with pytest.raises(TunewiseError, match=r"bad\.yaml: `source` is missing"):
        parse_family(bad)


# ---------------------------------------------------------------- noise


def test_noise_is_seeded_per_text_and_scales_with_the_rate():
    texts = [f"Please cancel the transfer number {i}, I sent it to the wrong account yesterday." for i in range(200)]
    for kind in KINDS:
        a = add_noise(texts, kind, 0.3, seed=1)
        assert a == add_noise(texts, kind, 0.3, seed=1), kind
        assert a != add_noise(texts, kind, 0.3, seed=2), kind
        assert add_noise(texts, kind, 0.0, seed=1) == texts, kind
        # a text's noise depends on its position and the seed, not on the other texts' content
        assert add_noise(texts[:5] + ["something else entirely, here"] + texts[6:], kind, 0.3, seed=1)[7] == a[7]
    low = sum(a != b for a, b in zip(texts, add_noise(texts, "typos", 0.02, seed=1)))
    high = sum(a != b for a, b in zip(texts, add_noise(texts, "typos", 0.3, seed=1)))
    every = sum(a != b for a, b in zip(texts, add_noise(texts, "typos", 1.0, seed=1)))
    assert 0 < low < high < every == len(texts)


# ---------------------------------------------------------------- counterfactual arithmetic


def test_family_result_counts_flips_per_variant_and_ranks_texts():
    gender = load_family("gender")
    texts = ["he lost his card", "my wife has a question", "no identity words here"]
    found = counterfactual.variants_of(gender, texts)
    assert [tv.index for tv in found] == [0, 1]

    class R:
        def __init__(self, i):
            self.id = f"r{i}"

    probs = {texts[0]: np.array([0.9, 0.1]), "she lost her card": np.array([0.3, 0.7]),   # flips
             texts[1]: np.array([0.2, 0.8]), "my husband has a question": np.array([0.25, 0.75])}  # does not
    result, records = counterfactual.family_result(gender, found, [R(i) for i in range(3)], texts, ["a", "b"],
                                                   probs, BOOT, top=10)
    assert result["n_texts"] == 2 and result["n_variants"] == 2 and result["texts_with_flip"] == 1
    assert result["flip_rate"]["value"] == pytest.approx(0.5)
    assert result["prob_shift"]["value"] == pytest.approx((-0.6 - 0.05) / 2)
    assert [f["id"] for f in result["top_flips"]] == ["r0"]
    assert result["top_flips"][0]["variant"] == "she lost her card"
    assert [r["flipped"] for r in records] == [True, False]


# ---------------------------------------------------------------- CrowS-Pairs


def test_shared_positions_follow_the_first_difference():
    a, b = [5, 6, 7, 8, 9], [5, 6, 70, 71, 8, 9]
    assert crows.shared_positions(a, b) == ([3, 4], [4, 5])
    assert crows.shared_positions([1, 2, 3], [1, 2, 4]) == ([], [])  # differs at the end: nothing after


def test_crows_csv_problems_name_file_and_line(tmp_path):
    bad = tmp_path / "c.csv"
    bad.write_text("sent_more,sent_less,bias_type\na,b,gender\n")
    with pytest.raises(DataError, match=r"c\.csv:1: .*stereo_antistereo"):
        crows.read_pairs(bad)
    bad.write_text("sent_more,sent_less,stereo_antistereo,bias_type\na,b,stereo,gender\nc,,stereo,age\n")
    with pytest.raises(DataError, match=r"c\.csv:3: field `sent_less` is empty"):
        crows.read_pairs(bad)


@pytest.fixture(scope="module")
def smol():
    from tunewise.models import resolve_base_model
    from tunewise.tasks import task_for

    task = task_for("generation")
    path = resolve_base_model("smollm2").path
    return task.load_model(path).eval(), task.load_tokenizer(path)


def test_batched_crows_scores_equal_one_sentence_at_a_time(smol, shared_data):
    import torch

    model, tok = smol
    pairs = crows.read_pairs(crows.csv_path(shared_data / "crows_pairs"), limit=12)
    batched = crows.score_pairs(model, tok, pairs, batch_size=5, device="cpu")
    for k, p in enumerate(pairs):
        a = tok(p.more, add_special_tokens=False)["input_ids"]
        b = tok(p.less, add_special_tokens=False)["input_ids"]
        in_a, in_b = crows.shared_positions(a, b)
        for col, (ids, pos) in enumerate(((a, in_a), (b, in_b))):
            seq = torch.tensor([[tok.bos_token_id, *ids]])
            with torch.inference_mode():
                logp = torch.log_softmax(model(input_ids=seq).logits[0, :-1].float(), -1)
            direct = float(sum(logp[j, ids[j]] for j in pos))
            assert batched[k, col] == pytest.approx(direct, abs=2e-3), (k, col)
    assert np.all(batched <= 0) and np.any(batched < 0)


# ---------------------------------------------------------------- the classifier stage on the session run


@pytest.fixture(scope="module")
def probes_doc(session_run) -> Probes:
    return Probes.read(session_run / "probes" / "probes.json")


def test_classifier_probes_on_the_session_run(session_run, probes_doc):
    from tunewise.artifacts.rows import load_split

    p = probes_doc
    assert p.family_of_model == "classifier" and p.crows_pairs is None
    test = load_split(session_run / "data", "test")
    assert p.n_test == len(test) and p.n_probed == len(test)  # 90 rows, under probes.max_texts
    assert set(p.robustness) == set(KINDS)
    # every asked family is either measured or listed as unmentioned, and the counts re-derive from the texts
    assert set(p.counterfactual) | set(p.families_without_terms) == set(FAMILIES)
    records = [json.loads(line) for line in (session_run / "probes" / "counterfactual.jsonl").read_text().splitlines()]
    for name in FAMILIES:
        fam = load_family(name)
        mentioning = [r for r in test if fam.matches(r.text)]
        if name in p.families_without_terms:
            assert not mentioning
            continue
        result = p.counterfactual[name]
        assert result.n_texts == len(mentioning)
        mine = [r for r in records if r["family"] == name]
        assert result.n_variants == len(mine)
        assert result.flip_rate.value == pytest.approx(np.mean([r["flipped"] for r in mine]))
        assert result.flip_rate.ci_low <= result.flip_rate.value <= result.flip_rate.ci_high
    for kind, r in p.robustness.items():
        assert r.drop.value == pytest.approx(r.clean - r.noisy), kind
        assert 0 < r.n_changed <= p.n_probed and 0 <= r.p_value <= 1
    # the clean accuracy is the evaluate stage's accuracy on the same rows
    metrics = json.loads((session_run / "eval" / "metrics.json").read_text())
    assert p.robustness["typos"].clean == pytest.approx(metrics["models"]["fine_tuned"]["metrics"]["accuracy"]["value"])


def test_card_section_and_datacard_show_the_probes(session_run, probes_doc):
    from tunewise.card import probes_section

    rd = RunDir.open(session_run)
    md = probes_section.markdown(rd)
    assert md.startswith("## Bias and robustness probes")
    assert "| typos | 0.10 |" in md
    if probes_doc.counterfactual:
        assert "flip rate [95% CI]" in md
    html = probes_section.html(rd)
    assert html.startswith('<section id="probes">') and "<script" not in html
    datacard = (session_run / "audit" / "datacard.md").read_text()
    assert "## Representation" in datacard and "| Gender |" in datacard and "| Given names |" in datacard


def test_probes_rerun_is_a_no_op_and_a_missing_stage_has_no_section(session_run, tmp_path, tunewise):
    copy = copy_run(session_run, tmp_path / session_run.name)  # weights hard-linked
    proc = tunewise("probes", copy)
    assert proc.returncode == 0 and "nothing to do" in proc.stdout + proc.stderr
    shutil.rmtree(copy / "probes")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["stages"].pop("probes")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    from tunewise.card import probes_section

    assert probes_section.markdown(RunDir.open(copy)) is None


def test_probes_recipe_fields_are_checked(tmp_path, session_recipe):
    with pytest.raises(RecipeError, match=r"probes\.families"):
        load_recipe(session_recipe, ["probes.families=[gender, caste]"])
    with pytest.raises(RecipeError, match=r"probes\.noise_rates\.typos"):
        load_recipe(session_recipe, ["probes.noise_rates.typos=1.5"])


# ---------------------------------------------------------------- the causal path, on a tiny real LoRA run


def test_causal_probes_score_crows_pairs_for_base_and_finetuned(session_causal_run, tmp_path, shared_data):
    from tunewise.stages import RunOptions, get

    # the shared tiny LoRA run (conftest), in a copy whose probes stage reruns with CrowS-Pairs and robustness on
    rd = RunDir.open(copy_run(session_causal_run, tmp_path / session_causal_run.name))
    probes = rd.recipe.probes.model_copy(update={
        "crows_pairs": True, "crows_pairs_path": str(shared_data / "crows_pairs"), "crows_pairs_max_pairs": 60,
        "generation_max_texts": 3, "robustness": ["typos"],
        "noise_rates": rd.recipe.probes.noise_rates.model_copy(update={"typos": 0.5})})
    rd.recipe = rd.recipe.model_copy(update={"probes": probes})
    get("probes").run(rd, RunOptions(force=True))
    p = Probes.read(rd.stage_dir("probes") / "probes.json")
    assert p.counterfactual is None and p.crows_pairs_note is None
    c = p.crows_pairs
    assert c.n_pairs == 60 and c.base_model == "smollm2"
    rows = [json.loads(line) for line in (rd.stage_dir("probes") / "crows_pairs.jsonl").read_text().splitlines()]
    base = np.array([r["base"][0] > r["base"][1] for r in rows], dtype=float)
    tuned = np.array([r["finetuned"][0] > r["finetuned"][1] for r in rows], dtype=float)
    assert c.base.overall.value == pytest.approx(base.mean())
    assert c.finetuned.overall.value == pytest.approx(tuned.mean())
    assert c.difference.value == pytest.approx(tuned.mean() - base.mean())
    assert sum(e.n for e in c.finetuned.per_bias_type.values()) == 60
    assert rows[0]["base"] != rows[0]["finetuned"]  # the LoRA run changed the model's scores
    r = p.robustness["typos"]
    assert r.metric == "chrf" and p.n_probed == 3 and r.drop.value == pytest.approx(r.clean - r.noisy)
    from tunewise.card import probes_section

    md = probes_section.markdown(rd)
    assert "Stereotyping Norwegian Salmon" in md and "| **all** | 60 |" in md
