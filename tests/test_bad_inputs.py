"""The bad-input corpus (tests/bad_inputs/cases.yaml): every malformed data file and recipe gets its clear error.

Each case runs in-process through the real loaders (load_recipe, then the data stage's prepare_data), so the
corpus needs no model. A case is refused with the named tunewise error whose message holds the file, the line
and the field; or, where rows are set aside, they are in quarantine.jsonl, counted, and nothing is lost. Cases
marked `cli` also go through `tunewise.cli.main` (exit code 2, `error: ...`, no traceback), and the three defects
found by a new user run as real `tunewise` subprocesses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import tunewise.errors
from tunewise.data.prepare import QUARANTINE_FILE, prepare_data
from tunewise.errors import TunewiseError
from tunewise.recipe import load_recipe

from conftest import run_tunewise, subprocess_env

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
CASES: list[dict[str, Any]] = yaml.safe_load((CORPUS / "cases.yaml").read_text(encoding="utf-8"))
USER_ERROR = 2  # TunewiseError.exit_code


def recipe_and_overrides(case: dict[str, Any]) -> tuple[Path, list[str]]:
    folder = CORPUS / case["id"]
    own = folder / "recipe.yaml"
    recipe = own if own.is_file() else CORPUS / "_base" / f"{case['task']}.yaml"
    overrides = [f"data.{split}={os.path.normpath(folder / name)}" for split, name in case.get("files", {}).items()]
    overrides += [o.replace("{case}", str(folder)) for o in case.get("overrides", [])]
    return recipe, overrides


def assert_names_everything(message: str, expect: list[str]) -> None:
    missing = [s for s in expect if s not in message]
    assert not missing, f"the message lacks {missing}:\n{message}"
    assert "Traceback" not in message


def by_stage(stage: str) -> list[Any]:
    return [pytest.param(c, id=c["id"]) for c in CASES if c["fails_at"] == stage]


# ---------------------------------------------------------------- the corpus itself


def test_the_corpus_is_wide():
    assert len(CASES) >= 40
    assert len({c["id"] for c in CASES}) == len(CASES)
    covers = " ".join(c["covers"] for c in CASES)
    for word in ("classification", "generation", "chat", "recipe", "override", "jsonl", "csv", "tsv", "parquet",
                 "BOM", "UTF-8", "NaN", "ids", "role", "empty", "encodings"):
        assert word in covers, f"no case covers {word}"
    for c in CASES:
        assert c["fails_at"] in ("recipe", "data", "none", "cli")
        assert c["fails_at"] == "none" or (c.get("expect") and hasattr(tunewise.errors, c["error"])), c["id"]
        for name in c.get("files", {}).values():  # missing_data_file names a file that must not exist
            assert Path(os.path.normpath(CORPUS / c["id"] / name)).exists() or c["id"] == "missing_data_file", (c["id"], name)


# ---------------------------------------------------------------- refused: recipe and data


@pytest.mark.parametrize("case", by_stage("recipe"))
def test_bad_recipe_is_refused(case):
    recipe, overrides = recipe_and_overrides(case)
    with pytest.raises(getattr(tunewise.errors, case["error"])) as info:
        load_recipe(recipe, overrides)
    assert_names_everything(str(info.value), case["expect"])


@pytest.mark.parametrize("case", by_stage("data"))
def test_bad_data_is_refused(case, tmp_path):
    recipe, overrides = recipe_and_overrides(case)
    resolved = load_recipe(recipe, overrides)
    with pytest.raises(getattr(tunewise.errors, case["error"])) as info:
        prepare_data(resolved, tmp_path / "data")
    assert_names_everything(str(info.value), case["expect"])
    assert not (tmp_path / "data" / "summary.json").exists()  # a refused file leaves no half-written data/


# ---------------------------------------------------------------- set aside: quarantined and counted


def data_rows_in(path: Path) -> int:
    """Records in a JSONL or CSV file as a person counts them: non-blank lines after any header."""
    lines = [line for line in path.read_bytes().split(b"\n") if line.strip()]
    return len(lines) - (1 if path.suffix == ".csv" else 0)


@pytest.mark.parametrize("case", by_stage("none"))
def test_bad_rows_are_quarantined_and_counted(case, tmp_path):
    recipe, overrides = recipe_and_overrides(case)
    out = tmp_path / "data"
    prepare_data(load_recipe(recipe, overrides), out)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    quarantine = [json.loads(line) for line in (out / QUARANTINE_FILE).read_text(encoding="utf-8").splitlines()]
    kept = sum(split["rows"] for split in summary["splits"].values())
    assert (kept, len(quarantine), summary["quarantined_total"]) == (case["kept"], case["quarantined"],
                                                                     case["quarantined"])
    source = Path(os.path.normpath(CORPUS / case["id"] / case["files"]["train"]))
    assert kept + len(quarantine) == data_rows_in(source), "a row was lost: rows in != kept + quarantined"
    for q, expect in zip(quarantine, case.get("quarantine_expect", [])):
        record = f"{Path(q['file']).name}:{q['line']} {q['field']} {q['reason']}"
        assert_names_everything(record, expect)
        assert q["raw"] and q["split"] == "train"
    if "duplicate_ids_renamed" in case:
        assert summary["splits"]["train"]["duplicate_ids_renamed"] == case["duplicate_ids_renamed"]
        ids = [json.loads(line)["id"] for name in ("train", "test")
               for line in (out / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]
        assert len(ids) == len(set(ids)) == case["kept"]
        assert {"r1", "r1#2", "r1#3"} <= set(ids)


# ---------------------------------------------------------------- the command line: exit 2, no traceback


@pytest.mark.parametrize("command_case", [pytest.param((cmd, c), id=f"{cmd}-{c['id']}")
                                          for c in CASES for cmd in c.get("cli", [])])
def test_cli_reports_bad_input_without_a_traceback(command_case, tmp_path, monkeypatch, capsys):
    from tunewise.cli import main

    command, case = command_case
    recipe, overrides = recipe_and_overrides(case)
    if not any(o.startswith("output_dir=") for o in overrides):
        overrides.append(f"output_dir={tmp_path / 'runs'}")
    for name, value in subprocess_env().items():
        if name.endswith("OFFLINE"):
            monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["tunewise", command, str(recipe), *overrides])
    with pytest.raises(SystemExit) as info:  # anything else escaping main() would be a traceback for the user
        main()
    err = capsys.readouterr().err
    assert info.value.code == USER_ERROR, err
    assert err.startswith("error: ") and err.count("\n") <= 20, err
    assert_names_everything(err, case["expect"])


# The three defects a new user found, end to end in a real process.
DEFECTS = ["csv_duplicate_header", "output_dir_under_a_file"]  # the model cases: in-process above (same code)


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"]) for c in CASES if c["id"] in DEFECTS])
def test_defects_found_by_a_new_user_exit_2_in_a_real_process(case, tmp_path):
    recipe, overrides = recipe_and_overrides(case)
    if not any(o.startswith("output_dir=") for o in overrides):
        overrides.append(f"output_dir={tmp_path / 'runs'}")
    proc = run_tunewise("audit", recipe, *overrides, cwd=tmp_path, timeout=300)  # asserts no traceback
    assert proc.returncode == USER_ERROR, proc.stdout + proc.stderr
    assert_names_everything(proc.stderr, case["expect"])
    assert "every row fits" not in proc.stdout  # the audit no longer passes a model it cannot load


def _can_drop_root_write_access(probe_dir: Path) -> bool:
    """Root ignores permission bits through CAP_DAC_OVERRIDE; without it, a 0555 folder is read-only for root too."""
    if shutil.which("setpriv") is None:
        return False
    proc = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", "touch",
                           str(probe_dir / "probe")], capture_output=True)
    return proc.returncode != 0 and not (probe_dir / "probe").exists()


def test_read_only_output_dir_is_a_clear_error_not_a_traceback(tmp_path):
    """The defect as the user met it: output_dir on a read-only folder, as a user who cannot write there."""
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() == 0 and not _can_drop_root_write_access(read_only):
        pytest.skip("running as root, and setpriv cannot drop CAP_DAC_OVERRIDE here: a read-only folder is writable")
    recipe = CORPUS / "_base" / "classification.yaml"
    setpriv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    proc = subprocess.run([*setpriv, sys.executable, "-m", "tunewise", "audit", str(recipe),
                           f"output_dir={read_only / 'runs'}"], cwd=tmp_path, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == USER_ERROR, proc.stdout + proc.stderr
    assert_names_everything(proc.stderr, ["error: output_dir: cannot write the run directory",
                                          str(read_only / "runs"), "Permission denied", "set output_dir="])


# ---------------------------------------------------------------- files too big to commit


def test_a_huge_line_is_read_and_a_huge_bad_line_gives_a_short_message(tmp_path):
    good = [json.dumps({"text": f"row {i} about cards", "label": "ab"[i % 2]}) for i in range(20)]
    huge = json.dumps({"text": "word " * 600_000, "label": "a"})  # 3 MB on one line
    path = tmp_path / "huge.jsonl"
    path.write_text("\n".join([*good, huge, huge[:-1]]) + "\n", encoding="utf-8")
    from tunewise.data.readers import read_labeled_file

    with pytest.raises(TunewiseError) as info:
        read_labeled_file(path, text_field="text", label_field="label")
    assert "huge.jsonl:22: not valid JSON" in str(info.value) and len(str(info.value)) < 500
    rows, quarantined = read_labeled_file(path, text_field="text", label_field="label", on_error="quarantine")
    assert len(rows) == 21 and len(rows[20].text) == 3_000_000
    assert [q.line for q in quarantined] == [22] and len(quarantined[0].raw) == 500  # the raw row is truncated


# ---------------------------------------------------------------- the shared JSON Lines reader (tunewise.kit.jsonl)


def test_shared_jsonl_reader_splits_at_newlines_only_and_names_the_bad_line(tmp_path):
    from tunewise.kit.jsonl import read_jsonl

    path = tmp_path / "x.jsonl"  # a BOM, U+2028 inside a string (str.splitlines would cut there), a blank line
    path.write_bytes(b'\xef\xbb\xbf{"a": "one\xe2\x80\xa8line"}\n\n{"a": 2}\n{"a": "caf\xe9"}\n')
    lines = read_jsonl(path)
    assert next(lines) == (1, {"a": "one\u2028line"}) and next(lines) == (3, {"a": 2})
    with pytest.raises(tunewise.errors.DataError, match=r"x\.jsonl:4: not valid JSON \(invalid UTF-8: byte 0xE9"):
        next(lines)


def test_a_benign_eval_file_that_is_not_utf8_is_a_clear_error(tmp_path):
    from tunewise.guard.report import read_benign_texts

    path = tmp_path / "benign.jsonl"  # was a UnicodeDecodeError traceback
    path.write_bytes(b'{"text": "hello"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(tunewise.errors.DataError, match=r"benign\.jsonl:2: not valid JSON \(invalid UTF-8"):
        read_benign_texts(path, "text")
    path.write_bytes('{"text": "two\u2028lines in one row"}\n'.encode())  # was "not valid JSON" at line 1
    assert read_benign_texts(path, "text") == ["two\u2028lines in one row"]
