"""What both train stages share: the Trainer arguments every run gets, checkpoint discovery for --resume, and the
callbacks that log each step to train_log.jsonl, keep evaluation time out of throughput, and stop early."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tunewise.hardware import Placement
from tunewise.recipe import Recipe


def training_arguments(recipe: Recipe, placement: Placement, ckpt_dir: Path, *, train_rows: int, has_validation: bool,
                       eval_batch_size: int, max_logging_steps: int, group_by_length: bool, **task_specific: Any):
    """transformers TrainingArguments from the recipe; `task_specific` adds or overrides what one task needs."""
    from transformers import TrainingArguments

    cfg = recipe.train
    strategy = "steps" if cfg.checkpoint_every_steps is not None else "epoch"
    best_name = recipe.best_metric()
    steps_per_epoch = train_rows // (cfg.batch_size * cfg.gradient_accumulation_steps)
    return TrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
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
        **task_specific,
    )


def last_complete_checkpoint(ckpt_dir: Path) -> str | None:
    """Newest checkpoint that was fully written: a kill during saving leaves one without a readable trainer_state."""
    if not ckpt_dir.is_dir():
        return None
    candidates = sorted((p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                        key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for folder in candidates:
        try:
            json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if any(folder.glob("*.safetensors")) and (folder / "optimizer.pt").is_file():
            return str(folder)
    return None


def stage_callbacks(out: Path, patience: int | None, has_validation: bool):
    from torch.utils.tensorboard import SummaryWriter
    from transformers import EarlyStoppingCallback, TrainerCallback
    from transformers.integrations import TensorBoardCallback

    class LogAndTime(TrainerCallback):
        """Appends each log entry to train_log.jsonl as it happens, and keeps evaluation time out of throughput."""

        def __init__(self):
            self.eval_seconds = 0.0
            self._eval_start = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            with open(out / "train_log.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **(logs or {})}) + "\n")

        def on_step_end(self, args, state, control, **kwargs):
            self._eval_start = time.perf_counter()  # evaluation, when due, runs right after a step ends

        def on_evaluate(self, args, state, control, **kwargs):
            if self._eval_start is not None:
                self.eval_seconds += time.perf_counter() - self._eval_start

    timer = LogAndTime()
    callbacks = [timer, TensorBoardCallback(SummaryWriter(log_dir=str(out / "tensorboard")))]
    if has_validation and patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    return callbacks, timer
