"""The humaneval stage: human ratings of a generation run's test outputs, collected in the browser.

`tunewise human-eval RUN` starts a local page (server.py) where invited annotators rate sampled test outputs,
pairwise against the base model (or another run) or on Likert criteria; ratings live in humaneval/ratings.sqlite
(store.py; state, not evidence). `tunewise human-eval results RUN` runs this stage: it freezes the ratings into
humaneval/ratings.jsonl and computes humaneval/results.json (typed: tunewise.artifacts.HumanEvalResults) from them;
both are hashed into the manifest, so `tunewise verify` covers them. Not part of `tunewise run`.
"""

from __future__ import annotations

from pathlib import Path

from tunewise.artifacts.humaneval import HumanEvalResults
from tunewise.humaneval.items import HumanEvalError
from tunewise.rundir import RunDir, StageOutcome, atomic_write_jsonl, sha256_file
from tunewise.stages import RunOptions

RATINGS_FILE = "ratings.jsonl"


def write_results(rd: RunDir, out: Path) -> str:
    """Freeze the ratings and compute results.json from exactly what was frozen."""
    from tunewise.humaneval.results import compute
    from tunewise.humaneval.store import Store

    store = Store(out)
    study, ratings = require_ratings(rd, store)
    items = store.items()
    atomic_write_jsonl(out / RATINGS_FILE, ratings)
    evaluate = rd.recipe.evaluate
    results = compute(study, len(items), sum(it.shared for it in items), ratings,
                      n_resamples=evaluate.bootstrap_samples, confidence=evaluate.confidence,
                      ratings_file=f"{out.name}/{RATINGS_FILE}", ratings_sha256=sha256_file(out / RATINGS_FILE))
    results.write(out)
    return summary_line(results)


def require_ratings(rd: RunDir, store) -> tuple:  # noqa: ANN001  # a humaneval.store.Store
    """The study and its ratings; an error saying what to do when there are none yet."""
    study = store.study()
    if study is None:
        raise HumanEvalError(f"{rd.root}: no human-evaluation study yet; start one with `tunewise human-eval "
                             f"{rd.root}` and invite annotators with `tunewise human-eval invite {rd.root} NAME`")
    ratings = store.ratings()
    if not ratings:
        raise HumanEvalError(f"{store.path}: no ratings yet; annotators rate at the links "
                             f"`tunewise human-eval invite {rd.root} NAME` prints")
    return study, ratings


def summary_line(r: HumanEvalResults) -> str:
    head = (f"humaneval: {r.n_ratings} ratings of {r.n_rated_items}/{r.n_items} items by {r.n_annotators} "
            f"annotator{'s' if r.n_annotators != 1 else ''}")
    if r.pairwise is not None:
        p = r.pairwise
        body = (f"fine-tuned wins {p.wins}, loses {p.losses}, ties {p.ties} against {r.against}; "
                f"win rate {_pct(p.win_rate)}, among decided {_pct(p.decided_win_rate)}")
        agree = p.agreement
    else:
        assert r.likert is not None
        body = "; ".join(f"{c} {_num(s.fine_tuned.value)} vs {_num(s.other.value)}" for c, s in r.likert.items())
        agree = next(iter(r.likert.values())).agreement
    kappa = (f"; {agree.method.replace('_', ' ')} {agree.value:.2f} on {agree.n_items} shared items"
             if agree.value is not None and agree.method else "")
    return f"{head}: {body}{kappa}"


def _pct(i) -> str:  # noqa: ANN001
    if i.value is None:
        return "n/a"
    ci = f" [{i.ci_low:.0%}, {i.ci_high:.0%}]" if i.ci_low is not None else ""
    return f"{i.value:.0%}{ci}"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def run(rd: RunDir, options: RunOptions = RunOptions()) -> StageOutcome:
    """Compute results.json from the current ratings. Always runs: the ratings change while the study goes on,
    and they are state, not one of the stage's hashed inputs (results.json records their hash instead)."""
    from tunewise.humaneval.store import Store

    require_ratings(rd, Store(rd.stage_dir("humaneval")))  # before the manifest records a started stage
    return rd.run_stage("humaneval", lambda out: write_results(rd, out), force=True, keep_existing=True)
