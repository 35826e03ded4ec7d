"""HTML fragments shared by the stages that write pages (the card's report.html, the coming monitor)."""

from __future__ import annotations

from markupsafe import Markup


def inline_svg(svg: str) -> Markup:
    """An SVG file's text as an element to inline in HTML: the XML prolog and DOCTYPE (invalid there) dropped."""
    start = svg.find("<svg")
    return Markup(svg[start:] if start >= 0 else "")


__all__ = ["inline_svg"]
