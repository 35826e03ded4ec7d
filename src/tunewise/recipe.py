"""The recipe: one YAML file, validated by pydantic, with torchtune-style `key=value` overrides.

Every field carries its constraint and a description; the description is the recipe reference
(`tunewise recipe-help`). All problems are collected and reported at once, each naming the field,
the bad value, what is allowed, and where the value came from (file or override).
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tunewise.errors import RecipeError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataFile(_Strict):
    """One data file and where it came from. A plain string in the recipe is shorthand for `{path: ...}`."""

    path: str = Field(description="Local .jsonl/.csv/.tsv/.parquet file, or `hf:NAME[:SPLIT]` for a Hugging Face dataset (online only).")
    source: str | None = Field(None, description="Where the data came from (URL, repository, team, generator script).")
    license: str | None = Field(None, description="SPDX-style licence id of the data, e.g. CC-BY-4.0. Missing licences are flagged in the cards.")
    contains_personal_data: bool | None = Field(None, description="Whether rows may hold personal data. Unknown (null) is flagged in the cards.")
    max_rows: int | None = Field(None, ge=1, description="Use only the first N valid rows of this file (a seeded-free, reproducible subset; the rest are counted, not quarantined).")
    completion_field: str | None = Field(None, description="generation: this file's completion column, when it differs from data.completion_field (e.g. `summary1` in a multi-reference test file).")
    reference_fields: list[str] = Field(default_factory=list, description="generation: further reference columns of this file (e.g. `[summary2, summary3]`), scored as extra references in evaluation.")

    @field_validator("path")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be a non-empty path")
        return v


class DataConfig(_Strict):
    """Where the labeled data lives and how rows map to the task's fields.

    classification reads text_field and label_field; generation reads prompt_field (or renders prompt_template)
    and completion_field; chat reads messages_field (OpenAI fine-tuning format)."""

    train: DataFile = Field(description="Training data.")
    validation: DataFile | None = Field(None, description="Validation data for early stopping; carved from train when absent.")
    test: DataFile | None = Field(None, description="Held-out test data for evaluation; carved from train when absent.")
    format: Literal["auto", "jsonl", "csv", "tsv", "parquet"] = Field("auto", description="File format; `auto` uses the file extension.")
    text_field: str = Field("text", min_length=1, description="Column/key holding the input text.")
    text_pair_field: str | None = Field(None, min_length=1, description="classification: column holding a second input text, read with text_field as one sentence pair (the tokenizer's text pair, e.g. a summary and the source it is checked against); when the pair is over model.max_length the longer text is cut first. null: single-text input.")
    label_field: str = Field("label", min_length=1, description="Column/key holding the label.")
    labels: list[str] | None = Field(None, description="Declared label set, in order. Rows with other labels are errors. Derived from train when absent.")
    slice_fields: list[str] = Field(default_factory=list, description="Metadata columns kept with each row, for slices in evaluation.")
    prompt_field: str = Field("prompt", min_length=1, description="generation: column holding the prompt (ignored when prompt_template is set).")
    prompt_template: str | None = Field(None, description="generation (and chat from columns): a Python format string over the row's columns that builds the prompt, e.g. `Summarize the dialogue.\\n\\n{dialogue}`.")
    completion_field: str = Field("completion", min_length=1, description="generation: column holding the target completion.")
    system_prompt: str | None = Field(None, description="generation: a system message placed before each prompt when the model has a chat template.")
    messages_field: str = Field("messages", min_length=1, description="chat: column holding the OpenAI-style list of {role, content[, weight]} messages (unless prompt_template is set: then each row is one user turn and one assistant reply, as for generation).")
    validation_fraction: float = Field(0.1, ge=0.0, lt=0.5, description="Share of train carved (seeded, stratified) into validation when no validation file is given; 0 disables validation and early stopping.")
    test_fraction: float = Field(0.2, gt=0.0, lt=0.5, description="Share of train carved (seeded, stratified) into test when no test file is given.")
    on_error: Literal["fail", "quarantine"] = Field("fail", description="`fail`: a bad row stops the run naming file:line and field. `quarantine`: bad rows go to data/quarantine.jsonl and are counted.")
    max_quarantine_fraction: float = Field(0.05, ge=0.0, le=1.0, description="With on_error=quarantine, fail when more than this share of a file's rows is quarantined.")

    @field_validator("train", "validation", "test", mode="before")
    @classmethod
    def _path_shorthand(cls, v: Any) -> Any:
        return {"path": v} if isinstance(v, (str, Path)) else v

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_str(cls, v: Any) -> Any:
        return [str(x) for x in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _distinct_columns(self) -> "DataConfig":
        check_data_fields(self)
        return self

    @field_validator("prompt_template")
    @classmethod
    def _template_parses(cls, v: str | None) -> str | None:
        if v is not None:
            template_fields(v)  # raises ValueError naming the problem
        return v

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if len(v) < 2:
                raise ValueError("must list at least 2 labels")
            dupes = sorted({x for x in v if v.count(x) > 1})
            if dupes:
                raise ValueError(f"must not repeat labels; repeated: {dupes}")
        return v


class ModelConfig(_Strict):
    """The pre-trained base model and how it is adapted."""

    base: str = Field("minilm", min_length=1, description="A built-in name (`tunewise models`), a local Hugging Face folder, a .gguf file, or a hub id when online.")
    max_length: int = Field(128, ge=8, le=32768, description="Tokens per example (prompt + completion for causal LMs); longer inputs are truncated or rejected per `model.truncation`.")
    truncation: Literal["truncate", "reject"] = Field("truncate", description="Causal LMs: an example over max_length has the end of its last prompt message cut, keeping the instruction and the reply (`truncate`, counted) or is quarantined (`reject`).")
    finetune: Literal["auto", "full", "lora"] = Field("auto", description="`full` trains every weight; `lora` trains low-rank adapters (peft). `auto`: full for classification, lora for causal LMs.")
    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, le=4096, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA path. 0 (as in torchtune) also spares a stored copy of every adapted layer's input.")
    lora_target_modules: list[str] | Literal["all-linear"] = Field("all-linear", description="Modules that get adapters: `all-linear` or a list of module names such as [q_proj, v_proj].")

    def finetune_method(self, task: str) -> str:
        if self.finetune != "auto":
            return self.finetune
        from tunewise.tasks import task_for

        return task_for(task).default_finetune()


class TrainConfig(_Strict):
    """Fine-tuning settings (transformers Trainer underneath)."""

    epochs: float = Field(8, gt=0, le=1000, description="Number of passes over the training data.")
    lr: float = Field(1e-4, gt=0, le=1, description="Peak learning rate (AdamW, linear decay).")
    batch_size: int = Field(32, ge=1, le=4096, description="Examples per optimizer step, per device.")
    eval_batch_size: int = Field(128, ge=1, le=8192, description="Examples per batch at validation and prediction time.")
    weight_decay: float = Field(0.01, ge=0, le=1, description="AdamW weight decay.")
    warmup_fraction: float = Field(0.06, ge=0, lt=1, description="Share of steps spent warming the learning rate up.")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="`auto` uses bf16 autocast where the CPU has AMX or the GPU supports bf16; on a CPU with AVX-512 bf16 but no AMX, where a 1024² bf16 matmul measures at least 1.5x fp32 (measured once per machine and kept in the tunewise cache: 4.6x on an AMD Zen 5, 2.2x on a Zen 4, about 0.5x on an Intel CPU of that kind); else fp32 (bf16 without bf16 instructions is emulated). The CPU model, family and ISA flags are recorded in the manifest, the choice and its reason in model/train_summary.json.")
    group_by_length: bool = Field(True, description="Batch examples of similar length together to cut padding.")
    shuffle_length_groups: bool = Field(False, description="With group_by_length: draw the length-grouped batches in random order. The Trainer's grouping sorts each megabatch (up to 50 batches) from long to short, so without this an epoch sweeps from long to short examples again and again. The batches, and so the padding and the speed, stay the same. Off by default: on full sst2 it gained +0.50 accuracy points over 3 seeds (interval holding 0), and on the helpdesk demo it lost 1.7 points on one seed (docs/benchmarks.md).")
    packing: bool = Field(False, description="Causal LMs: pack several examples into each max_length row, with positions reset and attention confined to each example.")
    gradient_accumulation_steps: int = Field(1, ge=1, le=4096, description="Batches whose gradients are summed before each optimizer step.")
    gradient_checkpointing: bool = Field(False, description="Causal LMs: recompute each layer's activations in the backward pass; much less memory for about a third more compute.")
    compile: bool | Literal["auto"] = Field("auto", description="Causal LMs: compile each decoder layer with torch.compile (inductor, dynamic shapes; one graph serves every layer). On 2 AMX cores a SmolLM2 LoRA step ran 1.3x faster (MFU about 21%, from 16% eager), after a one-time compile of about 32 s (about 6 s once inductor's on-disk cache holds the graphs). `auto`: on where that was measured to pay: an AMX CPU training in bf16, no gradient checkpointing, a C++ compiler present, and at least 250,000 processed tokens in the run. The choice and its reason are in model/train_summary.json.")
    micro_batch_tokens: int | None = Field(None, ge=16, le=1_048_576, description="Causal LMs: split each batch into equal micro-batches of at most this many tokens (rows x model.max_length) and accumulate their gradients: the same examples per optimizer step and the same loss (normalised over the whole batch's trained tokens), with less activation memory. At 1024 on the SmolLM2 benchmark: peak RSS -17%, speed -18% on 2 threads (docs/benchmarks.md). null (default): no split.")
    early_stopping_patience: int | None = Field(2, ge=1, description="Stop after this many evaluations without improvement on validation; null disables.")
    metric_for_best_model: Literal["auto", "loss", "accuracy", "macro_f1"] = Field("auto", description="Validation metric that picks the best checkpoint. `auto`: macro_f1 for classification, loss for causal LMs.")
    checkpoint_every_steps: int | None = Field(None, ge=1, description="Evaluate and checkpoint every N steps; null means once per epoch.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept on disk (the best one is always kept).")
    keep_checkpoints: bool = Field(False, description="Keep model/checkpoints/ after training finishes. They exist for --resume; a finished run's model is saved beside them, and each checkpoint holds the optimizer state too (about 3x the model), so they are removed by default.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="`auto` uses a GPU when there is one.")
    ddp_backend: Literal["auto", "gloo", "nccl"] = Field("auto", description="Several processes (`tunewise run --nproc N`, torchrun, accelerate launch): the torch.distributed backend. `auto`: gloo on CPU, NCCL on GPU. NCCL without a CUDA GPU is refused before training.")
    fsdp: bool = Field(False, description="Shard parameters, gradients and optimizer state across GPUs with PyTorch FSDP (passed to the transformers Trainer with `fsdp_config`). GPU only: refused on CPU before training.")
    fsdp_config: dict[str, Any] | str | None = Field(None, description="With `fsdp`: the Trainer's fsdp_config, inline or a JSON file (relative to the recipe file), e.g. {version: 2, auto_wrap_policy: TRANSFORMER_BASED_WRAP, state_dict_type: FULL_STATE_DICT}.")
    deepspeed: dict[str, Any] | str | None = Field(None, description="DeepSpeed ZeRO: the DeepSpeed config, inline or a JSON file (relative to the recipe file), passed to the Trainer; `auto` values are filled from the recipe. Needs the deepspeed package and a CUDA GPU; refused before training otherwise.")
    liger: bool = Field(False, description="Causal LMs on GPU: Liger fused Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy) through the Trainer's use_liger_kernel. Needs the liger-kernel package and a CUDA GPU; refused before training otherwise.")

    def batch_order(self) -> str:
        """How batches are drawn, as train_summary.json records it."""
        if not self.group_by_length:
            return "random"
        return "length-grouped-shuffled" if self.shuffle_length_groups else "length-grouped"


class FaithfulnessConfig(_Strict):
    """The faithfulness stage (after evaluate): a fine-tuned checker scores each generated output, per summary and
    per sentence, for content its source does not support; fine-tuned and base model side by side."""

    enabled: bool | Literal["auto"] = Field("auto", description="Run the faithfulness stage in `tunewise run`. `auto`: for generation recipes with a `checker`.")
    checker: str | None = Field(None, description="The checker: `smollm2` (built in: SmolLM2 reads each output with and without its source; a logistic regression fitted on human labels combines the token log-probabilities with transparent checks), or a checker file written by `python bench/faithfulness.py --fit-out FILE` (relative to the recipe file; to the cwd when given as an override).")
    source_field: str | None = Field(None, description="The data.prompt_template column that holds the source the output must be faithful to. null: the template's last column; the whole prompt without a template.")
    threshold: float | Literal["auto"] = Field("auto", description="A sentence (or summary) whose checker probability of `unfaithful` is at or above this is flagged. `auto`: the checker file's cut for the chosen `unit`, the one with the highest balanced accuracy on out-of-fold predictions for its training documents.")

    @field_validator("threshold")
    @classmethod
    def _threshold_in_range(cls, v: float | str) -> float | str:
        if v != "auto" and not 0 < v < 1:
            raise ValueError("must be `auto` or a probability strictly between 0 and 1")
        return v
    unit: Literal["sentence", "summary"] = Field("sentence", description="`sentence`: each output sentence gets its own score (its tokens read after the source and the sentences before it) and the output is flagged when any sentence is; `summary`: the whole output is scored at once.")
    transparent_checks: bool = Field(True, description="Also flag an output that states a number (in digits) its source never mentions; number words, names and dates the source lacks are shown, not flagged.")
    batch_size: int = Field(8, ge=1, le=4096, description="Outputs of one source per LM forward pass (they share the source's KV cache).")

    @model_validator(mode="before")
    @classmethod
    def _drop_retired_keys(cls, data):
        # `evidence_chars` fed the retired MiniLM checker; recipes saved in older run directories still carry it.
        if isinstance(data, dict) and "evidence_chars" in data:
            data = {k: v for k, v in data.items() if k != "evidence_chars"}
        return data


class EvaluateConfig(_Strict):
    """How the fine-tuned model is scored."""

    bootstrap_samples: int = Field(1000, ge=100, le=100_000, description="Bootstrap resamples for confidence intervals and paired tests.")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="Confidence level of the intervals.")
    baselines: list[Literal["majority", "tfidf_logreg", "base_model"]] | None = Field(None, description="Baselines compared paired against the fine-tuned model. null: [majority, tfidf_logreg] for classification (trained on the same train split), [base_model] (the base model zero-shot on the same prompts) for generation and chat.")
    baseline_max_rows: int = Field(100_000, ge=100, description="Classification: fit the majority and tfidf_logreg baselines on at most this many training rows, a seeded sample beyond (read a line at a time, so a train split larger than memory is never held); the card then says `fitted on N of M`. TF-IDF features take about 2 KB per 60-character row.")
    calibration_bins: int = Field(15, ge=2, le=100, description="Equal-width confidence bins for ECE and the reliability diagram.")
    metrics: list[Literal["bleu", "chrf", "rouge", "exact_match", "length_ratio"]] = Field(default_factory=lambda: ["bleu", "chrf", "rouge", "exact_match", "length_ratio"], description="Generation and chat: text metrics, each with a bootstrap CI (BLEU and chrF by sacrebleu, ROUGE-1/2/L by rouge-score).")
    max_new_tokens: int = Field(128, ge=1, le=8192, description="Generation and chat: most tokens generated per prompt.")
    do_sample: bool = Field(False, description="Generation and chat: sample instead of greedy decoding.")
    temperature: float = Field(1.0, gt=0, le=10, description="Sampling temperature (with do_sample).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass (with do_sample).")
    generation_batch_size: int = Field(16, ge=1, le=1024, description="Prompts generated together (left-padded, KV cache).")
    max_examples: int | None = Field(None, ge=1, description="Score only the first N test rows (null: all); the card states the number used.")
    faithfulness: FaithfulnessConfig = Field(default_factory=FaithfulnessConfig, description="Generation: the faithfulness checker's scores of each output against its source.")
    min_slice_size: int = Field(30, ge=2, le=100_000, description="Slices: a group (one value of a data.slice_fields column) with fewer test rows than this is listed as too small to judge and left out of the field's largest gap, whose interval it would only widen.")

    def baselines_for(self, task: str) -> list[str]:
        if self.baselines is not None:
            return list(self.baselines)
        from tunewise.tasks import task_for

        return task_for(task).default_baselines()


AUDIT_CHECKS = ("duplicate", "near_duplicate", "leak", "label_conflict", "label_noise", "imbalance", "length",
                "empty", "pii", "license", "provenance")


class AuditConfig(_Strict):
    """The data audit that runs before training: what is checked, how severe each finding is, what is allowed."""

    enabled: bool = Field(True, description="Run the audit before training (`tunewise run` stops on blocking findings).")
    near_duplicate_threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity of two texts' word shingles (for short texts, or of their character 3-grams) at or above which they are near-duplicates; MinHash LSH finds the candidate pairs, each is then verified exactly.")
    shingle_words: int | None = Field(None, ge=1, le=10, description="Words per near-duplicate shingle. null: 1 when train's median text has at most 30 words (a one-word edit keeps short texts near 0.8), else 3.")
    leak_ngram: int = Field(13, ge=3, le=64, description="Generation and chat: an eval target or prompt sharing a word n-gram of this length with train counts as leaked.")
    label_noise: bool = Field(True, description="Classification: flag label-noise candidates by confident learning (cleanlab) on out-of-fold probabilities of a TF-IDF model.")
    imbalance_ratio: float = Field(10.0, gt=1, description="Flag classes whose count is below the largest class's count divided by this.")
    redact_pii: bool = Field(False, description="Also write audit/redacted/<split>.jsonl with PII replaced by placeholders.")
    severity: dict[str, Literal["info", "warning", "blocking"]] = Field(default_factory=dict, description=f"Severity per check, overriding the defaults for every finding of that check (blocking by default: an exact copy of a train row in test, PII in a file not declared to hold personal data, a licence that forbids the intended use). Checks: {', '.join(AUDIT_CHECKS)}.")
    missing_license: Literal["warning", "blocking"] = Field("warning", description="Severity of a data source with no declared licence.")
    allow: list[str] = Field(default_factory=list, description="Checks whose blocking findings are accepted for this run; each override is recorded in the cards.")

    @field_validator("severity", "allow")
    @classmethod
    def _known_checks(cls, v: Any) -> Any:
        names = list(v)
        unknown = [n for n in names if n not in AUDIT_CHECKS]
        if unknown:
            hints = [f"{n} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(n, AUDIT_CHECKS, n=1)) else n
                     for n in unknown]
            raise ValueError(f"names unknown audit checks: {', '.join(hints)}; known checks: {', '.join(AUDIT_CHECKS)}")
        return v


class CostConfig(_Strict):
    """The assumptions behind the card's energy, CO2 and money estimate of training (stated on the card)."""

    watts_per_cpu_core: float = Field(10.0, ge=0, le=1000, description="Average power drawn per CPU core in use while training, in watts (a server core draws roughly 5-15 W under load).")
    watts_per_gpu: float = Field(300.0, ge=0, le=5000, description="Average power drawn per GPU while training, in watts (the board power of a data-centre GPU is 250-700 W).")
    pue: float = Field(1.0, ge=1.0, le=5.0, description="Power usage effectiveness of the machine room (1.0: the device's own draw only; data centres report 1.1-1.6).")
    grid_gco2_per_kwh: float = Field(475.0, ge=0, le=2000, description="Carbon intensity of the electricity, in grams of CO2-equivalent per kWh (475: the IEA's world average; use your grid's figure).")
    price_per_core_hour: float = Field(0.05, ge=0, description="What one CPU core costs per hour (cloud on-demand vCPU prices are about 0.03-0.06).")
    price_per_gpu_hour: float = Field(2.5, ge=0, description="What one GPU costs per hour.")
    currency: str = Field("USD", min_length=1, max_length=8, description="The currency of the prices.")


class CardConfig(_Strict):
    """Metadata for the model card."""

    model_name: str | None = Field(None, description="Name shown on the card; defaults to the recipe name.")
    language: list[str] = Field(default_factory=lambda: ["en"], description="ISO 639-1 codes of the data's languages.")
    license: str = Field("auto", min_length=1, description="Licence of the fine-tuned model weights (a Hugging Face licence id). `auto`: the first non-commercial data licence carries over (its hub id, or `other`), else apache-2.0. A licence that allows commercial use is refused when a data file's licence forbids it.")
    intended_use: str = Field("", description="What the model is for, and for whom.")
    out_of_scope_use: str = Field("", description="Uses the model is not meant for.")
    limitations: list[str] = Field(default_factory=list, description="Known limitations, one per item.")
    authors: str | None = Field(None, description="Who trained and maintains the model.")
    task_type: Literal["text-generation", "summarization", "translation", "question-answering"] | None = Field(None, description="Generation and chat: the Hugging Face task type of the card's model-index results. null: text-generation.")
    cost: CostConfig = Field(default_factory=CostConfig, description="Assumptions of the training-cost estimate (energy, CO2, money) on the card.")


class GateConfig(_Strict):
    """The release gate: rules the run's evidence must meet. Each rule set here is checked by the gate stage
    (gate/gate.json); a rule whose evidence the run lacks fails, naming what is missing. `tunewise run` exits 3 when
    a rule fails; `tunewise gate RUN gate.key=value` re-checks a finished run against changed rules. Empty: no rules."""

    metrics: dict[str, float] = Field(default_factory=dict, description="Metric name -> the value the lower bound of the fine-tuned model's confidence interval (evaluate.confidence) must reach, e.g. `{accuracy: 0.85}` or `{rougeL: 0.3}`.")
    beat_baselines: list[Literal["majority", "tfidf_logreg", "base_model"]] = Field(default_factory=list, description="Baselines the fine-tuned model must beat on `baseline_metric`: a positive difference with paired-bootstrap p < alpha.")
    baseline_metric: str | None = Field(None, description="The metric of beat_baselines' paired tests. null: the task's first headline metric (accuracy; rougeL for generation and chat).")
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level of beat_baselines' paired tests.")
    max_slice_gap: float | None = Field(None, ge=0, description="The upper CI bound of the largest gap between slice groups (data.slice_fields), per field and per slice metric, must not exceed this; on the 0-1 scale (chrF gaps are divided by 100). Needs data.slice_fields.")
    max_flip_rate: float | None = Field(None, ge=0, le=1, description="Classifiers: each identity-term family's counterfactual flip rate (probes/probes.json) must not exceed this. Needs the probes stage.")
    crows_pairs_band: tuple[float, float] | None = Field(None, description="Causal LMs: the fine-tuned model's CrowS-Pairs stereotype preference (0.5 is ideal) must lie in [low, high]. Needs the probes stage.")
    no_blocking_findings: bool = Field(False, description="The data audit (audit/findings.json) must have no blocking finding, except those audit.allow accepts and `accepted_findings` gives a reason for.")
    accepted_findings: dict[str, str] = Field(default_factory=dict, description=f"Audit check -> why its blocking findings, accepted by audit.allow, are acceptable for release; with no_blocking_findings, an accepted finding without a reason fails the gate. Checks: {', '.join(AUDIT_CHECKS)}.")
    max_p99_ms: float | None = Field(None, gt=0, description="Serving: the p99 latency of /v1/classify at `p99_clients` concurrent clients, from the serving benchmark (servebench/bench.json, `tunewise serve-bench RUN`), must not exceed this many milliseconds; a level with failed requests fails. null: no latency rule.")
    p99_clients: int = Field(32, ge=1, description="Serving: the concurrency level max_p99_ms is judged at; the benchmark must have measured it (`tunewise serve-bench RUN --clients 1,8,32`).")
    min_guard_detection: float | None = Field(None, ge=0, le=1, description="Serving: the injection guard the benchmark served with (serve.guard.run) must detect at least this share of its untouched test split's injections at `guard_fpr`, judged on the lower CI bound (copied from the guard run's guard/guard.json into servebench/bench.json). null: no guard rule.")
    guard_fpr: float | None = Field(None, gt=0, lt=0.5, description="Serving: the false-positive rate min_guard_detection is read at; must be one of the guard's reported operating points (guard.report_fprs or its target_fpr). null: the guard's serving target_fpr.")
    serving_evidence: Literal["block", "skip"] = Field("block", description="Serving rules set but no serving benchmark in the run (or one of another model): `block` fails the rule, naming the command that measures it; `skip` passes it as not measured, with the reason in gate.json and the card (for a run not meant to be served by tunewise).")

    @field_validator("crows_pairs_band")
    @classmethod
    def _band(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0.0 <= v[0] <= v[1] <= 1.0:
            raise ValueError("must be [low, high] with 0 <= low <= high <= 1, e.g. [0.4, 0.6]")
        return v

    @field_validator("accepted_findings")
    @classmethod
    def _reasons(cls, v: dict[str, str]) -> dict[str, str]:
        AuditConfig._known_checks(list(v))
        empty = [check for check, reason in v.items() if not str(reason).strip()]
        if empty:
            raise ValueError(f"gives no reason for {', '.join(empty)}; write why the finding is acceptable")
        return v

    def rules_set(self) -> bool:
        return bool(self.metrics or self.beat_baselines or self.max_slice_gap is not None
                    or self.max_flip_rate is not None or self.crows_pairs_band is not None
                    or self.no_blocking_findings or self.max_p99_ms is not None
                    or self.min_guard_detection is not None)


class HumanEvalConfig(_Strict):
    """Human evaluation in the browser (`tunewise human-eval RUN`): what annotators rate and how. The command's
    flags override these; not part of the run id (another study of the same run is the same run)."""

    mode: Literal["pairwise", "likert"] = Field("pairwise", description="`pairwise`: the fine-tuned output against the other side's (base model or another run) on the same prompt, blind, sides randomised per item and annotator: A, B or tie. `likert`: each output alone, blind, scored 1-5 on `criteria`.")
    n: int = Field(60, ge=1, le=10_000, description="Test rows sampled (seeded) from eval/predictions*.jsonl. Likert mode rates both outputs of each row, one at a time, so it makes 2n items.")
    criteria: list[str] = Field(default_factory=lambda: ["faithful", "fluent", "helpful"], min_length=1, description="Likert mode: the criteria each output is scored on, 1 (worst) to 5 (best).")
    overlap: float = Field(0.25, ge=0.0, le=1.0, description="Share of the sampled test rows whose items every annotator rates, first (for agreement: Cohen's kappa for two annotators, Krippendorff's alpha for more); each of the other items goes to one annotator, first come first served.")

    @field_validator("criteria")
    @classmethod
    def _criteria_names(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if not c.strip() or len(c) > 40]
        if bad or len(set(v)) != len(v):
            raise ValueError("must be distinct, non-empty names of at most 40 characters, e.g. [faithful, fluent]")
        return v


class MonitorConfig(_Strict):
    """Monitoring (the reference stage after training, and `tunewise monitor RUN --log ...`). `tunewise monitor RUN
    monitor.key=value` overrides these for one monitor run."""

    reference_max_rows: int = Field(2000, ge=20, le=1_000_000, description="Reference: profile at most this many rows of the test split (a seeded sample beyond).")
    embedding_sample: int = Field(500, ge=20, le=100_000, description="Reference: rows embedded with the built-in MiniLM for the domain-classifier drift test.")
    vocab_size: int = Field(30000, ge=100, le=1_000_000, description="Reference: most frequent training words kept as the vocabulary for out-of-vocabulary rates.")
    window: str = Field("500", pattern=r"^\s*(\d+|\d+\s*(s|sec|m|min|h|d|w))\s*$", description="Rows per window (e.g. `500`) or a duration of logged time (`30min`, `1h`, `1d`, `1w`; needs timestamps). `--window` overrides it.")
    min_window_rows: int = Field(50, ge=5, description="Windows with fewer rows (a short last window) are reported but not tested.")
    window_embedding_sample: int = Field(100, ge=10, le=10_000, description="Rows per window embedded for the domain classifier (a seeded reservoir sample): embedding every row would cost more than the rest of the monitor.")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="Family-wise false-alarm rate of one monitor run: Holm's correction over every test of every window.")
    permutations: int = Field(200, ge=50, le=10_000, description="Random reference splits that calibrate the null distribution of the domain classifier's AUC.")
    psi_bins: int = Field(10, ge=2, le=100, description="Reference-quantile bins of the population stability index.")
    examples_per_window: int = Field(5, ge=0, le=50, description="Texts of each alerting window shown in the report.")
    chunk_rows: int = Field(2048, ge=64, le=1_000_000, description="Rows read from the log at a time (memory stays bounded whatever the log's size).")


LogPolicy = Literal["plain", "redact", "hash", "omit"]


class RedactionPolicy(_Strict):
    """PII handling for one serving endpoint (detectors: tunewise.safety.pii, the same as the data audit's)."""

    model_input: Literal["keep", "redact"] = Field("keep", description="`redact`: the model sees the input with PII replaced by placeholders ([EMAIL], [CARD], ...); `keep`: the input as sent.")
    response: Literal["keep", "redact"] = Field("redact", description="Generated text returned to the client (chat and completions): `redact` replaces PII the model wrote by placeholders.")
    log_input: LogPolicy = Field("redact", description="How the prediction log stores the input: `plain`, `redact` (PII replaced by placeholders), `hash` (sha256 of the text only) or `omit` (null).")
    log_output: LogPolicy = Field("redact", description="How the prediction log stores generated text (as log_input). Labels and scores are always stored.")
    kinds: list[Literal["email", "iban", "card", "ssn", "ip", "phone"]] | None = Field(None, description="PII kinds redacted; null: all of them.")


class ServeRedaction(_Strict):
    """PII redaction per endpoint."""

    classify: RedactionPolicy = Field(default_factory=RedactionPolicy, description="POST /v1/classify.")
    guard: RedactionPolicy = Field(default_factory=RedactionPolicy, description="POST /v1/guard.")
    chat: RedactionPolicy = Field(default_factory=RedactionPolicy, description="POST /v1/chat/completions.")
    completions: RedactionPolicy = Field(default_factory=RedactionPolicy, description="POST /v1/completions.")


class ServeGuardConfig(_Strict):
    """The prompt-injection guard in front of the endpoints (a tunewise run of examples/injection-guard.yaml)."""

    run: str | None = Field(None, description="The guard's run directory (verified at start-up). null: no guard; /v1/guard answers 501.")
    endpoints: list[Literal["classify", "chat", "completions"]] = Field(default_factory=lambda: ["chat", "completions"], description="Endpoints whose inputs are screened before the model sees them (classify is optional).")
    block: bool = Field(True, description="Refuse a flagged request with a 400 JSON body saying why; false: serve it and only log and count the verdict.")
    backend: Literal["torch", "onnx"] = Field("torch", description="`onnx`: run the guard with ONNX Runtime from its `tunewise export --onnx` folder.")


class ServeConfig(_Strict):
    """`tunewise serve RUN`: limits, micro-batching, the prediction log, redaction and the guard. Not part of the
    run id; `tunewise serve RUN serve.key=value` overrides a key for one deployment."""

    max_body_bytes: int = Field(1_048_576, ge=1024, le=1 << 30, description="Largest request body accepted (1 MiB); a larger one gets 413.")
    rate_per_minute: float = Field(600.0, gt=0, description="Requests per minute allowed per API key (token bucket, per server process); over it: 429 with Retry-After.")
    rate_burst: int = Field(60, ge=1, description="Requests a key may send at once before the per-minute rate applies.")
    queue_size: int = Field(256, ge=1, description="Requests waiting per endpoint; a request beyond it gets 503 at once instead of using up memory.")
    request_timeout_s: float = Field(30.0, gt=0, le=3600, description="Time limit of one request, from arrival to response (streams: to the first token); past it: 504.")
    max_batch_requests: int = Field(32, ge=1, le=4096, description="Micro-batching: most requests gathered into one model call.")
    max_batch_wait_ms: float = Field(5.0, ge=0, le=10_000, description="Micro-batching: how long the first waiting request waits for others before its batch runs.")
    batch_workers: int | None = Field(None, ge=1, le=256, description="Micro-batches of /v1/classify run at once. null: one per CPU but one for the ONNX backend (each run single-threaded; the spare CPU serves HTTP and the log), 1 for torch (which threads each run itself).")
    max_inputs_per_request: int = Field(256, ge=1, le=100_000, description="Most texts in one /v1/classify or /v1/guard request.")
    backend: Literal["auto", "torch", "onnx"] = Field("auto", description="Classifiers: `onnx` runs the model with ONNX Runtime from the run's `tunewise export RUN --onnx [--int8]` folder (export/onnx/); `torch` runs model/ as evaluated; `auto` serves ONNX when that folder exists and its recorded test accuracy change against torch (export/ONNX.json) is no worse than -onnx_max_accuracy_drop, else torch. The server prints and serve/serve.json records which, with the change.")
    onnx_max_accuracy_drop: float = Field(0.01, ge=0, le=1, description="`backend: auto`: the largest test-accuracy drop of the ONNX model against torch (export/ONNX.json) for which auto serves ONNX.")
    log: str | None = Field(None, description="Prediction log as a SQLAlchemy URL (e.g. postgresql+psycopg://user@host/db). null: SQLite in WAL mode at RUN/logs/predictions.sqlite (outside the hashed stage folders: it is live state, not evidence).")
    model_name: str | None = Field(None, description="The model id clients send and /v1/models lists. null: card.model_name, else the recipe name.")
    redaction: ServeRedaction = Field(default_factory=ServeRedaction, description="PII redaction per endpoint.")
    guard: ServeGuardConfig = Field(default_factory=ServeGuardConfig, description="The prompt-injection guard.")


class GuardConfig(_Strict):
    """An injection-guard recipe (examples/injection-guard.yaml): a classifier of benign vs prompt-injection texts
    whose guard stage chooses the serving threshold on validation and reports detection on test."""

    enabled: bool = Field(False, description="This recipe trains a prompt-injection guard: `tunewise run` adds the guard stage, which chooses the decision threshold on the validation split for `target_fpr` (counting the rules' false positives) and reports the detection rate at each of `report_fprs` on the test split, with CIs, in guard/guard.json and the card. Needs task classification and a validation split.")
    positive_label: str = Field("1", min_length=1, description="The label that means prompt injection (the data's other labels count as benign).")
    target_fpr: float = Field(0.05, gt=0, lt=0.5, description="False-positive rate on benign validation texts that the serving threshold is chosen for.")
    report_fprs: list[float] = Field(default_factory=lambda: [0.01, 0.05], min_length=1, description="FPRs at which the card reports the detection rate on test, each with its own threshold chosen on validation.")
    rules: bool = Field(True, description="Combine the classifier with the transparent rules of tunewise.safety.rules (English and German): a rule firing flags the text.")
    benign_eval: list[DataFile] = Field(default_factory=list, description="Benign text files (jsonl, read by data.text_field) kept entirely out of training and threshold choice: the guard stage reports the false-positive rate on each, at the serving threshold, with a Wilson CI (out-of-distribution benign text: the FPR users of the guard will see on traffic unlike the training data). Paths are relative to the recipe file.")

    @field_validator("report_fprs")
    @classmethod
    def _fprs_in_range(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if not 0 < x < 0.5]
        if bad:
            raise ValueError(f"must lie between 0 and 0.5 (exclusive); got {bad}")
        return sorted(set(v))


PROBE_FAMILIES = ("gender", "names", "nationality", "religion", "age")
NOISE_KINDS = ("typos", "casing", "punctuation", "whitespace")


class NoiseRates(_Strict):
    """How much of each text the robustness probes disturb (fixed, seeded by recipe.seed)."""

    typos: float = Field(0.1, ge=0, le=1, description="Share of words of 3+ letters given one typo (a dropped, doubled, swapped or neighbouring-key letter).")
    casing: float = Field(0.2, ge=0, le=1, description="Share of words whose case is changed (to lower, UPPER or Title case).")
    punctuation: float = Field(0.5, ge=0, le=1, description="Share of punctuation marks dropped; a stray mark (. , ! ?) follows a word at a fifth of this rate.")
    whitespace: float = Field(0.1, ge=0, le=1, description="Share of spaces removed (words run together) or doubled.")


class ProbesConfig(_Strict):
    """Bias and robustness probes on the test split (the probes stage, after evaluate): counterfactual
    identity-term swaps and noise for classifiers, CrowS-Pairs for causal LMs. Intervals use evaluate.confidence
    and evaluate.bootstrap_samples; everything random is seeded by recipe.seed."""

    enabled: bool = Field(True, description="Run the probes stage in `tunewise run`.")
    families: list[Literal["gender", "names", "nationality", "religion", "age"]] = Field(default_factory=lambda: list(PROBE_FAMILIES), description="Classifiers: identity-term families swapped in the test texts (term lists with their sources in tunewise/kit/terms/). Texts that mention no term of a family do not count for it.")
    robustness: list[Literal["typos", "casing", "punctuation", "whitespace"]] = Field(default_factory=lambda: list(NOISE_KINDS), description="Noise kinds whose metric drop is measured (paired, on the same texts).")
    noise_rates: NoiseRates = Field(default_factory=NoiseRates, description="The rate of each noise kind.")
    max_texts: int | None = Field(2000, ge=10, description="Classifiers: probe a seeded random sample of this many test rows (null: all).")
    generation_max_texts: int = Field(0, ge=0, le=10_000, description="Generation and chat: robustness regenerates the replies to noisy prompts for the first N test rows and compares sentence chrF with the clean prompts' replies; 0 (default) leaves robustness off for causal LMs, since each noise kind costs a generation pass.")
    top_flips: int = Field(10, ge=0, le=100, description="Classifiers: the texts whose predictions flip most, listed per family.")
    crows_pairs: bool | None = Field(None, description="Causal LMs: score CrowS-Pairs (stereotype preference by sentence log-likelihood) for the base and the fine-tuned model. null: on when the dataset is found at crows_pairs_path; true: a missing dataset is an error.")
    crows_pairs_path: str = Field("../shared/data/crows_pairs", min_length=1, description="Folder holding crows_pairs_anonymized.csv (or the CSV itself). Relative paths: to the recipe file when written there, else to the working directory, then to the tunewise checkout.")
    crows_pairs_max_pairs: int | None = Field(None, ge=10, description="Score only the first N pairs (null: all 1,508).")
    batch_size: int = Field(64, ge=1, le=4096, description="Texts per forward pass for the probes' scoring.")


class Recipe(_Strict):
    """A tunewise recipe: everything one run needs."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Run name; the run directory is runs/<name>-<id>.")
    task: Literal["classification", "generation", "chat"] = Field("classification", description="What is learned. `classification`: text -> label (encoder). `generation`: prompt -> completion (causal LM, loss on the completion). `chat`: OpenAI-style messages (causal LM, loss on assistant turns).")
    intended_use: Literal["unspecified", "research", "internal", "commercial"] = Field("unspecified", description="Use category checked against each data source's licence by the audit: a commercial use of NC or research-only data is blocking.")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Seeds every random choice: splits, initialisation, shuffling, bootstrap.")
    output_dir: str = Field("runs", description="Folder that holds run directories.")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    card: CardConfig = Field(default_factory=CardConfig)
    gate: GateConfig = Field(default_factory=GateConfig, description="Release-gate rules (not part of the run id: changing them re-judges the same run).")
    monitor: MonitorConfig = Field(default_factory=MonitorConfig, description="The reference profile and drift monitoring of the deployed model.")
    humaneval: HumanEvalConfig = Field(default_factory=HumanEvalConfig, description="Human evaluation settings (`tunewise human-eval`; not part of the run id).")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="Serving settings (`tunewise serve RUN`; not part of the run id).")
    guard: GuardConfig = Field(default_factory=GuardConfig, description="Injection-guard recipes only: the threshold and the detection report (see examples/injection-guard.yaml).")
    probes: ProbesConfig = Field(default_factory=ProbesConfig, description="Bias and robustness probes (counterfactual swaps, noise, CrowS-Pairs).")

    @model_validator(mode="after")
    def _fits_task(self) -> "Recipe":
        from tunewise.tasks import task_for

        task = task_for(self.task)
        wrong = [b for b in self.evaluate.baselines_for(self.task) if b not in task.baseline_choices]
        if wrong:
            raise ValueError(f"evaluate.baselines {wrong} do not apply to task '{self.task}'; allowed: "
                             f"{', '.join(task.baseline_choices)}")
        check_model_licence(self)
        if self.data.text_pair_field is not None and task.family != "classifier":
            raise ValueError(f"data.text_pair_field applies to classification only; task '{self.task}' reads "
                             f"its input through data.prompt_field or data.prompt_template")
        if task.family == "classifier":
            # the encoder trainer has no use for these; a recipe that sets them would otherwise run without them
            causal_only = {"train.packing": self.train.packing is True,
                           "train.gradient_checkpointing": self.train.gradient_checkpointing is True,
                           "train.compile": self.train.compile is True,
                           "train.micro_batch_tokens": self.train.micro_batch_tokens is not None}
            set_here = [name for name, is_set in causal_only.items() if is_set]
            if set_here:
                raise ValueError(f"{', '.join(set_here)} apply to causal LMs (task generation or chat) only; task "
                                 f"'{self.task}' trains an encoder without them: remove "
                                 f"{'it' if len(set_here) == 1 else 'them'} from the recipe")
        if not task.has_labels and self.train.metric_for_best_model in ("accuracy", "macro_f1"):
            raise ValueError(f"train.metric_for_best_model '{self.train.metric_for_best_model}' needs labels; "
                             f"task '{self.task}' picks its best checkpoint by validation `loss` (or `auto`)")
        return self

    def best_metric(self) -> str:
        m = self.train.metric_for_best_model
        if m != "auto":
            return m
        from tunewise.tasks import task_for

        return task_for(self.task).best_metric()

    def fingerprint(self) -> str:
        """Short hash of the resolved recipe: the run id. It does not depend on where the checkout sits: a local
        data file counts by its name and its content's sha256 (so changed data is a new run), a local base model
        by its name (its weights are the train stage's hashed inputs), and output_dir is left out."""
        payload = self.model_dump(mode="json", exclude={"output_dir", "gate", "humaneval", "serve"})  # these judge a run, not part of it
        for split in ("train", "validation", "test"):
            data_file = payload["data"][split]
            if data_file is not None and not data_file["path"].startswith("hf:"):
                data_file["path"] = content_key(data_file["path"])
        if Path(self.model.base).is_absolute():
            payload["model"]["base"] = Path(self.model.base).name
        payload["probes"]["crows_pairs_path"] = Path(self.probes.crows_pairs_path).name  # its CSV is a hashed input
        if self.evaluate.faithfulness.checker is not None:  # its file is the faithfulness stage's hashed input
            payload["evaluate"]["faithfulness"]["checker"] = Path(self.evaluate.faithfulness.checker).name
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:8]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def template_fields(template: str) -> list[str]:
    """The column names a prompt template reads, in order; ValueError naming the problem when it is malformed."""
    import string

    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"is not a valid format string ({exc}); write columns as {{name}} and literal braces "
                         f"as {{{{ and }}}}") from None
    names = []
    for _, name, _, _ in parsed:
        if name is None:
            continue
        if not name or not name.isidentifier():
            raise ValueError(f"has the placeholder {{{name}}}; expected column names such as {{dialogue}} "
                             f"(positional {{}} and attribute/index access are not allowed)")
        names.append(name)
    if not names:
        raise ValueError("names no column; expected at least one placeholder such as {text}")
    return list(dict.fromkeys(names))


def content_key(path: str) -> str:
    """`name#sha256=...` of a local file, location-free; `name#missing` when it does not exist (yet)."""
    p = Path(path)
    try:
        stat = p.stat()
    except OSError:
        return f"{p.name}#missing"
    return f"{p.name}#sha256={_sha256_of(str(p.resolve()), stat.st_size, stat.st_mtime_ns)}"


@functools.lru_cache(maxsize=256)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a changed file is hashed again
    from tunewise.rundir import sha256_file  # rundir imports this module

    return sha256_file(Path(path))


def check_model_licence(recipe: "Recipe") -> None:
    """Cross-field rule: the weights cannot be licensed more freely than their training data allows. `auto` is
    resolved here, so the resolved recipe (and the card) names the licence and the run id covers it."""
    from tunewise.licences import is_non_commercial, model_licence_for

    data = {split: f.license for split in ("train", "validation", "test") if (f := getattr(recipe.data, split))}
    if recipe.card.license == "auto":
        recipe.card.license = model_licence_for(data)[0]
        return
    restricted = {split: lic for split, lic in data.items() if is_non_commercial(lic)}
    if restricted and not is_non_commercial(recipe.card.license) and recipe.card.license not in ("other", "unknown"):
        split, lic = next(iter(restricted.items()))
        raise ValueError(f"card.license '{recipe.card.license}' would allow commercial use of weights trained on "
                         f"data.{split}, which is licensed {lic} (non-commercial); set card.license to a licence "
                         f"that carries the data's terms (e.g. `auto`, which picks "
                         f"'{model_licence_for(data)[0]}'), or to `other` and state the terms in the card")


def check_data_fields(data: DataConfig) -> None:
    """Cross-field rule: text, label and slice columns must be distinct."""
    names = [data.text_field, data.label_field, *data.slice_fields]
    if data.text_pair_field is not None:
        names.append(data.text_pair_field)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"text_field, text_pair_field, label_field and slice_fields must be distinct columns; "
                         f"repeated: {dupes}")


# ---------------------------------------------------------------- loading and overrides


def parse_override(item: str) -> tuple[str, Any, bool]:
    """`a.b=value` -> (path, parsed value, False); `~a.b` -> (path, None, True). Values are parsed as YAML."""
    delete = item.startswith("~")
    key, sep, raw = item[1:].partition("=") if delete else item.partition("=")
    if (delete and sep) or (not delete and not sep) or not key or any(not part for part in key.split(".")):
        raise RecipeError(f"override `{item}` must look like `section.key=value` (or `~section.key` to delete a key)")
    if delete:
        return key, None, True
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, (dict, list)) and not raw.lstrip().startswith(("{", "[")):
        value = raw  # `a.b=Summarize: {text}` is text; only a bracketed {..} or [..] is a mapping or a list
    return key, value, False


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Apply key=value overrides to the raw recipe dict. Returns the new dict and {dotted key: override text}."""
    out = copy.deepcopy(raw)
    origin: dict[str, str] = {}
    for item in overrides:
        key, value, delete = parse_override(item)
        parts = key.split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if isinstance(child, str) and parts[:i] == ["data"] and part in ("train", "validation", "test"):
                child = {"path": child}  # `data.train.license=X` on the `data.train: path` shorthand
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise RecipeError(f"override `{item}`: `{'.'.join(parts[: i + 1])}` is a value, not a section")
            node[part] = child
            node = child
        if delete:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value
        origin[key] = item
    return out, origin


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe, apply overrides, validate. Raises RecipeError listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
        raw = yaml.load(text, Loader=RecipeLoader)  # noqa: S506  # a SafeLoader that refuses repeated keys
        lines = key_lines(yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = " ".join(filter(None, [exc.context, exc.problem]))
        raise RecipeError(f"{where}: not valid YAML: {problem} (line {mark.line + 1 if mark else '?'}, "
                          f"column {mark.column + 1 if mark else '?'})") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping of sections (name, data, model, train, ...)")
    raw, origin = apply_overrides(raw, overrides or [])
    return validate_recipe(raw, source=str(path), origin=origin, base_dir=path.parent, lines=lines)


class RecipeLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key written twice in one mapping is an error: plain YAML keeps the last
    value silently, so a second `train:` section would erase the first."""


def _unique_mapping(loader: RecipeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            seen = key in first_line
        except TypeError:  # an unhashable key: construct_mapping reports it
            break
        if seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key `{key}` is written twice in one section (lines {first_line[key]} and "
                f"{key_node.start_mark.line + 1}); expected each key once (merge the two)", key_node.start_mark)
        first_line[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


RecipeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def key_lines(node: Any, prefix: str = "") -> dict[str, int]:
    """{dotted key: 1-based line} of every mapping key in a composed YAML document, for messages."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                dotted = f"{prefix}{key_node.value}"
                lines[dotted] = key_node.start_mark.line + 1
                lines.update(key_lines(value_node, dotted + "."))
    return lines


def validate_recipe(raw: dict[str, Any], *, source: str = "<recipe>", origin: dict[str, str] | None = None,
                    base_dir: Path | None = None, lines: dict[str, int] | None = None) -> Recipe:
    origin = origin or {}
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, raw, source, origin, lines)) from None
    if base_dir is not None:
        _resolve_paths(recipe, base_dir, origin)
    return recipe


def _resolve_paths(recipe: Recipe, base_dir: Path, origin: dict[str, str]) -> None:
    """Paths written in the recipe file are relative to it; paths given as overrides are relative to the cwd."""
    base = recipe.model.base
    if base.endswith(".gguf") and not Path(base).is_absolute():  # a local model file, like a data path
        from_cli = "model.base" in origin
        candidate = (Path.cwd() if from_cli else base_dir) / base
        if candidate.exists() or (Path.cwd() / base).exists():
            recipe.model.base = str((candidate if candidate.exists() else Path.cwd() / base).resolve())
    for split in ("train", "validation", "test"):
        f: DataFile | None = getattr(recipe.data, split)
        if f is None or f.path.startswith("hf:") or Path(f.path).is_absolute():
            continue
        from_cli = f"data.{split}" in origin or f"data.{split}.path" in origin
        candidate = (Path.cwd() if from_cli else base_dir) / f.path
        if not from_cli and not candidate.exists() and (Path.cwd() / f.path).exists():
            candidate = Path.cwd() / f.path
        f.path = str(candidate.resolve())
    for f in recipe.guard.benign_eval:  # like a data path, relative to the recipe file
        if not Path(f.path).is_absolute():
            f.path = str(((Path.cwd() if "guard.benign_eval" in origin else base_dir) / f.path).resolve())
    recipe.probes.crows_pairs_path = _resolve_crows_pairs(recipe, base_dir, origin)
    checker = recipe.evaluate.faithfulness.checker
    if checker is not None and Path(checker).suffix and not Path(checker).is_absolute():  # a file: like a data path
        from_cli = any(key.startswith("evaluate.faithfulness") or key == "evaluate" for key in origin)
        candidate = (Path.cwd() if from_cli else base_dir) / checker
        recipe.evaluate.faithfulness.checker = str(candidate.resolve())
    for key in ("fsdp_config", "deepspeed"):  # a JSON file named in the recipe, like a data path
        value = getattr(recipe.train, key)
        if isinstance(value, str) and not Path(value).is_absolute():
            from_cli = f"train.{key}" in origin or "train" in origin
            setattr(recipe.train, key, str(((Path.cwd() if from_cli else base_dir) / value).resolve()))


def _resolve_crows_pairs(recipe: Recipe, base_dir: Path, origin: dict[str, str]) -> str:
    """probes.crows_pairs_path: relative to the recipe file when written there, to the cwd when given as an
    override or left at its default; the default falls back to the tunewise checkout (../shared beside it).
    Kept as written when no candidate exists (the probes stage then reports it missing)."""
    path = Path(recipe.probes.crows_pairs_path)
    if path.is_absolute():
        return str(path)
    from_cli = "probes.crows_pairs_path" in origin or "probes" in origin
    in_file = "crows_pairs_path" in recipe.probes.model_fields_set and not from_cli
    checkout = Path(__file__).resolve().parents[2]
    candidates = [base_dir / path] if in_file else [Path.cwd() / path, checkout / path]
    return next((str(c.resolve()) for c in candidates if c.exists()), str(path))


def _field_info(loc: tuple[Any, ...]) -> tuple[str | None, list[str]]:
    """Description and sibling field names for a location in the schema (for messages and suggestions)."""
    model: Any = Recipe
    info = None
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or not isinstance(part, str):
            break
        fields = model.model_fields
        if part not in fields:
            return None, list(fields)
        info = fields[part]
        ann = info.annotation
        args = getattr(ann, "__args__", ())
        model = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return (info.description if info else None), []


_VALIDATOR_TAG = re.compile(r"[a-z][a-z-]*\[.*\]")  # e.g. function-after[_fits_task(), Recipe]


def format_validation_error(exc: ValidationError, raw: dict[str, Any], source: str, origin: dict[str, str],
                            key_line: dict[str, int] | None = None) -> str:
    lines = [f"{source}: the recipe has {exc.error_count()} problem(s):"]
    for err in exc.errors():
        # drop pydantic's validator tags such as 'function-after[...]' so the key reads as written
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and _VALIDATOR_TAG.fullmatch(p)))
        if err["type"] == "extra_forbidden" and err["loc"]:  # keep the unknown key itself, even `a[b]`
            loc = tuple(p for p in err["loc"][:-1] if not (isinstance(p, str) and _VALIDATOR_TAG.fullmatch(p)))
            loc += (err["loc"][-1],)
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        where = _blame(loc, origin, source)
        line = _line_of(loc, key_line or {}) if where == source else None
        at = f" (line {line})" if line else ""  # the key's line, or that of the section it is missing from
        if err["type"] == "extra_forbidden":
            _, siblings = _field_info(loc)
            hint = difflib.get_close_matches(str(loc[-1]), siblings, n=1)
            allowed = f"; did you mean `{'.'.join(map(str, loc[:-1] + (hint[0],)))}`?" if hint else (
                f"; allowed keys here: {', '.join(siblings)}" if siblings else "")
            lines.append(f"  - `{dotted}` is not a recipe field (from {where}){allowed}{at}")
            continue
        if err["type"] == "missing":
            desc, _ = _field_info(loc)
            lines.append(f"  - `{dotted}` is required (from {where})" + (f": {desc}" if desc else "") + at)
            continue
        got = err.get("input")
        msg = _lower_first(err["msg"].removeprefix("Value error, "))
        shown = "" if isinstance(got, dict) else f"; got {got!r}"  # a whole section is noise, the message names the keys
        lines.append(f"  - `{dotted}` {msg}{shown} (from {where}){at}")
    return "\n".join(lines)


def _line_of(loc: tuple[Any, ...], key_line: dict[str, int]) -> int | None:
    """The line of the key at loc in the recipe file, or of the nearest section above it that is written there."""
    for n in range(len(loc), 0, -1):
        line = key_line.get(".".join(str(p) for p in loc[:n]))
        if line:
            return line
    return None


def _blame(loc: tuple[Any, ...], origin: dict[str, str], source: str) -> str:
    """The override that set this key or a section above it (`data.train=x` sets `data.train.path`), else the file."""
    for n in range(len(loc), 0, -1):
        key = ".".join(str(p) for p in loc[:n])
        if key in origin:
            return f"override `{origin[key]}`"
    below = [item for key, item in origin.items() if key.startswith(".".join(map(str, loc)) + ".")] if loc else []
    return f"override `{below[0]}`" if below else source


def _lower_first(s: str) -> str:
    s = s.replace("Input should be", "must be").replace("input should be", "must be")
    return s[:1].lower() + s[1:]


def recipe_reference() -> str:
    """Markdown table of every recipe field, generated from the schema (used by the README and `--help`)."""
    rows = ["| key | type | default | description |", "|---|---|---|---|"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            ann = info.annotation
            nested = next((a for a in (ann, *getattr(ann, "__args__", ())) if isinstance(a, type) and issubclass(a, BaseModel)), None)
            if nested is not None and nested is not DataFile:
                walk(nested, f"{prefix}{name}.")
                continue
            default = "required" if info.is_required() else (
                repr(info.default_factory()) if info.default_factory else repr(info.default))
            type_name = ann.__name__ if isinstance(ann, type) else str(ann).replace("typing.", "").replace("tunewise.recipe.", "")
            cells = [f"`{prefix}{name}`", f"`{type_name}`", f"`{default}`", info.description or ""]
            rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")

    walk(Recipe, "")
    return "\n".join(rows)
