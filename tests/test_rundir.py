"""The run directory: atomic writes, stage skipping by input hashes, and `verify` (tiny fake stages, no models)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from tunewise.errors import RunDirError, VerifyError
from tunewise.recipe import validate_recipe
from tunewise.rundir import (
    MANIFEST,
    RECIPE,
    RunDir,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    sha256_file,
    verify_run,
)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith("."))


# ---------------------------------------------------------------- atomic writes


def test_atomic_writes_leave_no_temp_files_and_are_readable(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "sub" / "b.txt", "héllo\n")  # creates the folder
    atomic_write_json(tmp_path / "c.json", {"x": [1, 2], "é": "ü"})
    atomic_write_jsonl(tmp_path / "d.jsonl", [{"i": i} for i in range(3)])
    assert leftovers(tmp_path) == []
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "sub" / "b.txt").read_text(encoding="utf-8") == "héllo\n"
    assert json.loads((tmp_path / "c.json").read_text(encoding="utf-8")) == {"x": [1, 2], "é": "ü"}
    assert [json.loads(x) for x in (tmp_path / "d.jsonl").read_text().splitlines()] == [{"i": 0}, {"i": 1}, {"i": 2}]
    expected_mode = 0o666 & ~current_umask()
    for name in ("a.bin", "sub/b.txt", "c.json", "d.jsonl"):
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode == expected_mode, f"{name}: mode {oct(mode)}, expected {oct(expected_mode)} (not mkstemp's 0600)"
        assert mode & stat.S_IRGRP, f"{name} should be group-readable"


def test_atomic_write_replaces_and_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]  # fails half-way, inside the write
    assert target.read_text() == "new"
    assert leftovers(tmp_path) == []


def test_sha256_file(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# ---------------------------------------------------------------- stages


@pytest.fixture
def inputs(tmp_path) -> Path:
    p = tmp_path / "input.txt"
    p.write_text("first version\n", encoding="utf-8")
    return p


@pytest.fixture
def rd(tmp_path, inputs) -> RunDir:
    # no audit: then train needs data alone (the registry's upstream follows what the recipe enables)
    recipe = validate_recipe({"name": "fake", "output_dir": str(tmp_path / "runs"), "data": {"train": str(inputs)},
                              "audit": {"enabled": False}})
    return RunDir.for_recipe(recipe)


class FakeStage:
    """Copies the input file upper-cased into the stage folder and counts its calls."""

    def __init__(self, src: Path, name: str = "out.txt"):
        self.src, self.name, self.calls = src, name, 0

    def __call__(self, out: Path) -> str:
        self.calls += 1
        atomic_write_text(out / self.name, self.src.read_text(encoding="utf-8").upper())
        atomic_write_json(out / "nested" / "info.json", {"calls": self.calls})
        return f"fake: wrote {self.name}"


def test_new_run_directory_layout(rd, tmp_path):
    assert rd.root.parent == tmp_path / "runs"
    assert rd.root.name == f"fake-{rd.recipe.fingerprint()}"
    manifest = json.loads((rd.root / MANIFEST).read_text())
    assert manifest["run_id"] == rd.root.name
    assert manifest["recipe"] == rd.recipe.model_dump(mode="json")
    assert manifest["seed"] == 42 and manifest["stages"] == {}
    assert "git_revision" in manifest and "torch" in manifest["packages"]
    cpu = manifest["platform"]["cpu"]  # results are bit-identical only on the same CPU kind: the manifest says which
    assert cpu["model"] and isinstance(cpu["isa"], list) and cpu["cpus_available"] >= 1
    if Path("/proc/cpuinfo").exists():  # one model name covers CPU generations: family and model tell them apart
        assert " family " in cpu["cpu_id"] and " model " in cpu["cpu_id"]
    assert validate_recipe(yaml.safe_load((rd.root / RECIPE).read_text())) == rd.recipe


def test_same_recipe_reopens_the_same_run_directory(rd, inputs):
    rd.run_stage("data", FakeStage(inputs), external_inputs=[inputs])
    again = RunDir.for_recipe(rd.recipe)
    assert again.root == rd.root and again.is_done("data")


def test_stage_is_skipped_when_inputs_are_unchanged(rd, inputs):
    fn = FakeStage(inputs)
    first = rd.run_stage("data", fn, external_inputs=[inputs])
    assert first.ran and first.message == "fake: wrote out.txt"
    assert (rd.root / "data" / "out.txt").read_text() == "FIRST VERSION\n"
    record = rd.stage_record("data")
    assert record["status"] == "done"
    assert record["external_inputs"] == {str(inputs.resolve()): sha256_file(inputs)}
    assert set(record["outputs"]) == {"data/out.txt", "data/nested/info.json"}

    os.utime(inputs, (1, 1))  # a new mtime alone is not a change
    second = RunDir.open(rd.root).run_stage("data", fn, external_inputs=[inputs])
    assert not second.ran
    assert "nothing to do" in second.message and "inputs unchanged" in second.message
    assert fn.calls == 1


def test_stage_reruns_when_an_external_input_changes(rd, inputs):
    fn = FakeStage(inputs)
    rd.run_stage("data", fn, external_inputs=[inputs])
    inputs.write_text("second version\n", encoding="utf-8")
    outcome = rd.run_stage("data", fn, external_inputs=[inputs])
    assert outcome.ran and fn.calls == 2
    assert (rd.root / "data" / "out.txt").read_text() == "SECOND VERSION\n"
    assert rd.stage_record("data")["external_inputs"][str(inputs.resolve())] == sha256_file(inputs)


def test_force_reruns(rd, inputs):
    fn = FakeStage(inputs)
    rd.run_stage("data", fn, external_inputs=[inputs])
    assert rd.run_stage("data", fn, external_inputs=[inputs], force=True).ran
    assert fn.calls == 2


def test_stage_reruns_when_an_output_went_missing(rd, inputs):
    fn = FakeStage(inputs)
    rd.run_stage("data", fn, external_inputs=[inputs])
    (rd.root / "data" / "out.txt").unlink()
    assert rd.run_stage("data", fn, external_inputs=[inputs]).ran
    assert (rd.root / "data" / "out.txt").is_file()


def test_rerun_clears_the_stage_folder(rd, inputs):
    rd.run_stage("data", FakeStage(inputs, "old.txt"), external_inputs=[inputs])
    rd.run_stage("data", FakeStage(inputs, "new.txt"), external_inputs=[inputs], force=True)
    assert not (rd.root / "data" / "old.txt").exists()
    assert "data/old.txt" not in rd.stage_record("data")["outputs"]


def test_downstream_stage_reruns_when_upstream_outputs_change(rd, inputs):
    up = FakeStage(inputs)
    down_calls = []

    def down(out: Path) -> None:
        down_calls.append(1)
        text = (rd.stage_dir("data") / "out.txt").read_text()
        atomic_write_text(out / "len.txt", str(len(text)))

    rd.run_stage("data", up, external_inputs=[inputs])
    rd.run_stage("train", down)
    assert (rd.root / "model" / "len.txt").is_file()  # the train stage owns model/
    assert not rd.run_stage("train", down).ran
    inputs.write_text("a longer second version\n", encoding="utf-8")
    assert rd.run_stage("data", up, external_inputs=[inputs]).ran
    assert rd.run_stage("train", down).ran
    assert len(down_calls) == 2


def test_two_processes_on_one_run_keep_each_others_stage_records(rd, inputs):
    """Two commands on one run (say `tunewise monitor` beside `tunewise card`), each with the manifest it read at
    start: the one that saves last keeps the other's record instead of writing its stale copy over it."""
    rd.run_stage("data", FakeStage(inputs), external_inputs=[inputs])
    first, second = RunDir.open(rd.root), RunDir.open(rd.root)
    first.run_stage("audit", FakeStage(inputs, "findings.txt"))
    second.run_stage("train", FakeStage(inputs, "model.txt"))
    on_disk = RunDir.open(rd.root)
    assert [s for s in ("data", "audit", "train") if on_disk.is_done(s)] == ["data", "audit", "train"]
    assert second.is_done("audit")  # the saving process sees the merged manifest too
    assert on_disk.verify() == []


def test_a_second_process_on_the_same_stage_stops_with_a_clear_error(rd, inputs):
    """While one process writes a stage's folder, another running the same stage would delete its files first:
    it is refused, naming the stage, and the first one's result stands."""
    other = RunDir.open(rd.root)
    other.stage_lock_patience = 0.3  # it waits this long for the first one, then gives up
    refused = []

    def slow(out: Path) -> str:
        atomic_write_text(out / "half.txt", "written by the first process")
        with pytest.raises(RunDirError, match=r"another tunewise process is running the data stage of this run"):
            other.run_stage("data", FakeStage(inputs), external_inputs=[inputs])
        refused.append(True)
        return "first: done"

    assert rd.run_stage("data", slow, external_inputs=[inputs]).message == "first: done"
    assert refused and (rd.root / "data" / "half.txt").read_text() == "written by the first process"
    assert other.run_stage("data", FakeStage(inputs), external_inputs=[inputs], force=True).ran  # free again


def test_stage_needs_its_upstream_stage(rd):
    with pytest.raises(RunDirError, match=r"`evaluate` needs the `data` stage .* to have finished"):
        rd.run_stage("evaluate", lambda out: None)


def test_a_failed_stage_stays_running_in_the_manifest(rd, inputs):
    def boom(out: Path) -> None:
        atomic_write_text(out / "partial.txt", "half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        rd.run_stage("data", boom, external_inputs=[inputs])
    reopened = RunDir.open(rd.root)
    assert reopened.stage_record("data")["status"] == "running"
    assert not reopened.is_done("data")
    with pytest.raises(VerifyError, match="data: stage did not finish"):
        verify_run(rd.root)


def test_extra_outputs_outside_the_stage_folder_are_recorded(rd, inputs):
    def write(out: Path) -> None:
        atomic_write_text(out / "README.md", "card")
        atomic_write_text(rd.root / "report.html", "<html></html>")

    rd.run_stage("data", FakeStage(inputs), external_inputs=[inputs])
    rd.run_stage("train", FakeStage(inputs, "model.txt"))
    rd.run_stage("evaluate", FakeStage(inputs, "metrics.txt"))
    rd.run_stage("probes", FakeStage(inputs, "probes.txt"))
    rd.run_stage("gate", FakeStage(inputs, "gate.txt"))
    rd.run_stage("card", write)  # report.html is declared in the registry as the card stage's extra output
    assert rd.stage_record("card")["outputs"]["report.html"] == sha256_file(rd.root / "report.html")


# ---------------------------------------------------------------- verify


@pytest.fixture
def finished(rd, inputs) -> RunDir:
    rd.run_stage("data", FakeStage(inputs), external_inputs=[inputs])
    rd.run_stage("train", FakeStage(rd.root / "data" / "out.txt", "model.txt"))
    return rd


def verify_problems(root: Path) -> str:
    with pytest.raises(VerifyError) as exc:
        verify_run(root)
    assert exc.value.exit_code == 1
    return str(exc.value)


def test_verify_passes_on_an_intact_run(finished, inputs):
    assert finished.verify() == []
    # at least the 2 outputs per stage and the external input (recipe.yaml may be counted too)
    assert verify_run(finished.root) >= 5


def test_verify_reports_a_modified_file(finished):
    with open(finished.root / "data" / "out.txt", "ab") as fh:
        fh.write(b"!")
    text = verify_problems(finished.root)
    assert "1 artifact(s) do not match" in text
    assert "data/out.txt: modified" in text and "stage data" in text


def test_verify_reports_a_missing_file(finished):
    (finished.root / "model" / "nested" / "info.json").unlink()
    assert "model/nested/info.json: missing (recorded by stage train)" in verify_problems(finished.root)


def test_verify_reports_an_added_file(finished):
    (finished.root / "model" / "extra.bin").write_bytes(b"x")
    assert "model/extra.bin: not recorded in the manifest" in verify_problems(finished.root)


def test_verify_reports_a_changed_external_input(finished, inputs):
    inputs.write_text("edited after the run\n", encoding="utf-8")
    text = verify_problems(finished.root)
    assert f"{inputs.resolve()}: input of stage data changed since the run" in text


def test_verify_reports_a_deleted_external_input(finished, inputs):
    inputs.unlink()
    assert f"{inputs.resolve()}: input of stage data is missing" in verify_problems(finished.root)


def test_verify_lists_every_problem(finished, inputs):
    with open(finished.root / "data" / "out.txt", "ab") as fh:
        fh.write(b"!")
    (finished.root / "model" / "model.txt").unlink()
    (finished.root / "data" / "added.txt").write_text("x")
    inputs.write_text("changed\n")
    text = verify_problems(finished.root)
    assert "4 artifact(s) do not match" in text
    for words in ("data/out.txt: modified", "model/model.txt: missing", "data/added.txt: not recorded",
                  "changed since the run"):
        assert words in text


def test_verify_flags_a_downstream_stage_built_from_replaced_upstream_outputs(finished, inputs):
    inputs.write_text("new data\n", encoding="utf-8")
    assert finished.run_stage("data", FakeStage(inputs), external_inputs=[inputs]).ran  # train not rerun
    with pytest.raises(VerifyError, match="train"):
        verify_run(finished.root)


def test_open_and_verify_need_a_run_directory(tmp_path):
    for root in (tmp_path, tmp_path / "does-not-exist"):
        with pytest.raises(RunDirError, match="is not a tunewise run directory"):
            RunDir.open(root)
        with pytest.raises(RunDirError, match="is not a tunewise run directory"):
            verify_run(root)


def test_damaged_manifest_is_a_clear_error(finished):
    (finished.root / MANIFEST).write_text("{not json", encoding="utf-8")
    with pytest.raises(RunDirError, match="not valid JSON .*damaged"):
        RunDir.open(finished.root)


# ---------------------------------------------------------------- the registry and old run directories


def test_an_unknown_stage_name_is_an_error_not_a_new_folder(rd):
    with pytest.raises(RunDirError, match=r"unknown stage 'trian' \(did you mean 'train'\?\)"):
        rd.stage_dir("trian")
    with pytest.raises(RunDirError, match="unknown stage"):
        rd.run_stage("evaluat", lambda out: None)
    assert not (rd.root / "trian").exists() and not (rd.root / "evaluat").exists()


def test_upstream_comes_from_the_registry_and_follows_the_recipe(tmp_path, inputs):
    from tunewise import stages

    audited = validate_recipe({"name": "x", "data": {"train": str(inputs)}})
    unaudited = validate_recipe({"name": "x", "data": {"train": str(inputs)}, "audit": {"enabled": False}})
    assert stages.get("train").upstream(audited) == ["data", "audit"]
    assert stages.get("train").upstream(unaudited) == ["data"]
    assert stages.get("card").upstream(unaudited) == ["data", "train", "evaluate", "probes", "gate"]
    # every stage's needs are earlier stages, and each folder is owned once
    order = stages.names()
    for s in stages.STAGES:
        assert all(order.index(n) < order.index(s.name) for n in s.needs), s.name
    assert len({s.folder for s in stages.STAGES}) == len(stages.STAGES)


def test_a_run_directory_from_an_older_tunewise_gets_a_clear_message(rd, inputs):
    rd.run_stage("data", FakeStage(inputs), external_inputs=[inputs])
    manifest = json.loads((rd.root / MANIFEST).read_text())
    del manifest["layout"]  # what tunewise wrote before the stage registry and typed artifacts
    (rd.root / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(RunDirError, match=r"made by an older tunewise .* --force` starts it afresh"):
        RunDir.open(rd.root)
    with pytest.raises(RunDirError, match="made by an older tunewise"):
        RunDir.for_recipe(rd.recipe)
    fresh = RunDir.for_recipe(rd.recipe, fresh=True)  # `tunewise run --force`
    assert fresh.manifest["stages"] == {} and RunDir.open(rd.root).manifest["layout"] == fresh.manifest["layout"]


def test_bf16_autocast_only_where_the_cpu_runs_it_faster(monkeypatch, tmp_path):
    import torch

    import tunewise.hardware as hw

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path))

    def machine(amx: bool, isa: list[str], speeds=None):
        monkeypatch.setattr(hw, "cpu_has_amx", lambda: amx)
        monkeypatch.setattr(hw, "cpu_facts", lambda: {"model": "test CPU", "isa": isa, "amx": amx})
        if speeds is not None:
            monkeypatch.setattr(hw, "measured_bf16_speedup", lambda: speeds)
        hw.bf16_verdict.cache_clear()
        return hw.choose_placement("auto", "auto")

    assert machine(True, ["amx_tile", "avx512_bf16"]).precision == "bf16"
    p = machine(False, ["avx2", "fma"])  # bf16 emulated: never measured (it would take seconds)
    assert (p.device, p.precision) == ("cpu", "fp32") and "emulated" in p.reason
    p = machine(False, ["avx512_bf16", "avx512f"], speeds=(155.0, 290.0))  # AVX-512 bf16 at half fp32's speed
    assert p.precision == "fp32" and "0.53x fp32" in p.reason
    p = machine(False, ["avx512_bf16", "avx512f"], speeds=(859.0, 200.0))  # AMD Zen 5
    assert p.precision == "bf16" and "4.29x fp32" in p.reason and "859 against 200" in p.reason
    assert hw.choose_placement("auto", "fp32").precision == "fp32"  # the recipe's choice wins
    hw.bf16_verdict.cache_clear()


def test_the_bf16_measurement_is_kept_per_machine_so_every_run_chooses_alike(monkeypatch, tmp_path):
    import tunewise.hardware as hw

    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path))
    if "avx512_bf16" not in hw.cpu_facts()["isa"]:
        pytest.skip("a bf16 matmul is emulated on this CPU: measuring it would take seconds")
    bf16, fp32 = hw.measured_bf16_speedup(size=256, seconds=0.02)
    assert bf16 > 0 and fp32 > 0
    kept = (tmp_path / "bf16-speed.json").read_text(encoding="utf-8")
    assert hw.measured_bf16_speedup(size=256, seconds=0.02) == (bf16, fp32)  # read back, not measured again
    assert (tmp_path / "bf16-speed.json").read_text(encoding="utf-8") == kept
    (tmp_path / "bf16-speed.json").write_text("{not json", encoding="utf-8")  # a cut write: measured afresh
    assert all(x > 0 for x in hw.measured_bf16_speedup(size=256, seconds=0.02))
