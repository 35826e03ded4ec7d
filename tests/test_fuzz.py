"""Property-based fuzzing (hypothesis) of the data readers and the recipe loader.

Two properties, whatever the bytes: (1) the only exception is one of ours (TunewiseError: the CLI prints it as
`error: ...` and exits 2), never a KeyError or a UnicodeError from deep inside; (2) no row is lost silently:
every non-blank line (JSONL) or record (CSV) is either kept or quarantined, and the line numbers say which.
Examples are few and the deadline is off, so the file runs in seconds; hypothesis' database replays failures.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tunewise.data.readers import ExampleChecker, read_labeled_file, read_records
from tunewise.errors import DataError, RecipeError, TunewiseError
from tunewise.recipe import load_recipe, parse_override

# A fixed, modest sample in the suite; `TUNEWISE_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py` searches deeper,
# with fresh random examples.
DEEP = int(os.environ.get("TUNEWISE_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=DEEP or 60, deadline=None, derandomize=not DEEP,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# ---------------------------------------------------------------- strategies

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
texts = st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=30)  # "Cs": lone surrogates
labels = st.sampled_from(["card", "fx", "", " ", "0", "neutral"]) | json_scalars


def valid_row(text: str, label: str) -> bytes:
    return json.dumps({"text": text, "label": label}).encode()


jsonl_lines = st.one_of(
    st.builds(valid_row, st.text(min_size=1, max_size=30).filter(str.strip), st.sampled_from(["card", "fx"])),
    st.builds(lambda v: json.dumps(v, allow_nan=True).encode(), json_values),         # any JSON value
    st.builds(lambda t, l: json.dumps({"text": t, "label": l}).encode(), texts | json_scalars, labels),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ")),                      # any bytes
    st.sampled_from([b"", b"   ", b"\r", b'{"text": "a", "label": "card", "text": "b"}', b"\xef\xbb\xbf{}",
                     b'{"text": "\\ud800", "label": "fx"}', b"NaN", b"[1, 2"]),
)


def nonblank_lines(data: bytes) -> list[int]:
    """1-based numbers of the lines a person would call rows: not blank, split at \\n only (as JSON Lines is)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return [i for i, line in enumerate(data.split(b"\n"), start=1) if line.rstrip(b"\r").strip()]


def line_of(origin: str) -> int:
    return int(origin.rsplit(":", 1)[1])


def read_or_refuse(read, path: Path):
    """Run a reader; return its result, or None when it refused the file with a DataError (allowed)."""
    try:
        return read(path)
    except DataError as exc:
        assert str(path.name) in str(exc), f"the error does not name the file: {exc}"
        return None


# ---------------------------------------------------------------- JSON Lines


@FUZZ
@given(lines=st.lists(jsonl_lines, max_size=12), bom=st.booleans(), crlf=st.booleans())
def test_jsonl_reader_keeps_or_quarantines_every_line(tmp_path, lines, bom, crlf):
    data = (b"\xef\xbb\xbf" if bom else b"") + (b"\r\n" if crlf else b"\n").join(lines)
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(data)
    result = read_or_refuse(lambda p: read_labeled_file(p, text_field="text", label_field="label",
                                                        on_error="quarantine", max_quarantine_fraction=1.0), path)
    expected = nonblank_lines(data)
    if result is None:  # refused as a whole: only an empty file or one without a single valid row
        with pytest.raises(DataError):
            read_labeled_file(path, text_field="text", label_field="label")
        return
    rows, quarantined = result
    assert sorted([line_of(r.origin) for r in rows] + [q.line for q in quarantined]) == expected
    for q in quarantined:
        assert q.file == str(path) and q.reason and len(q.raw) <= 500
        q.raw.encode("utf-8")  # the quarantine file can always be written
    for r in rows:  # what training relies on
        assert r.text.strip() and r.label.strip()


@FUZZ
@given(lines=st.lists(jsonl_lines, min_size=1, max_size=12))
def test_jsonl_reader_fails_with_our_error_only(tmp_path, lines):
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"\n".join(lines))
    try:
        rows, quarantined = read_labeled_file(path, text_field="text", label_field="label", labels=["card", "fx"])
    except DataError as exc:
        assert "fuzz.jsonl" in str(exc)
        return
    assert not quarantined and len(rows) == len(nonblank_lines(path.read_bytes()))


# ---------------------------------------------------------------- CSV


cells = st.text(st.characters(blacklist_categories=("Cs",)), max_size=15) | st.sampled_from(
    ['"', '""', ",", "\n", "a\r\nb", " ", "x,y", "\ufeff", "\x00"])


@FUZZ
@given(records=st.lists(st.tuples(cells, cells), max_size=10), extra=st.lists(st.sampled_from(["id", "note", "text"]),
                                                                              max_size=2))
def test_csv_reader_keeps_or_quarantines_every_record(tmp_path, records, extra):
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["text", "label", *extra])
    writer.writerows([[t, label, *(["v"] * len(extra))] for t, label in records])
    path = tmp_path / "fuzz.csv"
    path.write_bytes(buffer.getvalue().encode("utf-8"))
    result = read_or_refuse(lambda p: read_labeled_file(p, text_field="text", label_field="label",
                                                        on_error="quarantine", max_quarantine_fraction=1.0), path)
    if result is None:
        header = ["text", "label", *extra]
        assert len(set(header)) < len(header) or not any(t.strip() and label.strip() for t, label in records)
        return  # refused as a whole: a repeated header column, or no valid row at all
    rows, quarantined = result
    assert len(rows) + len(quarantined) == len(records)  # every record written, kept or set aside
    assert len({line_of(r.origin) for r in rows} | {q.line for q in quarantined}) == len(records)


@FUZZ
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_csv_and_tsv_readers_take_any_text(tmp_path, text):
    for suffix in (".csv", ".tsv"):
        path = tmp_path / f"fuzz{suffix}"
        path.write_bytes(("text,label\n" if suffix == ".csv" else "text\tlabel\n").encode() + text.encode("utf-8",
                                                                                                          "surrogatepass"))
        result = read_or_refuse(lambda p: read_labeled_file(p, text_field="text", label_field="label",
                                                            on_error="quarantine", max_quarantine_fraction=1.0), path)
        if result is not None:
            rows, quarantined = result
            assert all(q.line >= 2 and q.file == str(path) for q in quarantined)
            assert len({line_of(r.origin) for r in rows} | {q.line for q in quarantined}) == len(rows) + len(quarantined)


# ---------------------------------------------------------------- chat messages

roles = st.sampled_from(["system", "user", "assistant", "bot", "", "USER"]) | json_scalars
messages = st.lists(st.fixed_dictionaries({"role": roles, "content": texts | json_scalars},
                                          optional={"weight": st.sampled_from([0, 1, 0.5, True, None, "1"])}),
                    max_size=5)
chat_rows = st.one_of(
    st.builds(lambda m: {"messages": m}, messages),
    st.builds(lambda m: {"messages": json.dumps(m)}, messages),  # messages as a JSON string
    st.builds(lambda v: {"messages": v}, json_values),
    json_values.filter(lambda v: not isinstance(v, dict) or "messages" not in v),
)


@FUZZ
@given(rows=st.lists(chat_rows, max_size=10))
def test_chat_reader_keeps_or_quarantines_every_conversation(tmp_path, rows):
    path = tmp_path / "chat.jsonl"
    path.write_bytes(b"\n".join(json.dumps(r).encode() for r in rows))
    checker = ExampleChecker("chat", id_prefix="chat")
    result = read_or_refuse(lambda p: read_records(p, checker, on_error="quarantine", max_quarantine_fraction=1.0),
                            path)
    if result is None:
        return
    examples, quarantined = result
    assert sorted([line_of(e.origin) for e in examples] + [q.line for q in quarantined]) == \
        nonblank_lines(path.read_bytes())
    for e in examples:  # what the trainer relies on
        roles_kept = [m["role"] for m in e.messages]
        assert roles_kept[-1] == "assistant" and "system" not in roles_kept[1:]
        assert all(isinstance(m["content"], str) and m["content"].strip() for m in e.messages)


# ---------------------------------------------------------------- recipes and overrides

BASE = Path(__file__).resolve().parent / "bad_inputs" / "_base" / "classification.yaml"
KEYS = ["name", "task", "seed", "output_dir", "data", "data.train", "data.train.path", "data.labels", "data.format",
        "data.on_error", "data.text_field", "data.prompt_template", "data.validation_fraction", "model",
        "model.base", "model.max_length", "train", "train.epochs", "train.lr", "train.batch_size", "evaluate",
        "evaluate.baselines", "audit.allow", "card.license", "gate.metrics", "nope", "train.nope"]
override_values = st.one_of(st.text(max_size=12), st.sampled_from(
    ["[1, 2", "{a: 1}", "null", "~", "1e400", "-1", ".nan", "true", "[a, b]", "{", "a: b", "!!python/object:x", "''"]))
overrides = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS) | st.text(max_size=10), override_values),
    st.builds(lambda k: f"~{k}", st.sampled_from(KEYS) | st.text(max_size=6)),
    st.text(max_size=15),
)


@FUZZ
@example(items=["data.prompt_template=Summarize: {text}"])
@example(items=["train=3", "train.epochs=2"])
@example(items=["[="])  # found by this test: an unknown key `[` was an IndexError traceback
@example(items=["function-after[x]=1"])
@given(items=st.lists(overrides, max_size=4))
def test_recipe_overrides_give_a_recipe_or_a_recipe_error(items):
    try:
        load_recipe(BASE, items)
    except RecipeError as exc:
        assert "Traceback" not in str(exc) and str(exc)


@FUZZ
@given(item=st.text(max_size=30))
def test_parse_override_takes_any_text(item):
    try:
        key, _, _ = parse_override(item)
    except RecipeError as exc:
        assert item in str(exc)
    else:
        assert key and all(key.split("."))


yaml_chars = st.sampled_from(list("abc:-[]{}#&*!|>'\"%@`,?\n\t 0129.~=") + ["name", "data", "train", "\ufeff", "é"])


@FUZZ
@given(text=st.lists(yaml_chars, max_size=40).map("".join) | st.text(max_size=60),
       junk=st.binary(max_size=8))
def test_recipe_loader_takes_any_file(tmp_path, text, junk):
    path = tmp_path / "recipe.yaml"
    for content in (text.encode("utf-8", "surrogatepass"), text.encode("utf-8", "surrogatepass") + junk):
        path.write_bytes(content)
        try:
            load_recipe(path)
        except RecipeError as exc:
            assert str(path) in str(exc)


recipe_trees = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(KEYS + ["epochs", "lr", "path", "base", "labels", "train"]) | st.text(max_size=5), inner,
    max_size=4), max_leaves=12)


@FUZZ
@given(tree=st.dictionaries(st.sampled_from(["name", "task", "data", "model", "train", "evaluate", "audit", "x"]),
                            recipe_trees, max_size=5))
def test_recipe_loader_takes_any_structure(tmp_path, tree):
    tree.setdefault("name", "fuzz")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tree, allow_unicode=True), encoding="utf-8")
    try:
        load_recipe(path)
    except TunewiseError as exc:
        assert isinstance(exc, RecipeError) and str(path) in str(exc)
