"""Starting the server: verify the run, record what is served (serve/serve.json), then run uvicorn."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def serve_forever(run_dir: Path | None, overrides: list[str], *, host: str, port: int, workers: int = 1,
                  upstream: str | None = None, log_url: str | None = None,
                  echo: Callable[[str], None] = print) -> None:
    import uvicorn

    from tunewise.serve.settings import SETTINGS_ENV, resolve_settings

    settings = resolve_settings(run_dir, overrides, upstream=upstream, log_url=log_url)
    if settings.run_dir is not None:
        from tunewise.rundir import RunDir
        from tunewise.serve import record_serving

        echo(record_serving(RunDir.open(settings.run_dir), settings).message)
    from tunewise.artifacts.prediction_log import safe_url

    what = f"run {settings.run_dir.name}" if settings.run_dir else f"gateway to {upstream}"
    echo(f"serving {what} on http://{host}:{port} ({workers} worker{'s' if workers > 1 else ''}); "
         f"prediction log: {safe_url(settings.log_url)}")
    if workers == 1:
        from tunewise.serve.app import create_app

        app = create_app(settings)  # loads the model here, so a load error is reported before listening
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=10)
        return
    os.environ[SETTINGS_ENV] = settings.to_json()
    # each worker keeps its own metrics; prometheus-client's multiprocess mode sums them at /metrics
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="tunewise-metrics-"))
    uvicorn.run("tunewise.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False, timeout_graceful_shutdown=10)
