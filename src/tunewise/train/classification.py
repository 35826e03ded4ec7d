"""Stage 2 for classification: fine-tune an encoder with the transformers Trainer.

Reads data/ (train, validation, labels); writes model/:
  config.json, model.safetensors, tokenizer files   the best model, loadable by plain transformers
  checkpoints/checkpoint-N/                          Trainer checkpoints (for --resume), each renamed into place whole
  arrow/                                             the splits as memory-mapped Arrow while training (then removed)
  tensorboard/                                       TensorBoard event files
  train_log.jsonl                                    every logged step and validation result
  train_summary.json                                 throughput, precision, best checkpoint
  recipe.yaml                                        the resolved recipe beside the weights
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

from tunewise.artifacts.rows import load_labels, rows_dataset
from tunewise.artifacts.train import ClassifierTrainSummary
from tunewise.hardware import ThreadPlan, World, choose_placement, plan_threads
from tunewise.models import ResolvedModel
from tunewise.recipe import Recipe
from tunewise.rundir import atomic_write_jsonl, atomic_write_text
from tunewise.tasks import task_for
from tunewise.tasks.classification import encode_rows_dataset, trainer_metrics
from tunewise.train.common import (arrow_cache, choose_attention, drop_checkpoints, last_complete_checkpoint,
                                   resumable_trainer, stage_callbacks, training_arguments)
from tunewise.train.distributed import hardware_record, rank_zero_trainer


def train_classifier(recipe: Recipe, base: ResolvedModel, data_dir: Path, out: Path, *, resume: bool = False,
                     world: World = World(), threads: ThreadPlan | None = None) -> str:
    """Train and (rank 0 only, with several processes) write model/; returns the stage message."""
    with ExitStack() as stack:
        return _train(stack, recipe, base, data_dir, out, resume=resume, world=world, threads=threads)


def _encoded(tokenizer, data_dir: Path, split: str, labels: list[str], recipe: Recipe, cache: str):
    rows = rows_dataset(data_dir, split, Path(cache) / "rows")
    return encode_rows_dataset(tokenizer, rows, labels, recipe.model.max_length, Path(cache) / f"{split}.arrow")


def _train(stack: ExitStack, recipe: Recipe, base: ResolvedModel, data_dir: Path, out: Path, *, resume: bool,
           world: World, threads: ThreadPlan | None) -> str:
    from transformers import Trainer, set_seed

    cfg = recipe.train
    task = task_for(recipe)
    labels = load_labels(data_dir)
    placement = choose_placement(cfg.device, cfg.precision)

    set_seed(recipe.seed)
    tokenizer = task.load_tokenizer(base.path)
    model = task.load_model(base.path, labels)
    attention = choose_attention(model, placement)
    # The encoder's forward takes **kwargs, so the Trainer assumes its loss divides by the batch's label count over
    # all processes and multiplies it by the number of processes; its loss is a per-batch mean, so with 2 processes
    # the logged loss (and the gradient) came out doubled. Say that it takes no such count.
    model.accepts_loss_kwargs = False
    # the splits are read as memory-mapped Arrow, a batch at a time, and tokenised into Arrow files: a training set
    # larger than memory stays on disk (rank 0 keeps them in model/arrow/, removed after training; the other
    # ranks, which write nothing in the run, in a temporary folder)
    arrow = stack.enter_context(arrow_cache(out, world))
    train_ds, train_truncated = _encoded(tokenizer, data_dir, "train", labels, recipe, arrow)
    val_ds = None
    if (data_dir / "validation.jsonl").exists():
        val_ds, _ = _encoded(tokenizer, data_dir, "validation", labels, recipe, arrow)

    ckpt_dir = out / "checkpoints"
    resume_from = last_complete_checkpoint(ckpt_dir) if resume else None
    if not resume and world.is_main:
        (out / "train_log.jsonl").unlink(missing_ok=True)
    best_name = recipe.best_metric()
    args = training_arguments(recipe, placement, ckpt_dir, train_rows=len(train_ds), has_validation=val_ds is not None,
                              eval_batch_size=cfg.eval_batch_size, max_logging_steps=50,
                              group_by_length=cfg.group_by_length, save_only_model=False, world=world)
    callbacks, timer = stage_callbacks(out, cfg.early_stopping_patience, val_ds is not None, world)
    trainer = rank_zero_trainer(resumable_trainer(Trainer))(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                      data_collator=task.collator(tokenizer),
                      processing_class=tokenizer, compute_metrics=trainer_metrics, callbacks=callbacks)
    trainer.shuffle_length_groups = cfg.shuffle_length_groups
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    wall = time.perf_counter() - t0

    trainer.save_model(str(out))  # best model (load_best_model_at_end) as safetensors + tokenizer; process 0 writes
    if not world.is_main:
        return "train: done on a rank other than 0"
    atomic_write_text(out / "recipe.yaml", recipe.to_yaml())
    state = trainer.state
    atomic_write_jsonl(out / "train_log.jsonl", state.log_history)  # complete, including before a resume
    examples_seen = result.metrics.get("train_samples_per_second", 0) * result.metrics.get("train_runtime", 0)
    train_only = max(wall - timer.eval_seconds, 1e-9)
    summary = ClassifierTrainSummary(**{
        "task": recipe.task,
        "base_model": recipe.model.base,
        "base_model_path": str(base.path),
        "base_model_hub_id": base.hub_id,
        "method": "full",
        "precision": placement.precision,
        "precision_reason": placement.reason,
        "device": placement.device,
        "batch_order": cfg.batch_order(),
        "epochs_run": round(float(state.epoch or 0), 3),
        "global_steps": state.global_step,
        "resumed_from": Path(resume_from).name if resume_from else None,
        "best_checkpoint": (str(Path(state.best_model_checkpoint).relative_to(out.parent))
                            if state.best_model_checkpoint else None),
        "best_metric": ({"name": best_name, "value": state.best_metric}
                        if state.best_metric is not None else None),
        "early_stopped": bool(val_ds is not None and state.epoch is not None and state.epoch < cfg.epochs - 1e-6),
        "train_examples": len(train_ds),
        "validation_examples": len(val_ds) if val_ds is not None else 0,
        "truncated_train_examples": train_truncated,
        "train_seconds": round(wall, 2),
        "eval_seconds_during_training": round(timer.eval_seconds, 2),
        "train_examples_per_second": round(examples_seen / train_only, 2) if not resume_from else None,
        "final_train_loss": result.training_loss,
        "parameters": sum(p.numel() for p in model.parameters()),
        "labels": labels,
        "hardware": hardware_record(recipe, placement, world, threads or plan_threads(world.local_size), attention),
    })
    summary.write(out)
    drop_checkpoints(ckpt_dir, recipe.train.keep_checkpoints)
    note = f", resumed from {summary.resumed_from}" if resume_from else ""
    best = f", best validation {best_name} {state.best_metric:.4f}" if state.best_metric is not None else ""
    return (f"train: {summary.epochs_run:g} epochs on {len(train_ds):,} examples in {wall:.0f}s "
            f"({placement.precision} on {placement.device}{_processes(world)}{note}){best}")


def _processes(world: World) -> str:
    return f", {world.size} processes (DDP)" if world.size > 1 else ""
