"""ONNX Runtime backend for encoder classifiers (shared ground): export a fine-tuned classifier folder to ONNX,
optionally with int8 weights, and run it without torch.

    export_onnx(run / "model", run / "export" / "onnx", int8=True)     # `tunewise export RUN --onnx --int8`
    OnnxClassifier(run / "export" / "onnx").predict_proba(["text", ...])  # (n, labels) probabilities

The graph is exported by torch.onnx (the dynamo exporter) with the batch and sequence axes dynamic, so any batch
of any length runs; int8 is onnxruntime.quantization.quantize_dynamic (int8 weights with per-channel scales,
activations quantized on the fly), which suits CPU serving. The folder holds model.onnx, the tokenizer and
config.json (labels), so it serves on its own. Nothing heavy is imported at module level.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tunewise.errors import ModelError

if TYPE_CHECKING:
    import numpy as np

MODEL_FILE = "model.onnx"
OPSET = 18
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "config.json")


@dataclass(frozen=True)
class OnnxExport:
    """What export_onnx made."""

    folder: Path
    int8: bool
    opset: int
    inputs: list[str]
    labels: list[str]
    size_mb: float
    fused: bool = False   # attention, GELU and LayerNorm fused for ONNX Runtime's CPU kernels (FUSABLE_TYPES)


def cpu_threads() -> int:
    """The CPUs this process may run on (its affinity mask, which containers and taskset narrow), not the
    machine's count: oversubscribed ONNX Runtime threads spin against each other."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def export_onnx(model_dir: str | Path, out_dir: str | Path, *, int8: bool = False, opset: int = OPSET) -> OnnxExport:
    """Export the sequence classifier in `model_dir` (a tunewise model/ folder) to `out_dir`/model.onnx with
    dynamic batch and sequence axes, int8-quantized when asked. Copies the tokenizer and config beside it."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelError(f"{model_dir}: no config.json; ONNX export needs a fine-tuned classifier folder (model/)")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True).eval().float()
    if getattr(model.config, "is_decoder", False) or model.config.model_type in ("llama", "gpt2", "mistral", "qwen2"):
        raise ModelError(f"{model_dir}: ONNX export is for encoder classifiers; a causal LM serves from export/")
    inputs = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    example = tokenizer(["an example input to trace", "and a second, longer example input to trace it with"],
                        padding=True, return_tensors="pt")

    class Logits(torch.nn.Module):  # the tokenizer's inputs by name, logits out
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask=None, token_type_ids=None):
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            return self.inner(**{k: v for k, v in given.items() if k in inputs}).logits

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / MODEL_FILE
    fp32_path = out_dir / "model.fp32.onnx" if int8 else target
    fused = model.config.model_type in FUSABLE_TYPES and _export_fused(model_dir, inputs, example, fp32_path, opset)
    if not fused:
        batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
        # the exporter logs a warning per torchvision op it cannot register; none is used by an encoder classifier
        logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)  # the exporter's own deprecation notices
            warnings.simplefilter("ignore", category=UserWarning)    # e.g. "axis name batch will not be used"
            torch.onnx.export(Logits(model).eval(), (), str(fp32_path), kwargs={n: example[n] for n in inputs},
                              input_names=inputs, output_names=["logits"], opset_version=opset, dynamo=True,
                              external_data=False, dynamic_shapes={n: {0: batch, 1: sequence} for n in inputs},
                              verbose=False)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # per-channel scales with a 7-bit range: on the guard run this kept every test label and a mean probability
        # change of 0.005, where per-tensor scales flipped 3% of labels (bench/onnx.py measures it per run)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # quiet its "consider pre-processing" advice on the root logger
        try:
            import onnx

            # DefaultTensorType: shape inference cannot type the outputs of the fused contrib ops (Attention, ...)
            quantize_dynamic(str(fp32_path), str(target), weight_type=QuantType.QInt8, per_channel=True,
                             reduce_range=True, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        finally:
            root.setLevel(level)
        fp32_path.unlink()
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, out_dir / name)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    return OnnxExport(folder=out_dir, int8=int8, opset=min(opset, FUSED_OPSET) if fused else opset, inputs=inputs,
                      labels=labels,
                      size_mb=round(target.stat().st_size / 1e6, 1), fused=fused)


# Encoder families whose graphs ONNX Runtime's transformer optimizer fuses (onnxruntime.transformers, model_type
# "bert"): each layer's attention becomes one Attention op, its GELU one BiasGelu and the residual + LayerNorm one
# SkipLayerNormalization. Unfused, the attention's softmax, mask and transposes were about a third of an int8
# MiniLM's time on CPU; fused, it costs 10-20% less CPU per text (docs/benchmarks.md, serving CPU).
FUSABLE_TYPES = ("bert",)
FUSED_OPSET = 17  # the TorchScript exporter's tested range


def _export_fused(model_dir: Path, inputs: list[str], example, fp32_path: Path, opset: int) -> bool:  # noqa: ANN001
    """Export `model_dir` with eager attention through the TorchScript exporter (whose graph the optimizer's
    patterns match; the dynamo exporter's does not) and fuse it. False, with a warning, when any step fails or a
    layer's attention was not fused: the caller then exports the plain graph."""
    import torch
    from transformers import AutoModelForSequenceClassification

    raw = fp32_path.with_name("model.unfused.onnx")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True,
                                                                   attn_implementation="eager").eval().float()

        class Logits(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, *args):
                return self.inner(**dict(zip(inputs, args))).logits

        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
            torch.onnx.export(Logits(model), tuple(example[n] for n in inputs), str(raw), input_names=inputs,
                              output_names=["logits"], opset_version=min(opset, FUSED_OPSET), dynamo=False,
                              dynamic_axes={n: {0: "batch", 1: "sequence"} for n in inputs})
        from onnxruntime.transformers.optimizer import optimize_model

        config = model.config
        optimized = optimize_model(str(raw), model_type="bert", num_heads=config.num_attention_heads,
                                   hidden_size=config.hidden_size, opt_level=0)
        fused = optimized.get_fused_operator_statistics().get("Attention", 0)
        if fused != config.num_hidden_layers:
            raise ModelError(f"{fused} of {config.num_hidden_layers} attention layers fused")
        optimized.save_model_to_file(str(fp32_path))
        return True
    except Exception as exc:  # noqa: BLE001  # the plain export still works: say why, and use it
        logging.getLogger("tunewise.onnx").warning("ONNX attention fusion skipped (%s: %s); exporting the "
                                                  "unfused graph", type(exc).__name__, exc)
        fp32_path.unlink(missing_ok=True)
        return False
    finally:
        raw.unlink(missing_ok=True)


class OnnxClassifier:
    """A classifier run by ONNX Runtime from an export_onnx folder: `predict_proba(texts)` gives class
    probabilities in the order of `labels`, row i for texts[i]."""

    def __init__(self, folder: str | Path, *, max_length: int = 512, batch_size: int = 64,
                 threads: int | None = None, spinning: bool = False):
        import onnxruntime as ort
        from transformers import AutoConfig, AutoTokenizer

        self.folder = Path(folder)
        path = self.folder / MODEL_FILE
        if not path.is_file():
            raise ModelError(f"{path}: missing; build it with `tunewise export RUN --onnx`")
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        config = AutoConfig.from_pretrained(self.folder)
        self.labels = [config.id2label[i] for i in range(config.num_labels)]
        self.max_length = min(max_length, getattr(config, "max_position_embeddings", max_length))
        self.batch_size = batch_size
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or cpu_threads()
        options.inter_op_num_threads = 1
        # ONNX Runtime's pool threads busy-wait after each run by default, which buys a little latency on cores that
        # have nothing else to do. A server's cores do (the event loop, the log writer), and a micro-batched server
        # runs the model many times a second, so the spinning became most of its CPU time: one text at a time on
        # 2 threads, 18 CPU-ms per text spinning against 6 without (measured on a busy machine; bench/onnx_speed.py)
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._tokenizer_lock = threading.Lock()

    def predict_proba(self, texts: Sequence[str]) -> "np.ndarray":
        """Class probabilities, (len(texts), len(labels)); run in length buckets (`length_buckets`), scattered
        back by index."""
        import numpy as np

        texts = list(texts)
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        if not texts:
            return out
        with self._tokenizer_lock:  # a fast tokenizer is not safe to call from two threads at once
            ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        lengths = [len(x) for x in ids["input_ids"]]
        order = np.argsort(lengths, kind="stable")
        for lo, hi in length_buckets([lengths[i] for i in order], self.batch_size):
            idx = order[lo:hi]
            with self._tokenizer_lock:
                batch = self.tokenizer.pad({k: [ids[k][i] for i in idx] for k in self.input_names if k in ids},
                                           return_tensors="np")
            feed = {name: batch[name].astype(np.int64) for name in self.input_names}
            logits = self.session.run(None, feed)[0].astype(np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            probs = np.exp(logits)
            out[idx] = probs / probs.sum(axis=1, keepdims=True)
        return out


# One model run costs about RUN_OVERHEAD_TOKENS tokens' worth of compute on top of its padded tokens, and an
# encoder's cost per padded token barely falls with batch size on CPU (MiniLM int8, one thread: 0.6 ms per run
# plus 80 us per token from 1x8 to 32x64 tokens; docs/benchmarks.md, serving CPU). So padding is the waste that
# matters: a batch of texts of 10 to 68 tokens padded to 68 spends most of its time on padding.
RUN_OVERHEAD_TOKENS = 8


def length_buckets(sorted_lengths: Sequence[int], max_batch: int,
                   overhead: int = RUN_OVERHEAD_TOKENS) -> list[tuple[int, int]]:
    """Split texts sorted by token count into runs [lo, hi) of at most `max_batch` that minimise the padded
    tokens plus `overhead` per run (exact dynamic programme over the split points, O(n * max_batch))."""
    n = len(sorted_lengths)
    best = [0] + [0] * n                    # best[j]: least cost of the first j texts
    cut = [0] * (n + 1)                     # cut[j]: where the last run of that best split starts
    for j in range(1, n + 1):
        longest = sorted_lengths[j - 1]    # sorted: the last text of a run is its longest
        best_cost, best_i = None, 0
        for i in range(max(0, j - max_batch), j):
            cost = best[i] + overhead + (j - i) * longest
            if best_cost is None or cost < best_cost:
                best_cost, best_i = cost, i
        best[j], cut[j] = best_cost, best_i
    runs = []
    j = n
    while j > 0:
        runs.append((cut[j], j))
        j = cut[j]
    return runs[::-1]
