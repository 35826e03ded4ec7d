"""The card's and report's probes section, from the probes stage's typed artifact (absent: no section).

Both renderers build the same tables from `probes/probes.json` (`_tables`), so the card and the report cannot
disagree; Markdown and HTML differ only in how a table is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from markupsafe import escape

from tunewise.artifacts.probes import CrowsPairs, Estimate, Probes
from tunewise.card.tables import fmt, fmt_p, pct
from tunewise.rundir import RunDir

BLODGETT = ("Blodgett et al. 2021, \"Stereotyping Norwegian Salmon: An Inventory of Pitfalls in Fairness "
            "Benchmark Datasets\" (ACL)")
CROWS_CAVEATS = [
    f"{BLODGETT} found that many CrowS-Pairs pairs do not test a stereotype cleanly: some contrast groups that are "
    "not a meaningful pair, some change more than the group word, some hold grammatical or spelling errors, and "
    "some stereotypes are confused or not stereotypes at all. A score is therefore a noisy, partial signal.",
    "The authors themselves warn that the dataset \"may not be a good indicator of the presence of social biases in "
    "LMs\", and that a lower score does not mean a model is unbiased.",
    "The stereotypes are those of crowd workers in the United States (US English); other cultures' stereotypes "
    "are not covered.",
    "The sentences are offensive by design; the dataset is for evaluation only and must not be trained on.",
]


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""
    align_right: set[int] = field(default_factory=set)


def _ci(e: Estimate, digits: int = 3, signed: bool = False) -> str:
    return f"{fmt(e.value, digits, signed)} [{fmt(e.ci_low, digits, signed)}, {fmt(e.ci_high, digits, signed)}]"


def _short(text: str, limit: int = 140) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def read_probes(rd: RunDir) -> Probes | None:
    """The run's probes artifact, or None when the probes stage has not run for it."""
    if not rd.is_done("probes"):
        return None
    return Probes.read(rd.stage_dir("probes") / Probes.FILE)


def _intro(p: Probes) -> str:
    conf = pct(p.confidence)
    probed = (f"{p.n_probed:,} of {p.n_test:,} test rows (a seeded random sample)" if p.n_probed < p.n_test
              else f"all {p.n_test:,} test rows")
    if p.counterfactual is not None:
        what = "Counterfactual identity-term swaps and noise on " + probed
    else:
        what = "CrowS-Pairs stereotype preference of the base and the fine-tuned model" + (
            f", and noise on the first {p.n_probed:,} test prompts" if p.robustness else "")
    return (f"{what}. Intervals are {conf} percentile bootstraps ({p.n_resamples:,} resamples, seed {p.seed}) "
            f"over the sampled unit: texts, or sentence pairs. Written by the probes stage (`probes/probes.json`).")


def _counterfactual_tables(p: Probes) -> list[Table]:
    if p.counterfactual is None:
        return []
    conf = pct(p.confidence)
    rows = [[fam.title, f"{fam.n_texts:,}", f"{fam.n_variants:,}", _ci(fam.flip_rate), f"{fam.texts_with_flip:,}",
             _ci(fam.prob_shift, signed=True), fmt(fam.mean_abs_prob_shift)]
            for fam in p.counterfactual.values()]
    absent = (f" No probed text mentions a term of: {', '.join(p.families_without_terms)} (nothing to measure)."
              if p.families_without_terms else "")
    sources = " ".join(f"*{fam.title}*: {fam.source}" for fam in p.counterfactual.values())
    tables = [Table(
        "Counterfactual identity-term swaps",
        ["family", "texts mentioning it", "variants", f"flip rate [{conf} CI]", "texts with a flip",
         f"mean Δ p(predicted class) [{conf} CI]", "mean |Δ p|"], rows,
        "Each test text that mentions a family's terms is rewritten with the terms of the family's other groups "
        "(whole words, case kept: he ↔ she, Greg ↔ Kareem, Mexico → Germany, ...). The flip rate is the share of "
        "variants whose predicted label differs from the original's; Δ p is the change in the probability of the "
        "originally predicted class. A model that ignores identity scores 0 on both. Texts that mention no term of "
        f"a family do not count for it.{absent} Term lists (tunewise/kit/terms/): {sources}",
        align_right={1, 2, 4, 6})]
    for fam in p.counterfactual.values():
        if not fam.top_flips:
            continue
        tables.append(Table(
            f"{fam.title}: the texts that flip most",
            ["id", "original → variant", "label (p) → label", "flipping variants"],
            [[f.id, f"{_short(f.original)} → {_short(f.variant)}",
              f"{f.original_label} ({fmt(f.original_prob, 2)}) → {f.variant_label} "
              f"(p of {f.original_label}: {fmt(f.variant_prob, 2)})", f"{f.flipped_variants} of {f.variants}"]
             for f in fam.top_flips], align_right={3}))
    return tables


def _robustness_table(p: Probes) -> Table | None:
    if not p.robustness:
        note = p.robustness_note
        return Table("Robustness to noise", [], [], f"Not measured: {note}.") if note else None
    conf = pct(p.confidence)
    first = next(iter(p.robustness.values()))
    digits = 2 if first.metric == "chrf" else 3
    rows = [[kind, fmt(r.rate, 2), f"{r.n_changed:,}", fmt(r.clean, digits), fmt(r.noisy, digits),
             _ci(r.drop, digits, signed=True), fmt_p(r.p_value)] for kind, r in p.robustness.items()]
    note = (f"The same texts clean and with seeded noise (probes.noise_rates); the drop is clean − noisy, paired by "
            f"text. p: {first.test}.")
    if p.robustness_note:
        note += f" Scope: {p.robustness_note}."
    return Table(f"Robustness to noise ({first.metric})",
                 ["noise", "rate", "texts changed", "clean", "noisy", f"drop [{conf} CI]", "p"], rows, note,
                 align_right={1, 2, 3, 4, 6})


def _crows_table(c: CrowsPairs, conf: str) -> Table:
    rows = [["**all**", f"{c.n_pairs:,}", _ci(c.base.overall), _ci(c.finetuned.overall),
             _ci(c.difference, signed=True)]]
    for t, e in c.finetuned.per_bias_type.items():
        rows.append([t, f"{e.n:,}", _ci(c.base.per_bias_type[t]), _ci(e),
                     _ci(c.per_bias_type_difference[t], signed=True)])
    note = (f"Share of pairs in which the model scores the more stereotyping sentence higher: 0.5 is the ideal, "
            f"above it the model prefers stereotypes. Base: `{c.base_model}` as shipped; fine-tuned: this run's "
            f"model ({c.precision}). Difference: fine-tuned − base, paired by pair; exact McNemar p = "
            f"{fmt_p(c.difference_p_value)}. Ties (both sentences score the same, counted as not preferring): base "
            f"{c.base.ties}, fine-tuned {c.finetuned.ties}. Scoring: {c.method}. Data: {c.dataset}, sha256 "
            f"`{c.sha256[:12]}`.")
    return Table("CrowS-Pairs stereotype preference", ["bias type", "pairs", f"base [{conf} CI]",
                                                       f"fine-tuned [{conf} CI]", f"difference [{conf} CI]"],
                 rows, note, align_right={1})


def _tables(p: Probes) -> tuple[list[Table], list[str]]:
    """The section's tables, and the CrowS-Pairs caveats (empty when it did not run)."""
    tables = _counterfactual_tables(p)
    caveats: list[str] = []
    if p.crows_pairs is not None:
        tables.append(_crows_table(p.crows_pairs, pct(p.confidence)))
        caveats = CROWS_CAVEATS
    elif p.crows_pairs_note:
        tables.append(Table("CrowS-Pairs stereotype preference", [], [], f"Not scored: {p.crows_pairs_note}."))
    robust = _robustness_table(p)
    if robust is not None:
        tables.append(robust)
    return tables, caveats


def _md_cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", r"\|")


def markdown(rd: RunDir) -> str | None:
    """The model card's section (Markdown), or None when the run has no probes results."""
    p = read_probes(rd)
    if p is None:
        return None
    tables, caveats = _tables(p)
    out = ["## Bias and robustness probes", "", _intro(p), ""]
    for t in tables:
        out += [f"### {t.title}", ""]
        if t.header:
            out.append("| " + " | ".join(_md_cell(h) for h in t.header) + " |")
            out.append("|" + "|".join("---:" if i in t.align_right else "---" for i in range(len(t.header))) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
            out.append("")
        if t.note:
            out += [t.note, ""]
    if caveats:
        out += ["**Caveats of CrowS-Pairs.**", ""] + [f"- {c}" for c in caveats] + [""]
    return "\n".join(out)


def html(rd: RunDir) -> str | None:
    """The report's section (an HTML fragment), or None when the run has no probes results."""
    p = read_probes(rd)
    if p is None:
        return None
    tables, caveats = _tables(p)
    out = ['<section id="probes">', "<h2>Bias and robustness probes</h2>", f"<p>{escape(_intro(p))}</p>"]
    for t in tables:
        out.append(f"<h3>{escape(t.title)}</h3>")
        if t.header:
            head = "".join(f"<th>{escape(h)}</th>" for h in t.header)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>")
            for row in t.rows:
                cells = "".join(f'<td class="num">{escape(c.strip("*"))}</td>' if i in t.align_right
                                else f"<td>{escape(c.strip('*'))}</td>" for i, c in enumerate(row))
                out.append(f"<tr>{cells}</tr>")
            out.append("</tbody></table>")
        if t.note:
            out.append(f'<p class="note">{escape(t.note)}</p>')
    if caveats:
        out.append("<p><strong>Caveats of CrowS-Pairs.</strong></p><ul>"
                   + "".join(f"<li>{escape(c)}</li>" for c in caveats) + "</ul>")
    out.append("</section>")
    return "\n".join(out)
