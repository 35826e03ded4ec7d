"""serve/serve.json: what `tunewise serve` served from this run, and where its prediction log lives (for monitor);
servebench/bench.json: what `tunewise serve-bench` measured (latency, throughput, cost, the guard's detection),
which the release gate reads."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tunewise.artifacts.base import Artifact, Strict
from tunewise.artifacts.guard import OperatingPoint


class ServeRecord(Artifact):
    """serve/serve.json, written each time `tunewise serve RUN` starts: the model folder and backend served, the
    endpoints, the resolved `serve:` settings, and the prediction log's URL (password hidden) and table layout
    version (tables: tunewise.artifacts.prediction_log)."""

    FILE = "serve.json"
    STAGE = "serve"
    SCHEMA_VERSION = 1

    run_id: str = Field(description="The run directory's id.")
    task: Literal["classification", "generation", "chat"] = Field(description="The recipe's task.")
    model_name: str = Field(description="The model id clients send and /v1/models lists.")
    model_folder: str = Field(description="The folder served, relative to the run directory (model or export).")
    backend: Literal["torch", "onnx"] = Field(description="The inference backend.")
    labels: list[str] | None = Field(description="Classifiers: the labels in model output order; null otherwise.")
    endpoints: list[str] = Field(description="The model endpoints offered, e.g. /v1/classify.")
    log_url: str = Field(description="The prediction log as a SQLAlchemy URL, password hidden.")
    log_in_run: str | None = Field(description="The SQLite log's path relative to the run directory when it lies "
                                               "inside it (the default, logs/predictions.sqlite), so a moved run "
                                               "still finds it; null for a log elsewhere.")
    log_schema_version: int = Field(description="tunewise.artifacts.prediction_log.LOG_SCHEMA_VERSION of its tables.")
    guard_run: str | None = Field(description="The injection guard's run directory; null: no guard.")
    settings: dict[str, Any] = Field(description="The resolved `serve:` section (recipe and command-line overrides).")


# ---------------------------------------------------------------- the serving benchmark (servebench/bench.json)


def model_digest(train_outputs: dict[str, str]) -> str:
    """One sha256 over the train stage's recorded outputs (manifest.json `stages.train.outputs`): which model a
    benchmark measured. The gate compares it with the run's current model, so a stale benchmark cannot pass."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(train_outputs, sort_keys=True).encode()).hexdigest()


class Machine(Strict):
    """Where the numbers were measured: they mean nothing without it."""

    cpu_model: str = Field(description="The CPU model (/proc/cpuinfo `model name`, else platform.processor()).")
    cpus: int = Field(description="CPUs this process may use (sched_getaffinity), shared by server and load client.")
    platform: str = Field(description="platform.platform().")
    python: str = Field(description="Python version.")
    libraries: dict[str, str] = Field(description="Versions of the libraries on the request path (torch, onnxruntime, fastapi, uvicorn).")
    load_average: tuple[float, float] = Field(description="The 1-minute load average before and after the benchmark: other busy processes distort every number, so a reviewer can see whether the machine was quiet.")


class LevelResult(Strict):
    """One concurrency level: `clients` closed-loop clients sharing `requests` requests, one text each."""

    clients: int = Field(description="Concurrent clients (each sends its next request when its answer arrives).")
    requests: int = Field(description="Requests sent at this level.")
    ok: int = Field(description="Requests answered 200.")
    errors: dict[str, int] = Field(description="Failed requests by HTTP status (or `connection`); the latencies count only the 200s.")
    wall_seconds: float = Field(description="Wall time of the level.")
    throughput_rps: float = Field(description="Answered requests per second (ok / wall_seconds).")
    p50_ms: float = Field(description="Median latency of answered requests, client side (send to full response).")
    p95_ms: float = Field(description="95th percentile latency (ms).")
    p99_ms: float = Field(description="99th percentile latency (ms); numpy's linear interpolation, so with fewer than 100 requests it lies between the two slowest.")
    max_ms: float = Field(description="The slowest answered request (ms).")
    cpu_seconds: float = Field(description="User + system CPU time of the server process during the level (/proc).")
    cpu_s_per_1k: float = Field(description="Server CPU-seconds per 1,000 answered requests: the cost measure.")


class GuardEvidence(Strict):
    """The injection guard the server screened with: its own measured detection and false-positive rates, copied
    from the guard run's guard/guard.json (the guard stage measured them on a test split it never trained or tuned
    on), with that file's hash so a reviewer can trace them."""

    run_id: str = Field(description="The guard run directory's name.")
    guard_json_sha256: str = Field(description="sha256 of the guard run's guard/guard.json when benchmarked.")
    endpoints: list[str] = Field(description="serve.guard.endpoints: where the guard screens inputs.")
    block: bool = Field(description="serve.guard.block: a flagged request is refused (else only logged).")
    target_fpr: float = Field(description="The FPR the serving threshold was chosen for (guard.target_fpr of the guard recipe).")
    threshold: float = Field(description="The serving threshold.")
    backend: str = Field(description="serve.guard.backend.")
    operating_points: list[OperatingPoint] = Field(description="The guard report's operating points (one per report FPR and the target), with test detection and FPR and their CIs.")
    confidence: float = Field(description="Confidence level of those intervals.")


class ServeBenchmark(Artifact):
    """servebench/bench.json, written by `tunewise serve-bench RUN`: /v1/classify served as `tunewise serve` would
    serve it (the run's `serve:` settings, every request committed to a scratch prediction log), loaded over
    loopback at each concurrency level; with the machine, the settings, and the guard's measured detection.
    The release gate's serving rules (gate.max_p99_ms, gate.min_guard_detection) read it."""

    FILE = "bench.json"
    STAGE = "servebench"
    SCHEMA_VERSION = 1

    run_id: str = Field(description="The run directory's id.")
    model_name: str = Field(description="The served model id.")
    backend: Literal["torch", "onnx"] = Field(description="The classifier's inference backend served (serve.backend, `auto` resolved).")
    backend_why: str = Field(description="Why that backend: the setting, or for `auto` the ONNX model's recorded test-accuracy change against torch.")
    model_digest: str = Field(description="tunewise.artifacts.serve.model_digest of the train stage's outputs when measured; the gate refuses a benchmark of another model.")
    measured_at: str = Field(description="When the benchmark finished (ISO 8601, UTC).")
    machine: Machine = Field(description="Where it ran.")
    settings: dict[str, Any] = Field(description="The resolved `serve:` section the server ran with (recipe and overrides).")
    overrides: list[str] = Field(description="serve.* overrides given to the benchmark (the per-key rate limit is always lifted: it is a policy, not a capacity).")
    text_source: str = Field(description="Where the request texts come from (relative to the run directory).")
    warmup_requests: int = Field(description="Requests sent before measuring (not counted).")
    levels: list[LevelResult] = Field(description="One per concurrency level, in ascending clients.")
    guard: GuardEvidence | None = Field(description="The injection guard served with, and its measured detection; null: the server ran without a guard (serve.guard.run is null).")
    caveats: list[str] = Field(description="What the numbers do not show.")

    def level(self, clients: int) -> LevelResult | None:
        return next((lv for lv in self.levels if lv.clients == clients), None)
