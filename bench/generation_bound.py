"""What bounds generation for evaluation on this CPU, and the two levers issue 14 named that change outputs.

    python bench/generation_bound.py --run runs/dialogsum-<id>                 # 200 DialogSum test dialogues
    python bench/generation_bound.py --run runs/dialogsum-<id> --examples 32 --sides generate,decoder

Every side runs the evaluate stage's own `tasks.causal.generate` on the same prompts (examples/dialogsum.yaml's
prompt, batch and max_new_tokens, longest first), once each after a two-dialogue warm-up:
- `generate`: `model.generate` at the evaluate stage's precision, the path before issue 14 (the 1x of the target);
- `decoder`: tunewise's greedy decoder (tasks/decoding.py), the evaluate stage now. Its model calls are timed
  one by one, so its time splits into the prefill (calls with the whole prompt) and the decoding steps;
- `compiled-prefill`: the decoder with the prefill call through `torch.compile(model, dynamic=True)` and the
  decoding steps eager (inductor cannot trace the in-place KV cache's storage swaps). The compile is timed apart;
- `int8`: the decoder on the fp32 model with every linear layer quantized to int8 weights and dynamically
  quantized int8 activations (`torch.ao.quantization.quantize_dynamic`, fbgemm's VNNI kernels).

The last two change the arithmetic, so their outputs are compared with the decoder's on the references by
ROUGE-1, ROUGE-L and chrF, each a paired bootstrap over the dialogues, as issue 14 asks for a change of precision.

The bound: the prefill's linear layers cost 2 x (non-embedding parameters) FLOPs per padded prompt token, so at the
bf16 (or fp32) matmul peak measured in the same run the prefill alone needs a least time. A 3x speed-up over
`generate` must fit the prefill and all decoding steps into a third of `generate`'s time; the report says how much
of that third the prefill at peak would already take.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SIDES = ("generate", "decoder", "compiled-prefill", "int8")


class Timed:
    """The model, called as the decoder calls it, with each call's seconds added to `prefill` (more than one new
    token per row) or `decoding`. With `prefill_with`, prefill calls go to that callable instead."""

    def __init__(self, model, prefill_with=None):
        self.model, self.prefill_with = model, prefill_with
        self.config, self.generation_config = model.config, model.generation_config
        self.prefill = self.decoding = 0.0

    def __call__(self, *, input_ids, **kwargs):
        prefill = input_ids.shape[1] > 1
        call = self.prefill_with if prefill and self.prefill_with is not None else self.model
        t0 = time.perf_counter()
        out = call(input_ids=input_ids, **kwargs)
        seconds = time.perf_counter() - t0
        if prefill:
            self.prefill += seconds
        else:
            self.decoding += seconds
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=None, help="a generation run directory: its fine-tuned model (default: base)")
    ap.add_argument("--recipe", default=str(ROOT / "examples" / "dialogsum.yaml"))
    ap.add_argument("--examples", type=int, default=200, help="the first N test dialogues")
    ap.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, of {', '.join(SIDES)}")
    ap.add_argument("--peak-seconds", type=float, default=4.0, help="time spent measuring the matmul peaks")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "generation_bound.json"))
    ap.add_argument("--docs", default=str(ROOT / "docs" / "benchmarks.md"), help="'' to skip")
    args = ap.parse_args()
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = sorted(set(sides) - set(SIDES))
    if unknown or not {"generate", "decoder"} <= set(sides):
        ap.error(f"--sides: {', '.join(unknown) or 'generate and decoder are needed'}; choose from {', '.join(SIDES)}")

    import torch
    from _cpu import cpu_label, matmul_gflops  # bench/_cpu.py, beside this script

    from tunewise.data.prepare import example_checker
    from tunewise.data.readers import read_records
    from tunewise.evaluate.text_metrics import paired_compare, score_corpus
    from tunewise.hardware import Placement, apply_threads, choose_placement, cpu_facts, plan_threads
    from tunewise.models import resolve_base_model
    from tunewise.recipe import load_recipe
    from tunewise.tasks.causal import (for_inference, generate, load_causal_lm, load_finetuned, load_tokenizer,
                                       prompt_ids, references_of)

    recipe = load_recipe(Path(args.recipe))
    plan = plan_threads()
    apply_threads(plan)
    placement = choose_placement("cpu", "auto")
    base = resolve_base_model(recipe.model.base).path

    def load(at: Placement):
        if args.run:
            return load_finetuned(Path(args.run) / "model", base, at)
        return for_inference(load_causal_lm(base), at)

    model = load(placement)
    tok = load_tokenizer(Path(args.run) / "model" if args.run else base)
    test, _ = read_records(recipe.data.test.path, example_checker(recipe, recipe.data.test, "test"))
    examples = test[:args.examples]

    # the prefill's padded tokens, batched as `generate` batches them (longest first, padded to the batch's longest)
    cfg = recipe.evaluate
    lengths = sorted((len(prompt_ids(tok, ex, max(recipe.model.max_length - cfg.max_new_tokens, 16)))
                      for ex in examples), reverse=True)
    padded = sum(lengths[s] * len(lengths[s:s + cfg.generation_batch_size])
                 for s in range(0, len(lengths), cfg.generation_batch_size))
    linear_params = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and "lm_head" not in n)
    fp32_peak, _ = matmul_gflops(torch.float32, args.peak_seconds / 2)
    bf16_peak, _ = matmul_gflops(torch.bfloat16, args.peak_seconds / 2)
    peak = bf16_peak if placement.precision == "bf16" else fp32_peak

    results: dict[str, dict] = {}
    outputs: dict[str, list[str]] = {}

    def run(name: str, m, force: bool = False, at: Placement = placement) -> None:
        generate(m, tok, examples[:2], recipe=recipe, placement=at, desc=f"warm-up {name}", force_generate=force)
        if isinstance(m, Timed):
            m.prefill = m.decoding = 0.0
        c0 = time.process_time()
        out, stats = generate(m, tok, examples, recipe=recipe, placement=at, desc=name, force_generate=force)
        results[name] = {"seconds": stats["seconds"], "cpu_seconds": time.process_time() - c0,
                         "new_tokens": stats["new_tokens"], "tokens_per_second": stats["new_tokens"] / stats["seconds"]}
        if isinstance(m, Timed):
            results[name].update(prefill_seconds=m.prefill, decoding_seconds=m.decoding)
        outputs[name] = out
        print(f"  {name}: {results[name]['tokens_per_second']:.1f} tok/s, {stats['seconds']:.1f} s", flush=True)

    run("generate", model, force=True)
    run("decoder", Timed(model))
    if "compiled-prefill" in sides:
        compiled = torch.compile(model, dynamic=True)
        timed = Timed(model, prefill_with=compiled)
        t0 = time.perf_counter()
        generate(timed, tok, examples[:cfg.generation_batch_size], recipe=recipe, placement=placement,
                 desc="compiling the prefill")  # compiles for a full batch; later widths reuse the dynamic graph
        compile_seconds = time.perf_counter() - t0
        run("compiled-prefill", timed)
        results["compiled-prefill"]["compile_seconds"] = compile_seconds
    if "int8" in sides:
        import warnings

        fp32 = Placement(device="cpu", precision="fp32", reason="int8 weights quantized from the fp32 model")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch 2.13 points eager-mode quantization to torchao
            quantized = torch.ao.quantization.quantize_dynamic(load(fp32), {torch.nn.Linear}, dtype=torch.qint8)
        run("int8", Timed(quantized), at=fp32)

    refs = [references_of(ex) for ex in examples]
    metrics = ("rougeL", "rouge1", "chrf")
    scores = {name: {k: v["value"] for k, v in score_corpus(out, refs, metrics, seed=0).items()}
              for name, out in outputs.items()}
    for name in outputs:
        r = results[name]
        r["identical_to_decoder"] = sum(a == b for a, b in zip(outputs[name], outputs["decoder"]))
        # by time for the same dialogues: a side whose outputs run longer would gain tok/s by rambling
        r["speedup_over_generate"] = results["generate"]["seconds"] / r["seconds"]
        r["scores"] = scores[name]
        if name not in ("generate", "decoder"):
            r["paired_against_decoder"] = paired_compare(outputs[name], outputs["decoder"], refs, metrics, seed=0)
    if outputs["generate"] != outputs["decoder"]:
        raise SystemExit("the decoder's outputs differ from model.generate's at the same precision")

    dec = results["decoder"]
    prefill_flop = 2 * linear_params * padded
    prefill_at_peak = prefill_flop / (peak * 1e9)
    third = results["generate"]["seconds"] / 3
    facts = cpu_facts()
    bound = {"linear_params": linear_params, "prompt_tokens": sum(lengths), "padded_prompt_tokens": padded,
             "fp32_peak_gflops": fp32_peak, "bf16_peak_gflops": bf16_peak, "peak_gflops": peak,
             "prefill_gflops_achieved": prefill_flop / dec["prefill_seconds"] / 1e9,
             "prefill_share_of_decoder": dec["prefill_seconds"] / dec["seconds"],
             "prefill_seconds_at_peak": prefill_at_peak, "seconds_for_3x": third,
             "decoding_seconds_left_for_3x": third - prefill_at_peak}
    result = {"examples": len(examples), "model": args.run or recipe.model.base, "precision": placement.precision,
              "threads": plan.threads, "max_new_tokens": cfg.max_new_tokens,
              "generation_batch_size": cfg.generation_batch_size, "sides": results, "bound": bound,
              "load_average_at_end": os.getloadavg()[0], "cpu": facts, "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M")}

    def fmt(metric: str, x: float, sign: str = "") -> str:
        return f"{x:{sign}.{2 if metric == 'chrf' else 4}f}"

    rows = []
    for name in outputs:
        r = results[name]
        split = (f"{r['prefill_seconds']:.1f} + {r['decoding_seconds']:.1f}" if "prefill_seconds" in r else "")
        if "compile_seconds" in r:
            split += f" (compile {r['compile_seconds']:.0f} s before)"
        diff = "identical by construction" if name == "generate" else "reference"
        if "paired_against_decoder" in r:
            paired = sorted(r["paired_against_decoder"], key=lambda d: metrics.index(d["metric"]))
            diff = "; ".join(f"{d['metric']} {fmt(d['metric'], d['diff'], '+')} [{fmt(d['metric'], d['ci_low'], '+')}, "
                             f"{fmt(d['metric'], d['ci_high'], '+')}]" for d in paired)
        rows.append(f"| {name} | {r['tokens_per_second']:.1f} | {r['speedup_over_generate']:.2f}x | {r['seconds']:.1f} "
                    f"| {split} | {r['identical_to_decoder']} of {len(examples)} "
                    f"| {fmt('rougeL', r['scores']['rougeL'])} | {diff} |")
    b = bound
    table = (f"Reproduce: `python bench/generation_bound.py {shlex.join(sys.argv[1:])}` ({result['date']}; load "
             f"average {result['load_average_at_end']:.2f} at the end)\n\n"
             "| side | generated tok/s | × `generate` (time, same dialogues) | seconds | prefill + decoding s "
             "| outputs equal to the decoder's | ROUGE-L | − decoder, paired 95% CI (ROUGE-L; ROUGE-1; chrF) |\n"
             "|---|---:|---:|---:|---|---:|---:|---|\n" + "\n".join(rows) + "\n\n"
             f"**The bound.** The decoder spends {100 * b['prefill_share_of_decoder']:.0f}% of its time in the "
             f"prefill, whose linear layers ({b['linear_params'] / 1e6:.1f}M parameters, {b['padded_prompt_tokens']:,} "
             f"padded prompt tokens) run at {b['prefill_gflops_achieved']:.0f} GFLOP/s, "
             f"{100 * b['prefill_gflops_achieved'] / peak:.0f}% of the {placement.precision} matmul peak measured "
             f"in this run ({peak:.0f} GFLOP/s; fp32 {fp32_peak:.0f}, bf16 {bf16_peak:.0f}). 3x `generate` means "
             f"{b['seconds_for_3x']:.1f} s for these dialogues; the prefill at the peak alone takes "
             f"{b['prefill_seconds_at_peak']:.1f} s of it, leaving {b['decoding_seconds_left_for_3x']:.1f} s for "
             f"every decoding step, against the decoder's {dec['decoding_seconds']:.1f} s now. "
             f"{len(examples)} DialogSum test dialogues, {result['model']}, {placement.precision}, max_new_tokens "
             f"{cfg.max_new_tokens}, batch {cfg.generation_batch_size}, {plan.threads} thread(s); {cpu_label(facts)}; "
             f"torch {torch.__version__}.")
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.docs:
        from _docs import replace_block

        replace_block(Path(args.docs), "generation_bound.py", table,
                      "Generation for evaluation: what bounds it (bench/generation_bound.py)")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
