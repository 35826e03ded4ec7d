"""The base of every typed artifact: a pydantic model with a `schema_version`, written atomically and read back
with a clear error for a missing, damaged or incompatible file.

A reader never fills in a silent default: a field the writer always writes is required (null where it does not
apply), a field the writer leaves out where it does not apply is declared with `omitted(...)`, and a file from
another schema version is refused with the way out (rerun the stage that wrote it).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from tunewise.errors import RunDirError

A = TypeVar("A", bound="Artifact")
SCHEMA_BASE_URL = "https://tunewise.dev/schemas"


def _is_none(value: Any) -> bool:
    return value is None


def omitted(description: str) -> Any:
    """A field that is absent from the file, not null, when it does not apply (e.g. a detail only some checks
    have). The schema shows it as optional; the writer leaves it out; a reader tests it against None."""
    return Field(None, description=description, exclude_if=_is_none)


class Strict(BaseModel):
    """A nested part of an artifact: unknown keys are errors, so a misspelt field never passes as missing."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True,
                              serialize_by_alias=True)


class Open(BaseModel):
    """A nested part whose keys are open by design (e.g. a key named after a metric); its known fields are still
    typed, and a subclass types the open ones with `__pydantic_extra__: dict[str, T]`."""

    model_config = ConfigDict(extra="allow")


def rerun_hint(stage_name: str, run_root: Path | None = None) -> str:
    """How to rewrite a stage's folder: the stage's own command where it has one, else the whole run (from the
    run's resolved recipe). `run_root` None: a file outside a run directory, so placeholders."""
    from tunewise.stages import get

    stage = get(stage_name)
    own = stage.cli is not None or stage.name == "audit"  # `tunewise audit` also takes a run directory
    run, recipe = (run_root, run_root / "recipe.yaml") if run_root is not None else ("RUN", "RECIPE")
    return (f"rerun the {stage.name} stage (`tunewise {stage.name} {run} --force`)" if own
            else f"rerun the {stage.name} stage (`tunewise run {recipe} --force`)")


class Artifact(Strict):
    """A JSON file one stage writes and another reads. Subclasses set FILE, STAGE and SCHEMA_VERSION.

    A file that comes in kinds (train_summary.json of a classifier or of a causal LM) is a base class with the
    common fields and one subclass per kind; the base sets VARIANTS and DISCRIMINATOR, and `Base.read` returns
    the subclass the discriminator names.
    """

    FILE: ClassVar[str]              # file name inside the stage folder
    STAGE: ClassVar[str]             # the stage that writes it (registry name)
    SCHEMA_VERSION: ClassVar[int]    # bump on any change a reader must know about
    VARIANTS: ClassVar[tuple[type["Artifact"], ...]] = ()  # set on a base whose files come in kinds
    DISCRIMINATOR: ClassVar[str] = ""                     # the field that names the kind

    schema_version: int = Field(description="The version of this file's schema; a reader refuses any other.")

    def __init__(self, **data: Any):
        data.setdefault("schema_version", type(self).SCHEMA_VERSION)
        super().__init__(**data)

    @classmethod
    @functools.cache
    def adapter(cls) -> TypeAdapter:
        """The validator of a file: the class itself, or for a base with VARIANTS the union of its kinds."""
        variants = cls.__dict__.get("VARIANTS", ())  # own, not inherited: a variant reads as itself
        if not variants:
            return TypeAdapter(cls)
        return TypeAdapter(Annotated[Union[variants], Field(discriminator=cls.DISCRIMINATOR)])  # noqa: UP007

    @classmethod
    def read(cls: type[A], path: str | Path) -> A:
        """Read and validate; RunDirError naming the file and the stage to rerun on any problem."""
        from tunewise.rundir import MANIFEST

        path = Path(path)
        in_run = path.parent.name == cls.folder() and (path.parent.parent / MANIFEST).is_file()
        rerun = rerun_hint(cls.STAGE, path.parent.parent if in_run else None)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunDirError(f"{path}: missing; the {cls.STAGE} stage writes it: {rerun}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunDirError(f"{path}: damaged ({exc}); {rerun}") from None
        if not isinstance(raw, dict):
            raise RunDirError(f"{path}: not a {cls.__name__} file (expected a JSON object); {rerun}")
        version = raw.get("schema_version")  # the one key read before validation: it decides how to read the rest
        if version != cls.SCHEMA_VERSION:
            made = ("an older tunewise, before artifacts carried a schema_version" if version is None
                    else f"a tunewise with {cls.__name__} schema_version {version!r}")
            raise RunDirError(f"{path}: made by {made}; this tunewise reads {cls.__name__} schema_version "
                              f"{cls.SCHEMA_VERSION}. {rerun[0].upper()}{rerun[1:]}.")
        try:
            return cls.adapter().validate_python(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors()[:5])
            more = f" (and {exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
            raise RunDirError(f"{path}: does not match the {cls.__name__} schema ({problems}{more}); "
                              f"{rerun}") from None

    @classmethod
    def from_json(cls: type[A], doc: dict[str, Any]) -> A:
        """Validate in-memory data as this artifact (a variant base returns the kind `doc` names). Raises
        pydantic's ValidationError; `read` is the reader for files."""
        return cls.adapter().validate_python(doc)

    def write(self, folder_or_path: str | Path) -> Path:
        """Write atomically to FILE inside a folder (or to an explicit .json path). Returns the path."""
        from tunewise.rundir import atomic_write_json

        target = Path(folder_or_path)
        if target.is_dir() or target.suffix != ".json":
            target = target / self.FILE
        atomic_write_json(target, self.to_json())
        return target

    def to_json(self) -> dict[str, Any]:
        """The file's content as JSON-ready data (what `write` writes)."""
        return self.model_dump(mode="json")

    @classmethod
    def folder(cls) -> str:
        """The run-directory folder the file lives in (the writing stage's folder)."""
        from tunewise.stages import get

        return get(cls.STAGE).folder

    @classmethod
    def schema_name(cls) -> str:
        """`eval.metrics.v1`: the file's place in a run directory (folder, name) and its schema version."""
        return f"{cls.folder()}.{cls.FILE.removesuffix('.json')}.v{cls.SCHEMA_VERSION}"

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema published under docs/schemas/ (validation form: what a reader accepts)."""
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                  "$id": f"{SCHEMA_BASE_URL}/{cls.schema_name()}.json",
                  **cls.adapter().json_schema()}
        schema["title"] = f"{cls.__name__} ({cls.folder()}/{cls.FILE}, written by the {cls.STAGE} stage)"
        schema["description"] = " ".join((cls.__doc__ or "").split())
        return schema
