"""The plotting kit: one look (colours, fonts) and one way to make a figure and serialise it to SVG.

We use `matplotlib.figure.Figure` directly (not pyplot), so no GUI backend is touched, no global figure
registry grows, and nothing has to be closed: the figure is garbage once the SVG string is returned.
Text stays text (`svg.fonttype: none`), which keeps files small and labels searchable, and ids are
salted per plot and the date is omitted, so the same inputs give byte-identical SVGs (and several
SVGs can be inlined in one HTML page without id clashes).

A plot function draws inside `matplotlib.rc_context(RC)` on `figure(...)` and returns `to_svg(fig, salt)`.
"""

from __future__ import annotations

import io
import math
from typing import Any

import matplotlib
from matplotlib.figure import Figure

HIGHLIGHT = "#1f5fa8"
BASELINE = "#6b6b6b"
TRAIN_COLOR = "#1f5fa8"
VAL_COLOR = "#d1495b"
SCORE_COLOR = "#2a9d8f"
RC = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
      "font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
      "svg.fonttype": "none", "axes.spines.top": False, "axes.spines.right": False}


def figure(width: float, height: float) -> Figure:
    """A new figure (inches) with constrained layout, outside pyplot."""
    return Figure(figsize=(width, height), layout="constrained")


def to_svg(fig: Figure, salt: str) -> str:
    """Serialise a figure to a deterministic, compact SVG string; `salt` keeps ids unique per plot on a page."""
    buf = io.StringIO()
    with matplotlib.rc_context({**RC, "svg.hashsalt": f"tunewise-{salt}"}):
        # no <metadata> block: it carries a date (not reproducible) and URLs (not needed offline)
        fig.savefig(buf, format="svg", bbox_inches="tight", pad_inches=0.08,
                    metadata={"Date": None, "Creator": None, "Type": None, "Format": None})
    return buf.getvalue()


def literal_text(s: Any) -> str:
    """User text shown literally: a `$` would otherwise switch matplotlib into mathtext."""
    return str(s).replace("$", r"\$")


def is_number(x: Any) -> bool:
    """A finite int or float (not a bool): a value that can be plotted."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def message(ax: Any, text: str) -> None:
    """Replace an empty plot's axes by a centred note saying why there is nothing to show."""
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color=BASELINE, transform=ax.transAxes)


__all__ = ["BASELINE", "HIGHLIGHT", "RC", "SCORE_COLOR", "TRAIN_COLOR", "VAL_COLOR", "figure", "is_number",
           "literal_text", "message", "to_svg"]
