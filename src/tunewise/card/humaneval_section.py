"""The card's and report's humaneval section, from the humaneval stage's typed artifact (absent: no section).

It states how many items, ratings and annotators stand behind the numbers, the win rate with its CI (ties shown as
ties, and the win rate among decided items) or the Likert means with CIs, and the agreement between annotators.
"""

from __future__ import annotations

from markupsafe import escape

from tunewise.artifacts.humaneval import Agreement, HumanEvalResults, Interval
from tunewise.rundir import RunDir

AGREEMENT_NAMES = {"cohen_kappa": "Cohen's kappa", "cohen_kappa_quadratic": "Cohen's kappa (quadratic weights)",
                   "krippendorff_alpha_nominal": "Krippendorff's alpha (nominal)",
                   "krippendorff_alpha_ordinal": "Krippendorff's alpha (ordinal)"}


def read(rd: RunDir) -> HumanEvalResults | None:
    """The run's results.json, or None when human evaluation has not produced one (a damaged file raises)."""
    path = rd.stage_dir("humaneval") / HumanEvalResults.FILE
    if not rd.is_done("humaneval") or not path.is_file():
        return None
    return HumanEvalResults.read(path)


def _pct(i: Interval) -> str:
    if i.value is None:
        return "n/a"
    return f"{i.value:.1%}" + (f" [{i.ci_low:.1%}, {i.ci_high:.1%}]" if i.ci_low is not None else "")


def _mean(i: Interval, signed: bool = False) -> str:
    if i.value is None:
        return "n/a"
    f = "{:+.2f}" if signed else "{:.2f}"
    return f.format(i.value) + (f" [{f.format(i.ci_low)}, {f.format(i.ci_high)}]" if i.ci_low is not None else "")


def _agreement(a: Agreement) -> str:
    if a.value is None or a.method is None:
        return f"not computed: {a.note}" if a.note else "not computed"
    raw = f", raw agreement {a.raw_agreement:.0%}" if a.raw_agreement is not None else ""
    caveat = (a.note or "").split("; ", 1)[1:]  # past the first clause: how to read it (e.g. the kappa paradox)
    return (f"{AGREEMENT_NAMES[a.method]} {a.value:.2f} ({a.n_items} items rated by {a.n_annotators} "
            f"annotators{raw})" + (f"; {caveat[0].replace(' (see raw_agreement)', '')}" if caveat else ""))


def _who(r: HumanEvalResults) -> str:
    return (f"{r.n_annotators} annotator{'s' if r.n_annotators != 1 else ''} gave {r.n_ratings} ratings of "
            f"{r.n_rated_items} of the study's {r.n_items} items ({r.n_rows} test rows, sampled with seed {r.seed}; "
            f"{r.n_shared_items} items shared by every annotator)")


def rows(r: HumanEvalResults) -> list[tuple[str, str]]:
    """(what, value) rows shared by the card and the report, so the two cannot disagree."""
    conf = f"{r.confidence:.0%} CI"
    if r.pairwise is not None:
        p = r.pairwise
        return [(f"Win rate of the fine-tuned model ({conf})", _pct(p.win_rate)),
                ("Tie rate", _pct(p.tie_rate)), ("Loss rate", _pct(p.loss_rate)),
                (f"Win rate among decided ratings ({conf})", _pct(p.decided_win_rate)),
                ("Ratings: wins / ties / losses", f"{p.wins} / {p.ties} / {p.losses}"),
                ("Items by majority: won / tied or split / lost", f"{p.items_won} / {p.items_tied} / {p.items_lost}"
                 + (f" (sign test p = {p.sign_test_p:.3g})" if p.sign_test_p is not None else "")),
                ("Agreement", _agreement(p.agreement))]
    assert r.likert is not None
    out = []
    for criterion, s in r.likert.items():
        out.append((f"{criterion}: fine-tuned / other, mean 1-5 ({conf})",
                    f"{_mean(s.fine_tuned)} / {_mean(s.other)}; difference {_mean(s.difference, signed=True)}"))
        out.append((f"{criterion}: agreement", _agreement(s.agreement)))
    return out


def _intro(r: HumanEvalResults) -> str:
    kind = ("blind pairwise comparison (sides randomised per item and annotator; A, B or tie)"
            if r.mode == "pairwise" else f"blind Likert ratings (1-5 on {', '.join(r.criteria)})")
    return f"{kind} of the fine-tuned model against {r.against_description}"


def markdown(rd: RunDir) -> str | None:
    """The model card's section (Markdown), or None when the run has no humaneval results."""
    r = read(rd)
    if r is None:
        return None
    def cell(text: str) -> str:
        return text.replace("|", "\\|")
    lines = ["## Human evaluation", "",
             f"A {_intro(r)}. {_who(r)}.", "",
             "| | |", "|---|---|", *[f"| {cell(k)} | {cell(v)} |" for k, v in rows(r)], "",
             "Per annotator: " + ", ".join(f"{cell(name)} {a.ratings}" for name, a in r.annotators.items()) + ".",
             "", f"Intervals: percentile bootstrap over items ({r.n_resamples} resamples). Ratings: `{r.ratings_file}` "
             f"(sha256 `{r.ratings_sha256[:12]}`)."]
    return "\n".join(lines) + "\n"


def html(rd: RunDir) -> str | None:
    """The report's section (an HTML fragment), or None when the run has no humaneval results."""
    r = read(rd)
    if r is None:
        return None
    table = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows(r))
    per = ", ".join(f"{escape(name)} {a.ratings}" for name, a in r.annotators.items())
    return (f'<section id="human-evaluation"><h2>Human evaluation</h2>'
            f"<p>A {escape(_intro(r))}. {escape(_who(r))}.</p><table>{table}</table>"
            f"<p>Per annotator: {per}.</p>"
            f"<p>Intervals: percentile bootstrap over items ({r.n_resamples} resamples). Ratings: "
            f"<code>{escape(r.ratings_file)}</code> (sha256 <code>{escape(r.ratings_sha256[:12])}</code>).</p>"
            f"</section>")
