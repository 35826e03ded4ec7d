"""`tunewise serve RUN` and `tunewise keys add|list|remove` (registered by tunewise.cli through COMMAND_MODULES).
Light at import: everything heavy is imported inside the command bodies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(run_dir: Annotated[Optional[Path], typer.Argument(help="A run directory, e.g. runs/helpdesk-1a2b3c4d (omit with --upstream).")] = None,
              overrides: Annotated[Optional[list[str]], typer.Argument(help="serve.key=value overrides of the run's `serve:` section, e.g. serve.rate_per_minute=120 serve.guard.run=runs/injection-guard-1a2b3c4d.")] = None,
              host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
              port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8000,
              workers: Annotated[int, typer.Option("--workers", min=1, max=256, help="Server processes; each loads the model (rate limits are per process).")] = 1,
              upstream: Annotated[Optional[str], typer.Option("--upstream", help="Gateway mode: forward chat and completions to this OpenAI-compatible server (vLLM, TGI, another tunewise), with keys, guard, redaction, log and metrics in front.")] = None,
              log: Annotated[Optional[str], typer.Option("--log", help="Prediction log as a SQLAlchemy URL (default: serve.log, else RUN/logs/predictions.sqlite).")] = None) -> None:
        """Serve a run's model over HTTP: /v1/classify (classifiers) or OpenAI-compatible chat and completions
        (causal LMs), /v1/guard, /v1/feedback, /v1/models, /healthz, /readyz, /metrics. Refuses a run whose
        `tunewise verify` fails. Clients send `Authorization: Bearer KEY` (`tunewise keys add NAME`, or
        TUNEWISE_API_KEYS)."""
        from tunewise.serve.server import serve_forever

        serve_forever(run_dir, overrides or [], host=host, port=port, workers=workers, upstream=upstream,
                      log_url=log, echo=typer.echo)

    @app.command("serve-bench")
    def serve_bench(run_dir: Annotated[Path, typer.Argument(help="A trained classifier run directory.")],
                    overrides: Annotated[Optional[list[str]], typer.Argument(help="serve.key=value overrides to serve with, as for `tunewise serve`, e.g. serve.backend=onnx serve.max_batch_wait_ms=2.")] = None,
                    clients: Annotated[str, typer.Option("--clients", help="Concurrency levels, comma-separated.")] = "1,8,32",
                    requests: Annotated[int, typer.Option("--requests", min=1, help="Requests per level (at least one per client); p99 needs several hundred to mean much.")] = 500,
                    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Requests sent first and not counted.")] = 20) -> None:
        """Measure /v1/classify as `tunewise serve RUN` serves it (the run's serve: settings, guard, log) at each
        concurrency level: throughput, p50/p95/p99 latency, server CPU-seconds per 1k requests. Writes
        servebench/bench.json with the machine, the settings and the guard's measured detection; the release
        gate's serving rules read it (`tunewise gate RUN gate.max_p99_ms=50`). Run it on a quiet machine."""
        from tunewise.errors import TunewiseError
        from tunewise.serve.bench import benchmark

        try:
            levels = [int(x) for x in clients.split(",") if x.strip()]
        except ValueError:
            raise TunewiseError(f"--clients takes comma-separated integers, e.g. 1,8,32; got {clients!r}") from None
        typer.echo(benchmark(run_dir, overrides or [], levels=levels, requests=requests, warmup=warmup,
                             echo=typer.echo).message)

    keys_app = typer.Typer(no_args_is_help=True, help="API keys for `tunewise serve`: only their sha256 is stored "
                                                       "($TUNEWISE_KEYS_FILE, else ~/.config/tunewise/keys.json).")
    app.add_typer(keys_app, name="keys")

    @keys_app.command("add")
    def keys_add(name: Annotated[str, typer.Argument(help="A name for the key (it appears in the prediction log).")]) -> None:
        """Make a key called NAME and print it, once: only its hash is stored."""
        from tunewise.serve.keys import add_key, keys_file

        key = add_key(name)
        typer.echo(key)
        typer.echo(f"key {name!r} added to {keys_file()} (only its sha256 is stored: copy the key now, it cannot "
                   f"be shown again)", err=True)

    @keys_app.command("list")
    def keys_list() -> None:
        """List key names, when they were made and their first characters (never the keys)."""
        from tunewise.serve.keys import keys_file, read_keys

        keys = read_keys()
        if not keys:
            typer.echo(f"no keys in {keys_file()}; add one with `tunewise keys add NAME`")
        for k in keys:
            typer.echo(f"{k.name}\t{k.prefix}…\tcreated {k.created}")

    @keys_app.command("remove")
    def keys_remove(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
        """Remove the key called NAME (a running server stops accepting it at its next request)."""
        from tunewise.serve.keys import keys_file, remove_key

        remove_key(name)
        typer.echo(f"key {name!r} removed from {keys_file()}")
