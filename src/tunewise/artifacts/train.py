"""model/train_summary.json: how the model was trained, for the card, the report and the coming release gate.

A classifier and a causal LM are trained differently and report different facts (examples/s against trained
tokens/s, per-epoch token accuracy, LoRA settings), so the file comes in two kinds told apart by `task`;
`TrainSummary.read` returns the right one, and the fields both share live on TrainSummary itself.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunewise.artifacts.base import Artifact, Strict, omitted


class BestMetric(Strict):
    """The validation score that picked the best checkpoint."""

    name: str = Field(description="train.metric_for_best_model as resolved, e.g. macro_f1 or loss.")
    value: float = Field(description="Its value at the best checkpoint.")


class TrainingHardware(Strict):
    """Where and how the model was trained: processes, threads, CPU kind. Kernels differ between CPU kinds (AMX
    against AVX-512), so bit-identical results need the same CPU kind, thread count and world size."""

    world_size: int = Field(description="Training processes in all (DDP / FSDP / DeepSpeed ranks); 1 for one process.")
    processes_per_node: int = Field(description="Training processes on this machine.")
    strategy: Literal["single", "ddp", "fsdp", "deepspeed"] = Field(description="How the processes shared the work.")
    backend: str | None = Field(description="torch.distributed backend (gloo on CPU, nccl on GPU); null for one process.")
    threads_per_process: int = Field(description="torch intra-op threads of each process.")
    threads_reason: str = Field(description="Why that many: TUNEWISE_THREADS / OMP_NUM_THREADS, or the CPUs the process may use (affinity, cgroup quota) shared among the processes.")
    cpu_model: str = Field(description="The CPU model name (/proc/cpuinfo).")
    cpu_id: str | None = Field(default=None, description="Vendor, family and model number (/proc/cpuinfo), e.g. `AuthenticAMD family 25 model 17`: one model name can cover CPU generations (`AMD EPYC` is Zen 4 and Zen 5). Null off Linux and in runs made before it was recorded.")
    cpu_isa: list[str] = Field(description="ISA flags that change kernels and speed (amx_bf16, amx_tile, avx512_bf16, avx512f, avx2, ...).")
    cpu_quota: float | None = Field(description="The cgroup CPU quota in CPUs; null when unlimited.")
    gpu: str | None = Field(description="The GPU name (rank 0's); null on CPU.")
    attention: str | None = Field(description="The attention implementation the model ran (sdpa, eager, flash_attention_2).")
    liger: bool = Field(description="Liger fused kernels were applied (train.liger).")
    allocator: str | None = Field(default=None, description="The malloc training ran on: tcmalloc or jemalloc (the `tunewise` command preloads one when it is installed; TUNEWISE_ALLOCATOR), else the C library's (glibc). Null in runs made before it was recorded.")


class TrainSummary(Artifact):
    """model/train_summary.json: base model, method, precision and device, epochs and steps, best checkpoint,
    examples, time and throughput. One of ClassifierTrainSummary or CausalTrainSummary, by `task`."""

    FILE = "train_summary.json"
    STAGE = "train"
    SCHEMA_VERSION = 1
    DISCRIMINATOR = "task"

    task: str = Field(description="The recipe's task; it decides the kind of summary.")
    base_model: str = Field(description="model.base as written in the recipe.")
    base_model_path: str = Field(description="The local folder the base weights were loaded from.")
    base_model_hub_id: str | None = Field(description="The base model's hub id; null for a local model.")
    method: Literal["full", "lora"] = Field(description="Full fine-tuning or LoRA adapters.")
    precision: str = Field(description="The precision trained in (bf16 or fp32).")
    precision_reason: str = Field(description="Why that precision was chosen.")
    device: str = Field(description="cpu or cuda.")
    epochs_run: float = Field(description="Epochs actually run (fewer than planned after early stopping).")
    global_steps: int = Field(description="Optimizer steps.")
    resumed_from: str | None = Field(description="The checkpoint training resumed from (`--resume`), else null.")
    best_checkpoint: str | None = Field(description="The best checkpoint relative to the run directory (on disk "
                                                    "only with train.keep_checkpoints); null without a validation split.")
    best_metric: BestMetric | None = Field(description="Its validation score; null without a validation split.")
    early_stopped: bool = Field(description="Training stopped before the planned epochs.")
    train_examples: int = Field(description="Training examples (after quarantine).")
    validation_examples: int = Field(description="Validation examples.")
    truncated_train_examples: int = Field(description="Training examples cut to model.max_length.")
    train_seconds: float = Field(description="Wall time of training, evaluation during training included.")
    eval_seconds_during_training: float = Field(description="Of which validation.")
    final_train_loss: float = Field(description="Mean training loss reported by the Trainer.")
    parameters: int = Field(description="Parameters of the model.")
    batch_order: Literal["random", "length-grouped", "length-grouped-shuffled"] | None = omitted(
        "How training batches were drawn: random order (train.group_by_length off), length-grouped (each megabatch "
        "long to short), or length-grouped-shuffled (the same batches in random order; "
        "train.shuffle_length_groups). Absent in summaries written before it was recorded.")
    hardware: TrainingHardware | None = omitted("Processes, threads and CPU kind of the training; absent in "
                                                "summaries written before tunewise recorded them.")


class ClassifierTrainSummary(TrainSummary):
    """train_summary.json of a classifier (an encoder with a classification head)."""

    task: Literal["classification"] = Field(description="The recipe's task.")
    train_examples_per_second: float | None = Field(
        description="Training throughput, evaluation time excluded; null after a resume (it would mix runs).")
    labels: list[str] = Field(description="The labels, in model output order.")


class LoraSettings(Strict):
    """The LoRA adapter settings (model.lora_*)."""

    r: int = Field(description="Adapter rank.")
    alpha: int = Field(description="Scaling numerator (alpha / r).")
    dropout: float = Field(description="Dropout on the adapter input.")
    target_modules: list[str] | Literal["all-linear"] = Field(description="Modules that got adapters.")


class EpochValidation(Strict):
    """Validation after one epoch."""

    epoch: float = Field(description="Epoch number (fractional for partial epochs).")
    eval_loss: float = Field(description="Validation loss on trained positions.")
    eval_mean_token_accuracy: float | None = Field(description="Share of trained positions predicted exactly.")
    step: int | None = Field(description="Optimizer step of the evaluation.")


class MaskPreview(Strict):
    """One training example as the model saw it, with the tokens that carry loss marked."""

    id: str | None = Field(description="The example's id.")
    tokens: int = Field(description="Tokens in the example.")
    trained_tokens: int = Field(description="Tokens that carry loss.")
    truncated: int = Field(description="Prompt tokens cut to fit model.max_length.")
    segments: list[tuple[str, bool]] = Field(description="[text, trained] runs, in order.")


class CausalTrainSummary(TrainSummary):
    """train_summary.json of a causal LM (generation and chat): tokens, LoRA, per-epoch validation."""

    task: Literal["generation", "chat"] = Field(description="The recipe's task.")
    base_model_gguf: str | None = Field(description="The .gguf file the base weights were converted from.")
    finetune: Literal["full", "lora"] = Field(description="Same as method (kept for older readers).")
    lora: LoraSettings | None = Field(description="The adapter settings; null for full fine-tuning.")
    base_weights_dtype: Literal["float32", "bfloat16"] = Field(
        description="How the frozen base model was held in training: bfloat16 for LoRA where bf16 pays (the "
                    "whole base, so the residual stream is bfloat16; the adapters stay float32), else float32. "
                    "Summaries written before 2026-12-01 meant the Linear weights only.")
    packing: bool = Field(description="train.packing: examples packed into rows of model.max_length.")
    gradient_checkpointing: bool = Field(description="train.gradient_checkpointing.")
    micro_batches: int | None = omitted("Each batch ran as this many micro-batches with accumulated gradients "
                                        "(train.micro_batch_tokens); absent in summaries written before the split.")
    compiled: bool | None = omitted("Whether each decoder layer ran compiled by torch.compile (train.compile); "
                                    "absent in summaries written before the option.")
    compile_reason: str | None = omitted("Why train.compile came out as it did.")
    train_rows: int = Field(description="Training rows fed to the Trainer (packed rows with packing).")
    quarantined_examples: int = Field(description="Examples that could not be encoded (model/quarantine.jsonl).")
    truncated_prompt_tokens: int = Field(description="Prompt tokens cut to fit model.max_length, in total.")
    trained_tokens: int = Field(description="Tokens that carried loss, over all epochs run.")
    tokens_per_epoch: int = Field(description="Tokens processed per epoch (trained or not).")
    trained_tokens_per_second: float | None = Field(
        description="Trained tokens per second of training; null after a resume.")
    processed_tokens_per_second: float | None = Field(
        description="Processed tokens per second of training; null after a resume.")
    per_epoch: list[EpochValidation] = Field(description="Validation after each epoch; empty without validation.")
    trainable_parameters: int = Field(description="Parameters trained (the adapters only, for LoRA).")
    mask_preview: list[MaskPreview] = Field(description="The first training examples with their loss mask.")


TrainSummary.VARIANTS = (ClassifierTrainSummary, CausalTrainSummary)
