"""The card's and report's humaneval section, from the humaneval stage's typed artifact (absent: no section)."""

from __future__ import annotations

from tunewise.rundir import RunDir


def markdown(rd: RunDir) -> str | None:
    """The model card's section (Markdown), or None when the run has no humaneval results."""
    return None


def html(rd: RunDir) -> str | None:
    """The report's section (an HTML fragment), or None when the run has no humaneval results."""
    return None
