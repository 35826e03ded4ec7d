"""The train stage: fine-tune the base model. Reads data/ (after the audit has passed), writes model/.

The training loop is task-specific (a classifier's Trainer against a causal LM's trained-positions loss); the
implementation is looked up by `task.family` below, the one place this stage distinguishes tasks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunewise.rundir import RunDir, StageOutcome
    from tunewise.stages import RunOptions

TRAINERS = {"classifier": "tunewise.train.classification:train_classifier",
            "causal_lm": "tunewise.train.causal:train_causal"}


def run(rd: "RunDir", options: "RunOptions") -> "StageOutcome":
    """Train in this process, or (options.nproc > 1) on that many worker processes; under torchrun / accelerate
    launch (WORLD_SIZE set) this is rank 0, and the other ranks train beside it (see train/distributed.py)."""
    from tunewise.hardware import apply_threads, choose_placement, plan_threads, world_from_env
    from tunewise.models import resolve_base_model, weight_files
    from tunewise.stages import load
    from tunewise.tasks import task_for
    from tunewise.train.distributed import check_local_processes, check_parallel_config, launch_workers

    if rd.recipe.audit.enabled:  # never train on data whose audit found blocking problems the recipe does not accept
        from tunewise.artifacts.findings import require_audit_passed

        require_audit_passed(rd, by="train")
    world = world_from_env()
    if world.size > 1 and options.nproc > 1:
        from tunewise.errors import TunewiseError

        raise TunewiseError(f"--nproc {options.nproc} under a launcher that already started {world.size} processes; "
                            f"use one or the other")
    nproc = max(options.nproc, world.size)
    check_parallel_config(rd.recipe, nproc)
    device = choose_placement(rd.recipe.train.device, rd.recipe.train.precision).device
    check_local_processes(options.nproc, device)
    rec = rd.stage_record("train")
    interrupted = bool(rec and rec.get("status") == "running")
    resume = options.resume and interrupted
    # a different number of processes changes the global batch, so the model: train again
    force = options.force or bool(rec and rec.get("world_size", 1) != nproc)
    base = resolve_base_model(rd.recipe.model.base)
    train_fn = load(TRAINERS[task_for(rd.recipe).family])

    def train(out):
        if options.nproc > 1:  # this process launches the workers and records what rank 0 wrote
            return launch_workers(rd.root, options.nproc, resume=resume, device=device)
        threads = plan_threads(world.local_size)
        apply_threads(threads)
        if world.size > 1:  # torchrun / accelerate launch: the waiting ranks join now (tunewise.pipeline)
            from tunewise.hardware import announce_training

            announce_training({"run_dir": str(rd.root), "resume": resume})
        return train_fn(rd.recipe, base, rd.stage_dir("data"), out, resume=resume, world=world, threads=threads)

    outcome = rd.run_stage("train", train, external_inputs=weight_files(base.path), force=force,
                           keep_existing=resume)
    if world.size > 1:  # nothing to train (unchanged inputs) frees the waiting ranks; then rank 0 goes on alone
        from tunewise.hardware import announce_training, leave_launched_group

        announce_training(None)
        leave_launched_group()
    if outcome.ran:  # the manifest's own record of the world and the threads (also in train_summary.json)
        from tunewise.artifacts.train import TrainSummary

        hardware = TrainSummary.read(rd.stage_dir("train") / TrainSummary.FILE).hardware
        rd.manifest["stages"]["train"].update(world_size=nproc,
                                              hardware=hardware.model_dump(mode="json") if hardware else None)
        rd.save_manifest()
    if interrupted and not options.resume and outcome.ran:
        outcome.message += " (the previous training was interrupted and restarted from scratch; --resume continues it)"
    return outcome


def train_as_follower(job: dict) -> None:
    """A rank other than 0 under torchrun / accelerate launch: train beside rank 0 on the run directory it
    announced, writing nothing there."""
    from tunewise.hardware import apply_threads, leave_launched_group, plan_threads, world_from_env
    from tunewise.models import resolve_base_model
    from tunewise.rundir import RunDir
    from tunewise.stages import load
    from tunewise.tasks import task_for

    world = world_from_env()
    rd = RunDir.open(job["run_dir"])  # reads only
    threads = plan_threads(world.local_size)
    apply_threads(threads)
    train_fn = load(TRAINERS[task_for(rd.recipe).family])
    train_fn(rd.recipe, resolve_base_model(rd.recipe.model.base), rd.stage_dir("data"), rd.stage_dir("train"),
             resume=job["resume"], world=world, threads=threads)
    leave_launched_group()
