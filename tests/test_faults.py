"""Faults: what a run survives and how it recovers. A checkpoint cut short is skipped for the one before; a full
disk is a clear error that leaves the manifest and the earlier checkpoints intact (on a real tmpfs when this
process may mount one, else with ENOSPC injected); a damaged artifact is named by `verify` and by the next stage
that reads it; Ctrl-C in any stage leaves a run that `--resume` completes; and a run killed with SIGKILL and
resumed ends with the same metrics and weights as one never interrupted (classification and causal LoRA)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import (BANKING77, DATA, banking77_rows, complete_checkpoints, copy_run, read_jsonl, subprocess_env,
                      write_jsonl)

# ---------------------------------------------------------------- small real runs

CLASSIFIER = {  # 48 banking77 rows (8 per intent), 6 for validation: 6 steps an epoch, a checkpoint every 4
    "seed": 13, "audit": {"label_noise": False}, "probes": {"enabled": False},
    "model": {"base": "minilm", "max_length": 32},
    "train": {"epochs": 2, "batch_size": 8, "lr": 1.0e-4, "precision": "fp32", "device": "cpu",
              "early_stopping_patience": None, "checkpoint_every_steps": 4},
    "evaluate": {"bootstrap_samples": 100, "baselines": ["majority"]},
}
CAUSAL = {  # SmolLM2 + LoRA on 16 Multi30k pairs (4 for validation): 3 steps an epoch, a checkpoint every 2
    "seed": 11, "task": "generation", "audit": {"enabled": False}, "probes": {"enabled": False},
    "model": {"base": "smollm2", "max_length": 64},
    "train": {"epochs": 2, "batch_size": 4, "lr": 5.0e-4, "precision": "fp32", "early_stopping_patience": None,
              "checkpoint_every_steps": 2},
    "evaluate": {"max_examples": 2, "max_new_tokens": 4, "bootstrap_samples": 100, "baselines": []},
}


def write_recipe(folder: Path, name: str, base: dict, **sections) -> Path:
    recipe = json.loads(json.dumps(base))
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    recipe.update(name=name, output_dir=str(folder / "runs"))
    path = folder / f"{name}.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict[str, Path]:
    if not BANKING77.is_dir() or not (DATA / "multi30k_en_de").is_dir():
        pytest.skip(f"shared data not found at {DATA}")
    folder = tmp_path_factory.mktemp("fault_data")
    mt = DATA / "multi30k_en_de"
    (folder / "mt_train.jsonl").write_text("".join((mt / "train.jsonl").read_text().splitlines(True)[:16]))
    (folder / "mt_test.jsonl").write_text("".join((mt / "test_2016_flickr.jsonl").read_text().splitlines(True)[:2]))
    return {"cls_train": write_jsonl(folder / "cls_train.jsonl", banking77_rows(BANKING77 / "train.csv", 8)),
            "cls_test": write_jsonl(folder / "cls_test.jsonl", banking77_rows(BANKING77 / "test.csv", 5)),
            "mt_train": folder / "mt_train.jsonl", "mt_test": folder / "mt_test.jsonl"}


def classifier_recipe(folder: Path, data_files, name: str = "faults-cls", **sections) -> Path:
    data = {"train": {"path": str(data_files["cls_train"]), "source": "banking77 (PolyAI), slice",
                      "license": "CC-BY-4.0", "contains_personal_data": False},
            "test": {"path": str(data_files["cls_test"]), "license": "CC-BY-4.0"}, "validation_fraction": 0.125}
    return write_recipe(folder, name, CLASSIFIER, data=data, **sections)


def causal_recipe(folder: Path, data_files, name: str = "faults-lora", **sections) -> Path:
    data = {"train": {"path": str(data_files["mt_train"]), "source": "Multi30k (slice)", "license": "CC-BY-4.0",
                      "contains_personal_data": False},
            "test": {"path": str(data_files["mt_test"]), "license": "CC-BY-4.0"},
            "prompt_template": "Translate to German: {en}", "completion_field": "de", "validation_fraction": 0.25}
    return write_recipe(folder, name, CAUSAL, data=data, **sections)


def run_root(recipe: Path) -> Path:
    from tunewise.recipe import load_recipe

    resolved = load_recipe(recipe)
    return Path(resolved.output_dir) / f"{resolved.name}-{resolved.fingerprint()}"


def tunewise(*args, env: dict | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "tunewise", *map(str, args)], env=env or subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc


def weights(folder: Path) -> dict:
    from safetensors.numpy import load_file

    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(path)))
    return out


# ---------------------------------------------------------------- a checkpoint cut short is skipped


def fake_checkpoint(folder: Path, step: int) -> Path:
    """A checkpoint folder in the Trainer's real formats (safetensors weights, torch.save archives, JSON state)."""
    import torch
    from safetensors.torch import save_file

    ckpt = folder / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    save_file({"w": torch.full((64, 64), float(step))}, str(ckpt / "model.safetensors"))
    torch.save({"state": {0: {"exp_avg": torch.ones(64, 64)}}}, ckpt / "optimizer.pt")
    torch.save({"last_epoch": step}, ckpt / "scheduler.pt")
    torch.save({"cpu": torch.random.get_rng_state()}, ckpt / "rng_state.pth")
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return ckpt


def cut(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


@pytest.mark.parametrize("damage", ["weights cut in half", "weights one byte short", "optimizer cut",
                                    "rng state cut", "trainer_state missing", "trainer_state cut",
                                    "trainer_state of another step", "no optimizer", "no weights"])
def test_a_damaged_newest_checkpoint_is_skipped_for_the_one_before(tmp_path, damage, caplog):
    from tunewise.train.common import checkpoint_problem, last_complete_checkpoint

    fake_checkpoint(tmp_path, 4)
    newest = fake_checkpoint(tmp_path, 8)
    assert last_complete_checkpoint(tmp_path) == str(newest)
    {"weights cut in half": lambda: cut(newest / "model.safetensors"),
     "weights one byte short": lambda: cut(newest / "model.safetensors", keep=1 - 1 / (64 * 64 * 4 + 200)),
     "optimizer cut": lambda: cut(newest / "optimizer.pt", keep=0.9),
     "rng state cut": lambda: cut(newest / "rng_state.pth"),
     "trainer_state missing": lambda: (newest / "trainer_state.json").unlink(),
     "trainer_state cut": lambda: cut(newest / "trainer_state.json"),
     "trainer_state of another step": lambda: (newest / "trainer_state.json").write_text('{"global_step": 4}'),
     "no optimizer": lambda: (newest / "optimizer.pt").unlink(),
     "no weights": lambda: (newest / "model.safetensors").unlink()}[damage]()
    assert checkpoint_problem(newest)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert f"skipping incomplete checkpoint {newest}" in caplog.text
    cut(tmp_path / "checkpoint-4" / "model.safetensors")
    assert last_complete_checkpoint(tmp_path) is None  # nothing usable: training starts afresh


# ---------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 256 MiB tmpfs mounted at tmp_path/disk when this process may mount one (root), else None: the tests
    then inject ENOSPC where the real disk would raise it."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.environ.get("TUNEWISE_TEST_INJECT_ENOSPC"):  # try the fallback where a tmpfs would work
        yield None
        return
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Write one filler file until the disk refuses another byte, then give back `leave` bytes; returns it
    (delete it to free the disk)."""
    filler = disk / "filler.bin"
    block = b"\0" * (1 << 20)
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    for size in (4096, 1):  # the last partial block
        try:
            with open(filler, "ab", buffering=0) as fh:
                while True:
                    fh.write(b"\0" * size)
        except OSError:
            pass
    if leave:
        os.truncate(filler, filler.stat().st_size - leave)
    return filler


def test_a_full_disk_during_an_artifact_write_names_the_file_and_keeps_the_old_one(small_disk, tmp_path,
                                                                                    monkeypatch):
    from tunewise.errors import DiskFullError
    from tunewise.recipe import validate_recipe
    from tunewise.rundir import RunDir, atomic_write_json

    where = small_disk or tmp_path
    source = where / "input.txt"
    source.write_text("rows\n")
    rd = RunDir.for_recipe(validate_recipe({"name": "full", "output_dir": str(where / "runs"),
                                            "data": {"train": str(source)}, "audit": {"enabled": False}}))
    rd.run_stage("data", lambda out: atomic_write_json(out / "summary.json", {"rows": 1}) and None)
    manifest_before = (rd.root / "manifest.json").read_bytes()
    target = rd.stage_dir("data") / "summary.json"
    if small_disk:
        fill(small_disk)
    else:  # no tmpfs here: the kernel's answer to a write on a full disk, injected where the data is flushed
        real_fsync = os.fsync

        def no_space(fd):
            if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(".manifest.json."):
                return real_fsync(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(os, "fsync", no_space)

    with pytest.raises(DiskFullError) as info:
        atomic_write_json(target, {"rows": list(range(200_000))})
    message = str(info.value)
    assert message.startswith(f"{target}: cannot write it, the disk is full") and "left as it was" in message
    assert json.loads(target.read_text()) == {"rows": 1}
    assert not list(target.parent.glob("*.tmp"))  # the half-written temp file was removed

    # inside a stage, a library's own writer (here a plain open/write) runs out of room: the stage is left
    # unfinished, the manifest as it was saved when the stage started
    if small_disk:
        (small_disk / "filler.bin").unlink()
        fill(small_disk, leave=256 << 10)  # room for the manifest, not for the stage's output

    def write_big(out: Path) -> None:
        with open(out / "rows.bin", "wb") as fh:
            for _ in range(100):
                fh.write(b"x" * (1 << 20))
                os.fsync(fh.fileno())

    with pytest.raises(DiskFullError) as info:
        rd.run_stage("data", write_big, force=True)
    assert str(info.value).startswith(f"{rd.stage_dir('data') / 'rows.bin'}: cannot write it, the disk is full")
    assert "manifest.json and the outputs of the earlier stages are intact" in str(info.value)
    manifest = json.loads((rd.root / "manifest.json").read_text())
    assert manifest["stages"]["data"]["status"] == "running"
    assert json.loads(manifest_before)["stages"]["data"]["status"] == "done"


ENOSPC_INJECTOR = '''
import errno, os, re
import torch

_save = torch.save
def save(obj, f, *args, **kwargs):  # the disk fills up after the first checkpoint
    step = re.search(r"checkpoint-(\\d+)", str(f))
    if step and int(step.group(1)) > int(os.environ["TW_FIRST_CHECKPOINT"]):
        raise RuntimeError(f"[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                           f"data/0: file write failed")
    return _save(obj, f, *args, **kwargs)
torch.save = save
'''


def test_a_full_disk_during_a_checkpoint_write_keeps_the_last_checkpoint_and_resumes(small_disk, data_files,
                                                                                        tmp_path):
    """Training a LoRA adapter on a small disk that fills up after the first checkpoint: the run stops with a
    clear error naming the file, the manifest and the first checkpoint are intact, and once there is room
    `--resume` finishes the training from that checkpoint."""
    from tunewise.train.common import last_complete_checkpoint

    folder = small_disk or tmp_path
    recipe = causal_recipe(folder, data_files, "faults-full", train={"epochs": 1, "checkpoint_every_steps": 1})
    root = run_root(recipe)
    env = subprocess_env()
    log = tmp_path / "full.log"
    if small_disk is None:  # no tmpfs here: torch.save refuses as it does on a full disk (it gives no errno)
        (tmp_path / "inject").mkdir()
        (tmp_path / "inject" / "sitecustomize.py").write_text(ENOSPC_INJECTOR)
        env["PYTHONPATH"] = f"{tmp_path / 'inject'}{os.pathsep}{env.get('PYTHONPATH', '')}"
        env["TW_FIRST_CHECKPOINT"] = "1"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tunewise", "run", str(recipe)], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 900  # a guard against a hang, not a timing
            while not complete_checkpoints(root):
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "no checkpoint in time"
                time.sleep(0.02)
            filler = fill(small_disk) if small_disk else None
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert proc.returncode == 2, text
    assert "Traceback" not in text
    error = text[text.index("error: "):]
    assert f"{root / 'model'}" in error and "cannot write it, the disk is full" in error, error
    assert "manifest.json and the outputs of the earlier stages are intact" in error
    manifest = json.loads((root / "manifest.json").read_text())  # intact: complete JSON, the run as it stood
    assert manifest["stages"]["data"]["status"] == "done" and manifest["stages"]["train"]["status"] == "running"
    kept = last_complete_checkpoint(root / "model" / "checkpoints")
    assert kept is not None, list((root / "model" / "checkpoints").iterdir())

    if filler is not None:
        filler.unlink()
    resumed = tunewise("train", root, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    summary = json.loads((root / "model" / "train_summary.json").read_text())
    assert summary["resumed_from"] == Path(kept).name and summary["global_steps"] == 3


# ---------------------------------------------------------------- damaged artifacts


@pytest.fixture(scope="module")
def damaged_run(session_run, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("damaged") / session_run.name
    shutil.copytree(session_run, root, ignore=shutil.ignore_patterns("checkpoints"))
    return root


def test_every_truncated_artifact_is_named_by_its_reader_and_by_verify(damaged_run, tmp_path):
    from tunewise.artifacts import ARTIFACTS
    from tunewise.errors import RunDirError
    from tunewise.rundir import RunDir

    present = [a for a in ARTIFACTS if (damaged_run / a.folder() / a.FILE).is_file()]
    assert {a.FILE for a in present} >= {"summary.json", "findings.json", "train_summary.json", "metrics.json"}
    for artifact in present:
        root = tmp_path / artifact.__name__ / damaged_run.name
        shutil.copytree(damaged_run, root, ignore=shutil.ignore_patterns("*.safetensors"))
        path = root / artifact.folder() / artifact.FILE
        cut(path)
        with pytest.raises(RunDirError) as info:
            artifact.read(path)
        assert str(info.value).startswith(f"{path}: damaged") and f"rerun the {artifact.STAGE} stage" in str(info.value)
        problems = RunDir.open(root).verify()
        rel = f"{artifact.folder()}/{artifact.FILE}"
        assert any(p.startswith(f"{rel}: modified, damaged or truncated") for p in problems), problems


def test_truncated_weights_are_refused_by_verify_and_by_the_next_stage(damaged_run, tmp_path):
    root = tmp_path / damaged_run.name
    shutil.copytree(damaged_run, root)
    weights_file = root / "model" / "model.safetensors"
    cut(weights_file)
    proc = tunewise("verify", root)
    assert proc.returncode == 1
    assert "model/model.safetensors: modified, damaged or truncated" in proc.stderr
    assert f"rerun the train stage (`tunewise train {root} --force`)" in proc.stderr

    proc = tunewise("evaluate", root, "--force")  # the next stage that reads the weights
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: `evaluate` reads the outputs of the `train` stage")
    assert f"{weights_file} is damaged, truncated or was edited" in proc.stderr
    assert f"`tunewise train {root} --force`" in proc.stderr


def test_a_truncated_metrics_file_stops_the_card_with_the_stage_to_rerun(damaged_run, tmp_path):
    root = copy_run(damaged_run, tmp_path / damaged_run.name)  # weights hard-linked: only metrics.json is cut
    cut(root / "eval" / "metrics.json")
    proc = tunewise("card", root, "--force")
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {root / 'eval' / 'metrics.json'}: damaged")
    assert f"rerun the evaluate stage (`tunewise evaluate {root} --force`)" in proc.stderr


# ---------------------------------------------------------------- Ctrl-C in every stage


def test_ctrl_c_in_each_stage_leaves_a_run_that_resume_completes(data_files, tmp_path, monkeypatch, request):
    """One run, interrupted with a real SIGINT in each stage in turn (after the stage wrote its first file, or
    as it starts when it writes none before it ends), each time continued with `--resume`; the last one finishes
    and the run verifies. Stage by stage in this process, so the chain costs one training."""
    import tunewise.rundir as rundir
    from tunewise.pipeline import run as run_pipeline

    # A shell without job control starts background jobs with SIGINT ignored, and a child inherits that (CI did);
    # a person pressing Ctrl-C has Python's own handler, so the test sets it.
    previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous_handler))
    recipe = classifier_recipe(tmp_path, data_files, "faults-ctrlc")
    root = run_root(recipe)
    target: dict[str, str | None] = {"stage": None}
    interrupted_at: list[str] = []
    real_write, real_save = rundir.atomic_write_bytes, rundir.RunDir.save_manifest

    def stage_running(rd) -> bool:
        rec = rd.manifest["stages"].get(target["stage"]) if target["stage"] else None
        return bool(rec and rec["status"] == "running")

    def write_then_interrupt(path, data):
        real_write(path, data)
        stage = target["stage"]
        if stage and root / rundir.stages.get(stage).folder in Path(path).parents:
            manifest = json.loads((root / "manifest.json").read_text())
            if manifest["stages"].get(stage, {}).get("status") == "running":
                target["stage"] = None
                interrupted_at.append(str(Path(path).relative_to(root)))
                os.kill(os.getpid(), signal.SIGINT)  # a real signal: Python raises KeyboardInterrupt here

    def save_then_interrupt(self):
        real_save(self)
        if stage_running(self) and target.get("at_start"):
            interrupted_at.append(f"{target['stage']} (as it started)")
            target["stage"] = None
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(rundir, "atomic_write_bytes", write_then_interrupt)
    monkeypatch.setattr(rundir.RunDir, "save_manifest", save_then_interrupt)
    order = ["data", "audit", "train", "reference", "evaluate", "gate", "card"]
    for stage in order:
        target.update(stage=stage, at_start=stage in ("gate",))  # gate writes its one file as it ends
        with pytest.raises(KeyboardInterrupt):
            run_pipeline(recipe, resume=True, echo=lambda message: None)
        manifest = json.loads((root / "manifest.json").read_text())
        assert manifest["stages"][stage]["status"] == "running", (stage, manifest["stages"])
        assert all(manifest["stages"][s]["status"] == "done" for s in order[:order.index(stage)]), stage
    target["stage"] = None
    run_pipeline(recipe, resume=True, echo=lambda message: None)
    from tunewise.rundir import RunDir

    rd = RunDir.open(root)
    assert [s for s in order if not rd.is_done(s)] == [] and rd.verify() == []
    summary = json.loads((root / "model" / "train_summary.json").read_text())
    assert summary["global_steps"] == 12
    print("interrupted after writing:", ", ".join(interrupted_at), "; training", summary["resumed_from"] and
          f"resumed from {summary['resumed_from']}")


# ---------------------------------------------------------------- checkpoints are written atomically


def test_atomic_checkpoints_rotate_and_name_the_best_by_its_final_folder(tmp_path):
    """A real Trainer (a 5-weight regression, 8 steps, a checkpoint and a validation every step, keeping 2):
    every save goes through a staging folder that is renamed into place, rotation still keeps the newest and the
    best, no staging folder is left, each checkpoint passes the damage checks, and the best checkpoint is named by
    its final folder (in the state and in each trainer_state.json), so load_best_model_at_end and --resume find it."""
    import torch
    from transformers import Trainer, TrainingArguments

    from tunewise.train.common import checkpoint_problem, resumable_trainer

    class Regression(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 1)

        def forward(self, x, labels=None):
            out = self.linear(x).squeeze(-1)
            return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}

    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    rows = [{"x": row, "labels": float(row.sum())} for row in x]
    out = tmp_path / "ckpts"
    args = TrainingArguments(output_dir=str(out), max_steps=8, per_device_train_batch_size=4, learning_rate=0.05,
                             eval_strategy="steps", eval_steps=1, save_strategy="steps", save_steps=1,
                             save_total_limit=2, load_best_model_at_end=True, metric_for_best_model="eval_loss",
                             greater_is_better=False, report_to="none", use_cpu=True, remove_unused_columns=False,
                             logging_steps=1, disable_tqdm=True)
    trainer = resumable_trainer(Trainer)(model=Regression(), args=args, train_dataset=rows, eval_dataset=rows[:8])
    trainer.train()

    folders = sorted(p.name for p in out.iterdir())
    assert not [name for name in folders if name.startswith(".tmp-")], folders
    best = Path(trainer.state.best_model_checkpoint)
    assert best.parent == out and best.is_dir() and best.name == f"checkpoint-{trainer.state.best_global_step}"
    kept = {"checkpoint-8", best.name} if best.name != "checkpoint-8" else {"checkpoint-7", "checkpoint-8"}
    assert set(folders) == kept, (folders, best.name)  # the newest 2, or the newest and the best
    for name in folders:
        assert checkpoint_problem(out / name) is None, name
        recorded = json.loads((out / name / "trainer_state.json").read_text())["best_model_checkpoint"]
        assert Path(recorded).parent == out and ".tmp-" not in recorded, recorded


# ---------------------------------------------------------------- kill -9 and resume: the same result


def test_a_resumed_epoch_replays_the_batches_of_an_uninterrupted_one(tmp_path):
    """Length-grouped batches (the default) come from (data_seed + epoch), not from whatever state the global RNG
    is in when the epoch starts: a run resumed mid-epoch skips to the same batches the uninterrupted run saw."""
    import datasets
    import torch
    from accelerate import Accelerator, skip_first_batches
    from torch.utils.data import DataLoader
    from transformers import Trainer, TrainingArguments

    from tunewise.train.common import resumable_sampling

    lengths = [3, 9, 4, 12, 7, 5, 8, 2, 10, 6, 11, 1] * 2
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, seed=13, data_seed=13,
                             train_sampling_strategy="group_by_length", use_cpu=True, report_to="none")
    trainer = resumable_sampling(Trainer).__new__(resumable_sampling(Trainer))  # only its sampler is used
    trainer.args, trainer.processing_class = args, None
    rows = datasets.Dataset.from_list([{"i": i, "length": n} for i, n in enumerate(lengths)])
    accelerator = Accelerator(cpu=True)

    def loader():  # as the Trainer builds it
        return accelerator.prepare(DataLoader(list(range(len(lengths))), batch_size=4,
                                              sampler=trainer._get_train_sampler(rows)))

    def batches(dl, epoch):
        dl.set_epoch(epoch)
        return [b.tolist() for b in dl]

    torch.manual_seed(0)
    straight = loader()
    epoch0 = batches(straight, 0)
    torch.randn(1000)  # what an epoch of dropout does to the global generator
    epoch1 = batches(straight, 1)
    assert epoch1 != epoch0 and sorted(sum(epoch1, [])) == list(range(len(lengths)))
    torch.manual_seed(12345)  # a resumed process: another global state when its epoch starts
    assert batches(skip_first_batches(loader(), 2), 1) == epoch1[2:]



KILL_WHILE_SAVING = '''
import os, re, signal
import torch

_save = torch.save
def save(obj, f, *args, **kwargs):  # SIGKILL in the middle of one checkpoint's save: its weights are written
    step = re.search(r"checkpoint-(\\d+)", str(f))
    if step and step.group(1) == os.environ["TW_KILL_IN_SAVE"] and str(f).endswith("optimizer.pt"):
        os.kill(os.getpid(), signal.SIGKILL)
    return _save(obj, f, *args, **kwargs)
torch.save = save
'''


def kill_while_saving(recipe: Path, step: int, folder: Path, log: Path) -> None:
    """Run `tunewise run`, SIGKILLed by itself halfway through writing checkpoint-`step` (its weights written,
    its optimizer state not yet)."""
    (folder / "inject").mkdir(parents=True)
    (folder / "inject" / "sitecustomize.py").write_text(KILL_WHILE_SAVING)
    env = subprocess_env()
    env["PYTHONPATH"] = f"{folder / 'inject'}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env["TW_KILL_IN_SAVE"] = str(step)
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, "-m", "tunewise", "run", str(recipe)], env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=900)
    assert proc.returncode == -signal.SIGKILL, log.read_text()
    assert json.loads((run_root(recipe) / "manifest.json").read_text())["stages"]["train"]["status"] == "running"


@pytest.mark.parametrize("kind", ["classifier", "causal_lora"])
def test_kill_9_then_resume_ends_where_an_uninterrupted_run_ends(kind, data_files, tmp_path):
    """Two runs of the same recipe and seed in two output folders, side by side: one left alone, one killed with
    SIGKILL in the middle of writing its last checkpoint, then resumed. Checkpoints are written atomically, so the
    kill leaves no checkpoint folder of that step, only its staging folder, and the resume starts from the one
    before, in the second epoch, which is where resuming shows: the epoch's batch order must not depend on the
    global RNG state at resume (test_a_resumed_epoch_replays_the_batches_of_an_uninterrupted_one). Same run id,
    logged losses, final metrics, predictions and weights. Before resuming, a half-written checkpoint is also
    planted (as a copy cut short would leave one): the resume must skip it too."""
    make = classifier_recipe if kind == "classifier" else causal_recipe
    step, killed_in = (8, 12) if kind == "classifier" else (4, 6)  # classifier: 6 steps an epoch; causal: 3
    no_audit = {"audit": {"enabled": False}}  # the audit stage is not what is compared
    plain = make(tmp_path / "plain", data_files, **no_audit)
    killed = make(tmp_path / "killed", data_files, **no_audit)
    alone = subprocess.Popen([sys.executable, "-m", "tunewise", "run", str(plain)], env=subprocess_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        kill_while_saving(killed, killed_in, tmp_path, tmp_path / "killed.log")
        root = run_root(killed)
        ckpts = root / "model" / "checkpoints"
        manifest = json.loads((root / "manifest.json").read_text())
        assert manifest["stages"]["data"]["status"] == "done" and "evaluate" not in manifest["stages"]
        staging = ckpts / f".tmp-checkpoint-{killed_in}" / f"checkpoint-{killed_in}"
        assert list(staging.glob("*.safetensors")) and not (staging / "optimizer.pt").exists()  # killed mid-save
        assert not (ckpts / f"checkpoint-{killed_in}").exists()  # ... and nothing of it looks like a checkpoint
        complete = complete_checkpoints(root)[-1]
        assert complete.name == f"checkpoint-{step}", sorted(p.name for p in ckpts.iterdir())
        partial = ckpts / f"checkpoint-{step + 1}"
        partial.mkdir()  # the weights are there, the optimizer and the trainer state are not
        for weights_file in complete.glob("*.safetensors"):
            shutil.copy(weights_file, partial / weights_file.name)
        resumed = tunewise("run", killed, "--resume")
        out, _ = alone.communicate(timeout=1800)
    finally:
        if alone.poll() is None:
            alone.kill()
            alone.wait()
    assert alone.returncode == 0, out
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    a, b = run_root(plain), run_root(killed)
    assert a.name == b.name  # output_dir is not part of the run id
    summary = json.loads((b / "model" / "train_summary.json").read_text())
    assert summary["resumed_from"] == complete.name, (summary["resumed_from"], complete.name)
    assert f"resumed from {complete.name}" in resumed.stdout
    assert summary["global_steps"] == json.loads((a / "model" / "train_summary.json").read_text())["global_steps"]
    assert not (b / "model" / "checkpoints").exists()  # resume-only state goes once the model is saved
    manifest = json.loads((b / "manifest.json").read_text())
    assert all(stage["status"] == "done" for stage in manifest["stages"].values())
    assert tunewise("verify", b).returncode == 0

    metrics_a = json.loads((a / "eval" / "metrics.json").read_text())["models"]["fine_tuned"]["metrics"]
    metrics_b = json.loads((b / "eval" / "metrics.json").read_text())["models"]["fine_tuned"]["metrics"]
    assert metrics_b == metrics_a, f"killed at checkpoint-{step}"
    preds = [{k: v for k, v in p.items() if k != "latency_ms"} for p in read_jsonl(a / "eval" / "predictions.jsonl")]
    assert [{k: v for k, v in p.items() if k != "latency_ms"} for p in read_jsonl(b / "eval" / "predictions.jsonl")] == preds
    # every logged training and validation loss, step by step (not `train_loss`, the Trainer's mean over the steps
    # this process ran: after a resume, the steps since the checkpoint)
    log_a = {(e["step"], k): v for e in read_jsonl(a / "model" / "train_log.jsonl") for k, v in e.items()
             if k in ("loss", "eval_loss")}
    log_b = {(e["step"], k): v for e in read_jsonl(b / "model" / "train_log.jsonl") for k, v in e.items()
             if k in ("loss", "eval_loss")}
    assert log_b == log_a and max(logged_step for logged_step, _ in log_a) > step
    wa, wb = weights(a / "model"), weights(b / "model")
    assert wa.keys() == wb.keys()
    worst = max(float(abs(wa[k].astype("float64") - wb[k].astype("float64")).max()) for k in wa)
    print(f"{kind}: killed at checkpoint-{step}, resumed from {summary['resumed_from']}; max |dw| = {worst:.3g}")
    assert worst <= 1e-6, f"killed at checkpoint-{step}: weights differ by up to {worst}"


def test_shuffled_length_groups_keep_every_batch_and_change_only_their_order():
    """train.shuffle_length_groups draws the same length-grouped batches (so the same padding) in another order:
    the longest batch still comes first, a short last batch stays last, and a seed gives one order."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    from tunewise.train.common import shuffled_batches

    lengths = [int(x) for x in torch.randint(1, 60, (1003,), generator=torch.Generator().manual_seed(0))]
    order = get_length_grouped_indices(lengths, 8, generator=torch.Generator().manual_seed(1))
    shuffled = shuffled_batches(order, 8, torch.Generator().manual_seed(2))

    def batches(o):
        return [tuple(o[i:i + 8]) for i in range(0, len(o), 8)]

    assert sorted(batches(shuffled)) == sorted(batches(order))
    assert batches(shuffled)[0] == batches(order)[0] and batches(shuffled)[-1] == batches(order)[-1]
    assert len(batches(order)[-1]) == 1003 % 8
    assert batches(shuffled) != batches(order)
    assert shuffled == shuffled_batches(order, 8, torch.Generator().manual_seed(2))
    # what it removes: within a megabatch of the Trainer's grouping, batch lengths only fall
    first_megabatch = [max(lengths[i] for i in b) for b in batches(order)[1:25]]
    assert first_megabatch == sorted(first_megabatch, reverse=True)
