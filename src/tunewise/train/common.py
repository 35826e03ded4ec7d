"""What both train stages share: the Trainer arguments every run gets, checkpoints written atomically and found
again for --resume, and the callbacks that log each step to train_log.jsonl, keep evaluation time out of
throughput, and stop early."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tunewise.hardware import Placement, World
from tunewise.recipe import Recipe
from tunewise.rundir import scratch_folder


def micro_batches(batch_size: int, max_length: int, max_tokens: int | None) -> int:
    """How many equal micro-batches a batch of `batch_size` rows of up to `max_length` tokens is split into so
    that each holds at most `max_tokens` (the fewest that do; one row each if none does)."""
    if max_tokens is None:
        return 1
    return next((k for k in range(1, batch_size + 1) if batch_size % k == 0 and
                 batch_size // k * max_length <= max_tokens), batch_size)


def training_arguments(recipe: Recipe, placement: Placement, ckpt_dir: Path, *, train_rows: int, has_validation: bool,
                       eval_batch_size: int, max_logging_steps: int, group_by_length: bool, world: World = World(),
                       micro: int = 1, **task_specific: Any):
    """transformers TrainingArguments from the recipe; `task_specific` adds or overrides what one task needs.
    `world`: the processes training together (train.batch_size is per process, so the global batch grows with it).
    `micro`: each batch runs as this many micro-batches with their gradients accumulated (same optimizer steps)."""
    from transformers import TrainingArguments

    from tunewise.train.distributed import parallel_arguments

    cfg = recipe.train
    strategy = "steps" if cfg.checkpoint_every_steps is not None else "epoch"
    best_name = recipe.best_metric()
    steps_per_epoch = train_rows // (cfg.batch_size * cfg.gradient_accumulation_steps * world.size)
    return TrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size // micro,
        per_device_eval_batch_size=eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps * micro,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_fraction,  # a float < 1 is a share of all steps in transformers 5
        lr_scheduler_type="linear",
        bf16=placement.precision == "bf16",
        use_cpu=placement.device == "cpu",
        eval_strategy=strategy if has_validation else "no",
        save_strategy=strategy,
        eval_steps=cfg.checkpoint_every_steps,
        save_steps=cfg.checkpoint_every_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=has_validation,
        metric_for_best_model=f"eval_{best_name}" if has_validation else None,
        greater_is_better=best_name != "loss" if has_validation else None,
        logging_strategy="steps",
        logging_steps=max(1, min(max_logging_steps, steps_per_epoch // 4 or 1)),
        report_to="none",
        seed=recipe.seed,
        data_seed=recipe.seed,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        length_column_name="length",
        dataloader_num_workers=0,
        **parallel_arguments(recipe, placement, world),
        **task_specific,
    )


def drop_checkpoints(ckpt_dir: Path, keep: bool) -> bool:
    """Removes the resume checkpoints once the final model is saved, unless the recipe keeps them; True if removed."""
    if keep or not ckpt_dir.is_dir():
        return False
    shutil.rmtree(ckpt_dir)
    return True


def checkpoint_problem(folder: Path) -> str | None:
    """Why a Trainer checkpoint folder cannot be resumed from (None: it can), read cheaply: the Trainer writes in
    place (weights, optimizer, scheduler, RNG state, then trainer_state.json), so a kill, a full disk or a cut copy
    can leave any file short. Weights are checked by their safetensors header against the file length (no tensors
    are loaded); torch.save files are zip archives whose central directory is written last."""
    import zipfile

    from safetensors import SafetensorError, safe_open

    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"trainer_state.json unreadable ({exc.__class__.__name__})"
    if not isinstance(state, dict) or str(state.get("global_step")) != folder.name.split("-")[-1]:
        return "trainer_state.json does not belong to this step"
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        return "no *.safetensors weights"
    for index in folder.glob("*.safetensors.index.json"):  # sharded weights: every shard the index names
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            return f"{index.name} unreadable"
        if missing := sorted(s for s in shards if not (folder / s).is_file()):
            return f"{index.name} names missing shards {missing}"
    for path in weights:
        try:
            with safe_open(str(path), framework="numpy"):  # parses the header; refuses a length it does not cover
                pass
        except (OSError, SafetensorError) as exc:
            return f"{path.name}: {exc}"
    for pattern in ("optimizer.pt", "scheduler.pt", "rng_state*.pth"):
        found = sorted(folder.glob(pattern))
        if not found:
            return f"no {pattern}"
        for path in found:
            if not zipfile.is_zipfile(path):  # a torch.save file cut short has no central directory
                return f"{path.name}: truncated (not a complete torch.save archive)"
    return None


def last_complete_checkpoint(ckpt_dir: Path) -> str | None:
    """Newest checkpoint that was fully written; newer ones that a kill, a full disk or a damaged copy left
    incomplete are skipped (with a warning naming what is wrong) in favour of the one before. Staging folders a
    killed save left behind (see atomic_checkpoints) are removed first."""
    import logging

    if not ckpt_dir.is_dir():
        return None
    for staging in ckpt_dir.glob(f"{STAGING_PREFIX}*"):
        if int(os.environ.get("RANK", "0")) == 0:  # only rank 0 writes in the run directory
            logging.getLogger("tunewise.train").warning("removing %s, a checkpoint whose save never finished",
                                                        staging)
            shutil.rmtree(staging, ignore_errors=True)
    candidates = sorted((p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and p.is_dir()),
                        key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for folder in candidates:
        problem = checkpoint_problem(folder)
        if problem is None:
            return str(folder)
        logging.getLogger("tunewise.train").warning("skipping incomplete checkpoint %s: %s", folder, problem)
    return None


STAGING_PREFIX = ".tmp-checkpoint-"  # where a checkpoint is written before it is renamed into place


def resumable_trainer(trainer_cls):
    """`trainer_cls` whose checkpoints are written atomically and whose batches a resumed run replays."""
    return atomic_checkpoints(resumable_sampling(trainer_cls))


def atomic_checkpoints(trainer_cls):
    """`trainer_cls` that writes each checkpoint whole or not at all. transformers 5 writes checkpoint-N in place
    (weights, optimizer, scheduler, RNG state, trainer_state.json), so a kill or a full disk mid-save leaves a
    folder that looks like a checkpoint. Here the Trainer's own save runs into
    `.tmp-checkpoint-N/checkpoint-N` (by pointing `_get_output_dir` there for the duration of the save); process 0
    then fsyncs every file, renames the folder to `checkpoint-N` and fsyncs the parent, and rotates
    (save_total_limit) over the real folder. A kill at any moment leaves the previous checkpoints and either a
    complete checkpoint-N or a staging folder, which `last_complete_checkpoint` removes at resume."""

    class AtomicCheckpoints(trainer_cls):
        _staging_dir: str | None = None

        def _get_output_dir(self, trial):
            return self._staging_dir or super()._get_output_dir(trial)

        def _save_checkpoint(self, model, trial) -> None:
            from transformers.trainer_utils import rotate_checkpoints

            run_dir = Path(super()._get_output_dir(trial))
            step = self.state.global_step
            staging, final = run_dir / f"{STAGING_PREFIX}{step}", run_dir / f"checkpoint-{step}"
            if self.args.should_save:
                shutil.rmtree(staging, ignore_errors=True)  # left by a save killed at this very step
            self._staging_dir = str(staging)
            try:
                super()._save_checkpoint(model, trial)  # writes staging/checkpoint-N; its rotation sees only that
            finally:
                self._staging_dir = None
            best = self.state.best_global_step
            if best:  # the Trainer named the best checkpoint by where it was written: name it by where it will be
                best_dir = run_dir / f"checkpoint-{best}"
                if best == step or best_dir.is_dir():
                    self.state.best_model_checkpoint = str(best_dir)
            if self.args.should_save:
                written = staging / final.name
                self.state.save_to_json(str(written / "trainer_state.json"))  # with the corrected best path
                fsync_tree(written)
                if final.exists():  # the same step saved again (a rerun after a resume): the new one wins
                    shutil.rmtree(final)
                os.replace(written, final)
                fsync_dir(run_dir)
                shutil.rmtree(staging, ignore_errors=True)
                rotate_checkpoints(str(run_dir), save_total_limit=self.args.save_total_limit,
                                   best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
            if self.args.world_size > 1:  # the others may read checkpoint-N (the best model at the end)
                self.accelerator.wait_for_everyone()

    return AtomicCheckpoints


def fsync_tree(folder: Path) -> None:
    """Flush every file under `folder`, and the folders themselves, to disk."""
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(root))


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def shuffled_batches(order: list[int], batch_size: int, generator) -> list[int]:
    """Length-grouped indices with their batches in random order. The Trainer's grouping sorts each megabatch (50
    batches) from long to short, so an epoch sweeps from long to short examples again and again; shuffling the
    batches removes that sawtooth and keeps every batch, so the padding is the same. The first batch (the longest,
    so that memory runs out at once if it will) and a short last batch stay where they are."""
    import torch

    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    tail = [batches.pop()] if len(batches) > 1 and len(batches[-1]) < batch_size else []
    middle = [batches[1 + j] for j in torch.randperm(len(batches) - 1, generator=generator).tolist()]
    return [i for batch in batches[:1] + middle + tail for i in batch]


def resumable_sampling(trainer_cls):
    """`trainer_cls` whose length-grouped batches follow (data_seed + epoch) instead of the global RNG. The
    Trainer's LengthGroupedSampler draws each epoch's order from the global generator, which a resumed run reaches
    in another state (it restores the RNG only after the resumed epoch's order is drawn): killed in epoch 2 and
    resumed, it trained the rest of that epoch on other batches. accelerate seeds a plain RandomSampler per epoch
    already; this does the same for length grouping, so a resumed run replays the batches of an uninterrupted one."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
        def __init__(self, batch_size: int, lengths: list[int], seed: int, shuffle_batches: bool = False):
            super().__init__(batch_size, lengths=lengths, generator=torch.Generator())
            self.seed, self.epoch, self.shuffle_batches = seed, 0, shuffle_batches

        def set_epoch(self, epoch: int) -> None:  # accelerate's data loader calls it before each epoch
            self.epoch = epoch

        def __iter__(self):
            self.generator.manual_seed(self.seed + self.epoch)
            order = list(super().__iter__())
            if self.shuffle_batches:
                order = shuffled_batches(order, self.batch_size, self.generator)
            return iter(order)

    class ResumableSampling(trainer_cls):
        shuffle_length_groups = False  # train.shuffle_length_groups, set by the stage

        def _get_train_sampler(self, train_dataset=None):
            sampler = super()._get_train_sampler(train_dataset)
            if type(sampler) is LengthGroupedSampler:
                seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
                sampler = EpochSeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, seed,
                                                          self.shuffle_length_groups)
            return sampler

    return ResumableSampling


def stage_callbacks(out: Path, patience: int | None, has_validation: bool, world: World = World()):
    """Callbacks of a training; with several processes only rank 0's write (the log, TensorBoard)."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers import EarlyStoppingCallback, TrainerCallback
    from transformers.integrations import TensorBoardCallback

    class LogAndTime(TrainerCallback):
        """Appends each log entry to train_log.jsonl as it happens, and keeps evaluation time out of throughput."""

        def __init__(self):
            self.eval_seconds = 0.0
            self._eval_start = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero:
                return
            with open(out / "train_log.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **(logs or {})}) + "\n")

        def on_step_end(self, args, state, control, **kwargs):
            self._eval_start = time.perf_counter()  # evaluation, when due, runs right after a step ends

        def on_evaluate(self, args, state, control, **kwargs):
            if self._eval_start is not None:
                self.eval_seconds += time.perf_counter() - self._eval_start

    timer = LogAndTime()
    callbacks = [timer]
    if world.is_main:  # the writer creates its event file at once, so the other ranks must not make one
        callbacks.append(TensorBoardCallback(SummaryWriter(log_dir=str(out / "tensorboard"))))
    if has_validation and patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    return callbacks, timer


def choose_attention(model, placement: Placement) -> str | None:
    """On a GPU: FlashAttention-2 where the flash-attn package is installed and the model supports it, else PyTorch
    SDPA (fused flash / memory-efficient kernels); on CPU the model keeps what transformers chose (SDPA where the
    model supports it). Returns the implementation the model now runs."""
    from importlib.util import find_spec

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if placement.device == "cuda":
        wanted = []
        if find_spec("flash_attn") is not None and getattr(inner, "_supports_flash_attn", False) \
                and placement.precision == "bf16":
            wanted.append("flash_attention_2")
        if getattr(inner, "_supports_sdpa", False):
            wanted.append("sdpa")
        for impl in wanted:
            try:
                inner.set_attn_implementation(impl)
                break
            except (ValueError, ImportError):  # the model or the kernel package refuses: try the next
                continue
    return getattr(inner.config, "_attn_implementation", None)


@contextmanager
def arrow_cache(out: Path, world: World) -> Iterator[Path]:
    """Where the splits' Arrow files live while training: model/arrow/ on rank 0 (removed afterwards), a temporary
    folder on the other ranks, which write nothing in the run."""
    if not world.is_main:
        with tempfile.TemporaryDirectory(prefix="tunewise-arrow-") as folder:
            yield Path(folder)
        return
    with scratch_folder(out) as folder:
        yield folder
