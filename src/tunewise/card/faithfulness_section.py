"""The card's and report's faithfulness section, from the faithfulness stage's typed artifact (absent: no section)."""

from __future__ import annotations

from tunewise.rundir import RunDir


def markdown(rd: RunDir) -> str | None:
    """The model card's section (Markdown), or None when the run has no faithfulness results."""
    return None


def html(rd: RunDir) -> str | None:
    """The report's section (an HTML fragment), or None when the run has no faithfulness results."""
    return None
