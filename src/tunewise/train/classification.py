"""Stage 2 for classification: fine-tune an encoder with the transformers Trainer.

Reads data/ (train, validation, labels); writes model/:
  config.json, model.safetensors, tokenizer files   the best model, loadable by plain transformers
  checkpoints/checkpoint-N/                          Trainer checkpoints (for --resume)
  tensorboard/                                       TensorBoard event files
  train_log.jsonl                                    every logged step and validation result
  train_summary.json                                 throughput, precision, best checkpoint
  recipe.yaml                                        the resolved recipe beside the weights
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tunewise.data.prepare import load_labels, load_split
from tunewise.hardware import choose_placement
from tunewise.models import ResolvedModel
from tunewise.recipe import Recipe
from tunewise.rundir import atomic_write_json, atomic_write_jsonl, atomic_write_text
from tunewise.tasks.classification import encode, load_model, load_tokenizer, trainer_metrics


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


def _callbacks(out: Path, patience: int | None, has_validation: bool):
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


def train_classifier(recipe: Recipe, base: ResolvedModel, data_dir: Path, out: Path, *, resume: bool = False) -> str:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    cfg = recipe.train
    labels = load_labels(data_dir)
    label2id = {label: i for i, label in enumerate(labels)}
    train_rows = load_split(data_dir, "train")
    val_rows = load_split(data_dir, "validation") if (data_dir / "validation.jsonl").exists() else []
    placement = choose_placement(cfg.device, cfg.precision)

    set_seed(recipe.seed)
    tokenizer = load_tokenizer(base.path)
    model = load_model(base.path, labels)
    train_ds, train_truncated = encode(tokenizer, [r.text for r in train_rows],
                                      [label2id[r.label] for r in train_rows], recipe.model.max_length)
    val_ds = None
    if val_rows:
        val_ds, _ = encode(tokenizer, [r.text for r in val_rows], [label2id[r.label] for r in val_rows],
                           recipe.model.max_length)

    ckpt_dir = out / "checkpoints"
    resume_from = last_complete_checkpoint(ckpt_dir) if resume else None
    if not resume:
        (out / "train_log.jsonl").unlink(missing_ok=True)
    by_steps = cfg.checkpoint_every_steps is not None
    strategy = "steps" if by_steps else "epoch"
    best_name = recipe.best_metric()
    best_metric = f"eval_{best_name}"
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_fraction,  # a float < 1 is a share of all steps in transformers 5
        lr_scheduler_type="linear",
        bf16=placement.precision == "bf16",
        use_cpu=placement.device == "cpu",
        eval_strategy=strategy if val_ds is not None else "no",
        save_strategy=strategy,
        eval_steps=cfg.checkpoint_every_steps,
        save_steps=cfg.checkpoint_every_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=val_ds is not None,
        metric_for_best_model=best_metric if val_ds is not None else None,
        greater_is_better=best_name != "loss" if val_ds is not None else None,
        logging_strategy="steps",
        logging_steps=max(1, min(50, len(train_ds) // cfg.batch_size // 4 or 1)),
        report_to="none",
        seed=recipe.seed,
        data_seed=recipe.seed,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        length_column_name="length",
        dataloader_num_workers=0,
        save_only_model=False,
    )
    callbacks, timer = _callbacks(out, cfg.early_stopping_patience, val_ds is not None)
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                      data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8),
                      processing_class=tokenizer, compute_metrics=trainer_metrics, callbacks=callbacks)
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    wall = time.perf_counter() - t0

    trainer.save_model(str(out))  # best model (load_best_model_at_end) as safetensors + tokenizer
    atomic_write_text(out / "recipe.yaml", recipe.to_yaml())
    state = trainer.state
    atomic_write_jsonl(out / "train_log.jsonl", state.log_history)  # complete, including before a resume
    examples_seen = result.metrics.get("train_samples_per_second", 0) * result.metrics.get("train_runtime", 0)
    train_only = max(wall - timer.eval_seconds, 1e-9)
    summary = {
        "base_model": recipe.model.base,
        "base_model_path": str(base.path),
        "base_model_hub_id": base.hub_id,
        "method": "full",
        "precision": placement.precision,
        "precision_reason": placement.reason,
        "device": placement.device,
        "epochs_run": round(float(state.epoch or 0), 3),
        "global_steps": state.global_step,
        "resumed_from": Path(resume_from).name if resume_from else None,
        "best_checkpoint": (str(Path(state.best_model_checkpoint).relative_to(out.parent))
                            if state.best_model_checkpoint else None),
        "best_metric": ({"name": best_name, "value": state.best_metric}
                        if state.best_metric is not None else None),
        "early_stopped": bool(val_ds is not None and state.epoch is not None and state.epoch < cfg.epochs - 1e-6),
        "train_examples": len(train_ds),
        "validation_examples": len(val_rows),
        "truncated_train_examples": train_truncated,
        "train_seconds": round(wall, 2),
        "eval_seconds_during_training": round(timer.eval_seconds, 2),
        "train_examples_per_second": round(examples_seen / train_only, 2) if not resume_from else None,
        "final_train_loss": result.training_loss,
        "parameters": sum(p.numel() for p in model.parameters()),
        "labels": labels,
    }
    atomic_write_json(out / "train_summary.json", summary)
    note = f", resumed from {summary['resumed_from']}" if resume_from else ""
    best = f", best validation {best_name} {state.best_metric:.4f}" if state.best_metric is not None else ""
    return (f"train: {summary['epochs_run']:g} epochs on {len(train_ds):,} examples in {wall:.0f}s "
            f"({placement.precision} on {placement.device}{note}){best}")
