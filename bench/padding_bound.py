"""How much of tunewise's classification speed-up batch order alone can buy: padded tokens per example.

    python bench/padding_bound.py                      # banking77 and full sst2, batch 32, 3 epochs' orders
    python bench/padding_bound.py --datasets sst2 --sst2-train 20000 --batch-size 16

The careful HF default draws batches in random order and pads each to its longest row; tunewise groups rows of
similar length (the Trainer's LengthGroupedSampler: megabatches of 50 batches, each sorted long to short). Where
the precision is the same (fp32 on a CPU without fast bf16), both run the same model on the same rows, so a step's
work grows with its padded tokens, and the ratio of padded tokens per example, random over grouped, bounds the
speed-up from order alone. The figure is the samplers' own output, no model is run: the batches come from
torch's RandomSampler and transformers' LengthGroupedSampler with the recipe's max_length, as the Trainer draws
them. Reported: tokens per example without padding, with length grouping and in random order, and the ratio.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classification import load_dataset_rows  # noqa: E402  (bench/classification.py, beside this script)


def padded_tokens(lengths: np.ndarray, order: list[int], batch_size: int) -> int:
    """Tokens a pass over `order` computes when each batch is padded to its longest row."""
    return sum(int(lengths[order[i:i + batch_size]].max()) * len(order[i:i + batch_size])
               for i in range(0, len(order), batch_size))


def orders(lengths: np.ndarray, batch_size: int, epochs: int, seed: int) -> dict[str, list[list[int]]]:
    import torch
    from torch.utils.data import RandomSampler
    from transformers.trainer_pt_utils import LengthGroupedSampler

    out: dict[str, list[list[int]]] = {"random": [], "length-grouped": []}
    for epoch in range(epochs):
        generator = torch.Generator().manual_seed(seed + epoch)
        out["random"].append(list(RandomSampler(range(len(lengths)), generator=generator)))
        generator = torch.Generator().manual_seed(seed + epoch)
        out["length-grouped"].append(list(LengthGroupedSampler(batch_size, lengths=lengths.tolist(),
                                                               generator=generator)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="banking77,sst2")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3, help="epochs' orders averaged (each a fresh shuffle)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--sst2-train", type=int, default=0,
                    help="seeded sst2 train subset, drawn as bench/classification.py draws it; 0: all 67,349 phrases")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from tunewise.models import resolve_base_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model("minilm").path)
    print(f"batch {args.batch_size}, max_length {args.max_length}, {args.epochs} epochs' orders, seed {args.seed}\n")
    print("| dataset | train rows | tokens/example, no padding | length-grouped | random order | random ÷ grouped |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.datasets.split(","):
        train, _ = load_dataset_rows(name, args.sst2_train or 10**9, False, args.seed)
        ids = tokenizer([r["text"] for r in train], truncation=True, max_length=args.max_length)["input_ids"]
        lengths = np.array([len(x) for x in ids])
        per_example = {kind: np.mean([padded_tokens(lengths, order, args.batch_size) for order in epoch_orders])
                       / len(lengths) for kind, epoch_orders in orders(lengths, args.batch_size, args.epochs,
                                                                       args.seed).items()}
        print(f"| {name} | {len(lengths):,} | {lengths.mean():.2f} | {per_example['length-grouped']:.2f} | "
              f"{per_example['random']:.2f} | **{per_example['random'] / per_example['length-grouped']:.2f}×** |")


if __name__ == "__main__":
    main()
