"""Training on several processes: two real CPU processes (DDP over gloo) train like one process with the same
global batch, only rank 0 writes the run directory; setups that cannot work here are refused before anything
runs; the thread count follows the CPUs the process may use. CUDA paths run where a GPU exists."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from tunewise.errors import TunewiseError
from tunewise.hardware import ThreadPlan, World, cpu_quota, find_allocator, plan_threads, refuse_silent_single_process
from tunewise.recipe import load_recipe
from tunewise.train.distributed import ParallelConfigError, check_parallel_config

# The final validation loss of 2 processes x batch 8 against 1 process x batch 16, same seed and data. The two
# runs see the same examples per optimizer step but in another order (DistributedSampler against RandomSampler)
# with other dropout masks; measured on this slice: 0.5% apart after 2 epochs. A loss scaled by the number of
# processes (the transformers Trainer's average_tokens_across_devices on a model whose loss ignores the token
# count) is 100% off.
EVAL_LOSS_RELATIVE_TOLERANCE = 0.05

# Installed by PYTHONPATH into every process the launcher starts: a rank other than 0 logs each write it makes under
# WATCH_DIR (file opens for writing, mkdir, rename, remove) to WRITES_LOG, which lies outside the run directory.
WRITE_WATCH = textwrap.dedent('''
    import os, sys
    _rank, _watch, _log = os.environ.get("RANK"), os.environ.get("WATCH_DIR"), os.environ.get("WRITES_LOG")
    if _rank not in (None, "0") and _watch and _log:
        _watch = os.path.realpath(_watch)

        def _under(path):
            try:
                return os.path.realpath(os.fsdecode(path)).startswith(_watch + os.sep)
            except (TypeError, ValueError):
                return False

        def _hook(event, args):
            writes = {"open": lambda a: (isinstance(a[1], str) and any(c in a[1] for c in "wax+")) or
                                        (isinstance(a[2], int) and a[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)),
                      "os.mkdir": lambda a: True, "os.rename": lambda a: True, "os.replace": lambda a: True,
                      "os.remove": lambda a: True, "os.rmdir": lambda a: True, "shutil.rmtree": lambda a: True}
            if event in writes and args and isinstance(args[0], (str, bytes, os.PathLike)) and _under(args[0]) \\
                    and writes[event](args):
                with open(_log, "a") as fh:
                    fh.write(f"rank {_rank} {event} {os.fsdecode(args[0])}\\n")

        sys.addaudithook(_hook)
''')


def _last_eval_loss(run: Path) -> float:
    rows = [json.loads(line) for line in (run / "model" / "train_log.jsonl").read_text().splitlines()]
    return [r["eval_loss"] for r in rows if "eval_loss" in r][-1]


@pytest.fixture(scope="module")
def two_process_run(session_run, session_recipe, cli_env, tmp_path_factory):
    """The session recipe with half the per-process batch, trained by `tunewise train RUN --nproc 2` after
    `tunewise audit` (data and audit once, in one process); returns (run dir, CompletedProcess, writes log)."""
    folder = tmp_path_factory.mktemp("ddp")
    recipe = yaml.safe_load(session_recipe.read_text())
    recipe["output_dir"] = str(folder / "runs")
    recipe["train"]["batch_size"] //= 2  # 2 processes x 8 = the single run's global batch of 16
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    audit = subprocess.run([sys.executable, "-m", "tunewise", "audit", str(path)], env=cli_env, capture_output=True,
                           text=True, timeout=600)
    assert audit.returncode == 0, audit.stderr
    run = next((folder / "runs").iterdir())
    (folder / "hook").mkdir()
    (folder / "hook" / "sitecustomize.py").write_text(WRITE_WATCH)
    writes = folder / "writes.log"
    env = {**cli_env, "PYTHONPATH": str(folder / "hook"), "WATCH_DIR": str(run), "WRITES_LOG": str(writes)}
    proc = subprocess.run([sys.executable, "-m", "tunewise", "train", str(run), "--nproc", "2"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    return run, proc, writes


def test_two_cpu_processes_really_train_together(two_process_run):
    run, proc, _ = two_process_run
    hardware = json.loads((run / "model" / "train_summary.json").read_text())["hardware"]
    assert hardware["world_size"] == 2 and hardware["processes_per_node"] == 2
    assert hardware["strategy"] == "ddp" and hardware["backend"] == "gloo"
    assert hardware["threads_per_process"] >= 1 and hardware["threads_reason"]
    # the command relaunched on tcmalloc where it is installed, and its training processes inherited it
    assert hardware["allocator"] == (find_allocator() or ("glibc",))[0]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["train"]["world_size"] == 2
    assert manifest["stages"]["train"]["hardware"]["world_size"] == 2
    assert "2 processes (DDP)" in proc.stdout


def test_two_processes_reach_the_single_process_loss_with_the_same_global_batch(two_process_run, session_run):
    run, _, _ = two_process_run
    single = json.loads((session_run / "model" / "train_summary.json").read_text())
    double = json.loads((run / "model" / "train_summary.json").read_text())
    assert double["global_steps"] == single["global_steps"]  # same global batch: the same optimizer steps
    one, two = _last_eval_loss(session_run), _last_eval_loss(run)
    assert abs(two - one) <= EVAL_LOSS_RELATIVE_TOLERANCE * one, (one, two)


def test_only_rank_zero_writes_the_run_directory(two_process_run, cli_env):
    run, _, writes = two_process_run
    assert not writes.exists() or writes.read_text() == "", writes.read_text()
    entries = [json.loads(line) for line in (run / "model" / "train_log.jsonl").read_text().splitlines()]
    steps = [(e["step"], tuple(sorted(e))) for e in entries]
    assert len(steps) == len(set(steps)), "a log entry was written twice (by two ranks)"
    assert len(list((run / "model" / "tensorboard").glob("events.*"))) == 1
    verify = subprocess.run([sys.executable, "-m", "tunewise", "verify", str(run)], env=cli_env,
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stderr


# ---------------------------------------------------------------- refused before anything runs


def _recipe(session_recipe: Path, **train) -> object:
    train.setdefault("device", "auto")  # the session recipe pins cpu
    return load_recipe(session_recipe, [f"train.{k}={json.dumps(v) if not isinstance(v, str) else v}"
                                        for k, v in train.items()])


@pytest.mark.parametrize(("train", "cuda", "says"), [
    ({"fsdp": True}, False, "train.fsdp shards the model across GPUs, but this machine has no CUDA GPU"),
    ({"ddp_backend": "nccl"}, False, "train.ddp_backend=nccl needs CUDA GPUs"),
    ({"liger": True}, True, "liger-kernel package is not installed"),
    ({"deepspeed": {"zero_optimization": {"stage": 2}}}, True, "deepspeed package is not installed"),
    ({"fsdp": True, "deepspeed": {"zero_optimization": {"stage": 2}}}, True, "choose one"),
    ({"fsdp_config": {"version": 2}}, True, "train.fsdp is false"),
])
def test_setups_that_cannot_work_here_are_refused(session_recipe, train, cuda, says):
    recipe = _recipe(session_recipe, **train)
    with pytest.raises(ParallelConfigError, match=says.replace(".", r"\.")):
        check_parallel_config(recipe, 2, cuda_available=cuda)


def test_fsdp_with_a_gpu_passes_and_a_broken_config_file_is_named(session_recipe, tmp_path):
    check_parallel_config(_recipe(session_recipe, fsdp=True), 2, cuda_available=True)
    bad = tmp_path / "fsdp.json"
    bad.write_text('{"version": 2,\n "auto_wrap_policy": }')
    with pytest.raises(ParallelConfigError, match=rf"{bad}, line 2"):
        check_parallel_config(_recipe(session_recipe, fsdp=True, fsdp_config=str(bad)), 2, cuda_available=True)


def test_cli_refuses_fsdp_on_cpu_before_making_a_run_directory(session_recipe, tunewise, tmp_path):
    out = tmp_path / "runs"
    proc = tunewise("run", session_recipe, "--nproc", "2", "train.fsdp=true", "train.device=cpu", f"output_dir={out}")
    assert proc.returncode == 2
    assert "train.fsdp shards the model across GPUs" in proc.stderr
    assert not out.exists(), "a refused run must not start"


def test_accelerate_cpu_launch_that_would_start_one_process_is_refused(session_recipe, cli_env, tmp_path):
    """`accelerate launch --cpu --num_processes 2` starts ONE process; tunewise says so instead of training alone."""
    accelerate = Path(sys.executable).parent / "accelerate"
    if not accelerate.exists():
        pytest.skip("accelerate's launcher is not installed")
    out = tmp_path / "runs"
    proc = subprocess.run([str(accelerate), "launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "tunewise", "run",
                           str(session_recipe), f"output_dir={out}"],
                          env=cli_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "starts only ONE process" in proc.stderr and "--nproc N" in proc.stderr
    assert not out.exists()


def test_the_accelerate_single_process_trace_is_recognised_and_real_launches_are_not():
    with pytest.raises(TunewiseError, match="only ONE process"):
        refuse_silent_single_process({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1",
                                      "MASTER_PORT": "29500"})
    refuse_silent_single_process({"ACCELERATE_USE_CPU": "True"})  # --cpu with one process: fine
    refuse_silent_single_process({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "h", "WORLD_SIZE": "2"})  # torchrun
    refuse_silent_single_process({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "h", "OMPI_COMM_WORLD_SIZE": "2"})


# ---------------------------------------------------------------- threads follow the CPUs the process may use


def test_threads_come_from_the_environment_first():
    assert plan_threads(2, {"TUNEWISE_THREADS": "3", "OMP_NUM_THREADS": "1"}) == \
        ThreadPlan(3, "TUNEWISE_THREADS=3 set in the environment")
    assert plan_threads(1, {"OMP_NUM_THREADS": "2"}).threads == 2
    with pytest.raises(TunewiseError, match="TUNEWISE_THREADS='0'"):
        plan_threads(1, {"TUNEWISE_THREADS": "0"})


def test_small_batch_inference_takes_one_thread_unless_told_and_gives_the_caller_its_own_back():
    import torch

    from tunewise.hardware import small_batch_threads, torch_threads

    assert small_batch_threads({}).threads == 1
    assert small_batch_threads({"TUNEWISE_THREADS": "2"}) == ThreadPlan(2, "TUNEWISE_THREADS=2 set in the environment")
    before = torch.get_num_threads()
    with torch_threads(ThreadPlan(1, "test")):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_threads_are_the_usable_cpus_shared_among_the_processes():
    import os

    cpus = len(os.sched_getaffinity(0))
    quota = cpu_quota()
    usable = cpus if quota is None else max(1, min(cpus, round(quota)))
    assert plan_threads(1, {}).threads == usable
    assert plan_threads(2, {}).threads == max(1, usable // 2)
    assert plan_threads(10_000, {}).threads == 1


def test_cgroup_v2_quota_is_read_up_the_tree(tmp_path):
    (tmp_path / "outer" / "job").mkdir(parents=True)
    (tmp_path / "outer" / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "outer" / "job" / "cpu.max").write_text("max 100000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/outer/job\n")
    assert cpu_quota(tmp_path, proc) == 1.5
    (tmp_path / "outer" / "cpu.max").write_text("max 100000\n")
    assert cpu_quota(tmp_path, proc) is None


def test_cgroup_v1_cfs_quota_is_read(tmp_path):
    job = tmp_path / "cpu" / "docker" / "abc"
    job.mkdir(parents=True)
    (job / "cpu.cfs_quota_us").write_text("50000\n")
    (job / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    assert cpu_quota(tmp_path, proc) == 0.5


def test_world_from_the_launcher_environment():
    from tunewise.hardware import world_from_env

    assert world_from_env({}) == World()
    world = world_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (world.size, world.rank, world.local_rank, world.local_size, world.is_main) == (4, 3, 1, 2, False)


# ---------------------------------------------------------------- the GPU path, where a GPU exists

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; none is visible here")


@needs_cuda
def test_gpu_trains_in_bf16_with_fused_attention():
    from tunewise.hardware import choose_placement
    from tunewise.models import resolve_base_model
    from tunewise.train.common import choose_attention
    from transformers import AutoModelForSequenceClassification

    placement = choose_placement("cuda", "auto")
    assert placement.device == "cuda"
    assert placement.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    model = AutoModelForSequenceClassification.from_pretrained(resolve_base_model("minilm").path, num_labels=3)
    assert choose_attention(model, placement) in ("sdpa", "flash_attention_2")


@needs_cuda
def test_gpu_setups_pass_the_checks_where_their_packages_exist(session_recipe):
    from importlib.util import find_spec

    check_parallel_config(_recipe(session_recipe, fsdp=True, device="cuda"), 2)
    check_parallel_config(_recipe(session_recipe, ddp_backend="nccl", device="cuda"), 2)
    if find_spec("deepspeed") is not None:
        check_parallel_config(_recipe(session_recipe, device="cuda",
                                      deepspeed={"zero_optimization": {"stage": 2}}), 2)


@needs_cuda
def test_nccl_process_group_of_one_gpu_runs_a_collective(tmp_path):
    script = tmp_path / "allreduce.py"
    script.write_text(textwrap.dedent("""
        import torch, torch.distributed as dist
        from tunewise.hardware import join_launched_group, world_from_env, leave_launched_group
        join_launched_group(world_from_env(), "cuda")
        t = torch.ones(1, device="cuda")
        dist.all_reduce(t)
        assert t.item() == dist.get_world_size()
        leave_launched_group()
    """))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                           str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
