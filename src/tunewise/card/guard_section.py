"""The card's and report's injection-guard section, from the guard stage's typed artifact (guard/guard.json;
absent: no section). Same interface as the other evidence sections: `markdown(rd)`, `html(rd)`."""

from __future__ import annotations

from html import escape

from tunewise.artifacts.guard import GuardReport, Rate
from tunewise.rundir import RunDir


def _report(rd: RunDir) -> GuardReport | None:
    path = rd.stage_dir("guard") / GuardReport.FILE
    return GuardReport.read(path) if path.is_file() else None


def _pct(r: Rate) -> str:
    return "n/a" if r.value is None else f"{r.value:.1%} ({r.hits}/{r.of})"


def _ci(r: Rate) -> str:
    return "n/a" if r.ci is None else f"[{r.ci[0]:.1%}, {r.ci[1]:.1%}]"


def _threshold(t: float) -> str:
    return "rules only" if t > 1 else f"{t:.4f}"


def _tables(g: GuardReport) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every table of the section: the card and the report show the same numbers."""
    points = [[f"{p.target_fpr:.0%}", _threshold(p.threshold), _pct(p.test_detection), _ci(p.test_detection),
               _pct(p.test_fpr), _ci(p.test_fpr), _pct(p.validation_fpr)] for p in g.operating_points]
    parts = [[name, _pct(c.detection), _ci(c.detection), _pct(c.fpr), _ci(c.fpr)] for name, c in g.components.items()]
    langs = [[lang, _pct(c.detection), _ci(c.detection), _pct(c.fpr), _ci(c.fpr)] for lang, c in g.per_language.items()]
    rules = [[r.name, r.language, f"`{r.pattern}`", r.why, str(r.test_hits_injection), str(r.test_hits_benign)]
             for r in g.rule_reports]
    out = [("Detection at fixed false-positive rates (test split)",
            ["target FPR", "threshold (chosen on validation)", "detection (TPR)", f"{g.confidence:.0%} CI",
             "FPR on test", f"{g.confidence:.0%} CI", "FPR on validation"], points),
           (f"Model and rules at the serving threshold ({_threshold(g.threshold)}, test split)",
            ["part", "detection", "CI", "FPR", "CI"], parts),
           ("By guessed language (combined guard, test split)", ["language", "detection", "CI", "FPR", "CI"], langs)]
    if g.benign_eval:
        ood = [[b.path.rsplit("/", 1)[-1], b.source or "n/a", b.license or "n/a", _pct(b.fpr), _ci(b.fpr),
                _pct(b.model_fpr), _pct(b.rules_fpr)] for b in g.benign_eval]
        out.append((f"False-positive rate on out-of-distribution benign text (never trained or tuned on; serving "
                    f"threshold {_threshold(g.threshold)})",
                    ["file", "source", "licence", "FPR (combined)", f"{g.confidence:.0%} CI", "model alone",
                     "rules alone"], ood))
    if rules:
        out.append(("Rules (a rule firing flags the text whatever the model says)",
                    ["rule", "language", "pattern", "why", "test injections hit", "test benign hit"], rules))
    return out


def markdown(rd: RunDir) -> str | None:
    """The model card's section (Markdown), or None when the run is not an injection guard."""
    g = _report(rd)
    if g is None:
        return None
    lines = ["## Prompt-injection guard", "",
             f"A text is flagged when the classifier's probability of `{g.positive_label}` (injection) reaches the "
             f"threshold, or a rule fires. The serving threshold, **{_threshold(g.threshold)}**, was chosen on the "
             f"validation split ({g.validation_rows['benign']} benign, {g.validation_rows['injection']} injection "
             f"rows) for at most {g.target_fpr:.0%} false positives, counting the rules' own. Detection is measured "
             f"on the test split ({g.test_rows['benign']} benign, {g.test_rows['injection']} injection rows), which "
             f"the guard never trained or tuned on; intervals: {g.ci_method}. Texts over {g.max_length} tokens are "
             f"scored in overlapping windows; the highest window counts."
             + (f" Model ROC AUC on test: {g.test_auc:.3f}." if g.test_auc is not None else ""), ""]
    for title, header, rows in _tables(g):
        lines += [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        lines.append("")
    lines += ["**Caveats**", ""] + [f"- {c}" for c in g.caveats]
    return "\n".join(lines) + "\n"


def html(rd: RunDir) -> str | None:
    """The report's section (an HTML fragment), or None when the run is not an injection guard."""
    g = _report(rd)
    if g is None:
        return None
    parts = ["<section id=\"guard\"><h2>Prompt-injection guard</h2>",
             f"<p>Serving threshold <b>{escape(_threshold(g.threshold))}</b>, chosen on validation for at most "
             f"{g.target_fpr:.0%} false positives (rules counted). Test split: {g.test_rows['benign']} benign, "
             f"{g.test_rows['injection']} injection rows, never trained or tuned on. {escape(g.ci_method)}.</p>"]
    for title, header, rows in _tables(g):
        parts.append(f"<h3>{escape(title)}</h3><table><thead><tr>"
                     + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr></thead><tbody>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{escape(c.strip('`'))}</td>" for c in row) + "</tr>")
        parts.append("</tbody></table>")
    parts.append("<h3>Caveats</h3><ul>" + "".join(f"<li>{escape(c)}</li>" for c in g.caveats) + "</ul></section>")
    return "".join(parts)
