"""The test rows the audit flagged as leaked from train (audit/flagged.jsonl, check `leak`), so that the card can
show the score of the truly held-out part beside the headline."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from tunewise.errors import RunDirError
from tunewise.kit.jsonl import read_jsonl

FLAGGED_FILE = "flagged.jsonl"  # written by the audit stage: one line per flagged row and finding


class FlaggedLine(BaseModel):
    """The part of a flagged.jsonl line this reader needs (other keys vary by check and are ignored)."""

    model_config = ConfigDict(extra="ignore")
    check: str
    kind: str
    split: str
    id: str | None


def leaked_test_ids(audit_dir: Path) -> dict[str, str]:
    """Row id -> leak kind for every test row the audit flagged as a copy or near-copy of a train row."""
    path = audit_dir / FLAGGED_FILE
    if not path.is_file():
        raise RunDirError(f"{path}: missing; the audit stage writes it: rerun the audit stage "
                          f"(`tunewise audit {audit_dir.parent}`)")
    out: dict[str, str] = {}
    rerun = f"; rerun the audit stage (`tunewise audit {audit_dir.parent} --force`)"
    for number, value in read_jsonl(path, error=RunDirError, what="a flagged-row line", advice=rerun):
        try:
            row = FlaggedLine.model_validate(value)
        except ValidationError as exc:
            raise RunDirError(f"{path}:{number}: not a flagged-row line ({str(exc).splitlines()[0]}){rerun}") from None
        if row.check == "leak" and row.split == "test" and row.id is not None:
            out.setdefault(row.id, row.kind)
    return out


def kept_and_kinds(ids: list[str], leaked: dict[str, str]) -> tuple[list[int], dict[str, int]]:
    """Indices of the scored rows that are not leaked, and the leaked rows counted per kind."""
    kinds: dict[str, int] = {}
    kept = []
    for i, row_id in enumerate(ids):
        kind = leaked.get(row_id)
        if kind is None:
            kept.append(i)
        else:
            kinds[kind] = kinds.get(kind, 0) + 1
    return kept, kinds
