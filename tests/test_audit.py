"""The data audit (`tunewise audit`, and the first stage of `tunewise run`): on real data from ../shared/data with
planted problems, every planted kind must be found (recall >= 95%; label noise reports precision and recall),
and a recipe with a leaked test row, a non-commercial source under commercial use, or planted PII must get a
blocked run that says why. No model is trained here."""

from __future__ import annotations

import ast
import csv
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from tunewise.artifacts.data import SourceFile
from tunewise.audit import pii, provenance
from tunewise.audit.dedup import DuplicateIndex
from tunewise.audit.minhash import MinHasher, lsh_bands
from tunewise.audit.normalize import exact_form
from tunewise.audit.planted import paraphrase as _planted_paraphrase

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RECALL = 0.95
INTENTS = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "age_limit", "pin_blocked", "cancel_transfer",
           "top_up_failed", "card_not_working", "apple_pay_or_google_pay", "change_pin", "country_support",
           "transfer_timing"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines() if x.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def audit_dir(root: Path) -> Path:
    runs = sorted((root / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0] / "audit"


# ---------------------------------------------------------------- building blocks


def test_vectorised_minhash_is_datasketch_minhash():
    from datasketch import MinHash
    from datasketch.hashfunc import sha1_hash32

    hasher = MinHasher(num_perm=128, seed=7)
    sets = [["how", "do", "i", "reset", "my", "pin"], ["card"], ["a", "b", "c", "d", "e", "f", "g", "h"]]
    flat = np.array([sha1_hash32(w.encode()) for s in sets for w in s], dtype=np.uint32)
    ours = hasher.signatures(flat, np.array([len(s) for s in sets]))
    for i, s in enumerate(sets):
        ref = MinHash(num_perm=128, seed=7)
        ref.update_batch([w.encode() for w in s])
        assert (ours[i] == ref.hashvalues).all()


def test_lsh_bands_make_a_threshold_pair_a_candidate_almost_surely():
    for threshold in (0.5, 0.8, 0.9):
        b, r = lsh_bands(threshold, 128)
        assert b * r <= 128 and 1 - (1 - threshold ** r) ** b >= 0.98


def test_exact_form_ignores_unicode_and_whitespace_differences():
    base = exact_form("Café  au lait\t")
    assert exact_form("Cafe\u0301 au\u00a0lait") == base  # combining accent, no-break space
    assert exact_form("Café au\u200b lait") == base  # zero-width space
    assert exact_form("Ｃａｆé au lait") == base  # full-width letters (NFKC)
    assert exact_form("café au lait") != base  # case is a near-duplicate matter, not an exact one


def test_near_duplicates_are_verified_by_exact_jaccard_and_leaks_point_at_train():
    index = DuplicateIndex(0.8)
    index.add(0, ["How do I reset my PIN code today?", "Totally unrelated sentence about the weather here",
                  "how do i reset my pin code today"])
    index.add(2, ["How do I reset my new PIN code today?", "Another unrelated one"])
    d = index.finish()
    assert d.rep.tolist() == [0, 1, 2, 3, 4]
    assert d.edges.tolist() == [[0, 2], [0, 3], [2, 3]] and d.similarity.min() >= 0.8
    rows, partner, sim, exact = d.leaks(0, 2)
    assert rows.tolist() == [3] and partner.tolist() == [0] and not exact[0] and 0.8 <= sim[0] < 1


def test_the_duplicate_search_gives_the_same_answer_in_any_partition_size(shared_data, monkeypatch):
    """DuplicateIndex keeps its per-row state in files and `finish()` groups the exact-form keys, each band's
    keys and the candidate pairs a partition at a time, so its memory does not follow the data's size. The
    partition sizes must not change the answer: 4,000 real banking77 texts with exact repeats and one-word
    variants, in two splits, give the same representatives, pairs, similarities and candidate count with the
    default sizes (one partition at this size) as with tiny ones (16 key partitions, 8 pair ranges each read in
    narrower passes, chunks and steps that do not divide the rows)."""
    from tunewise.audit import dedup

    with open(shared_data / "banking77" / "train.csv", encoding="utf-8", newline="") as fh:
        texts = [r["text"] for _, r in zip(range(3000), csv.DictReader(fh))]
    texts += [texts[i] for i in range(0, 3000, 5)]  # exact repeats
    texts += [" ".join(texts[i].split()[:-1]) for i in range(1, 3000, 7)]  # one word dropped: near-duplicates

    def search() -> dedup.Duplicates:
        index = dedup.DuplicateIndex(0.8)
        index.add(0, texts[:3500])
        index.add(2, texts[3500:])
        return index.finish()

    whole = search()
    for name, value in {"_PART_ROWS": 256, "_PAIR_ROWS": 512, "_PAIR_BYTES": 4096, "_CHUNK": 1000,
                        "_ADD_ROWS": 333}.items():
        monkeypatch.setattr(dedup, name, value)
    parts = search()
    assert whole.candidates == parts.candidates > len(whole.edges) > 300
    assert (whole.rep != np.arange(len(texts))).sum() >= 600  # the exact repeats found
    for field in ("groups", "keys", "rep", "empty", "edges", "similarity"):
        assert np.array_equal(getattr(whole, field), getattr(parts, field)), field
    assert whole.leaks(0, 2)[0].tolist() == parts.leaks(0, 2)[0].tolist()


@pytest.mark.parametrize("text, kinds", [
    ("write to jane.doe+billing@example.co.uk please", ["email"]),
    ("my card 4111 1111 1111 1111 was charged", ["card"]),
    ("card 5500-0000-0000-0004", ["card"]),
    ("call +44 20 7946 0958 or (555) 123-4567", ["phone", "phone"]),
    ("my phone number is 2974-5328", ["phone"]),
    ("IBAN GB82 WEST 1234 5698 7654 32", ["iban"]),
    ("from 192.168.10.24 and 2001:db8::ff00:42:8329", ["ip", "ip"]),
    ("SSN 123-45-6789", ["ssn"]),
    # look-alikes that must NOT be flagged
    ("order 4111 1111 1111 1112 (fails Luhn)", []),
    ("IBAN GB82 WEST 1234 5698 7654 33 (bad check digits)", []),
    ("roughly 700-1000 calories, 1 000 000 people, on 2019-10-12 at 10:30:00, pi 3.14159", []),
    ("SSN 000-12-3456 is not valid", []),
])
def test_pii_patterns_with_checksums(text, kinds):
    assert [m.kind for m in pii.find_pii(text)] == kinds


def test_pii_redaction_and_masking():
    text = "mail jane@example.com, card 4111 1111 1111 1111"
    matches = pii.find_pii(text)
    assert pii.redact(text) == "mail [EMAIL], card [CARD]"
    assert [m.masked for m in matches] == ["j***@example.com", "•••• •••• •••• 1111"]


def test_no_pii_false_positives_on_real_banking77_and_sst2(shared_data):
    with open(shared_data / "banking77" / "test.csv", encoding="utf-8", newline="") as fh:
        texts = [r["text"] for r in csv.DictReader(fh)]
    texts += [r["sentence"] for r in read_jsonl(shared_data / "sst2" / "dev.jsonl")]
    hits = [(t, m.kind) for t in texts for m in pii.find_pii(t)]
    assert hits == []


def _file(licence: str | None) -> SourceFile:
    """A data file as the data stage's summary.json records it, with the given licence."""
    return SourceFile(path="t.jsonl", sha256=None, source="tests", license=licence, contains_personal_data=False,
                      max_rows=None)


@pytest.mark.parametrize("licence, use, severity", [
    ("CC-BY-NC-4.0", "commercial", "blocking"),
    ("CC BY-NC-SA 4.0", "commercial", "blocking"),
    ("research-only", "commercial", "blocking"),
    ("CC-BY-NC-4.0", "internal", "warning"),
    ("CC-BY-NC-4.0", "unspecified", "warning"),
    ("CC-BY-NC-4.0", "research", "info"),
    ("CC-BY-4.0", "commercial", None),
    ("Apache-2.0", "commercial", None),
])
def test_licence_against_intended_use(licence, use, severity):
    verdicts = [v for v in provenance.judge("train", _file(licence), use, "warning")
                if v.kind == "non_commercial"]
    assert (verdicts[0].severity if verdicts else None) == severity


@pytest.mark.parametrize("policy", ["warning", "blocking"])
def test_missing_licence_follows_policy(policy):
    (v,) = provenance.judge("test", _file(None), "commercial", policy)
    assert v.kind == "missing" and v.severity == policy and "data.test.license" in v.action


# ---------------------------------------------------------------- planted problems in real banking77 rows

FILLERS = ["please", "actually", "really", "now", "just"]
SYNONYMS = {"card": "cards", "money": "funds", "help": "assist", "get": "receive", "account": "acct",
            "want": "wish", "transfer": "transaction", "how": "how exactly", "my": "the"}
WHITESPACE = [lambda t: t.replace(" ", "  ", 1), lambda t: "  " + t + " \t", lambda t: t.replace(" ", "\u00a0", 2),
              lambda t: t.replace(" ", " \u200b", 1), lambda t: t.replace(" ", "\n", 1)]


def paraphrase(text: str, rng: random.Random) -> str:
    return _planted_paraphrase(text, rng, fillers=FILLERS, synonyms=SYNONYMS)


PII_VALUES = {
    "email": ["ana.lopez@example.org", "j.smith+bank@mail.example.com", "k_ito@example.jp", "m.n@example.co.uk"],
    "phone": ["+44 20 7946 0958", "(415) 555-0134", "+1 212-555-0187", "030 1234 5678"],
    "card": ["4111 1111 1111 1111", "5500-0000-0000-0004", "4012888888881881", "3782 822463 10005"],
    "iban": ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "FR14 2004 1010 0505 0001 3M02 606",
             "NL91ABNA0417164300"],
    "ip": ["192.168.10.24", "10.0.0.254", "172.16.254.1", "2001:db8::ff00:42:8329"],
    "ssn": ["123-45-6789", "219-09-9999", "078-05-1120", "536-22-1234"],
}
DECOYS = ["4111 1111 1111 1112", "5500-0000-0000-0005", "1234 5678 9012 3456", "GB82 WEST 1234 5698 7654 33"]


@pytest.fixture(scope="module")
def planted(shared_data, tmp_path_factory, tunewise):
    """banking77 rows of 12 intents with planted duplicates, paraphrases, leaked test rows, flipped labels, label
    conflicts, PII (and Luhn/IBAN-invalid decoys), near-empty rows; audited once with `tunewise audit`."""
    rng = random.Random(20240601)
    folder = tmp_path_factory.mktemp("planted")

    def take(path: Path, per_intent: int) -> list[dict]:
        seen: dict[str, int] = {}
        rows = []
        with open(path, encoding="utf-8", newline="") as fh:
            for r in csv.DictReader(fh):
                if r["category"] in INTENTS and seen.get(r["category"], 0) < per_intent:
                    seen[r["category"]] = seen.get(r["category"], 0) + 1
                    rows.append({"text": r["text"], "label": r["category"]})
        return rows

    train = [{"id": f"tr{i}", **r} for i, r in enumerate(take(shared_data / "banking77" / "train.csv", 80))]
    test = [{"id": f"te{i}", **r} for i, r in enumerate(take(shared_data / "banking77" / "test.csv", 25))]
    long_rows = [r for r in train if len(r["text"].split()) >= 8]
    sources = rng.sample(long_rows, 165)
    dup_src, near_src, leak_src, near_leak_src = sources[:30], sources[30:80], sources[80:105], sources[105:125]
    conflict_src, pii_src = sources[125:131], sources[131:165]
    used = {r["id"] for r in sources}
    truth: dict[str, list] = {"duplicate": [], "near_duplicate": [], "leak": [], "label_conflict": [], "pii": [],
                              "decoy": [], "empty": []}
    extra_train, extra_test = [], []
    for k, r in enumerate(dup_src):
        extra_train.append({"id": f"dup{k}", "text": WHITESPACE[k % len(WHITESPACE)](r["text"]), "label": r["label"]})
        truth["duplicate"].append((f"dup{k}", r["id"]))
    for k, r in enumerate(near_src):
        extra_train.append({"id": f"near{k}", "text": paraphrase(r["text"], rng), "label": r["label"]})
        truth["near_duplicate"].append((f"near{k}", r["id"]))
    for k, r in enumerate(leak_src):
        extra_test.append({"id": f"leak{k}", "text": WHITESPACE[k % len(WHITESPACE)](r["text"]), "label": r["label"]})
        truth["leak"].append((f"leak{k}", r["id"]))
    for k, r in enumerate(near_leak_src):
        extra_test.append({"id": f"nleak{k}", "text": paraphrase(r["text"], rng), "label": r["label"]})
        truth["leak"].append((f"nleak{k}", r["id"]))
    for k, r in enumerate(conflict_src):
        other = rng.choice([x for x in INTENTS if x != r["label"]])
        extra_train.append({"id": f"conf{k}", "text": r["text"], "label": other})
        truth["label_conflict"].append((f"conf{k}", r["id"]))
    for k, r in enumerate(pii_src[:24]):
        kind = list(PII_VALUES)[k % 6]
        r["text"] = f"{r['text'].rstrip('?.!')}, {PII_VALUES[kind][k // 6]}"
        truth["pii"].append((r["id"], kind))
    for k, r in enumerate(pii_src[24:28]):
        r["text"] = f"{r['text'].rstrip('?.!')} ref {DECOYS[k]}"
        truth["decoy"].append(r["id"])
    for k, text in enumerate(["??", "N/A", "."]):
        extra_train.append({"id": f"empty{k}", "text": text, "label": INTENTS[k]})
        truth["empty"].append(f"empty{k}")
    # flip 5% of the untouched train rows
    candidates = [r for r in train if r["id"] not in used]
    flipped = rng.sample(candidates, len(train) // 20)
    for r in flipped:
        r["label"] = rng.choice([x for x in INTENTS if x != r["label"]])
    truth["label_noise"] = [r["id"] for r in flipped]

    train_rows = train + extra_train
    rng.shuffle(train_rows)
    write_jsonl(folder / "train.jsonl", train_rows)
    write_jsonl(folder / "test.jsonl", test + extra_test)
    recipe = {
        "name": "planted", "seed": 5, "output_dir": "runs", "intended_use": "commercial",
        "data": {"train": {"path": "train.jsonl", "license": "CC-BY-NC-4.0", "source": "banking77 + planted",
                           "contains_personal_data": False},
                 "test": {"path": "test.jsonl", "license": "CC-BY-4.0", "source": "banking77",
                          "contains_personal_data": False},
                 "validation_fraction": 0.0},
        "model": {"base": "minilm", "max_length": 64},
    }
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    proc = tunewise("audit", "recipe.yaml", cwd=folder)
    audit = audit_dir(folder)
    flagged = read_jsonl(audit / "flagged.jsonl")
    return {"proc": proc, "truth": truth, "audit": audit, "flagged": flagged,
            "findings": json.loads((audit / "findings.json").read_text(encoding="utf-8")), "folder": folder}


def flagged_by(planted, check: str) -> list[dict]:
    return [f for f in planted["flagged"] if f["check"] == check]


def test_planted_exact_duplicates_are_found(planted):
    pairs = {frozenset((f["id"], f["of"])) for f in flagged_by(planted, "duplicate")}  # either may come first
    truth = planted["truth"]["duplicate"]
    recall = sum(frozenset(p) in pairs for p in truth) / len(truth)
    print(f"\nrecall duplicate: {recall:.3f} ({len(truth)} planted)")
    assert recall >= RECALL


def test_planted_paraphrases_are_near_duplicates(planted):
    cluster = {f["id"]: f["cluster"] for f in flagged_by(planted, "near_duplicate")}
    dups = {frozenset((f["id"], f["of"])) for f in flagged_by(planted, "duplicate")}
    truth = planted["truth"]["near_duplicate"]
    found = [copy in cluster and cluster.get(copy) == cluster.get(orig) or frozenset((copy, orig)) in dups
             for copy, orig in truth]
    recall = sum(found) / len(truth)
    print(f"\nrecall near_duplicate: {recall:.3f} ({len(truth)} planted)")
    assert recall >= RECALL


def test_planted_leaked_test_rows_are_found_and_block(planted):
    pairs = {(f["id"], f["of"]) for f in flagged_by(planted, "leak")}
    truth = planted["truth"]["leak"]
    recall = sum(p in pairs for p in truth) / len(truth)
    print(f"\nrecall leak: {recall:.3f} ({len(truth)} planted: 25 exact, 20 paraphrased)")
    assert recall >= RECALL
    exact = next(f for f in planted["findings"]["findings"] if f["check"] == "leak" and f["kind"] == "exact")
    assert exact["severity"] == "blocking" and exact["split"] == "test"
    q = [r for r in read_jsonl(planted["audit"] / "quarantine.jsonl") if r.get("check") == "leak"]
    assert {r["id"] for r in q} >= {f"leak{k}" for k in range(25)}  # recommended for removal from test


def test_planted_label_conflicts_are_found(planted):
    flagged = {f["id"] for f in flagged_by(planted, "label_conflict")}
    truth = planted["truth"]["label_conflict"]
    recall = sum(a in flagged and b in flagged for a, b in truth) / len(truth)
    assert recall >= RECALL


def test_planted_pii_is_found_per_kind_and_decoys_are_not(planted):
    flagged = {(f["id"], f["kind"]) for f in flagged_by(planted, "pii")}
    truth = planted["truth"]["pii"]
    for kind in PII_VALUES:
        mine = [t for t in truth if t[1] == kind]
        recall = sum(t in flagged for t in mine) / len(mine)
        assert recall >= RECALL, (kind, recall)
    decoys = set(planted["truth"]["decoy"])
    assert not {i for i, _ in flagged} & decoys, "Luhn/IBAN-invalid numbers must not be flagged"
    print(f"\nrecall pii: 1.000 per kind ({len(truth)} planted), decoys flagged: 0 of {len(decoys)}")


def test_planted_empty_rows_are_found(planted):
    assert {f["id"] for f in flagged_by(planted, "empty")} >= set(planted["truth"]["empty"])


def test_label_noise_precision_and_recall_are_reported(planted):
    flagged = {f["id"] for f in flagged_by(planted, "label_noise")}
    flips = set(planted["truth"]["label_noise"])
    tp = len(flagged & flips)
    precision, recall = tp / max(1, len(flagged)), tp / len(flips)
    print(f"\nlabel noise (cleanlab on out-of-fold TF-IDF + logistic regression): {len(flips)} flipped, "
          f"{len(flagged)} flagged, precision {precision:.2f}, recall {recall:.2f}")
    assert recall >= 0.6 and precision >= 0.4  # candidates for review, not a verdict; a floor against regressions


def test_planted_audit_blocks_and_says_why(planted):
    proc = planted["proc"]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    for kind in ("leak", "pii", "duplicate", "near_duplicate", "label_conflict", "label_noise", "license"):
        assert re.search(rf"^\s+\S+\s+{kind}\s", proc.stdout, re.M), (kind, proc.stdout)
    err = proc.stderr
    assert err.startswith("error: the data audit found") and "training did not start" in err
    assert "leak (exact, test)" in err and "test.jsonl:" in err  # which rows, with file:line
    assert "CC-BY-NC-4.0" in err and "train.jsonl" in err and "commercial" in err
    assert "pii (card" in err and "4111" not in err  # values are masked in messages
    assert "audit.allow=[leak,license,pii]" in err
    # the findings file says the same, with enough to act on
    doc = planted["findings"]
    assert doc["summary"]["blocked"] and {"leak", "pii", "license"} <= {
        f["check"] for f in doc["findings"] if f["severity"] == "blocking"}
    for f in doc["findings"]:
        assert f["message"] and f["action"] and f["count"] >= 1
    # the data stage's quarantine is copied and the audit's recommendations are added
    quarantine = read_jsonl(planted["audit"] / "quarantine.jsonl")
    assert {q["check"] for q in quarantine} >= {"duplicate", "leak", "empty"}
    assert all(q["reason"] for q in quarantine)


def test_audit_writes_plots_and_a_real_datasheet(planted):
    audit = planted["audit"]
    for name in ("label_distribution.svg", "length_histogram.svg", "duplicate_clusters.svg"):
        assert (audit / name).read_text(encoding="utf-8").lstrip().startswith("<?xml"), name
    card = (audit / "datacard.md").read_text(encoding="utf-8")
    for section in ("## Motivation", "## Composition", "## Collection process", "## Preprocessing, cleaning, labelling",
                    "## Uses", "## Distribution", "## Maintenance"):
        assert section in card
    assert "Not stated in the recipe" in card  # no invented answers
    assert "CC-BY-NC-4.0" in card and "Training is **blocked**" in card
    assert "Nothing was removed from the data" in card
    assert "card_arrival" in card  # label counts per split


# ---------------------------------------------------------------- the licence gate and the override


@pytest.fixture(scope="module")
def nc_recipe(make_recipe):
    """The banking77 slice recipe, with its train file licensed CC-BY-NC-4.0 and a commercial intended use."""
    recipe = make_recipe("nc_commercial", intended_use="commercial")
    raw = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    raw["data"]["train"]["license"] = "CC-BY-NC-4.0"
    recipe.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return recipe


def test_non_commercial_data_under_commercial_use_blocks_the_run(nc_recipe, banking_slice, tunewise):
    proc = tunewise("run", nc_recipe)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "license" in proc.stdout and "BLOCKING" in proc.stdout
    err = proc.stderr
    assert "CC-BY-NC-4.0" in err and str(banking_slice["train"]) in err and "intended_use is commercial" in err
    assert "audit.allow=[license]" in err and "training did not start" in err
    run = Path(re.search(r"run directory: (\S+)", proc.stdout).group(1))
    manifest = json.loads((run / "manifest.json").read_text())
    assert list(manifest["stages"]) == ["data", "audit"]  # stopped before training; audit/ kept to read
    assert (run / "audit" / "findings.json").is_file() and (run / "audit" / "datacard.md").is_file()


def test_allowing_the_licence_check_lets_it_through_and_the_card_records_it(nc_recipe, banking_slice, tunewise):
    from tunewise.artifacts import Findings
    from tunewise.card.audit import audit_summary
    from tunewise.card.model_card import template_env

    proc = tunewise("audit", nc_recipe, "audit.allow=[license]")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^\s+ALLOWED\s+license", proc.stdout, re.M), proc.stdout
    root = Path(re.search(r"run directory: (\S+)", proc.stdout).group(1))
    doc = json.loads((root / "audit" / "findings.json").read_text())
    lic = next(f for f in doc["findings"] if f["check"] == "license")
    assert lic["severity"] == "blocking" and lic["allowed"] and doc["policy"]["allow"] == ["license"]
    assert not doc["summary"]["blocked"] and doc["summary"]["allowed_blocking"] == ["license"]
    assert "accepted for this run by `audit.allow`: license" in (root / "audit" / "datacard.md").read_text()
    # the model card's audit section, from this typed findings.json, links the datasheet and names the override
    audit = audit_summary(Findings.read(root / "audit" / "findings.json"), "../audit/datacard.md")
    text = template_env(autoescape=False).get_template("model_card_audit.md.j2").render(audit=audit)
    assert "[dataset card](../audit/datacard.md)" in text and "### Data audit" in text
    assert "`audit.allow: [license]`" in text and "CC-BY-NC-4.0" in text


# ---------------------------------------------------------------- generation and chat


@pytest.fixture(scope="module")
def dialogsum_leak(shared_data, tmp_path_factory, tunewise):
    """dialogsum dev (train) and test, with test summaries pasted into train summaries (13-gram leak), test rows
    copied into train (exact leak) and an e-mail address in a train dialogue."""
    folder = tmp_path_factory.mktemp("dialogsum")
    train = read_jsonl(shared_data / "dialogsum" / "dialogsum.dev.jsonl")[:120]
    test = read_jsonl(shared_data / "dialogsum" / "dialogsum.test.jsonl")[:40]
    ngram_leaks = [t for t in test if len(t["summary1"].split()) >= 16][:5]
    for k, t in enumerate(ngram_leaks):
        train[k]["summary"] = train[k]["summary"] + " " + t["summary1"]
    exact_leaks = test[30:33]
    train += [{"fname": f"copy_{t['fname']}", "dialogue": t["dialogue"], "summary": t["summary1"]} for t in exact_leaks]
    train[50]["dialogue"] += "\n#Person1#: Write to me at dana.w@example.net."
    write_jsonl(folder / "train.jsonl", [{"id": r["fname"], "dialogue": r["dialogue"], "summary": r["summary"]}
                                         for r in train])
    write_jsonl(folder / "test.jsonl", [{"id": r["fname"], "dialogue": r["dialogue"], "summary": r["summary1"]}
                                        for r in test])
    recipe = {"name": "dsum", "task": "generation", "output_dir": "runs", "intended_use": "research",
              "data": {"train": {"path": "train.jsonl", "license": "CC-BY-NC-SA-4.0", "source": "DialogSum dev",
                                 "contains_personal_data": False},
                       "test": {"path": "test.jsonl", "license": "CC-BY-NC-SA-4.0", "source": "DialogSum test",
                                "contains_personal_data": False},
                       "prompt_template": "Summarize the dialogue.\n\n{dialogue}", "completion_field": "summary",
                       "validation_fraction": 0.0},
              "model": {"base": "minilm", "max_length": 512}}
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    proc = tunewise("audit", "recipe.yaml", cwd=folder)
    audit = audit_dir(folder)
    return {"proc": proc, "flagged": read_jsonl(audit / "flagged.jsonl"), "ngram": [t["fname"] for t in ngram_leaks],
            "exact": [t["fname"] for t in exact_leaks], "audit": audit}


def test_generation_13gram_and_exact_leaks_are_found(dialogsum_leak):
    leaks = {f["id"]: f for f in dialogsum_leak["flagged"] if f["check"] == "leak"}
    assert all(leaks.get(i, {}).get("kind") == "exact" for i in dialogsum_leak["exact"])
    ngram = [i for i in dialogsum_leak["ngram"] if leaks.get(i, {}).get("kind") == "ngram"]
    assert len(ngram) / len(dialogsum_leak["ngram"]) >= RECALL, leaks
    assert all("13-word run in its reply" in leaks[i]["detail"] for i in ngram)
    assert len(leaks) <= len(dialogsum_leak["exact"]) + len(dialogsum_leak["ngram"]) + 2  # few false alarms


def test_generation_audit_blocks_on_the_exact_leak_and_pii(dialogsum_leak):
    proc = dialogsum_leak["proc"]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "leak (exact, test)" in proc.stderr and "pii (email" in proc.stderr
    assert re.search(r"^\s+skipped\s+label_noise\s+-\s+not applicable to task generation", proc.stdout, re.M)
    assert re.search(r"^\s+info\s+license", proc.stdout, re.M)  # NC-SA under research use: allowed, noted
    card = (dialogsum_leak["audit"] / "datacard.md").read_text(encoding="utf-8")
    assert "**Do the splits overlap?** Yes" in card and "the target is the completion" in card


def test_chat_audit_redacts_pii_and_falls_back_to_estimated_lengths(shared_data, tmp_path, tunewise):
    pairs = read_jsonl(shared_data / "multi30k_en_de" / "test_2016_flickr.jsonl")[:60]
    chats = [{"id": f"c{i}", "messages": [{"role": "user", "content": f"Translate into German: {p['en']}"},
                                          {"role": "assistant", "content": p["de"]}]} for i, p in enumerate(pairs)]
    chats[3]["messages"][0]["content"] += " My card is 4111 1111 1111 1111, call +44 20 7946 0958."
    write_jsonl(tmp_path / "train.jsonl", chats[:50])
    write_jsonl(tmp_path / "test.jsonl", chats[50:] + [dict(chats[7], id="leaked")])
    recipe = {"name": "chat", "task": "chat", "output_dir": "runs",
              "data": {"train": {"path": "train.jsonl", "license": "CC-BY-4.0", "source": "multi30k",
                                 "contains_personal_data": True},
                       "test": {"path": "test.jsonl", "license": "CC-BY-4.0", "source": "multi30k",
                                "contains_personal_data": True},
                       "validation_fraction": 0.0},
              "model": {"base": "nobody/no-such-model"}, "audit": {"redact_pii": True, "allow": ["leak"]}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    proc = tunewise("audit", "recipe.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # the leak is allowed; PII is declared, so it warns
    assert re.search(r"^\s+ALLOWED\s+leak", proc.stdout, re.M) and re.search(r"^\s+warning\s+pii", proc.stdout, re.M)
    audit = audit_dir(tmp_path)
    redacted = read_jsonl(audit / "redacted" / "train.jsonl")
    assert redacted[3]["messages"][0]["content"].endswith("My card is [CARD], call [PHONE].")
    assert redacted[4] == read_jsonl(audit.parent / "data" / "train.jsonl")[4]  # rows without PII: unchanged
    doc = json.loads((audit / "findings.json").read_text())
    unit = doc["stats"]["length_unit"]
    assert unit.startswith("estimated tokens") and "nobody/no-such-model" in unit
    assert any(f["check"] == "leak" and f["id"] == "leaked" for f in read_jsonl(audit / "flagged.jsonl"))


# ---------------------------------------------------------------- structure

SRC = Path(__file__).resolve().parents[1] / "src" / "tunewise"


def imported_modules(tree: ast.Module) -> set[str]:
    """Every tunewise module a file imports; `from a import b` counts as a and a.b (b may be a submodule)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m.startswith("tunewise")}


@pytest.mark.parametrize("package, other", [("audit", "tunewise.card"), ("card", "tunewise.audit")])
def test_audit_and_card_do_not_import_each_other(package, other):
    for path in sorted((SRC / package).rglob("*.py")):
        bad = {m for m in imported_modules(ast.parse(path.read_text(encoding="utf-8")))
               if m == other or m.startswith(other + ".")}
        assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}: stages meet only through run-directory files"


def test_no_module_uses_another_modules_private_names():
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bound: set[str] = set()  # local names of imported tunewise modules (or their members)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tunewise"):
                problems += [f"{path.relative_to(SRC)}:{node.lineno} imports {a.name} from {node.module}"
                             for a in node.names if a.name.startswith("_")]
                bound.update(a.asname or a.name for a in node.names)
            elif isinstance(node, ast.Import):
                bound.update((a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith("tunewise"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound \
                    and node.attr.startswith("_") and not node.attr.startswith("__"):
                problems.append(f"{path.relative_to(SRC)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not problems, "private names used across modules:\n" + "\n".join(problems)


def test_atomic_jsonl_writer_streams_and_leaves_nothing_behind_on_error(tmp_path):
    from tunewise.rundir import AtomicJsonlWriter

    target = tmp_path / "out" / "rows.jsonl"
    with AtomicJsonlWriter(target) as writer:
        writer.write({"id": "a", "text": "café"})
        assert not target.exists()  # only the temp file exists until the block ends
        writer.write({"id": "b"})
    assert read_jsonl(target) == [{"id": "a", "text": "café"}, {"id": "b"}]
    with pytest.raises(RuntimeError):
        with AtomicJsonlWriter(target) as writer:
            writer.write({"id": "c"})
            raise RuntimeError("crash mid-stream")
    assert read_jsonl(target) == [{"id": "a", "text": "café"}, {"id": "b"}]  # the old file, untouched
    assert [p.name for p in target.parent.iterdir()] == ["rows.jsonl"]  # no temp file left


def test_each_audit_check_comes_from_one_check_module_and_the_stage_only_orchestrates(planted):
    from tunewise.audit.checks import CHECKS
    from tunewise.audit.scan import scan
    from tunewise.recipe import AUDIT_CHECKS
    from tunewise.rundir import RunDir

    rd = RunDir.open(planted["audit"].parent)
    collected = scan(rd.recipe, rd.stage_dir("data"))
    reported = [name for check in CHECKS for name in check(collected).status]
    assert sorted(reported) == sorted(AUDIT_CHECKS)  # every check, each from exactly one module
    tree = ast.parse((SRC / "audit" / "stage.py").read_text(encoding="utf-8"))
    longest = max(f.end_lineno - f.lineno + 1 for f in ast.walk(tree) if isinstance(f, ast.FunctionDef))
    assert longest <= 50, f"a {longest}-line function in audit/stage.py: checks belong in audit/checks/"
