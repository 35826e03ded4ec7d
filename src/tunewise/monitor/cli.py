"""`tunewise monitor RUN --log PATH_OR_URL [--window N|DURATION] [--since T] [monitor.key=value ...]`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def monitor(run_dir: Annotated[Path, typer.Argument(help="A run directory (with its reference/ profile).")],
                overrides: Annotated[Optional[list[str]], typer.Argument(help="monitor.KEY=VALUE settings for this monitor run, e.g. monitor.alpha=0.01.")] = None,
                log: Annotated[str, typer.Option("--log", help="The prediction log: a JSONL file of {\"text\": ...} records (optional label, timestamp, prediction, confidence), a SQLite file, or a database URL (sqlite:///..., postgresql+psycopg://...).")] = ...,
                window: Annotated[Optional[str], typer.Option("--window", help="Rows per window (500) or a duration of logged time (30min, 1h, 1d). Default: monitor.window.")] = None,
                since: Annotated[Optional[str], typer.Option("--since", help="Skip rows logged before this ISO time, or before a duration back from now (7d).")] = None) -> None:
        """Test logged traffic against the run's reference profile: drift in inputs, predictions and embeddings,
        accuracy from feedback labels, and a costed retrain signal. Writes RUN/monitor/ (drift.json,
        report.html); exits 0 when quiet, 1 when an alert fires."""
        import sys

        from tunewise.monitor import monitor_run
        from tunewise.rundir import RunDir

        outcome = monitor_run(RunDir.open(run_dir), log, window=window, since=since, overrides=overrides or [],
                              progress=sys.stderr.isatty())
        typer.echo(outcome.message)
        if outcome.report.alert:
            raise typer.Exit(code=1)
