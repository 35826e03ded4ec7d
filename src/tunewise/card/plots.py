"""Plots for the card stage: each function takes plain dicts/lists and returns an SVG string.

Drawn with the shared plotting kit (tunewise.kit.plots): a plain `Figure` (no pyplot), text kept as text,
salted ids and no date, so the same inputs give byte-identical SVGs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib
from matplotlib.colors import PowerNorm
from matplotlib.transforms import blended_transform_factory

from tunewise.kit.plots import (BASELINE, HIGHLIGHT, RC, SCORE_COLOR, TRAIN_COLOR, VAL_COLOR, figure, is_number,
                                literal_text, message, to_svg)

FINE_TUNED = "fine_tuned"


# ---------------------------------------------------------------- loss curves


def loss_curves(train_log: Sequence[dict[str, Any]]) -> str:
    """Train loss, validation loss (left axis) and validation accuracy/macro-F1 (right axis) against step."""
    with matplotlib.rc_context(RC):
        fig = figure(6.4, 3.4)
        ax = fig.add_subplot()
        ax.set_title("Training curves")
        train = [(e["step"], e["loss"]) for e in train_log if is_number(e.get("loss")) and "step" in e]
        val = [(e["step"], e["eval_loss"]) for e in train_log if is_number(e.get("eval_loss")) and "step" in e]
        scores = [(key, label, [(e["step"], e[key]) for e in train_log if is_number(e.get(key)) and "step" in e])
                  for key, label in (("eval_accuracy", "validation accuracy"),
                                     ("eval_macro_f1", "validation macro-F1"),
                                     ("eval_mean_token_accuracy", "validation token accuracy"))]
        scores = [s for s in scores if s[2]]
        if not train and not val and not scores:
            message(ax, "no training log")
            return to_svg(fig, "loss")
        lines = []
        if train:
            lines += ax.plot(*zip(*train), color=TRAIN_COLOR, lw=1.4, label="train loss")
        if val:
            lines += ax.plot(*zip(*val), color=VAL_COLOR, lw=1.4, marker="o", ms=3.5, label="validation loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.25)
        if scores:
            ax2 = ax.twinx()
            ax2.spines["right"].set_visible(True)
            for (_, label, pts), style in zip(scores, ("--", ":", "-.")):
                lines += ax2.plot(*zip(*pts), color=SCORE_COLOR, ls=style, lw=1.4, marker="s", ms=3, label=label)
            ax2.set_ylabel("validation score")
            ax2.set_ylim(0, 1.02)
        ax.legend(lines, [ln.get_label() for ln in lines], loc="center right", frameon=False)
        return to_svg(fig, "loss")


# ---------------------------------------------------------------- confusion matrix


def confusion_matrix(labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> str:
    """Row-normalised colours (share of each true class), counts written in the cells when K <= 20.

    The colour scale is square-root so that a 2-5% confusion is still visible next to a dark diagonal;
    the colour bar shows the true shares.
    """
    k = len(labels)
    with matplotlib.rc_context(RC):
        if k == 0 or not matrix:
            fig = figure(4, 3)
            message(fig.add_subplot(), "no confusion matrix")
            return to_svg(fig, "confusion")
        totals = [sum(row) for row in matrix]
        norm = [[c / t if t else 0.0 for c in row] for row, t in zip(matrix, totals)]
        side = max(3.6, 0.42 * k + 1.6) if k <= 20 else 0.15 * k + 2.6
        fig = figure(side + 0.9, side)
        ax = fig.add_subplot()
        im = ax.imshow(norm, cmap="Blues", norm=PowerNorm(0.5, vmin=0.0, vmax=1.0), interpolation="nearest",
                       aspect="equal")
        tick_size = 8 if k <= 12 else 7 if k <= 20 else 5.5 if k <= 60 else 5 if k <= 100 else 4
        names = [literal_text(label) for label in labels]
        ax.set_xticks(range(k), names, rotation=90, fontsize=tick_size)
        ax.set_yticks(range(k), names, fontsize=tick_size)
        ax.tick_params(length=2 if k > 20 else 3.5)
        for spine in ax.spines.values():
            spine.set_visible(False)
        if k <= 20:
            cell_size = 9 if k <= 6 else 8 if k <= 12 else 6.5
            for i, row in enumerate(matrix):
                for j, count in enumerate(row):
                    if count:
                        ax.text(j, i, str(count), ha="center", va="center", fontsize=cell_size,
                                color="white" if norm[i][j] > 0.36 else "#222222")
        ax.set_xlabel("predicted label")
        ax.set_ylabel("true label")
        cbar = fig.colorbar(im, ax=ax, shrink=0.6 if k > 20 else 0.8, pad=0.02)
        cbar.set_ticks([0, 0.05, 0.2, 0.4, 0.6, 0.8, 1.0])
        cbar.set_label("share of the true class")
        ax.set_title("Confusion matrix (test)" + (", counts in cells" if k <= 20 else f", {k} classes"))
        return to_svg(fig, "confusion")


# ---------------------------------------------------------------- CI forest


def ci_forest(rows: Sequence[tuple[str, str, float, float | None, float | None]], *, title: str,
              salt: str = "forest") -> str:
    """One row per (metric, model, value, ci_low, ci_high), grouped by metric as given: point estimate with CI
    whiskers; the fine-tuned model stands out. `salt` keeps SVG ids apart when several forests share a page."""
    rows = [r for r in rows if is_number(r[2])]
    metric_names = list(dict.fromkeys(r[0] for r in rows))
    with matplotlib.rc_context(RC):
        fig = figure(6.4, 0.9 + 0.32 * max(len(rows), 2) + 0.25 * len(metric_names))
        ax = fig.add_subplot()
        if not rows:
            message(ax, "no metrics")
            return to_svg(fig, salt)
        ys, y, prev = [], 0.0, None
        for metric, *_ in rows:
            if prev is not None and metric != prev:
                y += 0.7  # gap between metric groups
            ys.append(y)
            prev = metric
            y += 1
        trans = blended_transform_factory(ax.transAxes, ax.transData)
        for (metric, model, value, lo, hi), yy in zip(rows, ys):
            ft = model == FINE_TUNED
            color = HIGHLIGHT if ft else BASELINE
            if is_number(lo) and is_number(hi):
                ax.plot([lo, hi], [yy, yy], color=color, lw=2.4 if ft else 1.6, solid_capstyle="butt")
                for end in (lo, hi):
                    ax.plot([end, end], [yy - 0.18, yy + 0.18], color=color, lw=1.2)
                note = f"{value:.3f}  [{lo:.3f}, {hi:.3f}]"
            else:
                note = f"{value:.3f}"
            ax.plot([value], [yy], "o" if ft else "D", color=color, ms=7 if ft else 5, zorder=3)
            ax.text(1.02, yy, note, transform=trans, va="center", fontsize=8, color=color,
                    fontweight="bold" if ft else "normal")
        ax.set_yticks(ys, [f"{literal_text(metric)} · {literal_text(model)}" for metric, model, *_ in rows])
        for tick, row in zip(ax.get_yticklabels(), rows):
            if row[1] == FINE_TUNED:
                tick.set_color(HIGHLIGHT)
                tick.set_fontweight("bold")
        ax.invert_yaxis()
        lows = [r[3] if is_number(r[3]) else r[2] for r in rows]
        highs = [r[4] if is_number(r[4]) else r[2] for r in rows]
        span = max(max(highs) - min(lows), 0.02)
        left, right = min(lows) - 0.08 * span, max(highs) + 0.08 * span
        # scores live in [0, 1]: stop just past the ends unless a value lies outside them
        ax.set_xlim(max(left, -0.01) if min(lows) >= 0 else left, min(right, 1.01) if max(highs) <= 1 else right)
        ax.grid(axis="x", alpha=0.3)
        ax.spines["left"].set_visible(False)
        ax.tick_params(axis="y", length=0)
        ax.set_title(title, loc="left")
        ax.set_xlabel("score")
        return to_svg(fig, salt)


# ---------------------------------------------------------------- reliability diagram


def reliability_diagram(calibration_bins: Sequence[dict[str, Any]], ece: float | None) -> str:
    """Accuracy per confidence bin against the diagonal (perfect calibration), with each bin's count."""
    bins = [b for b in calibration_bins if b.get("count") and is_number(b.get("accuracy"))]
    with matplotlib.rc_context(RC):
        fig = figure(4.6, 4.8)
        ax = fig.add_subplot()
        ax.set_title("Reliability diagram" + (f" — ECE {ece:.3f}" if is_number(ece) else ""))
        if not bins:
            message(ax, "no calibration data")
            return to_svg(fig, "reliability")
        ax.plot([0, 1], [0, 1], ls="--", color=BASELINE, lw=1, label="perfect calibration")
        ax.bar([b["lo"] for b in bins], [b["accuracy"] for b in bins], width=[b["hi"] - b["lo"] for b in bins],
               align="edge", color=HIGHLIGHT, alpha=0.8, edgecolor="white", lw=0.6, label="accuracy in bin")
        conf_pts = [(b["confidence"], b["accuracy"]) for b in bins if is_number(b.get("confidence"))]
        if conf_pts:
            ax.plot(*zip(*conf_pts), "o", color=VAL_COLOR, ms=3.5, label="mean confidence in bin")
        for b in bins:  # counts at the bar foot, or just above a bar too short to hold them
            inside = b["accuracy"] >= 0.09
            ax.text((b["lo"] + b["hi"]) / 2, 0.015 if inside else b["accuracy"] + 0.012, str(b["count"]),
                    ha="center", va="bottom", fontsize=6.5 if len(bins) > 10 else 7.5,
                    color="white" if inside else "#333333")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("confidence (top predicted probability); numbers: examples per bin")
        ax.set_ylabel("accuracy")
        # below the axes: bars can reach any corner of the plot, so an inside legend would cover one
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
        return to_svg(fig, "reliability")
