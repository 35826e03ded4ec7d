"""Generation for evaluation: tunewise's greedy decoder against `model.generate`, in one process, same batches.

    python bench/generation.py                      # SmolLM2 zero-shot (the base_model baseline), 96 dialogues
    python bench/generation.py --run runs/dialogsum-<id> --examples 200
    python bench/generation.py --run runs/dialogsum-<id> --examples 200 --repeats 1 --baseline-precision fp32

Both sides are the evaluate stage's own `tasks.causal.generate` on the DialogSum test dialogues, with the settings of
examples/dialogsum.yaml (prompt, max_new_tokens, generation_batch_size, longest prompts first): once through
`model.generate` (`force_generate=True`, the path before issue 14) and once through `decoding.greedy_batch` (finished
rows leave the batch, the KV cache is written in place). Reported: generated tokens per wall second and per CPU
second for each side, the ratio, and how many outputs are identical (all of them must be). The sides alternate
A-B-B-A after a warm-up, so a drift in machine speed falls on both. Run it on a quiet machine.

`--baseline-precision` adds `model.generate` at another precision (fp32: what the evaluate stage ran on CPUs where
`auto` chose fp32). Its outputs are not expected to be identical, so the decoder's are compared with them on the
references instead: ROUGE-1, ROUGE-L and chrF, each a paired bootstrap over the dialogues.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=None, help="a generation run directory: its fine-tuned model (default: base)")
    ap.add_argument("--recipe", default=str(ROOT / "examples" / "dialogsum.yaml"))
    ap.add_argument("--examples", type=int, default=96, help="the first N test dialogues")
    ap.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    ap.add_argument("--baseline-precision", default=None, choices=("bf16", "fp32"),
                    help="also run `model.generate` at this precision, the path before on CPUs where `auto` chose it "
                         "then (fp32 on AVX-512 bf16 CPUs without AMX before 2026-12-02); its outputs differ, so it "
                         "is compared by the metrics' paired bootstrap on the references instead of by identity")
    ap.add_argument("--repeats", type=int, default=2, choices=(1, 2),
                    help="passes per side: 2 runs them A-B-B-A and checks each side repeats its outputs; 1 runs "
                         "each once (for many dialogues, where the time of a second pass buys little)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "generation.json"))
    ap.add_argument("--docs", default=str(ROOT / "docs" / "benchmarks.md"), help="'' to skip")
    args = ap.parse_args()

    import torch
    from _cpu import cpu_label  # bench/_cpu.py, beside this script

    from tunewise.data.prepare import example_checker
    from tunewise.data.readers import read_records
    from tunewise.evaluate.text_metrics import paired_compare, score_corpus
    from tunewise.hardware import Placement, apply_threads, choose_placement, cpu_facts, plan_threads
    from tunewise.models import resolve_base_model
    from tunewise.recipe import load_recipe
    from tunewise.tasks.causal import (for_inference, generate, load_causal_lm, load_finetuned, load_tokenizer,
                                       references_of)

    recipe = load_recipe(Path(args.recipe))
    plan = plan_threads()
    apply_threads(plan)
    threads = plan.threads
    placement = choose_placement("cpu", args.precision)
    base = resolve_base_model(recipe.model.base).path

    def load(at: Placement):
        if args.run:
            return load_finetuned(Path(args.run) / "model", base, at)
        return for_inference(load_causal_lm(base), at)

    model = load(placement)
    tok = load_tokenizer(Path(args.run) / "model" if args.run else base)
    test, _ = read_records(recipe.data.test.path, example_checker(recipe, recipe.data.test, "test"))
    examples = test[:args.examples]

    # side: (model, placement, through model.generate)
    sides = {"generate": (model, placement, True), "tunewise": (model, placement, False)}
    order = ["generate", "tunewise", "tunewise", "generate"]  # A-B-B-A: a drift in machine speed falls on both
    baseline = None
    if args.baseline_precision and args.baseline_precision != placement.precision:
        baseline = f"generate-{args.baseline_precision}"
        at = Placement(device="cpu", precision=args.baseline_precision, reason="--baseline-precision")
        sides[baseline] = (load(at), at, True)
        order = [baseline, "generate", "tunewise", "tunewise", "generate", baseline]
    order = order[:len(order) // 2] if args.repeats == 1 else order
    for name, (m, at, force) in sides.items():
        generate(m, tok, examples[:2], recipe=recipe, placement=at, desc=f"warm-up {name}", force_generate=force)
    outputs: dict[str, list[str]] = {}
    wall = {name: 0.0 for name in sides}
    cpu = {name: 0.0 for name in sides}
    tokens = {name: 0 for name in sides}
    for name in order:
        m, at, force = sides[name]
        c0 = time.process_time()
        out, stats = generate(m, tok, examples, recipe=recipe, placement=at, desc=name, force_generate=force)
        cpu[name] += time.process_time() - c0
        wall[name] += stats["seconds"]
        tokens[name] += stats["new_tokens"]
        if name in outputs and outputs[name] != out:
            raise SystemExit(f"{name}: two runs of the same side gave different outputs (nondeterminism)")
        outputs[name] = out
    same = sum(a == b for a, b in zip(outputs["generate"], outputs["tunewise"]))
    rate = {name: tokens[name] / wall[name] for name in sides}
    cpu_rate = {name: tokens[name] / cpu[name] for name in sides}
    load_avg = os.getloadavg()[0]
    facts = cpu_facts()
    result = {"examples": len(examples), "model": f"{args.run or recipe.model.base}", "precision": placement.precision,
              "precision_reason": placement.reason,
              "threads": threads, "max_new_tokens": recipe.evaluate.max_new_tokens,
              "generation_batch_size": recipe.evaluate.generation_batch_size,
              "tokens_per_second": rate, "tokens_per_cpu_second": cpu_rate, "identical_outputs": same,
              "new_tokens": tokens["tunewise"] // args.repeats, "speedup": rate["tunewise"] / rate["generate"],
              "cpu_speedup": cpu_rate["tunewise"] / cpu_rate["generate"], "load_average_at_end": load_avg,
              "cpu": facts, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}
    label = {"generate": f"`model.generate`, {placement.precision} (the path before the decoder)",
             "tunewise": f"tunewise greedy decoder, {placement.precision}"}
    lines = [f"| {label['generate']} | {rate['generate']:.1f} | {cpu_rate['generate']:.1f} | reference |",
             f"| {label['tunewise']} | {rate['tunewise']:.1f} | {cpu_rate['tunewise']:.1f} | "
             f"{same} of {len(examples)} |"]
    verdict = (f"**{result['speedup']:.2f}x** the tokens per wall second ({result['cpu_speedup']:.2f}x per CPU "
               f"second; target ≥ 3x: **{'met' if result['speedup'] >= 3 else 'not met'}**).")
    if baseline:
        refs = [references_of(ex) for ex in examples]
        metrics = ("rougeL", "rouge1", "chrf")
        scores = {name: {k: v["value"] for k, v in score_corpus(outputs[name], refs, metrics, seed=0).items()}
                  for name in (baseline, "tunewise")}
        diffs = paired_compare(outputs["tunewise"], outputs[baseline], refs, metrics, seed=0)
        changed = sum(a != b for a, b in zip(outputs["tunewise"], outputs[baseline]))
        speed = rate["tunewise"] / rate[baseline]
        result.update({"baseline": baseline, "speedup_over_baseline": speed,
                       "cpu_speedup_over_baseline": cpu_rate["tunewise"] / cpu_rate[baseline],
                       "outputs_changed_from_baseline": changed, "scores": scores, "paired": diffs})
        lines.insert(0, f"| `model.generate`, {args.baseline_precision} (before, where `auto` chose "
                        f"{args.baseline_precision}) | {rate[baseline]:.1f} | {cpu_rate[baseline]:.1f} | "
                        f"{len(examples) - changed} of {len(examples)} equal to the decoder's |")
        places = {"chrf": 2}  # chrF runs 0-100; ROUGE 0-1

        def fmt(metric: str, x: float, sign: str = "") -> str:
            return f"{x:{sign}.{places.get(metric, 4)}f}"

        metric_text = "; ".join(
            f"{d['metric']} {fmt(d['metric'], scores['tunewise'][d['metric']])} against "
            f"{fmt(d['metric'], scores[baseline][d['metric']])}, {fmt(d['metric'], d['diff'], '+')} "
            f"[{fmt(d['metric'], d['ci_low'], '+')}, {fmt(d['metric'], d['ci_high'], '+')}], p = {d['p_value']:.3f}"
            for d in diffs)
        verdict += (f" Against `model.generate` in {args.baseline_precision}: **{speed:.2f}x** the tokens per wall "
                    f"second ({result['cpu_speedup_over_baseline']:.2f}x per CPU second), a change of precision "
                    f"that changed {changed} of {len(examples)} outputs; decoder ({placement.precision}) − "
                    f"{args.baseline_precision}, paired bootstrap 95% CI over the dialogues: {metric_text}.")
    table = (f"Reproduce: `python bench/generation.py {shlex.join(sys.argv[1:])}` ({result['date']}; load average "
             f"{load_avg:.2f} at the end)\n\n"
             "| side | generated tok/s (wall) | tok/s per CPU second | identical outputs |\n|---|---:|---:|---:|\n"
             + "\n".join(lines) + "\n\n" + verdict +
             f" {len(examples)} DialogSum test dialogues, {result['model']}, max_new_tokens "
             f"{result['max_new_tokens']}, batch {result['generation_batch_size']}, {threads} thread(s), "
             f"{tokens['tunewise'] // args.repeats:,} tokens generated per pass; {cpu_label(facts)}; torch "
             f"{torch.__version__}.")
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.docs:
        from _docs import replace_block

        replace_block(Path(args.docs), "generation.py", table, "Generation for evaluation (bench/generation.py)")
    if same != len(examples):
        raise SystemExit(f"{len(examples) - same} outputs differ between the two paths")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
