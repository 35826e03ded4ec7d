"""One training process of `tunewise run --nproc N`, started by torch.distributed.run (launch_workers):

    python -m torch.distributed.run --standalone --nproc_per_node N -m tunewise.train.worker RUN_DIR --message-file F

It reads the run directory (the data and audit stages have finished there) and trains with the others; rank 0
writes model/ and the stage message, the other ranks write nothing. The parent process records the manifest.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tunewise.train.worker")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--message-file", type=Path, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--threads-reason", required=True)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)

    from tunewise.hardware import ThreadPlan, apply_threads, world_from_env
    from tunewise.models import resolve_base_model
    from tunewise.rundir import RunDir, atomic_write_text
    from tunewise.stages import load
    from tunewise.tasks import task_for
    from tunewise.train import TRAINERS

    threads = ThreadPlan(args.threads, args.threads_reason)
    apply_threads(threads)
    world = world_from_env()
    rd = RunDir.open(args.run_dir)  # reads only; the manifest belongs to the parent process
    train_fn = load(TRAINERS[task_for(rd.recipe).family])
    message = train_fn(rd.recipe, resolve_base_model(rd.recipe.model.base), rd.stage_dir("data"),
                       rd.stage_dir("train"), resume=args.resume, world=world, threads=threads)
    if world.is_main:
        atomic_write_text(args.message_file, message)


if __name__ == "__main__":
    main()
