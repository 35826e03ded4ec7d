"""Shared ground for the stages that draw and report: the SVG plotting kit (`kit.plots`) and HTML fragments
(`kit.html`). Stages import from here, never from each other, so audit, card and the coming monitor stage draw
with one look and one set of reproducibility rules."""
