"""Human evaluation: a real tiny generation run (SmolLM2 + LoRA on a Multi30k slice, evaluated against the base
model zero-shot), its study served by `tunewise human-eval` as a real subprocess and driven in Debian's headless
Chromium through Playwright: two annotators rate with the keyboard, the server is SIGKILLed and restarted, rating
resumes, a double submit counts once; then results.json is checked against the ratings the test made, and Cohen's
kappa against a hand calculation. Likert results, Krippendorff's alpha, Label Studio export/import, the card
section and the refusals are checked on the same run (copied where they need a study of their own).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from conftest import CAUSAL_TEST_ROWS, copy_run as copy_shared_run, read_jsonl, subprocess_env

from tunewise.serve.launch import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
N_TEST = CAUSAL_TEST_ROWS  # conftest.session_causal_run's test prompts


# ---------------------------------------------------------------- a real tiny generation run


@pytest.fixture(scope="module")
def gen_run(session_causal_run, tmp_path_factory) -> Path:
    """A private copy (weights hard-linked) of conftest's shared tiny generation run: SmolLM2 + LoRA on 16 Multi30k
    pairs; 10 test prompts answered by the fine-tuned model and by the base model zero-shot, the outputs human
    evaluation reads. The first study is made in this copy; tests that need a study of their own copy it again."""
    run = copy_shared_run(session_causal_run, tmp_path_factory.mktemp("he") / session_causal_run.name)
    assert len(read_jsonl(run / "eval" / "predictions.jsonl")) == N_TEST
    return run


def tunewise(*args) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "tunewise", *map(str, args)], env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def predictions(run: Path) -> dict[str, dict[str, str]]:
    """prompt -> {fine_tuned, other}: what the page must show, by the model that wrote it."""
    ft = {r["id"]: r for r in read_jsonl(run / "eval" / "predictions.jsonl")}
    base = {r["id"]: r for r in read_jsonl(run / "eval" / "predictions_base_model.jsonl")}
    return {ft[i]["prompt"]: {"fine_tuned": ft[i]["prediction"], "other": base[i]["prediction"], "id": i} for i in ft}


# ---------------------------------------------------------------- the server as a subprocess


class Server:
    """`tunewise human-eval RUN --port P` as a real process, killed with SIGKILL when asked."""

    def __init__(self, run: Path, port: int, log: Path):
        self.run, self.port, self.log = run, port, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Server":
        out = open(self.log, "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "tunewise", "human-eval", str(self.run),
                                      "--port", str(self.port)], env=subprocess_env(), stdout=out,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, f"the server exited:\n{self.log.read_text()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            assert time.monotonic() < deadline, f"the server did not come up:\n{self.log.read_text()}"
            time.sleep(0.2)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        assert self.proc.returncode == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def intended(annotator: str, row_index: int, outputs: dict[str, str]) -> str:
    """The verdict each test annotator gives: identical outputs are a tie; otherwise a fixed pattern in which
    alice and bob agree on some rows and not on others (so kappa is neither 0/0 nor trivially 1)."""
    if outputs["fine_tuned"].strip() == outputs["other"].strip():
        return "tie"
    alice = ["fine_tuned", "other", "fine_tuned", "tie", "fine_tuned"][row_index % 5]
    if annotator == "alice":
        return alice
    return {0: "fine_tuned", 1: "fine_tuned", 2: "fine_tuned", 3: "tie", 4: "other"}[row_index % 5]


def hand_kappa(x: list[str], y: list[str]) -> float | None:
    """Cohen's kappa from its definition: (p_o - p_e) / (1 - p_e); None where p_e = 1 (undefined)."""
    n = len(x)
    p_o = sum(a == b for a, b in zip(x, y)) / n
    cx, cy = Counter(x), Counter(y)
    p_e = sum(cx[k] * cy[k] for k in set(x) | set(y)) / n ** 2
    return None if p_e == 1 else (p_o - p_e) / (1 - p_e)


# ---------------------------------------------------------------- the browser test


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (scripts/system_deps.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def rate_current(page, annotator: str, shown: dict[str, dict[str, str]], rows: list[str], made: dict) -> str:
    """Rate the item on the page with the keyboard, as `annotator` intends; returns the row id rated."""
    prompt = page.locator("#prompt .text").first.inner_text()
    assert prompt in shown, f"the page shows a prompt that is not a test prompt: {prompt!r}"
    truth = shown[prompt]
    a, b = page.locator("#output-a").inner_text(), page.locator("#output-b").inner_text()
    assert {a.strip(), b.strip()} == {truth["fine_tuned"].strip(), truth["other"].strip()}, "outputs not shown"
    verdict = intended(annotator, rows.index(truth["id"]), truth)
    if verdict == "tie":
        key = "t"
    else:
        key = "a" if a.strip() == truth[verdict].strip() else "b"
    page.keyboard.press(key)
    assert not page.locator("#submit").is_disabled()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    made[(annotator, truth["id"])] = verdict
    return truth["id"]


def progress_of(page) -> tuple[int, int]:
    done, total = page.locator("#count").inner_text().split(" / ")
    return int(done), int(total)


def test_two_annotators_rate_in_chromium_through_a_server_kill(gen_run, browser, tmp_path):
    run = gen_run
    shown = predictions(run)
    rows = [r["id"] for r in read_jsonl(run / "eval" / "predictions.jsonl")]
    port = free_port()
    links = {}
    for name in ("alice", "bob"):
        proc = tunewise("human-eval", "invite", run, name, "--port", port)
        assert proc.returncode == 0, proc.stderr
        links[name] = proc.stdout.strip().splitlines()[-1].split(": ", 1)[1]
        assert links[name].startswith(f"http://127.0.0.1:{port}/a/")
    db = run / "humaneval" / "ratings.sqlite"
    token = links["alice"].rsplit("/", 1)[1]
    assert token.encode() not in db.read_bytes()  # stored hashed only
    import sqlite3

    with sqlite3.connect(db) as conn:
        hashes = {h for (h,) in conn.execute("SELECT token_sha256 FROM annotators")}
    assert hashlib.sha256(token.encode()).hexdigest() in hashes

    server = Server(run, port, tmp_path / "server.log").start()
    made: dict[tuple[str, str], str] = {}
    try:
        ctx = browser.new_context(viewport={"width": 1366, "height": 768})
        alice, bob = ctx.new_page(), ctx.new_page()
        alice.goto(links["alice"])
        assert progress_of(alice) == (0, 10)  # 5 shared + 5 open to whoever comes first
        for _ in range(3):
            rate_current(alice, "alice", shown, rows, made)
        assert progress_of(alice)[0] == 3
        assert alice.locator(".flash").inner_text() == "Saved."
        open_prompt = alice.locator("#prompt .text").first.inner_text()  # alice is looking at her 4th item

        # a double submit (the same form posted again) counts once
        truth = shown[open_prompt]
        same = truth["fine_tuned"].strip() == truth["other"].strip()
        side_a = alice.locator("#output-a").inner_text().strip()
        made[("alice", truth["id"])] = "tie" if same else "fine_tuned" if side_a == truth["fine_tuned"].strip() \
            else "other"
        item_id = alice.locator("input[name=item_id]").input_value()
        form = {"item_id": item_id, "choice": "tie" if same else "A", "comment": "first"}
        first = alice.request.post(links["alice"], form=form)
        second = alice.request.post(links["alice"], form={**form, "comment": "again"})
        assert first.ok and second.ok and "already rated" in second.text()
        with sqlite3.connect(db) as conn:
            n = conn.execute("SELECT COUNT(*) FROM ratings WHERE item_id = ?", (item_id,)).fetchone()[0]
            comment = conn.execute("SELECT comment FROM ratings WHERE item_id = ?", (item_id,)).fetchone()[0]
        assert n == 1 and comment == "first"

        bob.goto(links["bob"])
        for _ in range(2):
            rate_current(bob, "bob", shown, rows, made)
        bob_open = bob.locator("#prompt .text").first.inner_text()
        bob.screenshot(path=str(os.environ.get("HUMANEVAL_SCREENSHOT", tmp_path / "human-eval.png")))

        server.kill()  # mid-study: alice has rated 4, bob 2, and bob has his 3rd item open
        server.start()

        bob.goto(links["bob"])  # the closed tab / reloaded page resumes at the item he had open
        assert progress_of(bob)[0] == 2 and bob.locator("#prompt .text").first.inner_text() == bob_open
        alice.goto(links["alice"])
        assert progress_of(alice)[0] == 4
        for page, name in ((alice, "alice"), (bob, "bob")):
            while page.locator("#done").count() == 0:
                rate_current(page, name, shown, rows, made)
        assert "rated" in alice.locator("#done").inner_text()
        done_a, done_b = progress_of_api(port, links["alice"]), progress_of_api(port, links["bob"])
        assert done_a["done"] + done_b["done"] == 15  # 5 shared by both + 5 unshared rated once
        ctx.close()
    finally:
        server.stop()

    # ---- results.json against the ratings the test made
    proc = tunewise("human-eval", "results", run)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((run / "humaneval" / "results.json").read_text())
    assert results["n_annotators"] == 2 and results["n_items"] == 10 and results["n_ratings"] == 15
    assert results["n_shared_items"] == 5 and results["n_rated_items"] == 10
    verdicts = Counter(made.values())
    pw = results["pairwise"]
    assert (pw["wins"], pw["losses"], pw["ties"]) == (verdicts["fine_tuned"], verdicts["other"], verdicts["tie"])
    assert pw["win_rate"]["value"] == pytest.approx(verdicts["fine_tuned"] / 15)
    decided = verdicts["fine_tuned"] + verdicts["other"]
    if decided:
        assert pw["decided_win_rate"]["value"] == pytest.approx(verdicts["fine_tuned"] / decided)
    assert 0 <= pw["win_rate"]["ci_low"] <= pw["win_rate"]["ci_high"] <= 1 and pw["win_rate"]["n_items"] == 10
    per = results["annotators"]
    assert per["alice"]["ratings"] + per["bob"]["ratings"] == 15
    assert per["alice"]["shared"] == per["bob"]["shared"] == 5
    for name in ("alice", "bob"):
        mine = Counter(v for (who, _), v in made.items() if who == name)
        assert (per[name]["wins"], per[name]["losses"], per[name]["ties"]) == \
            (mine["fine_tuned"], mine["other"], mine["tie"])

    # ---- kappa against a hand calculation on the items both rated
    both = sorted({row for (who, row) in made if who == "alice"} & {row for (who, row) in made if who == "bob"})
    assert len(both) == 5
    x, y = [made[("alice", r)] for r in both], [made[("bob", r)] for r in both]
    agreement = pw["agreement"]
    assert agreement["n_items"] == 5 and agreement["n_annotators"] == 2
    kappa = hand_kappa(x, y)
    if kappa is None:  # both used one verdict throughout (possible on another CPU's outputs): undefined, said so
        assert agreement["value"] is None and agreement["note"]
    else:
        assert agreement["method"] == "cohen_kappa"
        assert agreement["value"] == pytest.approx(kappa, abs=1e-9)
    assert agreement["raw_agreement"] == pytest.approx(sum(a == b for a, b in zip(x, y)) / 5)

    # ---- the frozen ratings are what the numbers came from; verify covers them, not the live database
    frozen = run / results["ratings_file"]
    assert hashlib.sha256(frozen.read_bytes()).hexdigest() == results["ratings_sha256"]
    assert {(r["annotator"], r["row_id"]): r["verdict"] for r in read_jsonl(frozen)} == made
    assert tunewise("verify", run).returncode == 0
    manifest = json.loads((run / "manifest.json").read_text())
    outputs = manifest["stages"]["humaneval"]["outputs"]
    assert set(outputs) == {"humaneval/results.json", "humaneval/ratings.jsonl"}
    frozen.write_text(frozen.read_text().replace('"tie"', '"other"'))
    assert tunewise("verify", run).returncode == 1  # the evidence is hashed
    tunewise("human-eval", "results", run)

    # ---- the card section says how many items and annotators stand behind the numbers
    from tunewise.card import humaneval_section
    from tunewise.rundir import RunDir

    card = humaneval_section.markdown(RunDir.open(run))
    assert "## Human evaluation" in card and "2 annotators gave 15 ratings of 10 of the study's 10 items" in card
    assert f"{pw['win_rate']['value']:.1%}" in card
    if agreement["value"] is not None:
        assert f"Cohen's kappa {agreement['value']:.2f}" in card
    assert "<table>" in humaneval_section.html(RunDir.open(run))


def progress_of_api(port: int, link: str) -> dict:
    with urllib.request.urlopen(link.replace("/a/", "/api/a/"), timeout=5) as r:
        return json.loads(r.read())


def test_likert_page_scores_each_criterion_with_number_keys(gen_run, browser, tmp_path):
    run = copy_run(gen_run, tmp_path / "run")
    port = free_port()
    proc = tunewise("human-eval", "invite", run, "zoe", "--mode", "likert", "--n", "2", "--port", port)
    assert proc.returncode == 0 and "new likert study of 4 items" in proc.stdout, proc.stdout + proc.stderr
    link = proc.stdout.strip().splitlines()[-1].split(": ", 1)[1]
    server = Server(run, port, tmp_path / "server.log").start()
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.goto(link)
        assert page.locator(".pane h2").all_text_contents() == ["Prompt", "Output"]  # one output, blind
        output = page.locator("#output-output").inner_text()
        for key in "425":  # faithful, fluent, helpful in order; each key moves to the next criterion
            page.keyboard.press(key)
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert progress_of(page) == (1, 4)
        page.close()
    finally:
        server.stop()
    rating = read_jsonl_ratings(run)
    assert len(rating) == 1 and rating[0]["scores"] == {"faithful": 4, "fluent": 2, "helpful": 5}
    file = "predictions.jsonl" if rating[0]["model"] == "fine_tuned" else "predictions_base_model.jsonl"
    shown = {r["id"]: r["prediction"] for r in read_jsonl(run / "eval" / file)}
    assert output.strip() == shown[rating[0]["row_id"]].strip()  # the score is filed under the model shown


def read_jsonl_ratings(run: Path) -> list[dict]:
    from tunewise.humaneval.store import Store

    return Store(run / "humaneval").ratings()


# ---------------------------------------------------------------- sides, likert, alpha, Label Studio


def test_sides_are_randomised_per_item_and_per_annotator():
    from tunewise.humaneval.store import Annotator, Store, Study

    study = Study("pairwise", 60, [], 0.25, "base", "base_model", "", 7, {}, 60, "")
    items = [f"item{i}" for i in range(64)]
    a = [Store.fine_tuned_side(study, Annotator(1, "alice", "browser"), i) for i in items]
    b = [Store.fine_tuned_side(study, Annotator(2, "bob", "browser"), i) for i in items]
    assert 20 < a.count("A") < 44  # per item: both sides occur
    assert 0 < sum(x != y for x, y in zip(a, b)) < 64  # per annotator: the same item differs for some
    assert a == [Store.fine_tuned_side(study, Annotator(1, "alice", "browser"), i) for i in items]  # stable


def copy_run(run: Path, dest: Path) -> Path:
    """A copy of the run without its human evaluation (folder and manifest record), for a study of its own."""
    copy_shared_run(run, dest, ignore=shutil.ignore_patterns("humaneval"))  # weights hard-linked
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["stages"].pop("humaneval", None)
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dest


def hand_alpha_nominal(units: list[list[str]]) -> float:
    """Krippendorff's alpha (nominal) from the coincidence matrix: 1 - (n - 1) D_o / sum_{c != k} n_c n_k."""
    o: Counter = Counter()
    for values in units:
        m = len(values)
        if m < 2:
            continue
        for i, j in ((i, j) for i in range(m) for j in range(m) if i != j):
            o[(values[i], values[j])] += 1 / (m - 1)
    n_c: Counter = Counter()
    for (c, _), w in o.items():
        n_c[c] += w
    n = sum(n_c.values())
    d_o = sum(w for (c, k), w in o.items() if c != k)
    d_e = sum(n_c[c] * n_c[k] for c in n_c for k in n_c if c != k)
    return 1 - (n - 1) * d_o / d_e


def test_three_annotators_get_krippendorffs_alpha():
    from tunewise.humaneval.results import agreement

    labels = {"ann": {"i1": "fine_tuned", "i2": "other", "i3": "tie", "i4": "fine_tuned", "i5": "other"},
              "ben": {"i1": "fine_tuned", "i2": "other", "i3": "fine_tuned", "i4": "fine_tuned", "i5": "tie"},
              "cat": {"i1": "fine_tuned", "i2": "tie", "i3": "tie", "i4": "other"}}
    result = agreement(labels, ordinal=False)
    units = [[by[i] for by in labels.values() if i in by] for i in ("i1", "i2", "i3", "i4", "i5")]
    assert result.method == "krippendorff_alpha_nominal" and result.n_annotators == 3 and result.n_items == 5
    assert result.value == pytest.approx(hand_alpha_nominal(units), abs=1e-9)


def test_likert_study_means_and_weighted_kappa(gen_run, tmp_path):
    from sklearn.metrics import cohen_kappa_score

    from tunewise.humaneval import run as humaneval_stage
    from tunewise.humaneval.study import open_study, settings_for
    from tunewise.rundir import RunDir

    rd = RunDir.open(copy_run(gen_run, tmp_path / "run"))
    store, study = open_study(rd, settings_for(rd, mode="likert", n=4, overlap=1.0), echo=lambda m: None)
    assert study.criteria == ["faithful", "fluent", "helpful"] and len(store.items()) == 8  # 4 rows x 2 outputs
    scores = {}
    for name, shift in (("ann", 0), ("ben", 1)):
        annotator = store.annotator_for_token(store.invite(name)[0])
        while (current := store.current(study, annotator)) is not None:
            item, _ = current
            base = 4 if item.model == "fine_tuned" else 2
            given = {c: min(5, base + (shift if c == "fluent" else 0) + (item.row_id[-1] == "3")) for c in study.criteria}
            assert store.submit(study, annotator, item.id, scores=given)
            scores[(name, item.id, item.model)] = given
    humaneval_stage(rd)
    results = json.loads((rd.root / "humaneval" / "results.json").read_text())
    faithful = results["likert"]["faithful"]
    ft = [s["faithful"] for (_, _, m), s in scores.items() if m == "fine_tuned"]
    other = [s["faithful"] for (_, _, m), s in scores.items() if m == "other"]
    assert faithful["fine_tuned"]["value"] == pytest.approx(sum(ft) / len(ft))
    assert faithful["other"]["value"] == pytest.approx(sum(other) / len(other))
    assert faithful["difference"]["value"] == pytest.approx(sum(ft) / len(ft) - sum(other) / len(other))
    fluent = results["likert"]["fluent"]["agreement"]
    keys = sorted({(i, m) for (_, i, m) in scores})
    x = [scores[("ann", i, m)]["fluent"] for i, m in keys]
    y = [scores[("ben", i, m)]["fluent"] for i, m in keys]
    assert fluent["method"] == "cohen_kappa_quadratic"
    assert fluent["value"] == pytest.approx(cohen_kappa_score(x, y, weights="quadratic", labels=[1, 2, 3, 4, 5]))
    assert results["likert"]["faithful"]["agreement"]["raw_agreement"] == 1.0


def test_label_studio_export_and_import(gen_run, tmp_path):
    from tunewise.errors import DataError
    from tunewise.humaneval.labelstudio import export_tasks, import_export
    from tunewise.humaneval.study import open_study, settings_for
    from tunewise.rundir import RunDir

    rd = RunDir.open(copy_run(gen_run, tmp_path / "run"))
    store, study = open_study(rd, settings_for(rd, n=6), echo=lambda m: None)
    tasks_path, config_path = export_tasks(store, study, tmp_path / "ls")
    tasks = json.loads(tasks_path.read_text())
    assert len(tasks) == 6 and all(set(t["data"]) == {"item", "prompt", "output_a", "output_b"} for t in tasks)
    assert "fine_tuned" not in tasks_path.read_text() and "base_model" not in tasks_path.read_text()  # blind
    config = ET.fromstring(config_path.read_text())
    assert {c.get("value") for c in config.iter("Choice")} == {"A", "B", "tie"}
    # what Label Studio's JSON export looks like for two users who labelled the tasks
    shown = predictions(rd.root)
    export, expected_wins = [], 0
    for k, t in enumerate(tasks):
        truth = shown[t["data"]["prompt"]]
        same = truth["fine_tuned"] == truth["other"]
        ft_side = "tie" if same else "A" if t["data"]["output_a"] == truth["fine_tuned"] else "B"
        expected_wins += not same
        annotations = [{"id": 2 * k, "completed_by": 7, "was_cancelled": False, "created_at": "2025-01-01T00:00:00Z",
                        "result": [{"from_name": "preference", "to_name": "prompt", "type": "choices",
                                    "value": {"choices": [ft_side]}}]},
                       {"id": 2 * k + 1, "completed_by": {"email": "lee@example.org"}, "was_cancelled": k == 0,
                        "result": [{"from_name": "preference", "type": "choices", "value": {"choices": ["tie"]}},
                                   {"from_name": "comment", "type": "textarea", "value": {"text": ["close call"]}}]}]
        export.append({"id": 100 + k, "data": t["data"], "annotations": annotations})
    (tmp_path / "export.json").write_text(json.dumps(export))
    assert import_export(store, study, tmp_path / "export.json") == (11, 0)  # one cancelled annotation skipped
    assert import_export(store, study, tmp_path / "export.json") == (0, 11)  # counts once
    ratings = store.ratings()
    assert sum(r["verdict"] == "fine_tuned" for r in ratings if r["annotator"] == "labelstudio:7") == expected_wins
    assert {r["comment"] for r in ratings if r["annotator"] == "labelstudio:lee@example.org"} == {"close call"}

    export[2]["data"]["item"] = "not-an-item"
    (tmp_path / "bad.json").write_text(json.dumps(export))
    with pytest.raises(DataError, match=r"bad.json: task 2 .*data.item 'not-an-item'"):
        import_export(store, study, tmp_path / "bad.json")


def test_refusals_and_a_study_that_cannot_change_under_its_ratings(gen_run, tmp_path):
    run = copy_run(gen_run, tmp_path / "run")
    proc = tunewise("human-eval", "results", run)  # nothing rated yet: an error, and no half-recorded stage
    assert proc.returncode == 2 and "no human-evaluation study yet" in proc.stderr
    assert "humaneval" not in json.loads((run / "manifest.json").read_text())["stages"]
    assert tunewise("human-eval", "invite", run, "carol", "--n", "3").returncode == 0
    proc = tunewise("human-eval", "invite", run, "dan", "--n", "5")
    assert proc.returncode == 2 and "--new" in proc.stderr and "n 3" in proc.stderr
    proc = tunewise("human-eval", "invite", run, "dan", "--against", run)
    assert proc.returncode == 2 and "against" in proc.stderr
    # the outputs the study rates changed (evaluate reran): refused, with the way out
    preds = run / "eval" / "predictions.jsonl"
    preds.write_text(preds.read_text().replace('"prediction": "', '"prediction": "X'))
    proc = tunewise("human-eval", "invite", run, "dan")
    assert proc.returncode == 2 and "changed since this study began" in proc.stderr


def test_a_classification_run_is_refused_with_the_reason(tmp_path):
    from tunewise.errors import TunewiseError
    from tunewise.humaneval.study import open_study, settings_for
    from tunewise.recipe import validate_recipe
    from tunewise.rundir import RunDir

    recipe = validate_recipe({"name": "clf", "task": "classification", "output_dir": str(tmp_path),
                              "data": {"train": "t.jsonl"}})
    rd = RunDir.for_recipe(recipe)
    with pytest.raises(TunewiseError, match="outputs are labels"):
        open_study(rd, settings_for(rd), echo=lambda m: None)
