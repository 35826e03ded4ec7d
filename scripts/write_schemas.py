"""Write docs/schemas/ from the artifact models in tunewise.artifacts (one JSON Schema per artifact, and an index).

    python scripts/write_schemas.py            # rewrite docs/schemas/
    python scripts/write_schemas.py --check    # exit 1 when docs/schemas/ differs from the models

Run it after changing a model in src/tunewise/artifacts/ (and bump the model's SCHEMA_VERSION when a reader
must know about the change); tests/test_artifacts.py fails while the committed schemas are stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tunewise.artifacts import SCHEMAS_DIR, schema_documents

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    folder = ROOT / SCHEMAS_DIR
    wanted = schema_documents()
    stale = sorted(name for name, text in wanted.items()
                   if not (folder / name).is_file() or (folder / name).read_text(encoding="utf-8") != text)
    extra = sorted(p.name for p in folder.glob("*") if p.name not in wanted) if folder.is_dir() else []
    if "--check" in argv:
        for name in stale:
            print(f"{SCHEMAS_DIR}/{name}: differs from the models")
        for name in extra:
            print(f"{SCHEMAS_DIR}/{name}: no model writes it")
        return 1 if stale or extra else 0
    folder.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (folder / name).write_text(wanted[name], encoding="utf-8")
    for name in extra:
        (folder / name).unlink()
    print(f"{SCHEMAS_DIR}: {len(stale)} written, {len(extra)} removed, {len(wanted) - len(stale)} unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
