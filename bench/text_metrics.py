"""Text-metric benchmark: bootstrap CIs and a paired test on 10k pairs, against one plain sacrebleu/rouge-score pass.

    python bench/text_metrics.py                 # 10,000 multi30k pairs, 1000 resamples
    python bench/text_metrics.py --n 1000        # smaller, to check the script itself

Baseline: one pass of sacrebleu corpus_bleu + corpus_chrf and rouge-score (rouge1/2/L, stemmer) per example,
no intervals: the least any evaluation has to spend. tunewise: `score_corpus` (all 7 scores with 95% CIs)
and `paired_compare` (two systems, every score's difference with CI and p-value). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def pairs(n: int, seed: int) -> tuple[list[str], list[str], list[list[str]]]:
    """English multi30k captions as references; two hypotheses made by dropping/shuffling some words."""
    refs = [json.loads(line)["en"] for line in (DATA / "multi30k_en_de" / "train.jsonl").open(encoding="utf-8")][:n]
    rng = random.Random(seed)

    def noisy(text: str, p: float) -> str:
        words = [w for w in text.split() if rng.random() > p]
        if len(words) > 3 and rng.random() < p:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        return " ".join(words)

    return [noisy(r, 0.1) for r in refs], [noisy(r, 0.3) for r in refs], [[r] for r in refs]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "text_metrics.json"))
    args = ap.parse_args()

    import sacrebleu
    from rouge_score import rouge_scorer

    from tunewise.evaluate.text_metrics import paired_compare, score_corpus

    hyp_a, hyp_b, refs = pairs(args.n, seed=0)
    streams = [[r[0] for r in refs]]
    timings = {}

    t = time.perf_counter()
    sacrebleu.corpus_bleu(hyp_a, streams)
    sacrebleu.corpus_chrf(hyp_a, streams)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for h, r in zip(hyp_a, refs):
        scorer.score_multi(r, h)
    timings["baseline: one pass, no CI"] = time.perf_counter() - t

    t = time.perf_counter()
    scores = score_corpus(hyp_a, refs, n_resamples=args.resamples, seed=0)
    timings[f"score_corpus ({args.resamples} resamples)"] = time.perf_counter() - t

    t = time.perf_counter()
    comparison = paired_compare(hyp_a, hyp_b, refs, n_resamples=args.resamples, seed=0)
    timings[f"paired_compare ({args.resamples} resamples)"] = time.perf_counter() - t

    base = timings["baseline: one pass, no CI"]
    print(f"{args.n:,} pairs")
    print(f"{'step':<38} {'seconds':>8} {'x baseline':>11}")
    for name, sec in timings.items():
        print(f"{name:<38} {sec:8.2f} {sec / base:11.2f}")
    print(f"bleu {scores['bleu']['value']:.2f} [{scores['bleu']['ci_low']:.2f}, {scores['bleu']['ci_high']:.2f}], "
          f"A-B bleu {comparison[0]['diff']:+.2f}, p={comparison[0]['p_value']:.3g}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"n": args.n, "resamples": args.resamples, "seconds": timings,
                               "scores": scores, "comparison": comparison}, indent=2))


if __name__ == "__main__":
    main()
