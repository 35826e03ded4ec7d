"""The audit's SVG plots: label distribution per split, length histogram against max_length, duplicate clusters.

Drawn with the shared plotting kit (tunewise.kit.plots): a plain `Figure` (no pyplot), text kept as text,
deterministic ids and no date, so the same data give byte-identical files.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np

from tunewise.kit.plots import BASELINE, HIGHLIGHT, RC, SCORE_COLOR, VAL_COLOR, figure, literal_text, message, to_svg

SPLIT_COLORS = {"train": HIGHLIGHT, "validation": SCORE_COLOR, "test": VAL_COLOR}
MAX_LABELS_SHOWN = 40


def label_distribution(counts: dict[str, dict[str, int]], imbalance_ratio: float) -> str:
    """Horizontal bars: rows per label, one bar per split, labels sorted by train count (largest first);
    a dashed line marks the imbalance threshold (largest train class / ratio)."""
    with matplotlib.rc_context(RC):
        train = counts.get("train") or {}
        labels = sorted(train, key=lambda label: (-train[label], label))
        if not labels:
            fig = figure(4, 2)
            message(fig.add_subplot(), "no labels (generation or chat task)")
            return to_svg(fig, "labels")
        shown = labels[:MAX_LABELS_SHOWN]
        splits = [s for s in ("train", "validation", "test") if s in counts]
        fig = figure(6.4, 0.8 + 0.22 * len(shown) * max(1, len(splits)) ** 0.5)
        ax = fig.add_subplot()
        height = 0.8 / len(splits)
        y = np.arange(len(shown))
        for i, split in enumerate(splits):
            values = [counts[split].get(label, 0) for label in shown]
            ax.barh(y + i * height, values, height=height, color=SPLIT_COLORS[split], label=split)
        top = max(train.values())
        ax.axvline(top / imbalance_ratio, color=BASELINE, linestyle="--", linewidth=1,
                   label=f"imbalance line (largest / {imbalance_ratio:g})")
        ax.set_yticks(y + height * (len(splits) - 1) / 2, [literal_text(s) for s in shown])
        ax.invert_yaxis()
        ax.set_xlabel("rows")
        more = f" (largest {len(shown)} of {len(labels)})" if len(labels) > len(shown) else ""
        ax.set_title(f"Label distribution{more}")
        ax.legend(loc="lower right")
        return to_svg(fig, "labels")


def length_histogram(lengths: dict[str, np.ndarray], max_length: int, unit: str) -> str:
    """Histogram of example lengths per split with the model's max_length marked; rows past the line are truncated."""
    with matplotlib.rc_context(RC):
        fig = figure(6.4, 3.2)
        ax = fig.add_subplot()
        nonempty = [v for v in lengths.values() if len(v)]
        every = np.concatenate(nonempty) if nonempty else np.empty(0)
        if not len(every):
            message(ax, "no lengths")
            return to_svg(fig, "lengths")
        hi = max(int(np.percentile(every, 99.5)), max_length) + 1
        bins = np.linspace(0, hi * 1.05, 50)
        for split, values in lengths.items():
            if len(values):
                ax.hist(np.minimum(values, bins[-1]), bins=bins, histtype="step", linewidth=1.4,
                        color=SPLIT_COLORS.get(split, BASELINE), label=f"{split} ({len(values):,})")
        ax.axvline(max_length, color=BASELINE, linestyle="--", linewidth=1, label=f"model.max_length = {max_length}")
        over = float((every > max_length).mean())
        ax.set_title(f"Length in {unit} ({over:.1%} of rows over max_length)")
        ax.set_xlabel(unit)
        ax.set_ylabel("rows")
        ax.legend()
        return to_svg(fig, "lengths")


def duplicate_clusters(sizes: Sequence[int], near_sizes: Sequence[int]) -> str:
    """How many clusters of each size: exact-duplicate groups and near-duplicate clusters (log-scaled counts)."""
    with matplotlib.rc_context(RC):
        fig = figure(6.4, 3.0)
        ax = fig.add_subplot()
        if not len(sizes) and not len(near_sizes):
            message(ax, "no duplicate or near-duplicate clusters")
            return to_svg(fig, "dups")
        top = max([*sizes, *near_sizes])
        edges = np.unique(np.round(np.geomspace(2, max(3, top + 1), 20)).astype(int))
        for values, color, name in ((sizes, HIGHLIGHT, "exact-duplicate groups"),
                                    (near_sizes, VAL_COLOR, "near-duplicate clusters")):
            if len(values):
                ax.hist(values, bins=edges, histtype="step", linewidth=1.4, color=color,
                        label=f"{name} ({len(values):,})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows in the cluster")
        ax.set_ylabel("clusters")
        ax.set_title("Duplicate clusters (all splits)")
        ax.legend()
        return to_svg(fig, "dups")
