"""`tunewise gate RUN [gate.key=value ...]`: re-check a finished run against a changed gate section."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def gate(run_dir: Annotated[Path, typer.Argument(help="A finished run directory, e.g. runs/helpdesk-1a2b3c4d.")],
             overrides: Annotated[Optional[list[str]], typer.Argument(help="gate.* overrides, as for `run`, e.g. gate.metrics.accuracy=0.95 gate.max_slice_gap=0.1; other keys need a new run.")] = None) -> None:
        """Re-check RUN against its recipe's gate section (with gate.* overrides), without retraining. Prints
        each rule's verdict and reason; exits 0 when every rule passes, 3 when one fails."""
        from tunewise.errors import GateFailed
        from tunewise.gate import recheck

        result = recheck(run_dir, overrides or [], echo=typer.echo)
        for line in result.verdict_lines():
            typer.echo(line)
        typer.echo(f"gate: {run_dir / 'gate' / 'gate.json'}")
        if not result.passed:
            raise GateFailed(f"release gate failed: {', '.join(r.rule for r in result.failed())} "
                             f"(details: {run_dir / 'gate' / 'gate.json'})")
