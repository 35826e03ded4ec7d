"""The data layer: strict reading, quarantine, seeded stratified splits and the data stage."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunewise.artifacts.rows import Row, load_labels, load_split
from tunewise.data import data_files, derive_labels, prepare_data, read_labeled_file, stratified_split
from tunewise.errors import DataError
from tunewise.recipe import validate_recipe
from tunewise.rundir import sha256_file

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BANKING77 = SHARED_DATA / "banking77"

GOOD = [
    {"text": "The refund arrived two days after I asked for it.", "label": "positive"},
    {"text": "Still waiting on my card after three weeks, no reply.", "label": "negative"},
    {"text": "Support fixed the login problem in five minutes.", "label": "positive"},
    {"text": "The app crashes every time I open the statements tab.", "label": "negative"},
]
LABELS = ["negative", "positive"]


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def good_lines() -> list[str]:
    return [json.dumps(row) for row in GOOD]


def read(path: Path, **kwargs):
    kwargs.setdefault("text_field", "text")
    kwargs.setdefault("label_field", "label")
    return read_labeled_file(path, **kwargs)


# ---------------------------------------------------------------- bad rows, JSON Lines

# (second line of the file, field named in the message or None, words the message must contain)
BAD_JSONL_LINES = [
    ('{"text": "My card was declined at the shop", "label": ', None, "not valid JSON"),
    ('["My card was declined at the shop", "negative"]', None, "not a JSON object"),
    ('"My card was declined at the shop"', None, "not a JSON object"),
    ('{"label": "negative"}', "text", "missing"),
    ('{"text": "My card was declined at the shop"}', "label", "missing"),
    ('{"text": "", "label": "negative"}', "text", "empty"),
    ('{"text": "   \\t ", "label": "negative"}', "text", "whitespace"),
    ('{"text": 42, "label": "negative"}', "text", "an integer"),
    ('{"text": null, "label": "negative"}', "text", "null"),
    ('{"text": "My card was declined at the shop", "label": null}', "label", "null"),
    ('{"text": "My card was declined at the shop", "label": true}', "label", "a boolean"),
    ('{"text": "My card was declined at the shop", "label": 1.0}', "label", "a float"),
    ('{"text": "My card was declined at the shop", "label": ["negative"]}', "label", "a list"),
    ('{"text": "My card was declined at the shop", "label": "neutral"}', "label", "not one of the declared labels"),
    ('{"text": "Broken emoji \\ud83d here", "label": "negative"}', "text", "surrogate"),
    ('{"text": "My card was declined at the shop", "label": "neg\\udc00"}', "label", "surrogate"),
]


def _bad_file(tmp_path: Path, second_line: str) -> Path:
    lines = good_lines()
    return write_jsonl(tmp_path / "bad.jsonl", [lines[0], second_line, *lines[1:]])


@pytest.mark.parametrize(("line", "field", "words"), BAD_JSONL_LINES)
def test_bad_jsonl_row_fails_naming_file_line_and_field(tmp_path, line, field, words):
    path = _bad_file(tmp_path, line)
    with pytest.raises(DataError) as info:
        read(path, labels=LABELS)
    message = str(info.value)
    assert "bad.jsonl:2: " in message
    assert words in message
    if field:
        assert f"field '{field}'" in message
    assert "; expected" in message


@pytest.mark.parametrize(("line", "field", "words"), BAD_JSONL_LINES)
def test_bad_jsonl_row_is_quarantined_and_reading_goes_on(tmp_path, line, field, words):
    path = _bad_file(tmp_path, line)
    rows, quarantined = read(path, labels=LABELS, on_error="quarantine", max_quarantine_fraction=0.5)
    assert [r.text for r in rows] == [g["text"] for g in GOOD]
    assert [r.origin for r in rows] == [f"{path}:{n}" for n in (1, 3, 4, 5)]
    assert len(quarantined) == 1
    q = quarantined[0]
    assert (q.file, q.line, q.field) == (str(path), 2, field)
    assert words in q.reason
    assert q.raw == line
    assert q.message.startswith(f"{path}:2: ")


def test_bad_utf8_in_jsonl_names_the_byte_and_column(tmp_path):
    lines = [line.encode() for line in good_lines()]
    bad = b'{"text": "Caf\xe9 card payment failed", "label": "negative"}'
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join([lines[0], bad, lines[1]]) + b"\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: invalid UTF-8: byte 0xE9 at byte offset 13 .*column 14"):
        read(path)
    rows, quarantined = read(path, on_error="quarantine", max_quarantine_fraction=0.5)
    assert len(rows) == 2
    assert quarantined[0].line == 2 and "invalid UTF-8" in quarantined[0].reason
    assert "Caf\ufffd card" in quarantined[0].raw


def test_unseen_label_message_when_labels_come_from_train(tmp_path):
    path = _bad_file(tmp_path, '{"text": "My card was declined", "label": "neutral"}')
    with pytest.raises(DataError, match="'neutral' was not in the training data"):
        read(path, labels=LABELS, labels_from="train")


def test_long_label_list_is_truncated_in_the_message(tmp_path):
    labels = [f"intent_{i:02d}" for i in range(60)]
    path = write_jsonl(tmp_path / "bad.jsonl", ['{"text": "Where is my card?", "label": "card_lost"}'])
    with pytest.raises(DataError) as info:
        read(path, labels=labels)
    assert "intent_19" in str(info.value) and "intent_20" not in str(info.value)
    assert "60 labels in all" in str(info.value)


def test_json_array_file_gets_a_hint(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(GOOD, indent=2), encoding="utf-8")
    with pytest.raises(DataError, match="rows.json:1: .*JSON Lines"):
        read(path)


# ---------------------------------------------------------------- bad rows, CSV


def write_csv(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


CSV_HEADER = "text,label\n"
BAD_CSV_ROWS = [
    ('"Where is my card, it has been a week",negative,extra\n', None, "3 columns but the header has 2"),
    ("Where is my card\n", None, "1 column but the header has 2"),
    (',negative\n', "text", "is empty"),
    ('"   ",negative\n', "text", "whitespace"),
    ('Where is my card,\n', "label", "is empty"),
    ('Where is my card,neutral\n', "label", "not one of the declared labels"),
]


@pytest.mark.parametrize(("row", "field", "words"), BAD_CSV_ROWS)
def test_bad_csv_row_under_both_policies(tmp_path, row, field, words):
    path = write_csv(tmp_path / "bad.csv", CSV_HEADER + "Card arrived quickly,positive\n" + row + "App works fine,positive\n")
    with pytest.raises(DataError) as info:
        read(path, labels=LABELS)
    assert "bad.csv:3: " in str(info.value) and words in str(info.value)
    if field:
        assert f"field '{field}'" in str(info.value)
    rows, quarantined = read(path, labels=LABELS, on_error="quarantine", max_quarantine_fraction=0.5)
    assert [r.origin for r in rows] == [f"{path}:2", f"{path}:4"]
    assert [(q.line, q.field) for q in quarantined] == [(3, field)]
    assert words in quarantined[0].reason


def test_bad_utf8_in_csv_is_one_bad_row(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"text,label\nCard arrived quickly,positive\nCaf\xe9 card declined,negative\nApp works,positive\n")
    with pytest.raises(DataError, match=r"bad\.csv:3: field 'text': invalid UTF-8: byte 0xE9 at line 3, column 4"):
        read(path)
    rows, quarantined = read(path, on_error="quarantine", max_quarantine_fraction=0.5)
    assert [r.text for r in rows] == ["Card arrived quickly", "App works"]
    assert quarantined[0].line == 3 and quarantined[0].raw == "Caf\ufffd card declined,negative"


def test_unclosed_quote_in_csv_points_at_the_quote(tmp_path):
    path = write_csv(tmp_path / "bad.csv", CSV_HEADER + 'Fine,positive\n"Unclosed quote,negative\nMore,positive\n')
    with pytest.raises(DataError, match=r"bad\.csv:3: .*spans lines 3-4, so a quote may be left open"):
        read(path)


# ---------------------------------------------------------------- valid oddities


def test_bom_crlf_and_quoted_newlines_in_csv_load_with_physical_line_numbers(tmp_path):
    text = ('text,label,channel\r\n'
            '"Card arrived, thanks",positive,app\r\n'
            '"Line one of the complaint\r\nline two, still angry",negative,email\r\n'
            '\r\n'
            'Refund was quick,positive,\r\n')
    path = tmp_path / "tickets.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    rows, quarantined = read(path, slice_fields=["channel", "region"])
    assert quarantined == []
    assert [r.origin for r in rows] == [f"{path}:2", f"{path}:3", f"{path}:6"]
    assert [r.id for r in rows] == ["tickets:2", "tickets:3", "tickets:6"]
    assert rows[1].text == "Line one of the complaint\r\nline two, still angry"
    assert rows[0].meta == {"channel": "app", "region": None}
    assert rows[2].meta == {"channel": None, "region": None}


def test_bom_crlf_and_blank_lines_in_jsonl(tmp_path):
    body = "\r\n".join([json.dumps(GOOD[0]), "", "   ", json.dumps(GOOD[1]), ""])
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    rows, quarantined = read(path)
    assert quarantined == []
    assert [r.origin for r in rows] == [f"{path}:1", f"{path}:4"]
    assert rows[0].text == GOOD[0]["text"]


def test_unicode_line_separator_inside_a_json_string_is_not_a_line_break(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [json.dumps({"text": "one\u2028two", "label": "a"}, ensure_ascii=False),
                                                 json.dumps({"text": "three", "label": "b"})])
    rows, _ = read(path)
    assert [r.text for r in rows] == ["one\u2028two", "three"]
    assert rows[1].origin.endswith(":2")


def test_ids_integer_labels_and_slice_fields(tmp_path):
    lines = [
        json.dumps({"id": "t-100", "text": "Great value for the price", "label": 1, "lang": "en"}),
        json.dumps({"id": "", "text": "Terrible service at the desk", "label": 0}),
        json.dumps({"id": 7, "text": "Would not recommend it", "label": "0", "lang": "fr"}),
    ]
    rows, _ = read(write_jsonl(tmp_path / "reviews.jsonl", lines), slice_fields=["lang"])
    assert [r.id for r in rows] == ["t-100", "reviews:2", "7"]
    assert [r.label for r in rows] == ["1", "0", "0"]
    assert [r.meta for r in rows] == [{"lang": "en"}, {"lang": None}, {"lang": "fr"}]
    assert rows[0].text == "Great value for the price"


def test_lone_surrogates_in_id_and_slices_are_replaced_so_rows_stay_writable(tmp_path):
    line = '{"id": "a\\ud83d", "text": "Nice", "label": "positive", "lang": "e\\udc00n"}'
    rows, _ = read(write_jsonl(tmp_path / "rows.jsonl", [line]), slice_fields=["lang"])
    assert (rows[0].id, rows[0].meta["lang"]) == ("a\ufffd", "e\ufffdn")
    rows[0].id.encode("utf-8")


def test_tsv(tmp_path):
    path = write_csv(tmp_path / "rows.tsv", "label\ttext\npositive\tFast and friendly, thanks\nnegative\tNever again\n")
    rows, _ = read(path)
    assert [(r.text, r.label, r.origin) for r in rows] == [
        ("Fast and friendly, thanks", "positive", f"{path}:2"), ("Never again", "negative", f"{path}:3")]


def test_parquet_rows_and_bad_values(tmp_path):
    path = tmp_path / "rows.parquet"
    table = pa.table({"text": ["Quick reply from support", "Card never came", None],
                      "label": [1, 0, 1], "region": ["eu", None, "us"], "unused": [1, 2, 3]})
    pq.write_table(table, path)
    with pytest.raises(DataError, match=r"rows\.parquet:3: field 'text': is null"):
        read(path, slice_fields=["region"])
    rows, quarantined = read(path, slice_fields=["region"], on_error="quarantine", max_quarantine_fraction=0.5)
    assert [(r.id, r.label, r.meta) for r in rows] == [("rows:1", "1", {"region": "eu"}), ("rows:2", "0", {"region": None})]
    assert quarantined[0].line == 3 and '"label": 1' in quarantined[0].raw


# ---------------------------------------------------------------- file-level errors: both policies


@pytest.mark.parametrize("policy", ["fail", "quarantine"])
class TestFileLevelErrors:
    def test_missing_file(self, tmp_path, policy):
        with pytest.raises(DataError, match="nope.jsonl: file does not exist"):
            read(tmp_path / "nope.jsonl", on_error=policy)

    def test_empty_file(self, tmp_path, policy):
        (tmp_path / "empty.csv").write_bytes(b"")
        with pytest.raises(DataError, match=r"empty\.csv: the file is empty \(0 bytes\)"):
            read(tmp_path / "empty.csv", on_error=policy)

    @pytest.mark.parametrize(("name", "content"), [("blank.jsonl", "\n\n  \n"), ("header.csv", "text,label\n"),
                                                   ("bom.jsonl", "\ufeff")])
    def test_no_rows(self, tmp_path, policy, name, content):
        write_csv(tmp_path / name, content)
        with pytest.raises(DataError, match="has no data rows"):
            read(tmp_path / name, on_error=policy)

    def test_csv_header_without_the_text_column(self, tmp_path, policy):
        path = write_csv(tmp_path / "tickets.csv", "body,category\nCard is late,card_arrival\n")
        with pytest.raises(DataError) as info:
            read(path, on_error=policy)
        message = str(info.value)
        assert "tickets.csv: the header row (line 1) has no columns 'text' and 'label'" in message
        assert "columns found: 'body', 'category'" in message
        assert "data.text_field=" in message and "data.label_field=" in message and "no header row" in message

    def test_csv_without_header_row(self, tmp_path, policy):
        path = write_csv(tmp_path / "noheader.csv", "Card is late,card_arrival\nWhere is my money,transfer\n")
        with pytest.raises(DataError, match="columns found: 'Card is late', 'card_arrival'.*no header row"):
            read(path, on_error=policy)

    def test_parquet_without_the_label_column(self, tmp_path, policy):
        path = tmp_path / "rows.parquet"
        pq.write_table(pa.table({"text": ["Card is late"], "intent": ["card_arrival"]}), path)
        with pytest.raises(DataError, match="rows.parquet: the Parquet file has no column 'label'; columns found: 'text', 'intent'"):
            read(path, on_error=policy)

    def test_not_a_parquet_file(self, tmp_path, policy):
        path = write_csv(tmp_path / "rows.parquet", "text,label\nhello,a\n")
        with pytest.raises(DataError, match="not a readable Parquet file"):
            read(path, on_error=policy)

    def test_unknown_extension(self, tmp_path, policy):
        path = write_csv(tmp_path / "rows.xlsx", "whatever")
        with pytest.raises(DataError, match=r"rows\.xlsx: cannot tell the format .*'\.xlsx'.*\.jsonl, \.json, \.csv, \.tsv, \.parquet"):
            read(path, on_error=policy)

    def test_hf_dataset_offline(self, monkeypatch, policy):
        datasets = pytest.importorskip("datasets")
        import huggingface_hub.constants

        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
        with pytest.raises(DataError, match="hf:tunewise-test/no-such-dataset:test: .*could not be loaded.*offline by default"):
            read("hf:tunewise-test/no-such-dataset:test", on_error=policy)


# ---------------------------------------------------------------- quarantine accounting


def test_quarantine_counts_and_the_max_fraction(tmp_path):
    lines = good_lines() * 5  # 20 good rows
    lines[3] = '{"text": "", "label": "negative"}'
    lines[11] = '{"text": "Card is late", "label": "maybe"}'
    lines[17] = "not json at all"
    path = write_jsonl(tmp_path / "tickets.jsonl", lines)

    rows, quarantined = read(path, labels=LABELS, on_error="quarantine", max_quarantine_fraction=0.15)
    assert len(rows) == 17
    assert [q.line for q in quarantined] == [4, 12, 18]

    with pytest.raises(DataError) as info:
        read(path, labels=LABELS, on_error="quarantine", max_quarantine_fraction=0.1)
    message = str(info.value)
    assert "3 of 20 rows (15.0%) were quarantined, more than data.max_quarantine_fraction=0.1" in message
    assert "tickets.jsonl:4: field 'text'" in message and "tickets.jsonl:18: " in message


def test_a_file_with_no_valid_rows_fails_even_when_all_may_be_quarantined(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", ['{"text": ""}', "[]"])
    with pytest.raises(DataError, match="none of its 2 rows is valid"):
        read(path, on_error="quarantine", max_quarantine_fraction=1.0)


# ---------------------------------------------------------------- splits


def make_rows(label_counts: dict[str, int]) -> list[Row]:
    rows = []
    for label, count in label_counts.items():
        rows += [Row(f"r{len(rows) + i}", f"example {i} of {label}", label, {}, f"f:{len(rows) + i}") for i in range(count)]
    return rows


def test_stratified_split_is_deterministic_and_keeps_proportions():
    rows = make_rows({"a": 300, "b": 100, "c": 50})
    rest, held = stratified_split(rows, 0.2, seed=7)
    again_rest, again_held = stratified_split(rows, 0.2, seed=7)
    assert [r.id for r in held] == [r.id for r in again_held] and [r.id for r in rest] == [r.id for r in again_rest]
    assert Counter(r.label for r in held) == {"a": 60, "b": 20, "c": 10}
    assert len(rest) + len(held) == len(rows)
    assert {r.id for r in rest}.isdisjoint(r.id for r in held)
    order = {r.id: i for i, r in enumerate(rows)}
    assert [order[r.id] for r in rest] == sorted(order[r.id] for r in rest)
    assert [order[r.id] for r in held] == sorted(order[r.id] for r in held)
    _, other_held = stratified_split(rows, 0.2, seed=8)
    assert [r.id for r in other_held] != [r.id for r in held]


def test_singleton_classes_stay_in_rest_and_nothing_is_dropped():
    rows = make_rows({"a": 20, "b": 10, "rare1": 1, "rare2": 1})
    rest, held = stratified_split(rows, 0.2, seed=0)
    assert len(rest) + len(held) == len(rows)
    assert {"rare1", "rare2"} <= {r.label for r in rest}
    assert {r.label for r in held} == {"a", "b"}


@pytest.mark.parametrize("counts", [{"a": 1, "b": 1}, {"a": 2}, {"a": 2, "b": 2, "c": 2, "d": 2, "e": 2}])
def test_tiny_inputs_never_crash(counts):
    rows = make_rows(counts)
    rest, held = stratified_split(rows, 0.2, seed=3)
    assert sorted(r.id for r in rest + held) == sorted(r.id for r in rows)


def test_derived_label_order():
    assert derive_labels(make_rows({"10": 1, "2": 1, "1": 1, "-1": 1})) == ["-1", "1", "2", "10"]
    assert derive_labels(make_rows({"b": 1, "a": 1, "10": 1, "2": 1})) == ["10", "2", "a", "b"]


# ---------------------------------------------------------------- the data stage


def banking77_slice(tmp_path: Path, name: str, source: Path, every: int) -> Path:
    """Every `every`-th row of a banking77 file (the files are grouped by intent), written as CSV."""
    with open(source, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = [row for i, row in enumerate(reader) if i % every == 0]
    path = tmp_path / name
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, *rows])
    return path


def banking77_recipe(data: dict) -> object:
    return validate_recipe({"name": "banking77-test", "seed": 13,
                            "data": {"label_field": "category", **data}})


@pytest.fixture
def banking77():
    if not (BANKING77 / "train.csv").is_file():
        pytest.skip(f"banking77 is not at {BANKING77} (the repository expects ../shared/data next to it)")
    return BANKING77


def test_prepare_data_carves_test_and_validation_from_banking77(tmp_path, banking77):
    train = banking77_slice(tmp_path, "train.csv", banking77 / "train.csv", every=10)
    recipe = banking77_recipe({"train": {"path": str(train), "source": "PolyAI banking77", "license": "CC-BY-4.0",
                                         "contains_personal_data": False},
                               "test_fraction": 0.2, "validation_fraction": 0.1})
    out = tmp_path / "data"
    message = prepare_data(recipe, out)

    splits = {name: load_split(out, name) for name in ("train", "validation", "test")}
    sizes = {name: len(rows) for name, rows in splits.items()}
    assert sum(sizes.values()) == 1001
    assert sizes["test"] == 201 and sizes["validation"] == 80
    assert message == f"data: train {sizes['train']:,} · validation 80 · test 201 rows, 77 labels, 0 quarantined"
    ids = [row.id for rows in splits.values() for row in rows]
    assert len(ids) == len(set(ids))

    labels = load_labels(out)
    assert len(labels) == 77 and labels == sorted(labels)
    assert json.loads((out / "labels.json").read_text())["derived"] is True
    assert (out / "quarantine.jsonl").read_text() == ""
    first = json.loads((out / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert list(first) == ["id", "text", "label", "meta", "origin"]
    assert first["origin"].startswith(f"{train}:")

    summary = json.loads((out / "summary.json").read_text())
    assert summary["carved"]["test"] == {"from": "train", "fraction": 0.2, "seed": 13, "rows": 201}
    assert summary["carved"]["validation"]["fraction"] == 0.1
    assert summary["files"]["train"]["sha256"] == sha256_file(train)
    assert summary["files"]["train"]["license"] == "CC-BY-4.0"
    assert summary["files"]["train"]["contains_personal_data"] is False
    assert summary["splits"]["test"]["carved_from"] == "train"
    assert sum(summary["splits"]["test"]["label_counts"].values()) == 201
    assert data_files(recipe) == [train]

    again = tmp_path / "again"
    prepare_data(recipe, again)
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "labels.json"):
        assert (out / name).read_bytes() == (again / name).read_bytes()


def test_prepare_data_quarantines_labels_unseen_in_train(tmp_path, banking77):
    train = banking77_slice(tmp_path, "train.csv", banking77 / "train.csv", every=20)
    test = banking77_slice(tmp_path, "test.csv", banking77 / "test.csv", every=10)
    with open(test, "a", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerow(["Can I pay my rent with crypto?", "crypto_rent"])
    recipe = banking77_recipe({"train": str(train), "test": str(test), "validation_fraction": 0.0,
                               "on_error": "quarantine"})
    message = prepare_data(recipe, tmp_path / "data")

    assert not (tmp_path / "data" / "validation.jsonl").exists()
    quarantined = [json.loads(line) for line in (tmp_path / "data" / "quarantine.jsonl").read_text().splitlines()]
    assert len(quarantined) == 1
    assert quarantined[0]["split"] == "test" and quarantined[0]["field"] == "category"
    assert "'crypto_rent' was not in the training data" in quarantined[0]["reason"]
    assert message.endswith("77 labels, 1 quarantined") and "validation" not in message
    summary = json.loads((tmp_path / "data" / "summary.json").read_text())
    assert summary["carved"] == {}
    assert summary["splits"]["test"]["quarantined"] == 1
    assert summary["splits"]["test"]["sha256"] == sha256_file(test)


def test_prepare_data_fails_on_undeclared_label_by_default(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", good_lines() * 3 + ['{"text": "Meh", "label": "neutral"}'])
    recipe = validate_recipe({"name": "t", "data": {"train": str(path), "labels": LABELS}})
    with pytest.raises(DataError, match=r"train\.jsonl:13: field 'label': 'neutral' is not one of the declared labels"):
        prepare_data(recipe, tmp_path / "data")


def test_prepare_data_renames_duplicate_ids(tmp_path):
    lines = [json.dumps({"id": "dup" if i % 4 == 0 else f"row{i}", "text": f"{GOOD[i % 4]['text']} ({i})",
                         "label": GOOD[i % 4]["label"]}) for i in range(20)]
    train = write_jsonl(tmp_path / "train.jsonl", lines)
    test = write_jsonl(tmp_path / "test.jsonl", good_lines())
    recipe = validate_recipe({"name": "t", "data": {"train": str(train), "test": str(test), "validation_fraction": 0}})
    prepare_data(recipe, tmp_path / "data")
    rows = load_split(tmp_path / "data", "train")
    assert [r.id for r in rows if r.id.startswith("dup")] == ["dup", "dup#2", "dup#3", "dup#4", "dup#5"]
    summary = json.loads((tmp_path / "data" / "summary.json").read_text())
    assert summary["splits"]["train"]["duplicate_ids_renamed"] == 4
    assert load_labels(tmp_path / "data") == LABELS


def test_load_split_of_a_missing_split_says_what_is_there(tmp_path):
    with pytest.raises(DataError, match="no validation split here"):
        load_split(tmp_path, "validation")
