"""card/citations.json: every run-directory file the model card cites as evidence (the governance tables, the gate
verdict, the cost estimate), with the sha256 the card prints. `tunewise verify` re-hashes each one and checks it
against the manifest, so a card cannot point at evidence that has changed since."""

from __future__ import annotations

from pydantic import Field

from tunewise.artifacts.base import Artifact, Strict

CITATIONS_FILE = "citations.json"


class Citation(Strict):
    """One cited file."""

    path: str = Field(description="The file, relative to the run directory.")
    sha256: str = Field(description="Its sha256 as the card prints it (the manifest's recorded hash).")
    cited_for: list[str] = Field(description="What the card cites it for, e.g. `NIST AI RMF MEASURE 2.3`.")


class Citations(Artifact):
    """card/citations.json: the files the model card cites, with their hashes."""

    FILE = CITATIONS_FILE
    STAGE = "card"
    SCHEMA_VERSION = 1

    files: list[Citation] = Field(description="Every cited file, in the order the card first cites it.")
