"""Training on several processes: DDP through the transformers Trainer (gloo on CPU, NCCL on GPU), FSDP and
DeepSpeed ZeRO passed through from the recipe, and the checks that refuse a setup that cannot work here before
any training starts.

Three ways in, one training function:
  tunewise run RECIPE --nproc N                      data and audit run once in this process; the train stage then
                                                     starts N workers with torch.distributed.run (launch_workers)
  torchrun --nproc_per_node N -m tunewise run RECIPE rank 0 runs data and audit while the others wait, then all
  accelerate launch --multi_gpu --num_processes N    train together (pipeline.run); rank 0 alone evaluates after
                  -m tunewise run RECIPE
Only rank 0 writes in the run directory: the Trainer saves from process 0, the tunewise callbacks and summaries
are written by rank 0, and each rank's RNG state for --resume is gathered to rank 0, which writes them all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from tunewise.errors import RecipeError, TunewiseError
from tunewise.hardware import Placement, ThreadPlan, World, allocator_in_use, cpu_facts
from tunewise.recipe import Recipe


class ParallelConfigError(RecipeError):
    """A multi-process, FSDP, DeepSpeed or Liger setting that cannot work on this machine."""


def strategy(recipe: Recipe, world_size: int) -> str:
    cfg = recipe.train
    if cfg.deepspeed is not None:
        return "deepspeed"
    if cfg.fsdp:
        return "fsdp"
    return "ddp" if world_size > 1 else "single"


def backend(recipe: Recipe, device: str) -> str:
    chosen = recipe.train.ddp_backend
    return ("nccl" if device == "cuda" else "gloo") if chosen == "auto" else chosen


def _json_config(value: dict[str, Any] | str, field: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    path = Path(value)
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParallelConfigError(f"train.{field}: {path} does not exist (a JSON file, or the config inline in "
                                  f"the recipe)") from None
    except json.JSONDecodeError as exc:
        raise ParallelConfigError(f"train.{field}: {path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(loaded, dict):
        raise ParallelConfigError(f"train.{field}: {path} holds a JSON {type(loaded).__name__}, expected an object")
    return loaded


def check_parallel_config(recipe: Recipe, world_size: int, *, cuda_available: bool | None = None) -> None:
    """Refuse, before anything trains, what cannot work here: NCCL, FSDP, DeepSpeed or Liger without a CUDA GPU,
    DeepSpeed or Liger without their package, FSDP and DeepSpeed together, a bad config file. `cuda_available`
    None asks torch (tests pass it to check the GPU-only rules on a CPU machine)."""
    cfg = recipe.train
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    cuda = cuda_available and cfg.device != "cpu"
    where = "this machine has no CUDA GPU" if not cuda_available else "the recipe sets train.device=cpu"
    if world_size < 1:
        raise ParallelConfigError(f"--nproc {world_size}: the number of processes must be 1 or more")
    if cfg.fsdp and cfg.deepspeed is not None:
        raise ParallelConfigError("train.fsdp and train.deepspeed are both set: they are two ways of sharding the "
                                  "same state; choose one")
    if cfg.ddp_backend == "nccl" and not cuda:
        raise ParallelConfigError(f"train.ddp_backend=nccl needs CUDA GPUs, but {where}; use train.ddp_backend="
                                  f"auto (gloo on CPU)")
    if cfg.fsdp:
        if not cuda:
            raise ParallelConfigError(f"train.fsdp shards the model across GPUs, but {where}; on CPU use plain "
                                      f"data parallelism (`tunewise run RECIPE --nproc N` without train.fsdp)")
        if cfg.fsdp_config is not None:
            _json_config(cfg.fsdp_config, "fsdp_config")
    elif cfg.fsdp_config is not None:
        raise ParallelConfigError("train.fsdp_config is set but train.fsdp is false; set train.fsdp=true to use it")
    if cfg.deepspeed is not None:
        if find_spec("deepspeed") is None:
            raise ParallelConfigError("train.deepspeed is set, but the deepspeed package is not installed; "
                                      "`pip install deepspeed` on the GPU machines, or remove train.deepspeed")
        if not cuda:
            raise ParallelConfigError(f"train.deepspeed (ZeRO) needs CUDA GPUs here, but {where}")
        ds = _json_config(cfg.deepspeed, "deepspeed")
        if "zero_optimization" not in ds:
            raise ParallelConfigError("train.deepspeed: the config has no `zero_optimization` section; give at "
                                      "least {zero_optimization: {stage: 2}}")
    if cfg.liger:
        if find_spec("liger_kernel") is None:
            raise ParallelConfigError("train.liger is set, but the liger-kernel package is not installed; "
                                      "`pip install liger-kernel` on the GPU machine, or set train.liger=false")
        if not cuda:
            raise ParallelConfigError(f"train.liger uses Triton GPU kernels, but {where}; set train.liger=false")
        from tunewise.tasks import task_for

        if task_for(recipe).family != "causal_lm":
            raise ParallelConfigError("train.liger patches causal language models (llama, mistral, qwen, ...); "
                                      f"it does nothing for task {recipe.task}: set train.liger=false")


def check_local_processes(nproc: int, device: str) -> None:
    """`--nproc N` on GPUs: one GPU per process (NCCL refuses two ranks on one device)."""
    if device == "cuda" and nproc > 1:
        import torch

        if nproc > torch.cuda.device_count():
            raise ParallelConfigError(f"--nproc {nproc}: one process per GPU, but {torch.cuda.device_count()} "
                                      f"GPU(s) are visible; use --nproc {torch.cuda.device_count()}")


def parallel_arguments(recipe: Recipe, placement: Placement, world: World) -> dict[str, Any]:
    """TrainingArguments keywords for the process group, FSDP, DeepSpeed and Liger."""
    cfg = recipe.train
    args: dict[str, Any] = {}
    if world.size > 1:
        args["ddp_backend"] = backend(recipe, placement.device)
        args["ddp_find_unused_parameters"] = False  # every parameter gets a gradient; the search costs a pass
    if cfg.fsdp:
        args["fsdp"] = True
        args["fsdp_config"] = _json_config(cfg.fsdp_config, "fsdp_config") if cfg.fsdp_config is not None else None
    if cfg.deepspeed is not None:
        args["deepspeed"] = _json_config(cfg.deepspeed, "deepspeed")
    if cfg.liger:
        args["use_liger_kernel"] = True
    return args


def hardware_record(recipe: Recipe, placement: Placement, world: World, threads: ThreadPlan,
                    attention: str | None) -> dict[str, Any]:
    """What the train summary records about where and how the model was trained (TrainingHardware)."""
    cpu = cpu_facts()
    gpu = None
    if placement.device == "cuda":
        import torch

        gpu = torch.cuda.get_device_name()
    return {"world_size": world.size, "processes_per_node": world.local_size,
            "strategy": strategy(recipe, world.size),
            "backend": backend(recipe, placement.device) if world.size > 1 else None,
            "threads_per_process": threads.threads, "threads_reason": threads.reason,
            "cpu_model": cpu["model"], "cpu_id": cpu["cpu_id"], "cpu_isa": cpu["isa"], "cpu_quota": cpu["cpu_quota"],
            "gpu": gpu,
            "attention": attention, "liger": recipe.train.liger, "allocator": allocator_in_use()}


# ---------------------------------------------------------------- rank-0-only writes inside the Trainer


def rank_zero_trainer(base):
    """A Trainer subclass whose checkpoints are written by process 0 alone. The Trainer saves the model and the
    optimizer from process 0 already, but each process writes its own rng_state_<rank>.pth; here the states are
    gathered to process 0, which writes every file under the same names, so --resume restores each rank's."""

    class RankZeroTrainer(base):
        def _save_rng_state(self, output_dir: str) -> None:
            if self.args.world_size <= 1:
                return super()._save_rng_state(output_dir)
            import random

            import numpy as np
            import torch
            import torch.distributed as dist

            states = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
            if torch.cuda.is_available():
                states["cuda"] = torch.cuda.random.get_rng_state_all()
            gathered = [None] * self.args.world_size if self.args.process_index == 0 else None
            dist.gather_object(states, gathered, dst=0)
            if gathered is not None:
                os.makedirs(output_dir, exist_ok=True)
                for rank, state in enumerate(gathered):
                    torch.save(state, os.path.join(output_dir, f"rng_state_{rank}.pth"))

    return RankZeroTrainer


# ---------------------------------------------------------------- `tunewise run --nproc N`: start the workers


def launch_workers(run_root: Path, nproc: int, *, resume: bool, device: str) -> str:
    """Train the run's model on `nproc` processes of this machine (torch.distributed.run, standalone rendezvous),
    one intra-op thread share each; returns rank 0's stage message. A failed worker fails the stage."""
    from tunewise.hardware import plan_threads

    threads = plan_threads(nproc if device == "cpu" else 1)
    with tempfile.TemporaryDirectory(prefix="tunewise-train-") as tmp:
        message_file = Path(tmp) / "message.txt"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "tunewise.train.worker", str(run_root), "--message-file", str(message_file),
               "--threads", str(threads.threads), "--threads-reason", threads.reason]
        if resume:
            cmd.append("--resume")
        # set before the workers start, so OpenMP starts with the right pool (and torchrun adds no warning)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads.threads), "MKL_NUM_THREADS": str(threads.threads),
               "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run(cmd, env=env)
        if proc.returncode != 0 or not message_file.is_file():
            raise TunewiseError(f"train: {nproc} worker processes failed (exit code {proc.returncode}); their "
                                f"output is above. The run directory keeps its last complete checkpoint "
                                f"(--resume continues from it)")
        return message_file.read_text(encoding="utf-8")
