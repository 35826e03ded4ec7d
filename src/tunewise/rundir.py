"""The run directory: one subfolder per stage, atomic writes, and manifest.json (lineage).

runs/<name>-<id>/
  recipe.yaml      the fully resolved recipe
  manifest.json    sha256 of every input and output, per stage; package versions, git revision, seed
  data/ audit/ model/ eval/ card/ export/   one folder per stage, written only by that stage
                   (which stage owns which folder, and what it reads, is declared in stages.py)
  report.html      the run's front page, written by the card stage

A stage is skipped when it finished before and the hashes of its inputs are unchanged.
"""

from __future__ import annotations

import copy
import errno
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from tunewise import stages
from tunewise.errors import DiskFullError, RunDirError, VerifyError
from tunewise.recipe import Recipe, validate_recipe

MANIFEST = "manifest.json"
RECIPE = "recipe.yaml"
# The run-directory layout: 2 = one registry of stages, typed artifacts with a schema_version. A run directory of
# another layout is refused with the way out, never half-read.
LAYOUT = 2
TRACKED_PACKAGES = ("tunewise", "torch", "transformers", "accelerate", "datasets", "scikit-learn", "scipy",
                    "numpy", "huggingface_hub", "pydantic", "safetensors", "tokenizers")


# ---------------------------------------------------------------- atomic writes and hashing

_UMASK = os.umask(0)
os.umask(_UMASK)


_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# how libraries that do not raise OSError report ENOSPC: safetensors (Rust io::Error), torch.save (miniz)
_DISK_FULL_WORDS = ("no space left on device", "os error 28", "disk quota exceeded", "file write failed")


def is_disk_full(exc: BaseException, where: Path) -> bool:
    """Whether `exc` (or an exception it was raised from) is a full disk or quota. torch.save says only "file
    write failed", so that is taken for a full disk when the file system of `where` has (almost) no room left."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _DISK_FULL_ERRNOS:
            return True
        text = str(seen).lower()
        if any(word in text for word in _DISK_FULL_WORDS[:3]):
            return True
        if _DISK_FULL_WORDS[3] in text or (isinstance(seen, OSError) and seen.errno is None):
            return free_bytes(where) < (1 << 20)
        seen = seen.__cause__ or seen.__context__
    return False


def free_bytes(where: Path) -> int:
    """Bytes free for this user on the file system holding `where` (its nearest existing parent)."""
    where = Path(where)
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        return shutil.disk_usage(where).free
    except OSError:
        return -1


def disk_full(path: Path, what: str) -> DiskFullError:
    """The error for a write of `path` that the disk had no room for; `what` says what was left as it was."""
    return DiskFullError(f"{path}: cannot write it, the disk is full (No space left on device, on the file system "
                         f"holding {Path(path).parent}). {what} Free some space (or set output_dir= to a larger "
                         f"disk) and rerun the same command.")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, then rename: readers never see a half-written file. A full disk
    raises DiskFullError naming the file; the old file, if any, is left as it was."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        if is_disk_full(exc, path.parent):
            raise disk_full(path, "It was left as it was.") from None
        raise
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts should read like any other file
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and is_disk_full(exc, path.parent):
            raise disk_full(path, "It was left as it was (the write goes to a temporary file, renamed only when "
                                  "complete).") from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def atomic_write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


class AtomicJsonlWriter:
    """Write a JSONL file one record at a time, atomically: for files too large to hold in memory first.

    Lines go to a temp file in the same folder; leaving the `with` block normally flushes, fsyncs and renames
    it into place (as `atomic_write_bytes` does), so readers see the old file or the whole new one. An exception
    inside the block removes the temp file and leaves `path` as it was.

        with AtomicJsonlWriter(out / "rows.jsonl") as writer:
            for record in records:
                writer.write(record)
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            os.chmod(self._tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts should read like any other file
            self._fh = os.fdopen(fd, "w", encoding="utf-8")
        except BaseException:
            os.close(fd)
            Path(self._tmp).unlink(missing_ok=True)
            raise

    def write(self, record: dict[str, Any]) -> None:
        try:
            self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        except OSError as exc:
            if is_disk_full(exc, self.path.parent):
                raise disk_full(self.path, "It was left as it was.") from None
            raise

    def __enter__(self) -> "AtomicJsonlWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            with self._fh:  # closed whatever happens
                if exc_type is None:
                    self._fh.flush()
                    os.fsync(self._fh.fileno())
            if exc_type is None:
                os.replace(self._tmp, self.path)
                return
        except BaseException as error:
            Path(self._tmp).unlink(missing_ok=True)
            if isinstance(error, OSError) and is_disk_full(error, self.path.parent):
                raise disk_full(self.path, "It was left as it was.") from None
            raise
        Path(self._tmp).unlink(missing_ok=True)  # the block raised: no file appears, its exception propagates


@contextmanager
def scratch_folder(out: Path) -> Iterator[Path]:
    """`out/arrow/`, a stage's scratch space for Arrow files and arrays, removed when the stage ends however it
    ends (hashing skips nothing, so it must be gone before the stage's outputs are recorded)."""
    folder = Path(out) / "arrow"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# sha256 of files this process hashed, by path, valid while (size, mtime, inode) are unchanged: a stage checks the
# files it reads against the manifest (RunDir.require) without hashing again what an earlier stage just wrote
_HASHED: dict[str, tuple[tuple[int, int, int], str]] = {}


def _stat_key(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


def sha256_file_cached(path: Path) -> str:
    """sha256_file, remembered for as long as the file's size, mtime and inode stay the same."""
    key, name = _stat_key(path), str(Path(path).resolve())
    hit = _HASHED.get(name)
    if hit is not None and hit[0] == key:
        return hit[1]
    digest = sha256_file(path)
    _HASHED[name] = (key, digest)
    return digest


def hash_tree(folder: Path, root: Path, skip: Callable[[str], bool] = lambda rel: False) -> dict[str, str]:
    """sha256 of every file under folder, keyed by path relative to root; `skip(path relative to folder)` leaves
    files out (a stage's live state)."""
    return {str(p.relative_to(root)): sha256_file_cached(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.endswith(".tmp") and not skip(str(p.relative_to(folder)))}


# ---------------------------------------------------------------- environment facts for lineage


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_revision() -> str | None:
    """Commit of the tunewise checkout (with '-dirty' when it has uncommitted changes); None outside git."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------- the run directory


@dataclass
class StageOutcome:
    name: str
    ran: bool
    seconds: float
    message: str


class RunDir:
    """A run directory and its manifest. Stages call `run_stage`; nothing else writes the manifest."""

    def __init__(self, root: Path, recipe: Recipe, manifest: dict[str, Any]):
        self.root = Path(root)
        self.recipe = recipe
        self.manifest = manifest
        self._as_read: dict[str, Any] = {}  # the manifest as this process last read or wrote it (see save_manifest)

    # -- opening
    @classmethod
    def for_recipe(cls, recipe: Recipe, *, fresh: bool = False) -> "RunDir":
        """Create (or reopen) runs/<name>-<fingerprint>/ for this resolved recipe. `fresh`: a run directory made
        by an older tunewise gets a new manifest (its stages all rerun) instead of an error."""
        root = Path(recipe.output_dir) / f"{recipe.name}-{recipe.fingerprint()}"
        try:  # a probe file: fail here, clearly, rather than half-way through the first stage
            root.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=root).close()
        except OSError as exc:
            raise RunDirError(f"output_dir: cannot write the run directory {root} ({exc.strerror or exc}: "
                              f"{exc.filename or root}); set output_dir= to a folder you can write, "
                              f"e.g. `tunewise run RECIPE output_dir=$HOME/tunewise-runs`") from None
        if (root / MANIFEST).exists() and not (fresh and _layout_of(root) != LAYOUT):
            rd = cls.open(root)
            rd.record_gate_section(recipe, why="tunewise run")  # the gate is not part of the run id
            return rd
        from tunewise.hardware import cpu_facts  # imports torch: only when a run directory is made

        manifest = {
            "layout": LAYOUT,
            "run_id": root.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seed": recipe.seed,
            "recipe_fingerprint": recipe.fingerprint(),
            "recipe": recipe.model_dump(mode="json"),
            "git_revision": git_revision(),
            "packages": package_versions(),
            "platform": {"machine": platform.machine(), "system": platform.system(), "cpu_count": os.cpu_count(),
                         "cpu": cpu_facts()},
            "stages": {},
        }
        atomic_write_text(root / RECIPE, recipe.to_yaml())
        manifest["recipe_sha256"] = sha256_file(root / RECIPE)
        rd = cls(root, recipe, manifest)
        rd.save_manifest()
        return rd

    @classmethod
    def open(cls, root: str | Path) -> "RunDir":
        root = Path(root)
        if not (root / MANIFEST).is_file():
            raise RunDirError(f"{root} is not a tunewise run directory (no {MANIFEST}); create one with `tunewise run RECIPE`")
        try:
            manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RunDirError(f"{root / MANIFEST}: not valid JSON (line {exc.lineno}): the manifest was damaged") from None
        layout = manifest.get("layout") if isinstance(manifest, dict) else None
        if layout != LAYOUT:
            made = "an older tunewise" if layout is None or (isinstance(layout, int) and layout < LAYOUT) else \
                "a newer tunewise"
            raise RunDirError(f"{root} was made by {made} (run-directory layout {layout or 1}; this tunewise reads "
                              f"layout {LAYOUT}); rerun it: `tunewise run {root / RECIPE} --force` starts it afresh")
        recipe = validate_recipe(manifest["recipe"], source=str(root / MANIFEST))
        rd = cls(root, recipe, manifest)
        rd._as_read = copy.deepcopy(manifest)
        return rd

    def record_gate_section(self, recipe: Recipe, *, why: str) -> None:
        """Adopt `recipe`'s gate section, which is not part of the run id (re-judging a run needs no retraining):
        recipe.yaml and the manifest's recipe take it, and `recipe_changes` records what changed, when and why.
        Nothing happens when the section is the same."""
        if recipe.fingerprint() != self.recipe.fingerprint():
            raise RunDirError(f"{self.root}: the recipe differs from the run's beyond its gate section")
        if recipe.gate == self.recipe.gate:
            return
        before = self.recipe.gate.model_dump(mode="json")
        self.recipe = self.recipe.model_copy(update={"gate": recipe.gate})
        self.manifest["recipe"] = self.recipe.model_dump(mode="json")
        atomic_write_text(self.root / RECIPE, self.recipe.to_yaml())
        previous = self.manifest.get("recipe_sha256")
        self.manifest["recipe_sha256"] = sha256_file(self.root / RECIPE)
        self.manifest.setdefault("recipe_changes", []).append({
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "by": why, "section": "gate", "before": before,
            "after": recipe.gate.model_dump(mode="json"), "previous_recipe_sha256": previous})
        self.save_manifest()

    # -- paths
    def stage_dir(self, stage: str) -> Path:
        """The folder a stage owns (from the registry); an unknown stage name raises."""
        return self.root / stages.get(stage).folder

    def save_manifest(self) -> None:
        """Write the manifest, keeping what other processes wrote since this one read it: several tunewise
        commands may work on one run at once (a monitor beside `tunewise card`), each on its own stages. Under a
        lock, the file is read again and only the top-level keys and stage records this process changed are
        taken from memory (a three-way merge against the copy it last read)."""
        path = self.root / MANIFEST
        with _locked(self.root / ".manifest.lock"):
            try:
                on_disk = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            except json.JSONDecodeError:
                on_disk = {}  # damaged: ours replaces it
            merged = _merge(self._as_read, self.manifest, on_disk)
            atomic_write_json(path, merged)
        self.manifest.clear()
        self.manifest.update(merged)
        self._as_read = copy.deepcopy(merged)

    def stage_record(self, stage: str) -> dict[str, Any] | None:
        return self.manifest["stages"].get(stage)

    def is_done(self, stage: str) -> bool:
        rec = self.stage_record(stage)
        return bool(rec and rec.get("status") == "done")

    def require(self, stage: str, by: str) -> None:
        """`by` reads the outputs of `stage`: it must have finished, and every file it recorded must still hash
        as manifest.json says (a truncated, damaged or edited file is refused here, naming it, not half-read)."""
        if not self.is_done(stage):
            rerun = f"`tunewise run {self.root / RECIPE}`"  # the resolved recipe reproduces this exact run
            how = rerun if stage == "data" else f"`tunewise {stage} {self.root}` or {rerun}"
            raise RunDirError(f"`{by}` needs the `{stage}` stage of {self.root} to have finished; run {how} first")
        if damaged := self.damaged_outputs(stage):
            from tunewise.artifacts.base import rerun_hint

            listed = "; ".join(damaged[:5]) + (f"; and {len(damaged) - 5} more" if len(damaged) > 5 else "")
            raise RunDirError(f"`{by}` reads the outputs of the `{stage}` stage, and they no longer match "
                              f"{self.root / MANIFEST}: {listed}. `tunewise verify {self.root}` lists every "
                              f"damaged file; {rerun_hint(stage, self.root)} to write them again")

    def damaged_outputs(self, stage: str) -> list[str]:
        """The recorded outputs of a finished stage that are missing or no longer hash as recorded. Typed artifacts
        (artifacts/) are left to their reader, which refuses a damaged file with the stage to rerun; every other
        file (weights, tokenizer, data rows, plots) is hashed, once per process while its size and mtime hold."""
        from tunewise.artifacts import ARTIFACTS

        typed = {f"{artifact.folder()}/{artifact.FILE}" for artifact in ARTIFACTS}
        problems = []
        for rel, digest in (self.stage_record(stage) or {}).get("outputs", {}).items():
            path = self.root / rel
            if not path.is_file():
                problems.append(f"{path} is missing")
            elif rel not in typed and sha256_file_cached(path) != digest:
                problems.append(f"{path} is damaged, truncated or was edited (its sha256 differs from the one "
                                f"recorded when the {stage} stage wrote it)")
        return problems

    def outputs_of(self, *stages: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for s in stages:
            out.update((self.stage_record(s) or {}).get("outputs", {}))
        return out

    # -- running a stage
    def run_stage(self, stage: str, fn: Callable[[Path], str | None], *, external_inputs: Iterable[Path] = (),
                  force: bool = False, keep_existing: bool = False) -> StageOutcome:
        """Run `fn(stage_dir)` unless it already finished with the same inputs.

        The stage's folder, its upstream stages (whose recorded outputs are its inputs) and the files it writes
        outside its folder come from the registry (stages.py).
        external_inputs: files outside the run (data files, base weights) whose hashes decide the skip.
        keep_existing: do not clear the stage folder first (used by training resume).
        """
        declared = stages.get(stage)
        upstream = declared.upstream(self.recipe)
        extra_outputs = declared.extra_outputs
        for up in upstream:
            self.require(up, stage)
        # a missing input is left for the stage itself to report, with its own clear message
        ext = {str(Path(p).resolve()): sha256_file(Path(p)) for p in external_inputs if Path(p).is_file()}
        upstream_outputs = {s: self.outputs_of(s) for s in upstream}
        up_hashes = {rel: digest for outputs in upstream_outputs.values() for rel, digest in outputs.items()}
        key_src = {"recipe": self.recipe.fingerprint(), "external": ext, "upstream": up_hashes}
        inputs_key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()
        rec = self.stage_record(stage)
        folder = self.stage_dir(stage)
        if not force and rec and rec.get("status") == "done" and rec.get("inputs_key") == inputs_key and \
                self._outputs_intact(rec):
            return StageOutcome(stage, False, 0.0, f"{stage}: inputs unchanged since {rec['finished']}; nothing to do")

        with self._stage_lock(stage):
            if folder.exists() and not keep_existing:
                shutil.rmtree(folder)
            folder.mkdir(parents=True, exist_ok=True)
            self.manifest["stages"][stage] = {"status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                              "inputs_key": inputs_key, "external_inputs": ext,
                                              "upstream": upstream_outputs}
            self.save_manifest()
            t0 = time.perf_counter()
            try:
                message = fn(folder) or f"{stage}: done"
            except DiskFullError:
                raise
            except Exception as exc:  # a full disk inside a library's own writer (torch.save, safetensors, plots)
                if is_disk_full(exc, folder):
                    raise self._disk_full_in(stage, folder) from None
                raise
            seconds = time.perf_counter() - t0
            outputs = hash_tree(folder, self.root, skip=declared.is_state)  # live state is not evidence
            for rel in extra_outputs:
                outputs[rel] = sha256_file(self.root / rel)
            self.manifest["stages"][stage].update(status="done", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                  seconds=round(seconds, 2), outputs=outputs)
            self.save_manifest()
            return StageOutcome(stage, True, seconds, message)

    stage_lock_patience = 5.0  # seconds a process waits for another one's stage to finish before it gives up

    def _stage_lock(self, stage: str):
        """One process at a time writes a stage's folder: a second one waits a few seconds (quick stages such as
        serve's record finish in that time), then stops with a clear error rather than deleting files the first
        is writing."""
        deadline = time.monotonic() + self.stage_lock_patience
        while True:
            try:
                return _locked(self.root / f".{stage}.lock", wait=False)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RunDirError(f"{self.stage_dir(stage)}: another tunewise process is running the {stage} "
                                      f"stage of this run right now; wait for it to finish, then run the command "
                                      f"again") from None
                time.sleep(0.1)

    def _disk_full_in(self, stage: str, folder: Path) -> DiskFullError:
        """The error for a stage whose writer ran out of disk: names the file it was writing (the newest one in
        its folder) and what survives."""
        files = [p for p in folder.rglob("*") if p.is_file()]
        newest = max(files, key=lambda p: p.stat().st_mtime_ns) if files else folder
        resume = " (with --resume: training continues from its last complete checkpoint)" if stage == "train" else ""
        kept = ", and so are the checkpoints saved before this one" if stage == "train" else ""
        return disk_full(newest, f"The {stage} stage stopped and is recorded as unfinished; {self.root / MANIFEST} "
                                 f"and the outputs of the earlier stages are intact{kept}. Rerunning the "
                                 f"stage{resume} replaces what it left.")

    def _outputs_intact(self, rec: dict[str, Any]) -> bool:
        return all((self.root / rel).is_file() for rel in rec.get("outputs", {}))

    # -- verification
    def verify(self) -> list[str]:
        """Re-hash every recorded input and output. Returns a list of problems (empty when all match)."""
        from tunewise.artifacts.base import rerun_hint

        problems: list[str] = []
        recipe_file = self.root / RECIPE
        if not recipe_file.is_file():
            problems.append(f"{RECIPE}: missing")
        elif sha256_file(recipe_file) != self.manifest.get("recipe_sha256"):
            problems.append(f"{RECIPE}: modified (sha256 differs from manifest.json)")
        for stage, rec in self.manifest["stages"].items():
            if rec.get("status") != "done":
                problems.append(f"{stage}: stage did not finish (status {rec.get('status')!r})")
                continue
            for rel, digest in rec.get("outputs", {}).items():
                p = self.root / rel
                if not p.is_file():
                    problems.append(f"{rel}: missing (recorded by stage {stage})")
                elif sha256_file(p) != digest:
                    problems.append(f"{rel}: modified, damaged or truncated (sha256 differs from the one recorded "
                                    f"by stage {stage}; {rerun_hint(stage, self.root)})")
            for up, hashes in rec.get("upstream", {}).items():
                if hashes != self.outputs_of(up):
                    problems.append(f"{stage}: built from an earlier run of stage {up}, which has rerun since; "
                                    f"rerun `tunewise run` to bring {stage} up to date")
            live = stages.get(stage).live_inputs  # a log that has grown or rotated since is not damage
            for path, digest in ({} if live else rec.get("external_inputs", {})).items():
                p = Path(path)
                if not p.is_file():
                    problems.append(f"{path}: input of stage {stage} is missing")
                elif sha256_file(p) != digest:
                    problems.append(f"{path}: input of stage {stage} changed since the run")
        recorded = {rel for rec in self.manifest["stages"].values() for rel in rec.get("outputs", {})}
        for stage in self.manifest["stages"]:
            folder = self.stage_dir(stage)
            if folder.is_dir():
                for p in folder.rglob("*"):
                    rel = str(p.relative_to(self.root))
                    if p.is_file() and rel not in recorded and not p.name.endswith(".tmp") \
                            and not stages.get(stage).is_state(str(p.relative_to(folder))):
                        problems.append(f"{rel}: not recorded in the manifest (added after the run)")
        return problems + self._citation_problems()

    def _citation_problems(self) -> list[str]:
        """The files the model card cites (card/citations.json) must hash as cited, and as the manifest records."""
        from tunewise.artifacts.card import CITATIONS_FILE, Citations

        path = self.stage_dir("card") / CITATIONS_FILE
        if not self.is_done("card") or not path.is_file():
            return []
        recorded = {rel: digest for rec in self.manifest["stages"].values()
                    for rel, digest in rec.get("outputs", {}).items()}
        recorded[RECIPE] = self.manifest.get("recipe_sha256")
        try:
            citations = Citations.read(path).files
        except RunDirError:  # damaged: the hash check above already names it, with the stage to rerun
            return []
        problems = []
        for cite in citations:
            p = self.root / cite.path
            if not p.is_file():
                problems.append(f"{cite.path}: cited by the model card, missing")
            elif sha256_file(p) != cite.sha256:
                problems.append(f"{cite.path}: cited by the model card with another sha256 than the file has now")
            elif recorded.get(cite.path) != cite.sha256:
                problems.append(f"{cite.path}: cited by the model card with another sha256 than manifest.json "
                                f"records; rerun the card stage")
        return problems


def _merge(base: dict[str, Any], ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Three-way merge of manifests: what this process changed since `base` wins, the rest comes from the file
    (`theirs`); stage records merge one by one. Key order: the file's, then new keys. A manifest this process
    made (no `base`) replaces the file: it starts the run afresh."""
    if not base:
        return copy.deepcopy(ours)
    merged = _merge_keys(base, ours, theirs)
    if "stages" in merged:
        merged["stages"] = _merge_keys(base.get("stages", {}), ours.get("stages", {}), theirs.get("stages", {}))
    return merged


def _merge_keys(base: dict[str, Any], ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Key by key: one this process changed (or removed) since `base` takes its value, any other the file's."""
    merged: dict[str, Any] = {}
    for key in [*theirs, *(k for k in ours if k not in theirs)]:
        mine = ours.get(key, _GONE)
        value = mine if mine != base.get(key, _GONE) or key not in theirs else theirs[key]
        if value is not _GONE:
            merged[key] = value
    return merged


_GONE = object()


class _locked:
    """An exclusive advisory lock (flock) on `path`, held for a `with` block and freed by the kernel if the
    process dies. wait=False raises BlockingIOError at once when another process holds it."""

    def __init__(self, path: Path, *, wait: bool = True):
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BaseException:
            os.close(self._fd)
            raise

    def __enter__(self) -> "_locked":
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


def _layout_of(root: Path) -> int | None:
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return manifest.get("layout") if isinstance(manifest, dict) else None


def verify_run(root: str | Path) -> int:
    """Raise VerifyError listing every mismatch; return the number of files checked."""
    rd = RunDir.open(root)
    problems = rd.verify()
    if problems:
        raise VerifyError(f"{rd.root}: {len(problems)} artifact(s) do not match manifest.json:\n  - " + "\n  - ".join(problems))
    return 1 + sum(len(r.get("outputs", {})) + len(r.get("external_inputs", {})) for r in rd.manifest["stages"].values())
