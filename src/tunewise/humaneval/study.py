"""Opening a run's study: settings from the recipe's `humaneval:` section with the command's overrides, the study
created on first use, and refused when the outputs it rates have changed since."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from tunewise.humaneval.items import BASE, HumanEvalError, StudySettings, sample_items
from tunewise.humaneval.store import Store, Study
from tunewise.rundir import RunDir, sha256_file


def settings_for(rd: RunDir, *, mode: str | None = None, n: int | None = None, against: str | None = None,
                 overlap: float | None = None) -> StudySettings:
    """The recipe's humaneval section, with what the command line gave on top."""
    cfg = rd.recipe.humaneval
    settings = StudySettings(mode=mode or cfg.mode, n=n if n is not None else cfg.n, criteria=tuple(cfg.criteria),
                             overlap=overlap if overlap is not None else cfg.overlap, against=against or BASE,
                             seed=rd.recipe.seed)
    if settings.mode not in ("pairwise", "likert"):
        raise HumanEvalError(f"--mode must be pairwise or likert; got {settings.mode!r}")
    if settings.n < 1:
        raise HumanEvalError(f"--n must be at least 1; got {settings.n}")
    if not 0.0 <= settings.overlap <= 1.0:
        raise HumanEvalError(f"--overlap must be in [0, 1]; got {settings.overlap}")
    if settings.against != BASE:
        settings = replace(settings, against=str(Path(settings.against).resolve()))
    return settings


def _differences(study: Study, settings: StudySettings, asked: set[str]) -> list[str]:
    have = {"mode": study.mode, "n": study.n, "against": study.against_arg, "overlap": study.overlap}
    want = {"mode": settings.mode, "n": settings.n, "against": settings.against, "overlap": settings.overlap}
    return [f"{k} {have[k]!r} (asked: {want[k]!r})" for k in have if k in asked and have[k] != want[k]]


def open_study(rd: RunDir, settings: StudySettings, *, asked: set[str] = frozenset(), new: bool = False,
               echo=print) -> tuple[Store, Study]:
    """The run's study, created from `settings` when there is none. `asked`: the settings the user gave
    explicitly; one that differs from the existing study's is an error (the items are fixed once rating starts).
    `new`: keep the old database aside (ratings.sqlite.<time>.bak) and start afresh."""
    store = Store(rd.stage_dir("humaneval"))
    study = store.study()
    if study is not None and new:
        backup = store.path.with_name(f"{store.path.name}.{time.strftime('%Y%m%d-%H%M%S')}.bak")
        with store.connect() as conn:  # fold the WAL into the file before moving it
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.path.rename(backup)
        for suffix in ("-wal", "-shm"):
            Path(f"{store.path}{suffix}").unlink(missing_ok=True)
        echo(f"human-eval: the previous study's ratings are kept in {backup}")
        study = None
    if study is None:
        sample = sample_items(rd, settings)
        if sample.n_rows < settings.n:
            echo(f"human-eval: {sample.available_rows} test rows have outputs from both sides; rating all "
                 f"{sample.n_rows} (asked for {settings.n})")
        study = store.create(settings, sample)
        n_shared = sum(it.shared for it in sample.items)
        echo(f"human-eval: new {study.mode} study of {len(sample.items)} items ({sample.n_rows} test rows, "
             f"{n_shared} shared by every annotator) against {study.against_description}")
        return store, study
    wrong = _differences(study, settings, asked)
    if wrong:
        raise HumanEvalError(f"{store.path} holds a study with {'; '.join(wrong)}. Its items are fixed once rating "
                             f"starts: drop those options to continue it, or add --new to start another (the old "
                             f"ratings are kept beside it)")
    changed = [p for p, digest in study.sources.items() if not Path(p).is_file() or sha256_file(Path(p)) != digest]
    if changed:
        raise HumanEvalError(f"{', '.join(changed)} changed since this study began ({study.created}): its ratings "
                             f"rate outputs the model no longer gives. Start a new study with --new (the old "
                             f"ratings are kept beside it)")
    return store, study
