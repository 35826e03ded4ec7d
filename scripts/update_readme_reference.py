"""Regenerate the README's recipe table from the schema (run after changing a recipe field)."""
from pathlib import Path

from tunewise.recipe import recipe_reference

readme = Path(__file__).resolve().parents[1] / "README.md"
text = readme.read_text(encoding="utf-8")
lines = text.splitlines()
start = next(i for i, line in enumerate(lines) if line.startswith("| key | type | default | description |"))
end = start
while end < len(lines) and lines[end].startswith("|"):
    end += 1
readme.write_text("\n".join(lines[:start] + recipe_reference().splitlines() + lines[end:]) + "\n", encoding="utf-8")
print(f"{readme}: recipe table regenerated ({end - start} -> {len(recipe_reference().splitlines())} lines)")
