"""Shared by the benchmark scripts: write a run's table into its own marked block of docs/benchmarks.md."""

from __future__ import annotations

import json
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def replace_block(path: Path, script: str, body: str, section_title: str) -> None:
    """Put `body` between `<!-- bench/<script>:start -->` and `...:end -->`, replacing the previous run's block;
    the first run appends a new section titled `section_title`."""
    start, end = f"<!-- bench/{script}:start -->", f"<!-- bench/{script}:end -->"
    block = f"{start}\n{body}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text += f"\n## {section_title}\n\n{block}\n"
    path.write_text(text, encoding="utf-8")


def record(results: Path, result: dict, script: str, table: str, section_title: str) -> None:
    """Write the run's JSON to `results` and its table into its block of docs/benchmarks.md."""
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    replace_block(DOCS, script, table, section_title)
