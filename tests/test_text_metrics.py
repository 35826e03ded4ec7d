"""Tests for tunewise.evaluate.text_metrics on real text: multi30k (en/de captions) and dialogsum summaries.

Every value is cross-checked against sacrebleu's and rouge-score's own functions; the bootstrap against a
direct recomputation on resampled corpora and against scipy's bootstrap of a plain mean.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from scipy import stats as sstats

from tunewise.evaluate import text_metrics as tm
from tunewise.evaluate.stats import bootstrap_batch_size

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MULTI30K = DATA / "multi30k_en_de" / "test_2016_flickr.jsonl"
DIALOGSUM = DATA / "dialogsum" / "dialogsum.test.jsonl"


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        pytest.skip(f"shared data not found at {path} (the repository expects ../shared/data next to it)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _perturb(texts: list[str], p: float, seed: int) -> list[str]:
    """A plausible 'system output': a tenth of texts unchanged, the rest with words dropped (probability p)
    and one neighbouring pair swapped."""
    rng = random.Random(seed)
    out = []
    for text in texts:
        if rng.random() < 0.1:
            out.append(text)
            continue
        words = [w for w in text.split() if rng.random() > p] or text.split()[:1]
        if len(words) > 3:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        out.append(" ".join(words))
    return out


@pytest.fixture(scope="module")
def multi30k() -> dict[str, list[str]]:
    rows = _jsonl(MULTI30K)
    de = [r["de"] for r in rows]
    en = [r["en"] for r in rows]
    return {"de": de, "en": en, "de_sys": _perturb(de, 0.15, seed=1), "en_sys": _perturb(en, 0.15, seed=2)}


@pytest.fixture(scope="module")
def dialogsum() -> dict[str, list]:
    rows = _jsonl(DIALOGSUM)
    return {"s1": [r["summary1"] for r in rows], "s2": [r["summary2"] for r in rows],
            "s3": [r["summary3"] for r in rows]}


def _rouge_means(hyps, refs_per_example):
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    per = [scorer.score_multi(refs, h) for h, refs in zip(hyps, refs_per_example)]
    return {t: float(np.mean([s[t].fmeasure for s in per])) for t in ("rouge1", "rouge2", "rougeL")}


# ---------------------------------------------------------------- point values against the reference implementations


def test_values_equal_sacrebleu_and_rouge_score_single_reference(multi30k):
    hyps, refs = multi30k["en_sys"][:400], multi30k["en"][:400]
    res = tm.score_corpus(hyps, [[r] for r in refs], n_resamples=200)
    assert list(res) == ["bleu", "chrf", "rouge1", "rouge2", "rougeL", "exact_match", "length_ratio"]
    bleu = sacrebleu.corpus_bleu(hyps, [refs])
    assert res["bleu"]["value"] == pytest.approx(bleu.score, abs=1e-9)
    assert res["chrf"]["value"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score, abs=1e-9)
    assert res["length_ratio"]["value"] == pytest.approx(bleu.sys_len / bleu.ref_len, abs=1e-12)
    for t, v in _rouge_means(hyps, [[r] for r in refs]).items():
        assert res[t]["value"] == pytest.approx(v, abs=1e-12)
    assert res["exact_match"]["value"] == pytest.approx(np.mean([h == r for h, r in zip(hyps, refs)]))
    assert 10 < res["bleu"]["value"] < 95 and 0 < res["exact_match"]["value"] < 1  # a realistic, non-trivial system


def test_german_target_matches_sacrebleu(multi30k):
    hyps, refs = multi30k["de_sys"][:300], multi30k["de"][:300]
    res = tm.score_corpus(hyps, refs, metrics=["bleu", "chrf"], n_resamples=100)  # bare strings: one ref each
    assert set(res) == {"bleu", "chrf"}
    assert res["bleu"]["value"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)
    assert res["chrf"]["value"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score, abs=1e-9)


def test_multi_reference_matches_sacrebleu_and_beats_single(dialogsum):
    hyps = dialogsum["s1"]
    multi = [[a, b] for a, b in zip(dialogsum["s2"], dialogsum["s3"])]
    res = tm.score_corpus(hyps, multi, n_resamples=100)
    streams = [dialogsum["s2"], dialogsum["s3"]]
    assert res["bleu"]["value"] == pytest.approx(sacrebleu.corpus_bleu(hyps, streams).score, abs=1e-9)
    assert res["chrf"]["value"] == pytest.approx(sacrebleu.corpus_chrf(hyps, streams).score, abs=1e-9)
    for t, v in _rouge_means(hyps, multi).items():  # max over references per example, then the mean
        assert res[t]["value"] == pytest.approx(v, abs=1e-12)
    single = tm.score_corpus(hyps, [[a] for a in dialogsum["s2"]], n_resamples=100)
    assert res["bleu"]["value"] > single["bleu"]["value"]
    for name in ("chrf", "rouge1", "rouge2", "rougeL", "exact_match"):
        assert res[name]["value"] >= single[name]["value"]


def test_variable_reference_counts(dialogsum):
    """Examples with 1, 2 or 3 references: sacrebleu's None-padded streams, and each example's own references."""
    n = 120
    hyps = dialogsum["s1"][:n]
    refs = [[dialogsum["s2"][i], dialogsum["s3"][i]][: 1 + i % 2] + ([dialogsum["s1"][i + 1]] if i % 3 == 0 else [])
            for i in range(n)]
    assert {len(r) for r in refs} == {1, 2, 3}
    res = tm.score_corpus(hyps, refs, n_resamples=100)
    streams = [[r[j] if j < len(r) else None for r in refs] for j in range(3)]
    assert res["bleu"]["value"] == pytest.approx(sacrebleu.corpus_bleu(hyps, streams).score, abs=1e-9)
    assert res["chrf"]["value"] == pytest.approx(sacrebleu.corpus_chrf(hyps, streams).score, abs=1e-9)
    # each example is scored against its own references only (None entries are skipped by sacrebleu)
    per = tm.per_example_scores(hyps, refs, metrics=["chrf", "rouge"])
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for h, r, p in zip(hyps, refs, per):
        assert p["chrf"] == pytest.approx(sacrebleu.sentence_chrf(h, r).score, abs=1e-9)
        assert p["rougeL"] == pytest.approx(scorer.score_multi(r, h)["rougeL"].fmeasure, abs=1e-12)
    sigs = tm.text_metric_signatures(n_refs=tm.text_stats(hyps, refs).n_refs)
    assert sigs["bleu"].startswith("nrefs:var|") and sigs["chrf"].startswith("nrefs:var|")


def test_exact_match_normalises_whitespace_only():
    hyps = ["  The cat\tsat \n", "the cat sat", "A dog", "Ein  Hund", "x"]
    refs = [["The cat sat"], ["The cat sat"], ["a dog", "A  dog "], ["Ein Hund."], ["y", "z"]]
    res = tm.score_corpus(hyps, refs, metrics=["exact_match"], n_resamples=100)
    assert res["exact_match"]["value"] == pytest.approx(2 / 5)  # whitespace-only diff and 'any reference' match
    per = tm.per_example_scores(hyps, refs, metrics=["exact_match"])
    assert [p["exact_match"] for p in per] == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert tm.normalize_whitespace("\u00a0a \u2003 b\n") == "a b"


def test_per_example_scores_are_sentence_level(multi30k):
    hyps, refs = multi30k["en_sys"][:50], multi30k["en"][:50]
    per = tm.per_example_scores(hyps, [[r] for r in refs])
    assert len(per) == 50 and set(per[0]) == {"chrf", "rougeL"}
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for h, r, p in zip(hyps, refs, per):
        assert p["chrf"] == pytest.approx(sacrebleu.sentence_chrf(h, [r]).score, abs=1e-9)
        assert p["rougeL"] == pytest.approx(scorer.score(r, h)["rougeL"].fmeasure, abs=1e-12)
    assert tm.per_example_scores([], []) == []


# ---------------------------------------------------------------- the bootstrap


def test_resample_scores_equal_scoring_the_resampled_corpus(multi30k):
    """Summed sufficient statistics of a resample == sacrebleu on the literally resampled corpus."""
    hyps, refs = multi30k["de_sys"][:200], multi30k["de"][:200]
    stats = tm.text_stats(hyps, [[r] for r in refs])
    score = stats._scorer()
    rng = np.random.default_rng(7)
    idx = rng.integers(0, 200, size=(3, 200))
    counts = np.stack([np.bincount(row, minlength=200) for row in idx]).astype(float)
    got = score(counts)
    for b, row in enumerate(idx):
        h = [hyps[i] for i in row]
        r = [refs[i] for i in row]
        bleu = sacrebleu.corpus_bleu(h, [r])
        assert got[stats.scores.index("bleu"), b] == pytest.approx(bleu.score, abs=1e-9)
        assert got[stats.scores.index("chrf"), b] == pytest.approx(sacrebleu.corpus_chrf(h, [r]).score, abs=1e-9)
        assert got[stats.scores.index("length_ratio"), b] == pytest.approx(bleu.sys_len / bleu.ref_len)
        assert got[stats.scores.index("rougeL"), b] == pytest.approx(_rouge_means(h, [[x] for x in r])["rougeL"])


def test_mean_metric_ci_equals_scipy_bootstrap_of_the_mean(multi30k):
    """For a plain mean (rougeL), our counts-matrix bootstrap is scipy's own percentile bootstrap, draw for draw."""
    hyps, refs = multi30k["en_sys"][:300], multi30k["en"][:300]
    res = tm.score_corpus(hyps, refs, metrics=["rougeL"], n_resamples=500, seed=3)["rougeL"]
    values = np.array([p["rougeL"] for p in tm.per_example_scores(hyps, refs)])
    ref = sstats.bootstrap((values,), np.mean, vectorized=True, method="percentile", n_resamples=500,
                           batch=bootstrap_batch_size(300, 500), confidence_level=0.95, rng=np.random.default_rng(3))
    assert res["ci_low"] == pytest.approx(ref.confidence_interval.low, abs=1e-12)
    assert res["ci_high"] == pytest.approx(ref.confidence_interval.high, abs=1e-12)


def test_ci_contains_value_and_narrows_with_more_data(multi30k):
    hyps, refs = multi30k["en_sys"], multi30k["en"]
    small = tm.score_corpus(hyps[:100], refs[:100], n_resamples=500)
    large = tm.score_corpus(hyps, refs, n_resamples=500)
    for name in ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "length_ratio"):
        for res in (small, large):
            r = res[name]
            assert r["ci_low"] < r["value"] < r["ci_high"], (name, r)
            assert r["n_resamples"] == 500 and r["confidence"] == 0.95 and r["method"] == "percentile"
        width = lambda r: r[name]["ci_high"] - r[name]["ci_low"]  # noqa: E731
        assert width(large) < 0.6 * width(small), name  # n x10 -> about 1/sqrt(10) ~ 0.32


def test_seeded_reproducibility(dialogsum):
    hyps, refs = dialogsum["s1"][:200], dialogsum["s2"][:200]
    a = tm.score_corpus(hyps, refs, n_resamples=300, seed=11)
    assert tm.score_corpus(hyps, refs, n_resamples=300, seed=11) == a
    b = tm.score_corpus(hyps, refs, n_resamples=300, seed=12)
    assert b["bleu"]["value"] == a["bleu"]["value"] and b["bleu"]["ci_low"] != a["bleu"]["ci_low"]
    p1 = tm.paired_compare(hyps, dialogsum["s3"][:200], refs, n_resamples=300, seed=5)
    assert tm.paired_compare(hyps, dialogsum["s3"][:200], refs, n_resamples=300, seed=5) == p1


def test_identical_systems_have_zero_difference_and_p_one(multi30k):
    hyps, refs = multi30k["de_sys"][:300], multi30k["de"][:300]
    out = tm.paired_compare(hyps, list(hyps), refs, n_resamples=200)
    assert [c["metric"] for c in out] == list(tm.SCORE_NAMES)
    for c in out:
        assert c["diff"] == 0.0 and c["ci_low"] == 0.0 and c["ci_high"] == 0.0 and c["p_value"] == 1.0


def test_clearly_better_system_is_significant(dialogsum):
    """References themselves against the references of other dialogues (shuffled): p < 0.01 on every score."""
    refs = [[a, b] for a, b in zip(dialogsum["s2"], dialogsum["s3"])]
    good = dialogsum["s2"]  # one of its references: exact match 1 everywhere
    shuffled = good[7:] + good[:7]
    out = {c["metric"]: c for c in tm.paired_compare(good, shuffled, refs, n_resamples=1000, seed=0)}
    for name in ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "exact_match"):
        c = out[name]
        assert c["diff"] > 0 and c["ci_low"] > 0 and c["p_value"] < 0.01, c
    assert out["exact_match"]["diff"] == pytest.approx(1.0)
    # the other direction is just as significant, with the sign flipped
    back = {c["metric"]: c for c in tm.paired_compare(shuffled, good, refs, n_resamples=1000, seed=0)}
    assert back["bleu"]["diff"] == pytest.approx(-out["bleu"]["diff"]) and back["bleu"]["ci_high"] < 0
    assert back["bleu"]["p_value"] < 0.01


def test_null_comparisons_are_rarely_significant(multi30k):
    """Pairs of systems from the same noise process (no true difference): about 5% of tests at 0.05, not more.

    20 pairs on 200 captions; Binomial(20, 0.05) reaches 5 rejections with probability 0.003, and the seeds are
    fixed, so this is deterministic. A sloppy test (e.g. resampling the two systems independently, or a one-sided
    p-value) fails it."""
    refs = multi30k["en"][:200]
    rejections = {"bleu": 0, "chrf": 0, "rougeL": 0}
    inside = 0
    for k in range(20):
        a, b = _perturb(refs, 0.15, seed=100 + 2 * k), _perturb(refs, 0.15, seed=101 + 2 * k)
        for c in tm.paired_compare(a, b, refs, metrics=["bleu", "chrf", "rougeL"], n_resamples=500, seed=k):
            rejections[c["metric"]] += c["p_value"] < 0.05
            inside += c["ci_low"] <= 0 <= c["ci_high"]
            assert c["ci_low"] <= c["diff"] <= c["ci_high"]
            assert (c["p_value"] < 0.05) == (not c["ci_low"] <= 0 <= c["ci_high"]) or abs(c["p_value"] - 0.05) < 0.01
    assert all(r <= 4 for r in rejections.values()), rejections
    assert inside >= 50  # of 60 intervals


def test_text_stats_reuse_subset_and_compare(dialogsum):
    hyps, refs = dialogsum["s1"][:150], [[a, b] for a, b in zip(dialogsum["s2"][:150], dialogsum["s3"][:150])]
    stats = tm.text_stats(hyps, refs)
    assert stats.n == 150 and stats.n_refs == 2
    assert tm.score_stats(stats, n_resamples=200) == tm.score_corpus(hyps, refs, n_resamples=200)
    idx = [i for i in range(150) if i % 3 == 0]
    sub = tm.score_stats(stats.subset(idx), n_resamples=200)
    direct = tm.score_corpus([hyps[i] for i in idx], [refs[i] for i in idx], n_resamples=200)
    assert sub == direct
    mask = np.zeros(150, dtype=bool)
    mask[idx] = True
    assert tm.score_stats(stats.subset(mask), n_resamples=200) == direct
    other = tm.text_stats(dialogsum["s1"][1:151], refs)
    assert tm.compare_stats(stats, other, n_resamples=200) == tm.paired_compare(hyps, dialogsum["s1"][1:151], refs,
                                                                                n_resamples=200)
    with pytest.raises(ValueError, match="'stats_b' parameter of compare_stats must be scored on the same references"):
        tm.compare_stats(stats, tm.text_stats(hyps, [r[:1] for r in refs]))
    with pytest.raises(ValueError, match="'stats_b' parameter of compare_stats must hold the same metrics"):
        tm.compare_stats(stats, tm.text_stats(hyps, refs, metrics=["bleu"]))


def test_signatures():
    sigs = tm.text_metric_signatures(n_refs=3)
    assert sigs["bleu"] == f"nrefs:3|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"
    assert sigs["chrf"] == f"nrefs:3|case:mixed|eff:yes|nc:6|nw:0|space:no|version:{sacrebleu.__version__}"
    assert "stemmer:porter" in sigs["rouge"] and "multiref:max" in sigs["rouge"] and "rouge-score-0.1" in sigs["rouge"]
    assert set(sigs) == {"bleu", "chrf", "rouge", "exact_match", "length_ratio"}
    assert set(tm.text_metric_signatures(["rougeL"])) == {"rouge"}
    # the same strings sacrebleu itself reports after scoring
    bleu = sacrebleu.BLEU()
    bleu.corpus_score(["a b c"], [["a b c"], ["a b d"]])
    assert tm.text_metric_signatures(["bleu"], n_refs=2)["bleu"] == str(bleu.get_signature())


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(("call", "message"), [
    (lambda: tm.score_corpus(["a", "b"], [["a"]]), r"'references' parameter of score_corpus must have one entry "
                                                   r"per hypothesis: 'hypotheses' has 2, 'references' has 1"),
    (lambda: tm.score_corpus([], []), r"'hypotheses' parameter of score_corpus must hold at least 2 examples; got 0"),
    (lambda: tm.score_corpus(["a"], [["a"]]), r"at least 2 examples; got 1"),
    (lambda: tm.score_corpus(["a", 3], [["a"], ["b"]]), r"'hypotheses' parameter .* item 1 is int"),
    (lambda: tm.score_corpus(["a", None], [["a"], ["b"]]), r"'hypotheses' parameter .* item 1 is NoneType"),
    (lambda: tm.score_corpus("a b", ["a", "b"]), r"'hypotheses' parameter of score_corpus must be a list of strings"),
    (lambda: tm.score_corpus(["a", "b"], [["a"], []]), r"'references' .* at least one reference per example; "
                                                       r"example 1 has none"),
    (lambda: tm.score_corpus(["a", "b"], [["a"], ["b", 5]]), r"'references' .* reference 1 of example 1 is int"),
    (lambda: tm.score_corpus(["a", "b"], [["a"], None]), r"'references' .* example 1 is NoneType"),
    (lambda: tm.score_corpus(["a", "b"], ["a", "b"], metrics=["bleu", "meteor"]),
     r"'metrics' parameter of score_corpus must only hold names from .*'meteor'"),
    (lambda: tm.score_corpus(["a", "b"], ["a", "b"], metrics="bleu"), r"'metrics' parameter .* non-empty list"),
    (lambda: tm.score_corpus(["a", "b"], ["a", "b"], metrics=[]), r"'metrics' parameter .* non-empty list"),
    (lambda: tm.score_corpus(["a", "b"], ["a", "b"], n_resamples=10), r"'n_resamples' parameter of score_corpus"),
    (lambda: tm.score_corpus(["a", "b"], ["a", "b"], confidence=95), r"'confidence' parameter of score_corpus"),
    (lambda: tm.score_corpus(["a", "b"], ["a", "b"], seed=-1), r"'seed' parameter of score_corpus"),
    (lambda: tm.paired_compare(["a", "b"], ["a"], ["a", "b"]), r"'hyps_b' parameter of paired_compare must have "
                                                               r"as many examples as 'hyps_a' \(2\); got 1"),
    (lambda: tm.paired_compare(["a", "b"], ["a", 1], ["a", "b"]), r"'hyps_b' parameter .* item 1 is int"),
    (lambda: tm.per_example_scores(["a"], ["a"], metrics=["bleu"]), r"'metrics' parameter of per_example_scores "
                                                                   r"must only hold sentence-level scores"),
    (lambda: tm.text_metric_signatures(n_refs=0), r"'n_refs' parameter of text_metric_signatures"),
    (lambda: tm.score_stats(["a"]), r"'stats' parameter of score_stats must be a TextStats"),
])
def test_bad_input_names_the_parameter(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_empty_strings_are_scored_not_rejected():
    """An empty hypothesis is a real model output (it scores 0); an empty reference is odd but legal."""
    res = tm.score_corpus(["", "a cat sat on the mat"], [["a cat"], ["a cat sat on the mat"]], n_resamples=100)
    bleu = sacrebleu.corpus_bleu(["", "a cat sat on the mat"], [["a cat", "a cat sat on the mat"]])
    assert res["bleu"]["value"] == pytest.approx(bleu.score)
    assert res["rougeL"]["value"] == pytest.approx(0.5)
    zero = tm.score_corpus(["a", "b"], [[""], [""]], metrics=["length_ratio"], n_resamples=100)
    assert zero["length_ratio"]["value"] == 0.0  # sacrebleu's ratio is 0 with no reference tokens
