"""The card's and report's faithfulness section, from the faithfulness stage's typed artifact (absent: no section):
the share of outputs flagged with its CI for each model side by side, the paired difference, and (report only) the
flagged outputs with their flagged sentences and unsupported numbers, names and dates highlighted."""

from __future__ import annotations

import html as html_lib
import json
from pathlib import Path

from tunewise.rundir import RunDir

SHOWN_PER_MODEL = 8  # flagged outputs shown in the report, per model
KIND_TITLES = {"number": "a number the source never mentions", "number_word": "a number word the source never states",
               "date": "a date the source never mentions", "name": "a name the source never mentions",
               "low_support": "words the source does not make likelier (low PMI) and that stay unlikely given it"}


def _results(rd: RunDir):
    from tunewise.artifacts.faithfulness import FaithfulnessResults

    path = rd.stage_dir("faithfulness") / FaithfulnessResults.FILE
    return FaithfulnessResults.read(path) if path.is_file() else None


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _rows(res) -> list[list[str]]:
    rows = []
    for name in res.model_order():
        m = res.models[name]
        rows.append([f"`{name}`", _pct(m.flagged.value), f"[{_pct(m.flagged.ci_low)}, {_pct(m.flagged.ci_high)}]",
                     f"{m.flagged_by_checker}", f"{m.flagged_by_checks}", f"{m.sentences_flagged} / {m.sentences}",
                     f"{m.mean_score:.3f}"])
    return rows


HEADER = ["model", "outputs flagged", "CI", "by the checker", "by the number check", "sentences flagged",
          "mean score"]


def _intro(res) -> str:
    c, s = res.checker, res.settings
    cut = f"{s.threshold:.3g} ({s.threshold_source})"
    rule = (f"a sentence's probability of being unsupported reaches {cut}" if s.unit == "sentence"
            else f"the whole output's probability of being unsupported reaches {cut}")
    checks = " or when it states a number (in digits) the source never mentions" if s.transparent_checks else ""
    held = "; ".join(f"balanced accuracy {b['balanced_accuracy']:.3f} on {name} ({b['n']:,} held-out summaries)"
                     for name, b in c.benchmark.items() if isinstance(b, dict) and "balanced_accuracy" in b)
    return (f"The checker `{c.name}` (`{c.lm}` log-probabilities of each token with and without the source, "
            f"combined with transparent checks by a logistic regression{'; ' + held if held else ''}) read each of "
            f"the {res.n_scored:,} test outputs per model against its source "
            f"({s.source}). An output is flagged when {rule}{checks}. Intervals: {res.confidence:.0%} percentile "
            f"bootstrap over outputs ({res.n_resamples:,} resamples).")


def _comparison_lines(res) -> list[str]:
    return [f"`{c.model}` minus `{c.baseline}`: {100 * c.diff:+.1f} points [{100 * c.ci_low:+.1f}, "
            f"{100 * c.ci_high:+.1f}], p={c.p_value:.3g} (paired over the same {c.n:,} prompts)."
            for c in res.comparisons]


CAVEAT = ("A flag is a signal for review, not a verdict: the checker is imperfect (see its accuracy above), and "
          "outputs that paraphrase freely can be flagged while subtle errors pass.")


def markdown(rd: RunDir) -> str | None:
    """The model card's section (Markdown), or None when the run has no faithfulness results."""
    res = _results(rd)
    if res is None:
        return None
    lines = ["## Faithfulness to the source", "", _intro(res), "",
             "| " + " | ".join(HEADER) + " |", "|---|---:|---|---:|---:|---:|---:|"]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(res)]
    lines += ["", *_comparison_lines(res), "", CAVEAT, ""]
    return "\n".join(lines)


def highlight(text: str, sentences: list[dict], unsupported: list[dict]) -> str:
    """`text` as HTML, escaped, with each flagged sentence in one <mark> and unsupported spans marked inside."""
    flagged = [s for s in sentences if s["flagged"]]
    cuts = {0, len(text)} | {x for s in flagged for x in (s["start"], s["end"])} | \
        {x for u in unsupported for x in (u["start"], u["end"])}
    points = sorted(c for c in cuts if 0 <= c <= len(text))
    groups: list[tuple[dict | None, list[str]]] = []  # runs of pieces inside the same flagged sentence (or none)
    for a, b in zip(points, points[1:]):
        piece = html_lib.escape(text[a:b])
        fact = next((u for u in unsupported if u["start"] <= a and b <= u["end"]), None)
        if fact is not None:
            title = html_lib.escape(KIND_TITLES.get(fact["kind"], fact["kind"]))
            piece = f'<mark class="faith-fact faith-{html_lib.escape(fact["kind"])}" title="{title}">{piece}</mark>'
        sent = next((s for s in flagged if s["start"] <= a and b <= s["end"]), None)
        if groups and groups[-1][0] is sent:
            groups[-1][1].append(piece)
        else:
            groups.append((sent, [piece]))
    out = []
    for sent, pieces in groups:
        body = "".join(pieces)
        out.append(body if sent is None else
                   f'<mark class="faith-sentence" title="P(unsupported) = {sent["score"]:.2f}">{body}</mark>')
    return "".join(out)


def _flagged_examples(rd: RunDir, res, name: str) -> list[dict]:
    path = rd.root / res.models[name].scores
    if not Path(path).is_file():
        return []
    with open(path, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    flagged = [r for r in rows if r["flagged"]]
    # concrete evidence first (a number the source never mentions), then the checker's score
    return sorted(flagged, key=lambda r: (r["flagged_by"] == ["checker"], -(r["score"] or 0)))[:SHOWN_PER_MODEL]


STYLE = ("<style>.faith mark.faith-sentence{background:#fde2b3}.faith mark.faith-fact{background:#f6a6a6;"
         "font-weight:600}.faith .faith-out{white-space:pre-wrap;border-left:3px solid #e0a040;padding:4px 8px;"
         "margin:6px 0}.faith td,.faith th{padding:2px 8px}</style>")


def html(rd: RunDir) -> str | None:
    """The report's section (an HTML fragment), or None when the run has no faithfulness results."""
    res = _results(rd)
    if res is None:
        return None
    esc = html_lib.escape
    parts = [STYLE, '<section class="faith" id="faithfulness">', "<h2>Faithfulness to the source</h2>",
             f"<p>{esc(_intro(res))}</p>", "<table><thead><tr>"
             + "".join(f"<th>{esc(h)}</th>" for h in HEADER) + "</tr></thead><tbody>"]
    for row in _rows(res):
        parts.append("<tr>" + "".join(f"<td>{esc(cell.strip('`'))}</td>" for cell in row) + "</tr>")
    parts.append("</tbody></table>")
    parts += [f"<p>{esc(line.replace('`', ''))}</p>" for line in _comparison_lines(res)]
    parts.append(f"<p><em>{esc(CAVEAT)}</em> Highlighted: <mark class='faith-sentence'>a flagged sentence</mark>, "
                 f"<mark class='faith-fact'>a number, name or date absent from the source</mark>.</p>")
    for name in res.model_order():
        examples = _flagged_examples(rd, res, name)
        m = res.models[name]
        parts.append(f"<h3>Flagged outputs of {esc(name)} ({len(examples)} of "
                     f"{round(m.flagged.value * m.flagged.n)} shown: failed checks first, then by score)</h3>")
        for r in examples:
            why = ", ".join(r["flagged_by"])
            score = "n/a" if r["score"] is None else f"{r['score']:.2f}"
            parts.append(f'<div class="faith-out"><small>{esc(str(r["id"]))} · score {score} · flagged by '
                         f'{esc(why)}</small><br>{highlight(r["prediction"], r["sentences"], r["unsupported"])}'
                         f"</div>")
    parts.append("</section>")
    return "\n".join(parts)
