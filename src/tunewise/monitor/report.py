"""monitor/report.html: one offline page. Per feature, its window values over time against the reference (alerting
windows in red); the embedding domain AUC against its calibrated threshold; feedback accuracy with CIs; for each
alerting window, the drifted features' distributions against the reference and example texts; the retrain
signal. Drawn with the shared plotting kit (SVG, deterministic)."""

from __future__ import annotations

import html

import matplotlib
import numpy as np

from tunewise.artifacts.monitor import DriftReport, ReferenceProfile
from tunewise.kit.html import inline_svg
from tunewise.kit.plots import BASELINE, HIGHLIGHT, RC, VAL_COLOR, figure, literal_text, message, to_svg

MAX_HISTOGRAM_WINDOWS = 3  # alerting windows whose distributions are drawn in full


def _window_axis(ax) -> None:  # noqa: ANN001
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("window")


def feature_over_time(report: DriftReport, profile: ReferenceProfile, feature: str) -> str:
    with matplotlib.rc_context(RC):
        fig = figure(6.4, 2.2)
        ax = fig.add_subplot()
        xs, ys, bad = [], [], []
        for w in report.windows:
            if feature in w.means:
                xs.append(w.index)
                ys.append(w.means[feature])
                bad.append(feature in w.drifted)
        if not xs:
            message(ax, f"no {feature} values in the log")
            return to_svg(fig, f"time-{feature}")
        ref = profile.numeric[feature]
        ax.axhspan(ref.quantiles["p25"], ref.quantiles["p75"], color=BASELINE, alpha=0.15,
                   label="reference p25-p75")
        ax.axhline(ref.mean, color=BASELINE, linestyle="--", linewidth=1, label="reference mean")
        ax.plot(xs, ys, color=HIGHLIGHT, marker="o", markersize=3, linewidth=1, label="window mean")
        bx = [x for x, b in zip(xs, bad) if b]
        by = [y for y, b in zip(ys, bad) if b]
        if bx:
            ax.scatter(bx, by, color=VAL_COLOR, zorder=3, s=30, label="drifted")
        ax.set_title(literal_text(f"{feature}: {ref.description}"))
        _window_axis(ax)
        ax.legend(loc="best", fontsize=7)
        return to_svg(fig, f"time-{feature}")


def categorical_over_time(report: DriftReport, feature: str) -> str:
    with matplotlib.rc_context(RC):
        fig = figure(6.4, 2.2)
        ax = fig.add_subplot()
        points = [(w.index, t.effect["js"], t.significant) for w in report.windows for t in w.tests
                  if t.feature == feature]
        if not points:
            message(ax, f"{feature}: not tested (too few rows with a value)")
            return to_svg(fig, f"time-{feature}")
        xs, ys, sig = zip(*points)
        ax.plot(xs, ys, color=HIGHLIGHT, marker="o", markersize=3, linewidth=1, label="Jensen-Shannon distance")
        bx = [x for x, s in zip(xs, sig) if s]
        if bx:
            ax.scatter(bx, [y for y, s in zip(ys, sig) if s], color=VAL_COLOR, zorder=3, s=30, label="drifted")
        ax.set_ylim(bottom=0)
        ax.set_title(literal_text(f"{feature}: distance from the reference distribution"))
        _window_axis(ax)
        ax.legend(loc="best", fontsize=7)
        return to_svg(fig, f"time-{feature}")


def embedding_over_time(report: DriftReport) -> str:
    with matplotlib.rc_context(RC):
        fig = figure(6.4, 2.2)
        ax = fig.add_subplot()
        points = [(w.index, t.statistic, t.effect["threshold"], t.significant) for w in report.windows
                  for t in w.tests if t.feature == "embedding"]
        if not points:
            message(ax, "no window was large enough for the embedding test")
            return to_svg(fig, "time-embedding")
        xs, auc, thr, sig = zip(*points)
        ax.plot(xs, auc, color=HIGHLIGHT, marker="o", markersize=3, linewidth=1, label="domain-classifier AUC")
        ax.plot(xs, thr, color=BASELINE, linestyle="--", linewidth=1, label="threshold at alpha (permutation null)")
        bx = [x for x, s in zip(xs, sig) if s]
        if bx:
            ax.scatter(bx, [a for a, s in zip(auc, sig) if s], color=VAL_COLOR, zorder=3, s=30, label="drifted")
        ax.axhline(0.5, color=BASELINE, linewidth=0.5)
        ax.set_title("Embedding drift: can a classifier tell the window from the reference?")
        _window_axis(ax)
        ax.legend(loc="best", fontsize=7)
        return to_svg(fig, "time-embedding")


def accuracy_over_time(report: DriftReport, profile: ReferenceProfile) -> str | None:
    points = [(w.index, w.performance) for w in report.windows if w.performance is not None]
    if not points:
        return None
    with matplotlib.rc_context(RC):
        fig = figure(6.4, 2.4)
        ax = fig.add_subplot()
        xs = [x for x, _ in points]
        acc = np.array([p.accuracy for _, p in points])
        lo = np.array([p.accuracy_ci[0] for _, p in points])
        hi = np.array([p.accuracy_ci[1] for _, p in points])
        ax.errorbar(xs, acc, yerr=[acc - lo, hi - acc], color=HIGHLIGHT, marker="o", markersize=3, capsize=2,
                    linewidth=1, label="accuracy (95% Wilson CI)")
        f1 = [p.macro_f1 for _, p in points]
        ax.plot(xs, f1, color=VAL_COLOR, marker="s", markersize=3, linewidth=1, label="macro-F1")
        if profile.performance is not None:
            ax.axhline(profile.performance.accuracy, color=BASELINE, linestyle="--", linewidth=1,
                       label="reference accuracy")
        ax.set_ylim(0, 1.02)
        ax.set_title("Accuracy from feedback labels")
        _window_axis(ax)
        ax.legend(loc="lower left", fontsize=7)
        return to_svg(fig, "time-accuracy")


def distribution(profile: ReferenceProfile, feature: str, window_bins: list[float], index: int) -> str:
    """Reference against window shares over the reference's PSI bins."""
    ref = profile.numeric[feature]
    edges = ref.psi_edges
    names = ([f"< {edges[0]:.3g}"] + [f"{a:.3g}-{b:.3g}" for a, b in zip(edges, edges[1:])]
             + [f">= {edges[-1]:.3g}"]) if edges else ["all"]
    with matplotlib.rc_context(RC):
        fig = figure(4.2, 2.4)
        ax = fig.add_subplot()
        x = np.arange(len(names))
        ax.bar(x - 0.2, ref.psi_reference, width=0.4, color=BASELINE, label="reference")
        ax.bar(x + 0.2, window_bins, width=0.4, color=VAL_COLOR, label=f"window {index}")
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=6)
        ax.set_ylabel("share of rows")
        ax.set_title(literal_text(feature))
        ax.legend(fontsize=7)
        return to_svg(fig, f"dist-{feature}-{index}")


def render(report: DriftReport, profile: ReferenceProfile, bins: dict[int, dict[str, list[float]]],
           run_name: str) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Monitor: {e(run_name)}</title>",
             "<style>body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
             ".alert{color:#b00020;font-weight:bold}.quiet{color:#2a7d2a;font-weight:bold}"
             "blockquote{border-left:3px solid #ccc;margin:4px 0;padding-left:8px;font-size:13px}</style></head><body>",
             f"<h1>Monitoring: {e(run_name)}</h1>",
             f"<p>Log <code>{e(report.source)}</code> · {report.rows_read:,} rows in {len(report.windows)} windows of "
             f"{e(report.window)} · {report.rows_quarantined:,} quarantined · {report.predicted_here:,} predicted by "
             f"the monitor · reference: {profile.rows:,} rows of the {profile.split} split.</p>"]
    if report.alert:
        parts.append(f"<p class='alert'>ALERT: drift in {e(', '.join(report.drifted_features))}"
                     f"{' and an accuracy drop' if report.performance_drop else ''}.</p>")
    else:
        parts.append("<p class='quiet'>Quiet: no test is significant after correction.</p>")
    parts.append(f"<p><small>{e(report.multiple_testing)} alpha = {report.alpha}.</small></p>")
    if report.retrain is not None:
        r = report.retrain
        c = r.cost
        hours = f"{c.core_hours:.3f} core-hours" if c.core_hours is not None else f"{c.gpu_hours:.3f} GPU-hours"
        parts.append("<h2>Retrain signal</h2>"
                     f"<p>{e(r.reason)}</p><p>Estimated retraining: {c.train_rows:,} rows x {c.epochs:g} epochs, "
                     f"about {c.seconds / 60:.1f} min on {e(c.device)}, {hours}, {c.price:.4f} {e(c.currency)}."
                     f"<br><small>{e(c.basis)}</small></p>")
        parts.append(f"<pre>{e(r.command)}</pre>" if r.command else
                     "<p>No labelled feedback rows in the log: label recent traffic to retrain on it.</p>")
    parts.append("<h2>Features over time</h2>")
    if any(t.feature == "embedding" for w in report.windows for t in w.tests):
        parts.append(str(inline_svg(embedding_over_time(report))))
    for feature in profile.numeric:
        parts.append(str(inline_svg(feature_over_time(report, profile, feature))))
    for feature in profile.categorical:
        parts.append(str(inline_svg(categorical_over_time(report, feature))))
    acc = accuracy_over_time(report, profile)
    if acc:
        parts.append("<h2>Performance from feedback</h2>" + str(inline_svg(acc)))
    alerting = [w for w in report.windows if w.alert]
    parts.append(f"<h2>Alerting windows ({len(alerting)})</h2>")
    for w in alerting[:MAX_HISTOGRAM_WINDOWS] if alerting else []:
        parts.append(f"<h3>Window {w.index}: {e(w.start)} to {e(w.end)} ({w.rows:,} rows)</h3>")
        parts.append("<table><tr><th>feature</th><th>test</th><th>statistic</th><th>p</th><th>Holm p</th>"
                     "<th>effects</th></tr>")
        for t in w.tests:
            cls = " class='alert'" if t.significant else ""
            effects = ", ".join(f"{k} {v:.3g}" for k, v in t.effect.items())
            parts.append(f"<tr{cls}><td>{e(t.feature)}</td><td>{e(t.test)}</td><td>{t.statistic:.4g}</td>"
                         f"<td>{t.p_value:.3g}</td><td>{t.adjusted_p:.3g}</td><td>{e(effects)}</td></tr>")
        parts.append("</table>")
        for feature in w.drifted:
            if feature in profile.numeric and feature in bins.get(w.index, {}):
                parts.append(str(inline_svg(distribution(profile, feature, bins[w.index][feature], w.index))))
        parts.append("<p>Example texts:</p>" + "".join(f"<blockquote>{e(t)}</blockquote>" for t in w.examples))
    if len(alerting) > MAX_HISTOGRAM_WINDOWS:
        parts.append(f"<p>... and {len(alerting) - MAX_HISTOGRAM_WINDOWS} more alerting windows: "
                     f"{', '.join(str(w.index) for w in alerting[MAX_HISTOGRAM_WINDOWS:])} (see drift.json).</p>")
    parts.append("<h2>All windows</h2><table><tr><th>window</th><th>from</th><th>to</th><th>rows</th>"
                 "<th>drifted</th><th>accuracy</th></tr>")
    for w in report.windows:
        acc_cell = (f"{w.performance.accuracy:.3f} [{w.performance.accuracy_ci[0]:.3f}, "
                    f"{w.performance.accuracy_ci[1]:.3f}] (n={w.performance.n_labelled})" if w.performance else "")
        drifted = ", ".join(w.drifted) if w.tested else "not tested (too few rows)"
        parts.append(f"<tr><td>{w.index}</td><td>{e(w.start)}</td><td>{e(w.end)}</td><td>{w.rows:,}</td>"
                     f"<td>{e(drifted)}</td><td>{acc_cell}</td></tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)
