"""Generation for evaluation: tunewise's greedy decoder against `model.generate`, in one process, same batches.

    python bench/generation.py                      # SmolLM2 zero-shot (the base_model baseline), 96 dialogues
    python bench/generation.py --run runs/dialogsum-<id> --examples 200

Both sides are the evaluate stage's own `tasks.causal.generate` on the DialogSum test dialogues, with the settings of
examples/dialogsum.yaml (prompt, max_new_tokens, generation_batch_size, longest prompts first): once through
`model.generate` (`force_generate=True`, the path before issue 14) and once through `decoding.greedy_batch` (finished
rows leave the batch, the KV cache is written in place). Reported: generated tokens per wall second and per CPU
second for each side, the ratio, and how many outputs are identical (all of them must be). The sides alternate
A-B-B-A after a warm-up, so a drift in machine speed falls on both. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
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
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "generation.json"))
    ap.add_argument("--docs", default=str(ROOT / "docs" / "benchmarks.md"), help="'' to skip")
    args = ap.parse_args()

    import torch

    from tunewise.data.prepare import example_checker
    from tunewise.data.readers import read_records
    from tunewise.hardware import apply_threads, choose_placement, cpu_facts, plan_threads
    from tunewise.models import resolve_base_model
    from tunewise.recipe import load_recipe
    from tunewise.tasks.causal import for_inference, generate, load_causal_lm, load_finetuned, load_tokenizer

    recipe = load_recipe(Path(args.recipe))
    plan = plan_threads()
    apply_threads(plan)
    threads = plan.threads
    placement = choose_placement("cpu", args.precision)
    base = resolve_base_model(recipe.model.base).path
    if args.run:
        model = load_finetuned(Path(args.run) / "model", base, placement)
        tok = load_tokenizer(Path(args.run) / "model")
    else:
        model, tok = for_inference(load_causal_lm(base), placement), load_tokenizer(base)
    test, _ = read_records(recipe.data.test.path, example_checker(recipe, recipe.data.test, "test"))
    examples = test[:args.examples]

    generate(model, tok, examples[:2], recipe=recipe, placement=placement, desc="warm-up")
    sides = {"generate": True, "tunewise": False}
    outputs: dict[str, list[str]] = {}
    wall = {name: 0.0 for name in sides}
    cpu = {name: 0.0 for name in sides}
    tokens = {name: 0 for name in sides}
    for name in ("generate", "tunewise", "tunewise", "generate"):
        c0 = time.process_time()
        out, stats = generate(model, tok, examples, recipe=recipe, placement=placement, desc=name,
                              force_generate=sides[name])
        cpu[name] += time.process_time() - c0
        wall[name] += stats["seconds"]
        tokens[name] += stats["new_tokens"]
        if name in outputs and outputs[name] != out:
            raise SystemExit(f"{name}: two runs of the same side gave different outputs (nondeterminism)")
        outputs[name] = out
    same = sum(a == b for a, b in zip(outputs["generate"], outputs["tunewise"]))
    rate = {name: tokens[name] / wall[name] for name in sides}
    cpu_rate = {name: tokens[name] / cpu[name] for name in sides}
    load = os.getloadavg()[0]
    facts = cpu_facts()
    result = {"examples": len(examples), "model": f"{args.run or recipe.model.base}", "precision": placement.precision,
              "threads": threads, "max_new_tokens": recipe.evaluate.max_new_tokens,
              "generation_batch_size": recipe.evaluate.generation_batch_size,
              "tokens_per_second": rate, "tokens_per_cpu_second": cpu_rate, "identical_outputs": same,
              "new_tokens": tokens["tunewise"] // 2, "speedup": rate["tunewise"] / rate["generate"],
              "cpu_speedup": cpu_rate["tunewise"] / cpu_rate["generate"], "load_average_at_end": load, "cpu": facts,
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}
    table = (f"Reproduce: `python bench/generation.py {' '.join(sys.argv[1:])}` ({result['date']}; load average "
             f"{load:.2f} at the end)\n\n"
             "| side | generated tok/s (wall) | tok/s per CPU second | identical outputs |\n|---|---:|---:|---:|\n"
             f"| `model.generate` (before) | {rate['generate']:.1f} | {cpu_rate['generate']:.1f} | reference |\n"
             f"| tunewise greedy decoder | {rate['tunewise']:.1f} | {cpu_rate['tunewise']:.1f} | "
             f"{same} of {len(examples)} |\n\n"
             f"**{result['speedup']:.2f}x** the tokens per wall second ({result['cpu_speedup']:.2f}x per CPU second; "
             f"target ≥ 3x: **{'met' if result['speedup'] >= 3 else 'not met'}**). {len(examples)} DialogSum test "
             f"dialogues, {result['model']} ({placement.precision}), max_new_tokens {result['max_new_tokens']}, "
             f"batch {result['generation_batch_size']}, {threads} thread(s), {tokens['tunewise'] // 2:,} tokens "
             f"generated per pass; CPU {facts.get('model')}, AMX {'yes' if 'amx_tile' in facts.get('isa', []) else 'no'};"
             f" torch {torch.__version__}.")
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
