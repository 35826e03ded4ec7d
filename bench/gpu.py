"""GPU throughput: SmolLM2-135M full SFT and LoRA (tokens/s and MFU), and MiniLM classification (examples/s),
in bf16 autocast with SDPA attention (FlashAttention-2 where flash-attn is installed), optionally Liger kernels.

    python bench/gpu.py                  # full: writes bench/results/gpu.json and its block of docs/benchmarks.md
    python bench/gpu.py --quick          # a few steps per cell, to check the script itself (writes no docs)
    python bench/gpu.py --liger          # also SmolLM2 with Liger fused kernels (needs liger-kernel)

Without a CUDA device it says so and exits with status 2, measuring nothing.

MFU (model FLOPs utilization) = achieved model FLOP/s / peak FLOP/s. Model FLOPs per trained token: full SFT
6 N + 12 L d s (forward 2N, backward 4N, plus attention scores and values); LoRA 4 N + 12 L d s + 6 N_lora
(the frozen weights need input gradients only). N = parameters outside the embedding (tied output layer counted
once as a matmul), L layers, d hidden size, s sequence length. The peak is MEASURED in the same run (a large bf16
matmul, the best of several), so the figure is against what this GPU really sustains; the device name, its
nominal bf16 dense peak where known, and the measured one are all recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "gpu.json"
# nominal dense bf16 tensor-core peaks (no sparsity), TFLOP/s, from the vendors' data sheets
NOMINAL_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0,
                       "L40S": 362.0, "L4": 121.0, "A10": 125.0, "RTX 4090": 165.0}


def no_cuda_exit() -> None:
    import torch

    if not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device is visible (torch.cuda.is_available() is False; torch "
              f"{torch.__version__}, CUDA build {torch.version.cuda}); nothing was measured. Run it on a machine "
              "with an NVIDIA GPU and a CUDA build of torch.", file=sys.stderr)
        sys.exit(2)


def measured_peak_tflops(n: int = 8192, repeats: int = 20) -> float:
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1000)
    return 2 * n ** 3 / best / 1e12


def text_batches(tokenizer, batch: int, seq: int, steps: int):
    """Real text (dialogsum dialogues and summaries) packed into batch x seq token rows."""
    import torch

    texts = []
    for path in sorted((DATA / "dialogsum").glob("*.jsonl")):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                texts.append(" ".join(str(v) for v in row.values() if isinstance(v, str)))
    ids: list[int] = []
    for t in texts:
        ids += tokenizer(t)["input_ids"] + [tokenizer.eos_token_id]
        if len(ids) >= batch * seq * steps:
            break
    need = batch * seq
    return [torch.tensor(ids[i * need:(i + 1) * need]).view(batch, seq) for i in range(len(ids) // need)]


def timed_steps(step, batches, warmup: int) -> float:
    import torch

    for b in batches[:warmup]:
        step(b)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for b in batches[warmup:]:
        step(b)
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def causal_cell(method: str, batch: int, seq: int, steps: int, warmup: int, peak: float, liger: bool) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunewise.models import resolve_base_model

    path = resolve_base_model("smollm2").path
    tokenizer = AutoTokenizer.from_pretrained(path)
    if liger:  # patches the llama classes in place, for every model loaded after it (so liger cells run last)
        from liger_kernel.transformers import apply_liger_kernel_to_llama

        apply_liger_kernel_to_llama()
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa").cuda()
    cfg = model.config
    # FLOP-bearing parameters: the embedding lookup costs nothing, but the (tied) output layer is a V x d matmul of
    # the same size, so the count is all parameters, each tied tensor once (as model.parameters() yields them)
    n = sum(p.numel() for p in model.parameters())
    n_lora = 0
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
        n_lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True)
    batches = text_batches(tokenizer, batch, seq, steps + warmup)[: steps + warmup]
    if len(batches) < steps + warmup:
        raise SystemExit(f"not enough dialogsum text for {steps + warmup} batches of {batch}x{seq}")

    def step(ids):
        ids = ids.cuda(non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    seconds = timed_steps(step, batches, warmup)
    tokens = batch * seq * steps
    attn = 12 * cfg.num_hidden_layers * cfg.hidden_size * seq
    per_token = (6 * n if method == "full" else 4 * n + 6 * n_lora) + attn
    tps = tokens / seconds
    return {"model": "SmolLM2-135M", "method": method, "liger": liger, "batch": batch, "seq": seq, "steps": steps,
            "tokens_per_second": round(tps, 1), "model_tflops": round(tps * per_token / 1e12, 2),
            "mfu_vs_measured_peak": round(tps * per_token / 1e12 / peak, 4),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "attention": getattr(getattr(model, "config", cfg), "_attn_implementation", None)}


def minilm_cell(batch: int, seq: int, steps: int, warmup: int) -> dict:
    import csv

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunewise.models import resolve_base_model

    path = resolve_base_model("minilm").path
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=77, attn_implementation="sdpa").cuda()
    with open(DATA / "banking77" / "train.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    labels = {c: i for i, c in enumerate(sorted({r["category"] for r in rows}))}
    batches = []
    for i in range(steps + warmup):
        chunk = [rows[(i * batch + j) % len(rows)] for j in range(batch)]
        enc = tokenizer([r["text"] for r in chunk], padding="max_length", truncation=True, max_length=seq,
                        return_tensors="pt")
        enc["labels"] = torch.tensor([labels[r["category"]] for r in chunk])
        batches.append(enc)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def train_step(b):
        b = {k: v.cuda(non_blocking=True) for k, v in b.items()}
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(**b).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    @torch.inference_mode()
    def infer_step(b):
        b = {k: v.cuda(non_blocking=True) for k, v in b.items() if k != "labels"}
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model(**b).logits.argmax(-1)

    model.train()
    train_s = timed_steps(train_step, batches, warmup)
    model.eval()
    infer_s = timed_steps(infer_step, batches, warmup)
    return {"model": "MiniLM-L6 classifier (77 labels)", "batch": batch, "seq": seq, "steps": steps,
            "train_examples_per_second": round(batch * steps / train_s, 1),
            "inference_examples_per_second": round(batch * steps / infer_s, 1)}


def markdown(result: dict) -> str:
    lines = [f"Device: **{result['device']}** (torch {result['torch']}, CUDA {result['cuda']}); measured bf16 matmul "
             f"peak {result['measured_peak_tflops']:.0f} TFLOP/s (nominal {result['nominal_peak_tflops'] or 'unknown'}).",
             "", "| model | method | batch x seq | tokens/s | model TFLOP/s | MFU (vs measured peak) | peak memory |",
             "|---|---|---|---:|---:|---:|---:|"]
    for c in result["causal"]:
        lines.append(f"| {c['model']} | {c['method']}{' + Liger' if c['liger'] else ''} | {c['batch']} x {c['seq']} | "
                     f"{c['tokens_per_second']:,.0f} | {c['model_tflops']:.1f} | {c['mfu_vs_measured_peak']:.1%} | "
                     f"{c['peak_memory_gib']} GiB |")
    m = result["minilm"]
    lines += ["", f"MiniLM classification, batch {m['batch']} x {m['seq']} tokens, bf16: training "
                  f"{m['train_examples_per_second']:,.0f} examples/s, inference {m['inference_examples_per_second']:,.0f} "
                  f"examples/s.", "", "Reproduce: `python bench/gpu.py` on a machine with a CUDA GPU."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few steps per cell; writes no docs")
    parser.add_argument("--liger", action="store_true", help="also SmolLM2 with Liger kernels (needs liger-kernel)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=1024)
    args = parser.parse_args()
    no_cuda_exit()
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    steps, warmup = (3, 1) if args.quick else (30, 5)
    name = torch.cuda.get_device_name()
    nominal = next((v for k, v in NOMINAL_BF16_TFLOPS.items() if k in name), None)
    peak = measured_peak_tflops(repeats=5 if args.quick else 20)
    causal = []
    for liger in (False, True) if args.liger else (False,):
        for method in ("full", "lora"):
            cell = causal_cell(method, args.batch, args.seq, steps, warmup, peak, liger)
            print(json.dumps(cell), flush=True)
            causal.append(cell)
            torch.cuda.empty_cache()
    minilm = minilm_cell(256, 128, steps, warmup)
    print(json.dumps(minilm), flush=True)
    result = {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda,
              "measured_peak_tflops": round(peak, 1), "nominal_peak_tflops": nominal, "quick": args.quick,
              "causal": causal, "minilm": minilm}
    table = markdown(result)
    print(table)
    if args.quick:
        return
    sys.path.insert(0, str(ROOT / "bench"))
    from _docs import record

    record(RESULTS, result, "gpu", table, "GPU throughput")


if __name__ == "__main__":
    main()
