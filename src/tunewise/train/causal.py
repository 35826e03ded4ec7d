"""Stage 2 for generation and chat: supervised fine-tuning of a causal LM (LoRA or full) with the transformers Trainer.

Reads data/ (train, validation); writes model/:
  adapter_model.safetensors + adapter_config.json (LoRA) or model.safetensors + config.json (full), tokenizer files
  checkpoints/, tensorboard/, train_log.jsonl     as for classification
  arrow/                                          the splits as memory-mapped Arrow, encoded (and packed) a batch
                                                  at a time while training (then removed)
  quarantine.jsonl                                examples that could not be encoded (too long with
                                                  model.truncation=reject, template errors), never dropped silently
  train_summary.json                              trained tokens/s, per-epoch validation loss and token accuracy
  recipe.yaml                                     the resolved recipe beside the weights
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tunewise.artifacts.rows import records_dataset
from tunewise.artifacts.train import CausalTrainSummary
from tunewise.errors import DataError, RecipeError
from tunewise.hardware import ThreadPlan, World, choose_placement, cpu_has_amx, plan_threads
from tunewise.models import ResolvedModel
from tunewise.recipe import Recipe
from tunewise.rundir import atomic_write_jsonl, atomic_write_text
from tunewise.tasks import task_for
from tunewise.tasks.causal import IGNORE, EncodedSplit, encode_examples_dataset, mask_segments, pack_dataset
from tunewise.train.common import (arrow_cache, choose_attention, drop_checkpoints, last_complete_checkpoint,
                                   micro_batches, resumable_trainer, stage_callbacks, training_arguments)
from tunewise.train.distributed import hardware_record, rank_zero_trainer

QUARANTINE_FILE = "quarantine.jsonl"


def encode_split(recipe: Recipe, tokenizer, data_dir: Path, split: str, cache: Path) -> EncodedSplit:
    """One split encoded into Arrow files under `cache` (read and tokenised a batch at a time, so a split larger
    than memory stays on disk), with the quarantine records of the examples that could not be encoded."""
    examples = records_dataset(data_dir, split, cache / "records", kind="example")
    enc = encode_examples_dataset(tokenizer, examples, task=recipe.task, max_length=recipe.model.max_length,
                                  truncation=recipe.model.truncation, split=split, cache_file=cache / f"{split}.arrow")
    rejected = enc.rejected
    if rejected and recipe.data.on_error == "fail":
        more = f" (and {len(rejected) - 1} more)" if len(rejected) > 1 else ""
        raise DataError(f"{rejected[0]['reason']}{more}; set data.on_error=quarantine to set such examples aside")
    share = len(rejected) / max(enc.examples, 1)
    if share > recipe.data.max_quarantine_fraction:
        raise DataError(f"{split}: {len(rejected)} of {enc.examples} examples ({share:.1%}) could not be encoded, "
                        f"more than data.max_quarantine_fraction={recipe.data.max_quarantine_fraction}; first: "
                        f"{rejected[0]['reason']}")
    return enc


def trained_positions_loss(model, inputs: dict[str, Any], num_items_in_batch=None):
    """Causal-LM loss computed through the output layer only at positions that carry loss.

    The usual forward projects every position onto the vocabulary (49k for SmolLM2) and upcasts those logits to
    fp32; for summarization, where most tokens are prompt, that is mostly wasted compute and memory. Here the
    backbone runs as usual and only the hidden states that predict a trained token go through the output layer.
    Returns (summed loss / count, next-token predictions laid out like the labels, for token accuracy).
    Falls back to the model's own loss for models whose head is not a plain projection (logit soft-capping).
    """
    import torch
    import torch.nn.functional as F

    labels = inputs["labels"]
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(inner, getattr(inner, "base_model_prefix", "model"), None)
    head = inner.get_output_embeddings()
    if backbone is None or head is None or getattr(inner.config, "final_logit_softcapping", None):
        out = model(**inputs)
        return out.loss, out.logits.argmax(-1)
    rest = {k: v for k, v in inputs.items() if k != "labels"}
    hidden = backbone(**rest, use_cache=False).last_hidden_state[:, :-1]  # a KV cache only costs memory here
    target = labels[:, 1:]
    keep = target != IGNORE
    logits = head(hidden[keep]).float()
    count = num_items_in_batch if num_items_in_batch is not None else keep.sum().clamp(min=1)
    loss = F.cross_entropy(logits, target[keep], reduction="sum") / count
    preds = torch.full_like(labels, IGNORE)
    preds[:, :-1][keep] = logits.argmax(-1)
    return loss, preds


def _trainer_class():
    from transformers import Trainer

    class TrainedTokensTrainer(rank_zero_trainer(resumable_trainer(Trainer))):
        """Trainer whose loss projects only the trained positions onto the vocabulary (see trained_positions_loss)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # the Trainer's mixed precision wraps only model.forward; this loss calls the backbone directly, so it
            # enters autocast itself (without it, "bf16" training ran every matmul in fp32)
            with self.accelerator.autocast():
                loss, preds = trained_positions_loss(model, inputs, num_items_in_batch)
            if num_items_in_batch is not None and self.args.average_tokens_across_devices \
                    and self.args.world_size > 1:
                # the count is over all processes and DDP averages the gradients: scale back, as the Trainer's
                # own compute_loss does, so the loss is the mean over every trained token of the global batch
                loss = loss * self.args.world_size
            return (loss, {"loss": loss, "logits": preds}) if return_outputs else loss

    return TrainedTokensTrainer


def token_accuracy_metrics(eval_pred) -> dict[str, float]:
    """Mean token accuracy over trained positions, as the OpenAI fine-tuning API reports it."""
    preds, labels = eval_pred.predictions, eval_pred.label_ids
    preds = preds[:, :-1]
    gold = labels[:, 1:]
    keep = gold != IGNORE
    return {"mean_token_accuracy": float((preds[keep] == gold[keep]).mean()) if keep.any() else 0.0}


def _argmax_logits(logits, labels):
    return logits if logits.dim() == 2 else logits.argmax(-1)  # already predictions from trained_positions_loss


def hold_frozen_base_in_bf16(model) -> int:
    """LoRA where bf16 pays (AMX, or a GPU): the whole frozen base model in bf16, so its residual stream, norms'
    outputs and saved activations are bf16 too (the norms still reduce in fp32 inside). Under fp32 weights with
    autocast every matmul rounded its weight to bf16 anyway; holding the rest in bf16 as well removes a cast of each
    norm output per consuming linear and halves the activations kept for the backward pass. Measured in
    bench/causal_sft.py (side `tunewise-fp32stream` keeps the old fp32 stream). Returns the weights cast."""
    import torch

    model.to(torch.bfloat16)
    return sum(p.numel() for p in model.parameters())


def lora_inputs_in_compute_dtype(model) -> None:
    """peft casts each adapter's input to the adapter's dtype (fp32) and autocast casts it back to bf16, a copy per
    adapted linear that backward keeps. With the input left bf16 the copy goes; the adapters' weights and their
    optimizer state stay fp32 (autocast rounds the weights for the matmul, as for any fp32 parameter)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False


# below this many processed tokens the one-time compile (~32 s on 2 AMX cores with a cold inductor cache) costs more
# than the ~20% per step it saves (bench/causal_sft.py, side tunewise-compile)
COMPILE_MIN_TOKENS = 250_000


def inductor_compiler() -> str | None:
    """The C++ compiler inductor would use on this machine, or None (then torch.compile cannot build CPU kernels)."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return get_cpp_compiler()
    except Exception:  # noqa: BLE001 - inductor raises several kinds when no compiler is found
        return None


def choose_compile(setting: bool | str, placement, processed_tokens: int, checkpointing: bool) -> tuple[bool, str]:
    """Whether to compile the decoder layers, and why (recorded in train_summary.json)."""
    if setting is False:
        return False, "train.compile=false"
    if setting is True:
        if placement.device == "cpu" and inductor_compiler() is None:
            raise RecipeError("train.compile=true: torch.compile needs a C++ compiler on a CPU (g++ or clang++, or "
                              "set CXX); install one, or set train.compile=auto")
        return True, "train.compile=true"
    if placement.device != "cpu" or placement.precision != "bf16" or not cpu_has_amx():
        return False, "auto: measured to pay on AMX CPUs only; set train.compile=true to try it here"
    if checkpointing:
        return False, "auto: not with gradient checkpointing"
    if processed_tokens < COMPILE_MIN_TOKENS:
        return False, (f"auto: {processed_tokens:,} processed tokens, under the {COMPILE_MIN_TOKENS:,} at which the "
                       f"one-time compile pays")
    if inductor_compiler() is None:
        return False, "auto: no C++ compiler for inductor (g++ or clang++)"
    return True, f"auto: {processed_tokens:,} processed tokens on an AMX CPU"


def compile_decoder_layers(model) -> int:
    """torch.compile each decoder layer in place (the state dict keeps its keys). The layers share their code and,
    with no KV cache in training, their guards, so one dynamic-shape graph serves all of them: the elementwise work
    between the matmuls (RMSNorm, RoPE, SwiGLU, LoRA's scaling and add, dtype casts) is fused. Returns the count."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


def wrap_lora(model, recipe: Recipe):
    from peft import LoraConfig, get_peft_model

    cfg = recipe.model
    config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                        target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM", bias="none")
    return get_peft_model(model, config)


def _quiet_known_warnings() -> None:
    import warnings

    # raised by transformers' own Trainer internals on every run; nothing a user can act on
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def train_causal(recipe: Recipe, base: ResolvedModel, data_dir: Path, out: Path, *, resume: bool = False,
                 world: World = World(), threads: ThreadPlan | None = None) -> str:
    """Train and (rank 0 only, with several processes) write model/; returns the stage message."""
    with arrow_cache(out, world) as cache:
        return _train(recipe, base, data_dir, out, cache, resume=resume, world=world, threads=threads)


def _train(recipe: Recipe, base: ResolvedModel, data_dir: Path, out: Path, cache: Path, *, resume: bool,
           world: World, threads: ThreadPlan | None) -> str:
    from transformers import set_seed

    _quiet_known_warnings()
    cfg = recipe.train
    placement = choose_placement(cfg.device, cfg.precision)
    set_seed(recipe.seed)
    task = task_for(recipe)
    tokenizer = task.load_tokenizer(base.path)
    # the splits are read as memory-mapped Arrow and encoded (and packed) a batch at a time into Arrow files
    # under `cache`: a training set larger than memory stays on disk
    train_enc = encode_split(recipe, tokenizer, data_dir, "train", cache)
    rejected = list(train_enc.rejected)
    val_enc = None
    if (data_dir / "validation.jsonl").exists():
        val_enc = encode_split(recipe, tokenizer, data_dir, "validation", cache)
        rejected += val_enc.rejected
    if world.is_main:
        atomic_write_jsonl(out / QUARANTINE_FILE, rejected)
    if len(train_enc.dataset) == 0:
        raise DataError(f"{data_dir / 'train.jsonl'}: no training example could be encoded")
    totals = train_enc.totals()

    method = recipe.model.finetune_method(recipe.task)
    model = task.load_model(base.path)
    frozen_bf16 = method == "lora" and placement.precision == "bf16"
    if frozen_bf16:
        hold_frozen_base_in_bf16(model)
    model.config.pad_token_id = tokenizer.pad_token_id
    attention = choose_attention(model, placement)
    if method == "lora":
        model = wrap_lora(model, recipe)
        if frozen_bf16:
            lora_inputs_in_compute_dtype(model)
    compiled, compile_reason = choose_compile(cfg.compile, placement, int(totals["tokens"] * cfg.epochs),
                                              cfg.gradient_checkpointing)
    if compiled and not compile_decoder_layers(model):
        compiled, compile_reason = False, f"{compile_reason}; but the model has no decoder layers to compile"

    train_ds = (pack_dataset(train_enc.dataset, recipe.model.max_length, cache / "train.packed.arrow")
                if cfg.packing else train_enc.features())
    val_ds = val_enc.features() if val_enc is not None and len(val_enc.dataset) else None
    trained_tokens_per_epoch = totals["trained_tokens"]

    ckpt_dir = out / "checkpoints"
    resume_from = last_complete_checkpoint(ckpt_dir) if resume else None
    if not resume and world.is_main:
        (out / "train_log.jsonl").unlink(missing_ok=True)
    best_name = recipe.best_metric()
    # activations grow with the tokens of a forward pass; accumulating micro-batches keeps the step, not the memory
    micro = micro_batches(cfg.batch_size, recipe.model.max_length, cfg.micro_batch_tokens)
    length_grouped = cfg.group_by_length and not cfg.packing  # packed rows are all one length
    args = training_arguments(
        recipe, placement, ckpt_dir, train_rows=len(train_ds), has_validation=val_ds is not None,
        eval_batch_size=min(cfg.eval_batch_size, 16),  # logits over a 49k vocabulary are large
        max_logging_steps=25, group_by_length=length_grouped,
        remove_unused_columns=False, label_names=["labels"],
        activation_checkpointing=cfg.gradient_checkpointing,  # transformers 5's name for gradient checkpointing
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None, world=world,
        micro=micro)
    callbacks, timer = stage_callbacks(out, cfg.early_stopping_patience, val_ds is not None, world)
    trainer = _trainer_class()(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                      data_collator=task.collator(tokenizer), processing_class=tokenizer,
                      compute_metrics=token_accuracy_metrics if val_ds is not None else None,
                      preprocess_logits_for_metrics=_argmax_logits if val_ds is not None else None,
                      callbacks=callbacks)
    trainer.shuffle_length_groups = cfg.shuffle_length_groups
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    wall = time.perf_counter() - t0

    trainer.save_model(str(out))  # LoRA: the adapter only (base stays in the cache); full: the whole model
    if not world.is_main:  # the Trainer saved from process 0; everything below is rank 0's to write
        return "train: done on a rank other than 0"
    tokenizer.save_pretrained(str(out))
    atomic_write_text(out / "recipe.yaml", recipe.to_yaml())
    state = trainer.state
    atomic_write_jsonl(out / "train_log.jsonl", state.log_history)
    train_only = max(wall - timer.eval_seconds, 1e-9)
    epochs_run = float(state.epoch or 0)
    trained_tokens = trained_tokens_per_epoch * epochs_run
    per_epoch = [{"epoch": round(float(e["epoch"]), 3), "eval_loss": e.get("eval_loss"),
                  "eval_mean_token_accuracy": e.get("eval_mean_token_accuracy"), "step": e.get("step")}
                 for e in state.log_history if "eval_loss" in e]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    summary = CausalTrainSummary(**{
        "task": recipe.task,
        "base_model": recipe.model.base,
        "base_model_path": str(base.path),
        "base_model_hub_id": base.hub_id,
        "base_model_gguf": str(base.gguf_source) if base.gguf_source else None,
        "method": method,
        "finetune": method,
        "lora": ({"r": recipe.model.lora_r, "alpha": recipe.model.lora_alpha, "dropout": recipe.model.lora_dropout,
                  "target_modules": recipe.model.lora_target_modules} if method == "lora" else None),
        "precision": placement.precision,
        "precision_reason": placement.reason,
        "device": placement.device,
        "batch_order": cfg.batch_order() if length_grouped else "random",
        "base_weights_dtype": "bfloat16" if frozen_bf16 else "float32",
        "packing": cfg.packing,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "micro_batches": micro,
        "compiled": compiled,
        "compile_reason": compile_reason,
        "epochs_run": round(epochs_run, 3),
        "global_steps": state.global_step,
        "resumed_from": Path(resume_from).name if resume_from else None,
        "best_checkpoint": (str(Path(state.best_model_checkpoint).relative_to(out.parent))
                            if state.best_model_checkpoint else None),
        "best_metric": {"name": best_name, "value": state.best_metric} if state.best_metric is not None else None,
        "early_stopped": bool(val_ds is not None and state.epoch is not None and state.epoch < cfg.epochs - 1e-6),
        "train_examples": totals["examples"],
        "train_rows": len(train_ds),
        "validation_examples": len(val_enc.dataset) if val_enc is not None else 0,
        "quarantined_examples": len(rejected),
        "truncated_train_examples": totals["truncated_examples"],
        "truncated_prompt_tokens": totals["truncated_tokens"],
        "trained_tokens": int(trained_tokens),
        "tokens_per_epoch": totals["tokens"],
        "train_seconds": round(wall, 2),
        "eval_seconds_during_training": round(timer.eval_seconds, 2),
        "trained_tokens_per_second": round(trained_tokens / train_only, 1) if not resume_from else None,
        "processed_tokens_per_second": (round(totals["tokens"] * epochs_run / train_only, 1)
                                        if not resume_from else None),
        "final_train_loss": result.training_loss,
        "per_epoch": per_epoch,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": trainable,
        # the first training examples as the model saw them, with the tokens that carry loss marked
        "mask_preview": [{"id": e.meta.get("id"), "tokens": len(e.input_ids), "trained_tokens": e.trained_tokens,
                          "truncated": e.truncated, "segments": mask_segments(tokenizer, e)}
                         for e in train_enc.head(3)],
        "hardware": hardware_record(recipe, placement, world, threads or plan_threads(world.local_size), attention),
    })
    summary.write(out)
    drop_checkpoints(ckpt_dir, recipe.train.keep_checkpoints)
    last = per_epoch[-1] if per_epoch else None
    val = (f", validation loss {last['eval_loss']:.4f}, token accuracy {last['eval_mean_token_accuracy']:.3f}"
           if last and last.get("eval_mean_token_accuracy") is not None else "")
    note = f", resumed from {summary.resumed_from}" if resume_from else ""
    tps = (f", {summary.trained_tokens_per_second:,.0f} trained tok/s of "
           f"{summary.processed_tokens_per_second:,.0f} processed" if summary.trained_tokens_per_second else "")
    return (f"train: {method} fine-tuning, {epochs_run:g} epochs on {totals['examples']:,} examples in {wall:.0f}s "
            f"({placement.precision} on {placement.device}"
            + (f", {world.size} processes (DDP)" if world.size > 1 else "") + f"{note}{tps}){val}"
            + (f"; {len(rejected)} examples quarantined (model/{QUARANTINE_FILE})" if rejected else ""))
