"""Monitoring a deployed model: the reference stage (`monitor.reference`, run by `tunewise run` after training) and
`tunewise monitor RUN --log PATH_OR_URL`, which tests windows of logged traffic against that reference.

monitor/ is rewritten by each monitor run (the log itself is the history: rerun over it, or over new traffic with
--since); drift.json (DriftReport), report.html, quarantine.jsonl, feedback.jsonl (the labelled rows read) and,
after an alert with feedback, retrain/ with the data of the retrain command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tunewise.errors import TunewiseError

if TYPE_CHECKING:
    from tunewise.artifacts.monitor import DriftReport
    from tunewise.rundir import RunDir, StageOutcome
    from tunewise.stages import RunOptions


def run(rd: "RunDir", options: "RunOptions") -> "StageOutcome":
    """The registry's entry: the monitor needs a log, which only `tunewise monitor` (or `monitor_run`) gives."""
    raise TunewiseError(f"the monitor reads a prediction log: `tunewise monitor {rd.root} --log PATH_OR_URL`")


@dataclass
class MonitorOutcome:
    report: "DriftReport"
    message: str
    folder: Path


def monitor_settings(recipe, overrides: list[str]):
    """The recipe's monitor section with `monitor.key=value` overrides applied for this monitor run only."""
    from pydantic import ValidationError

    from tunewise.recipe import MonitorConfig, parse_override

    values = recipe.monitor.model_dump()
    for item in overrides:
        key, value, delete = parse_override(item)
        if not key.startswith("monitor.") or key.count(".") != 1 or delete:
            raise TunewiseError(f"override `{item}`: `tunewise monitor` takes only monitor.KEY=VALUE overrides "
                                f"(keys: {', '.join(MonitorConfig.model_fields)})")
        values[key.split(".", 1)[1]] = value
    try:
        return MonitorConfig.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"monitor.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise TunewiseError(f"monitor settings: {problems}") from None


def monitor_run(rd: "RunDir", log: str, *, window: str | None = None, since: str | None = None,
                overrides: list[str] | None = None, progress: bool = True) -> MonitorOutcome:
    """Test the log against the run's reference; write monitor/. The caller decides the exit code from
    `outcome.report.alert`."""
    from tunewise.artifacts.monitor import DriftReport, FeatureTest, PerformanceWindow, WindowResult
    from tunewise.monitor import sources
    from tunewise.monitor.model import RunModel
    from tunewise.monitor.reference import load_reference
    from tunewise.monitor.report import render
    from tunewise.monitor.retrain import retrain_signal
    from tunewise.monitor.runner import MULTIPLE_TESTING, monitor_log
    from tunewise.recipe import MonitorConfig
    from tunewise.rundir import AtomicJsonlWriter, atomic_write_jsonl, atomic_write_text

    cfg = monitor_settings(rd.recipe, overrides or [])
    if window is not None:
        try:
            cfg = MonitorConfig.model_validate({**cfg.model_dump(), "window": str(window)})
        except Exception:
            raise TunewiseError(f"--window {window!r}: expected a row count (500) or a duration (30min, 1h, 1d, "
                                f"1w)") from None
    since_ts = sources.parse_since(since)
    log = str(log)
    external = [] if sources.is_sql(log) else [Path(log)]
    holder: dict[str, MonitorOutcome] = {}

    def write(out: Path) -> str:
        profile, embeddings, vocab = load_reference(rd.stage_dir("reference"))
        model = RunModel(rd.recipe, rd.stage_dir("train"), profile.labels, load_model=True)
        feedback_path = out / "feedback.jsonl"
        feedback_rows = 0
        with AtomicJsonlWriter(feedback_path) as sink:
            def keep(rec) -> None:
                nonlocal feedback_rows
                feedback_rows += 1
                sink.write({"text": rec.text, "label": rec.label, "prediction": rec.prediction, "where": rec.where,
                            **({"timestamp": sources.format_time(rec.timestamp)} if rec.timestamp else {})})

            result = monitor_log(log, profile=profile, embeddings=embeddings, vocabulary=vocab, model=model,
                                 cfg=cfg, window=cfg.window.strip(), since=since_ts, seed=rd.recipe.seed,
                                 feedback_sink=keep, progress=progress)
        atomic_write_jsonl(out / "quarantine.jsonl", [q.to_json() for q in result.quarantine])
        windows = []
        for w, adjusted in zip(result.windows, result.adjusted):
            tests = [FeatureTest(feature=t.feature, kind=t.kind, test=t.test, statistic=t.statistic,
                                 p_value=t.p_value, adjusted_p=float(a), significant=bool(a <= cfg.alpha),
                                 effect=t.effect) for t, a in zip(w.tests, adjusted)]
            drifted = [t.feature for t in tests if t.significant]
            windows.append(WindowResult(index=w.index, start=w.start, end=w.end, rows=w.rows, tested=w.tested,
                                        alert=bool(drifted), drifted=drifted, tests=tests, means=w.means,
                                        shares=w.shares, examples=w.examples,
                                        performance=PerformanceWindow(**w.performance) if w.performance else None))
        drifted_features = list(dict.fromkeys(f for w in windows for f in w.drifted if f != "accuracy"))
        performance_drop = any("accuracy" in w.drifted for w in windows)
        alert = any(w.alert for w in windows)
        retrain = None
        if alert:
            what = []
            if drifted_features:
                what.append(f"drift in {', '.join(drifted_features)}")
            if performance_drop:
                what.append("a significant accuracy drop from feedback")
            alerting = [w.index for w in windows if w.alert]
            reason = (f"Confirmed {' and '.join(what)} (windows {', '.join(map(str, alerting))}; Holm-corrected "
                      f"over all {sum(len(w.tests) for w in windows)} tests at alpha {cfg.alpha}).")
            retrain = retrain_signal(rd, out, reason, feedback_path if feedback_rows else None, feedback_rows)
        report = DriftReport(
            source=sources.describe(log), source_kind="sql" if sources.is_sql(log) else "jsonl", window=cfg.window,
            since=since, rows_read=result.rows_read, rows_quarantined=len(result.quarantine),
            rows_skipped_since=result.rows_skipped_since, predicted_here=result.predicted_here, alpha=cfg.alpha,
            multiple_testing=MULTIPLE_TESTING,
            settings={k: v for k, v in cfg.model_dump().items()}, windows=windows, alert=alert,
            drifted_features=drifted_features, performance_drop=performance_drop, retrain=retrain)
        report.write(out)
        atomic_write_text(out / "report.html", render(report, profile, {w.index: w.bins for w in result.windows},
                                                      rd.recipe.name))
        lines = [f"monitor: {result.rows_read:,} rows in {len(windows)} windows of {cfg.window} "
                 f"({len(result.quarantine):,} quarantined, {result.predicted_here:,} predicted here) "
                 f"in {result.seconds:.1f}s"]
        if result.quarantine:
            q = result.quarantine[0]
            lines.append(f"  quarantined: {q.where}: {q.field}: {q.reason}"
                         + (f" (and {len(result.quarantine) - 1} more in monitor/quarantine.jsonl)"
                            if len(result.quarantine) > 1 else ""))
        for w in windows:
            if w.performance:
                p = w.performance
                lines.append(f"  window {w.index}: accuracy {p.accuracy:.3f} [{p.accuracy_ci[0]:.3f}, "
                             f"{p.accuracy_ci[1]:.3f}] · macro-F1 {p.macro_f1:.3f} [{p.macro_f1_ci[0]:.3f}, "
                             f"{p.macro_f1_ci[1]:.3f}] on {p.n_labelled} feedback rows")
        if alert:
            lines.append(f"ALERT: {retrain.reason}")
            for w in windows:
                if w.alert:
                    worst = min(w.tests, key=lambda t: t.adjusted_p)
                    lines.append(f"  window {w.index} ({w.start} .. {w.end}, {w.rows} rows): "
                                 f"{', '.join(w.drifted)}; strongest {worst.feature} {worst.test} "
                                 f"{worst.statistic:.3g}, Holm p {worst.adjusted_p:.2g}")
            c = retrain.cost
            hours = f"{c.core_hours:.3f} core-hours" if c.core_hours is not None else f"{c.gpu_hours:.3f} GPU-hours"
            lines.append(f"retrain: {c.train_rows:,} rows x {c.epochs:g} epochs ≈ {c.seconds / 60:.1f} min on "
                         f"{c.device}, {hours}, ≈ {c.price:.4f} {c.currency}")
            lines.append(f"  {retrain.command}" if retrain.command else
                         "  no labelled feedback in the log: label recent traffic to retrain on it")
        else:
            lines.append(f"quiet: no drift (Holm-corrected over {sum(len(w.tests) for w in windows)} tests at "
                         f"alpha {cfg.alpha})")
        lines.append(f"report: {out / 'report.html'}")
        holder["outcome"] = MonitorOutcome(report, "\n".join(lines), out)
        return holder["outcome"].message

    rd.run_stage("monitor", write, external_inputs=external, force=True)
    return holder["outcome"]
