"""The serve stage: `tunewise serve RUN` puts a run's model behind an HTTP API with keys, limits, an injection guard,
PII redaction, a durable prediction log and Prometheus metrics (FastAPI + uvicorn).

What it writes into the run directory:
  serve/serve.json          the ServeRecord (tunewise.artifacts.serve): the model folder and backend served, the
                            resolved `serve:` settings and where the prediction log lives; rewritten at each start
                            (hashed into manifest.json like any stage output)
  logs/predictions.sqlite   the default prediction log (SQLite, WAL). Live state, not evidence: it is outside every
                            stage folder, so `tunewise verify` and the manifest leave it alone and rerunning a
                            stage never deletes it. `serve.log` points it elsewhere (e.g. PostgreSQL).

Modules: settings (run + overrides -> ServeSettings), app (`create_app`), context (ServeContext, what routes use),
keys, limits (rate limit, body limit, request accounting), batching (micro-batching), classifier, log (group
commit), redaction, metrics, errors; generation / openai_routes / gateway serve causal LMs and upstreams.
This module stays light: the CLI imports it at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunewise.rundir import RunDir, StageOutcome
    from tunewise.serve.settings import ServeSettings
    from tunewise.stages import RunOptions


def run(rd: "RunDir", options: "RunOptions") -> "StageOutcome":
    """The registry's stage function: record the serving config of the recipe's `serve:` section (no overrides)."""
    from tunewise.serve.settings import resolve_settings

    return record_serving(rd, resolve_settings(rd.root, verify=False))


def record_serving(rd: "RunDir", settings: "ServeSettings") -> "StageOutcome":
    """Write serve/serve.json for these settings (always rewritten: each start records what it serves)."""
    from tunewise.artifacts.prediction_log import LOG_SCHEMA_VERSION, safe_url
    from tunewise.artifacts.serve import ServeRecord
    from tunewise.serve.classifier import resolve_backend
    from tunewise.tasks import task_for

    recipe = rd.recipe
    task = task_for(recipe)
    classifier = task.family == "classifier"
    labels = None
    if classifier:
        from tunewise.artifacts import TrainSummary

        labels = list(TrainSummary.read(rd.stage_dir("train") / TrainSummary.FILE).labels)
    config = settings.config
    log_in_run = None
    if settings.log_url.startswith("sqlite:///"):
        path = Path(settings.log_url.removeprefix("sqlite:///")).resolve()
        if path.is_relative_to(rd.root.resolve()):
            log_in_run = str(path.relative_to(rd.root.resolve()))
    choice = resolve_backend(rd, config) if classifier else None
    endpoints = (["/v1/classify"] if classifier else ["/v1/chat/completions", "/v1/completions"])
    endpoints += ["/v1/guard", "/v1/feedback", "/v1/models"]
    record = ServeRecord(
        run_id=rd.root.name, task=recipe.task,
        model_name=config.model_name or recipe.card.model_name or recipe.name,
        model_folder=rd.stage_dir("train").name if classifier or not (rd.root / "export").is_dir() else "export",
        backend=choice.backend if choice else "torch", labels=labels, endpoints=endpoints,
        log_url=safe_url(settings.log_url), log_in_run=log_in_run, log_schema_version=LOG_SCHEMA_VERSION,
        guard_run=config.guard.run, settings=config.model_dump(mode="json"))

    def write(out: Path) -> str:
        record.write(out)
        why = f" [{choice.why}]" if choice else ""
        return (f"serve: {record.model_name} ({record.task}, {record.backend}{why}) from {rd.root}; "
                f"log {record.log_url}")
    return rd.run_stage("serve", write, force=True)
