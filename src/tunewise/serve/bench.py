"""The servebench stage: `tunewise serve-bench RUN` measures /v1/classify as `tunewise serve` serves it and writes
servebench/bench.json (`tunewise.artifacts.serve.ServeBenchmark`), the evidence the release gate's serving rules
read (gate.max_p99_ms at gate.p99_clients, gate.min_guard_detection).

The server is the real one: a `uvicorn` subprocess running `create_app` with the run's `serve:` settings (keys,
body limit, PII scan, the guard when serve.guard.run is set, micro-batching, every request committed to a prediction
log before it is answered). Two things differ from a deployment, both on purpose: the per-key rate limit is lifted
(it is a policy, not a capacity; left on, the benchmark measures 429s) and the log is a scratch SQLite file, so
benchmark traffic never reaches the run's own prediction log, which monitoring reads.

The load: for each concurrency level, that many closed-loop asyncio + httpx clients share a bounded number of
requests, one test-split text each, over loopback. Measured per level: throughput, p50/p95/p99/max latency (client
side), and the server process's CPU-seconds per 1,000 requests (/proc). The client runs on the same machine, so
both compete for the same CPUs, as in bench/serve.py; on a busy machine every number is distorted, and the
artifact records the load average before and after so a reviewer can tell.
"""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tunewise.hardware import affinity_cpus, cpu_facts

if TYPE_CHECKING:
    from tunewise.artifacts.serve import GuardEvidence, LevelResult, Machine
    from tunewise.rundir import RunDir, StageOutcome
    from tunewise.stages import RunOptions

LEVELS = (1, 8, 32)
REQUESTS = 500
WARMUP = 20
BENCH_KEY_NAME = "serve-bench"
UNLIMITED_RATE = "serve.rate_per_minute=1000000000"
UNLIMITED_BURST = "serve.rate_burst=1000000"


def run(rd: "RunDir", options: "RunOptions") -> "StageOutcome":
    """The registry's stage function: the benchmark at its default levels."""
    return benchmark(rd.root)


def benchmark(run_dir: str | Path, overrides: Sequence[str] = (), *, levels: Sequence[int] = LEVELS,
              requests: int = REQUESTS, warmup: int = WARMUP, echo: Callable[[str], None] = print) -> "StageOutcome":
    """Serve RUN's classifier in a subprocess, load it at each level, write servebench/bench.json."""
    from tunewise.artifacts.serve import ServeBenchmark, model_digest
    from tunewise.errors import TunewiseError
    from tunewise.rundir import RunDir
    from tunewise.serve.classifier import resolve_backend
    from tunewise.serve.launch import stop
    from tunewise.serve.settings import resolve_settings
    from tunewise.tasks import task_for

    levels = sorted(set(levels))
    if not levels or levels[0] < 1:
        raise TunewiseError(f"--clients must be positive integers, e.g. 1,8,32; got {levels}")
    if requests < 1:
        raise TunewiseError(f"--requests must be at least 1; got {requests}")
    rd = RunDir.open(run_dir)
    if task_for(rd.recipe).family != "classifier":
        raise TunewiseError(f"{rd.root}: `tunewise serve-bench` measures /v1/classify, and this run is a "
                            f"{rd.recipe.task} model; measure chat decoding with `python bench/serve_chat.py "
                            f"{rd.root}`")
    user_overrides = list(overrides)
    with tempfile.TemporaryDirectory(prefix="tunewise-serve-bench-") as scratch:
        settings = resolve_settings(rd.root, [*user_overrides, UNLIMITED_RATE, UNLIMITED_BURST],
                                    log_url=f"sqlite:///{Path(scratch) / 'bench-log.sqlite'}")
        texts = request_texts(rd)
        key = os.urandom(24).hex()
        settings.api_keys, settings.keys_file = f"{BENCH_KEY_NAME}={key}", Path(scratch) / "no-keys.json"
        load_before = os.getloadavg()[0]
        choice = resolve_backend(rd, settings.config)
        echo(f"serve-bench: serving {rd.root.name} ({choice.backend}: {choice.why}"
             f"{', guard ' + Path(settings.config.guard.run).name if settings.config.guard.run else ', no guard'}); "
             f"levels {', '.join(map(str, levels))} clients, {requests} requests each")
        proc, url = start_server(settings.to_json(), Path(scratch) / "server.log")
        results = []
        try:
            asyncio.run(drive(url, key, texts, min(4, max(levels)), warmup))  # lazy kernels, caches
            for clients in levels:
                results.append(measure_level(proc.pid, url, key, texts, clients, max(requests, clients)))
                lv = results[-1]
                errs = f", {sum(lv.errors.values())} failed {lv.errors}" if lv.errors else ""
                echo(f"  {clients:3d} clients: {lv.throughput_rps:8.1f} req/s  p50 {lv.p50_ms:7.1f} ms  "
                     f"p95 {lv.p95_ms:7.1f} ms  p99 {lv.p99_ms:7.1f} ms  {lv.cpu_s_per_1k:6.1f} CPU-s/1k{errs}")
        finally:
            stop(proc)
        load_after = os.getloadavg()[0]

    config = settings.config
    bench = ServeBenchmark(
        run_id=rd.root.name, model_name=config.model_name or rd.recipe.card.model_name or rd.recipe.name,
        backend=choice.backend, backend_why=choice.why, model_digest=model_digest(rd.outputs_of("train")),
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        machine=machine(load_before, load_after), settings=config.model_dump(mode="json"),
        overrides=user_overrides, text_source="data/test.jsonl", warmup_requests=warmup, levels=results,
        guard=guard_evidence(config) if config.guard.run else None,
        caveats=["The load client runs on the same machine as the server and competes for its CPUs.",
                 "Loopback only: no network latency, TLS or proxy is included.",
                 "One test-split text per request; longer texts or many inputs per request cost more.",
                 "The per-key rate limit is lifted for the benchmark; the prediction log is a scratch SQLite file "
                 "on the same disk, committed before each answer as in serving.",
                 f"The 1-minute load average was {load_before:.2f} before and {load_after:.2f} after; with other "
                 f"busy processes on the machine the latencies are not the server's."])

    def write(out: Path) -> str:
        bench.write(out)
        return f"serve-bench: {len(results)} level(s) measured; {out / ServeBenchmark.FILE}"
    return rd.run_stage("servebench", write, force=True)


# ---------------------------------------------------------------- the pieces


def request_texts(rd: "RunDir") -> list[str]:
    from tunewise.artifacts.rows import load_split
    from tunewise.errors import RunDirError

    texts = [row.text for row in load_split(rd.stage_dir("data"), "test") if row.text]
    if not texts:
        raise RunDirError(f"{rd.stage_dir('data') / 'test.jsonl'}: no texts to send; rerun the data stage")
    return texts


def start_server(settings_json: str, log_file: Path, timeout: float = 300) -> tuple[subprocess.Popen, str]:
    """`uvicorn tunewise.serve.app:app_from_env` on a free loopback port; returns once /readyz answers 200.
    (Not `tunewise serve`: that records serve/serve.json in the run's manifest, which this stage is writing.)"""
    from tunewise.serve.launch import free_port, launch
    from tunewise.serve.settings import SETTINGS_ENV

    port = free_port()
    env = {**os.environ, SETTINGS_ENV: settings_json, "TOKENIZERS_PARALLELISM": "false"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return launch([sys.executable, "-m", "uvicorn", "tunewise.serve.app:app_from_env", "--factory",
                   "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
                  port=port, env=env, log=log_file, timeout=timeout)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its waited-for children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / os.sysconf("SC_CLK_TCK")


async def drive(url: str, key: str, texts: Sequence[str], clients: int,
                total: int) -> tuple[list[float], float, dict[str, int]]:
    """`clients` closed-loop clients sharing `total` requests: (latencies of the 200s in s, wall s, errors).

    Each client has its own connection, as separate users would, opened by one untimed request: one shared httpx
    pool for 64 connections cost the load generator 6.1 CPU-ms a request against 1.4 at 32 (httpcore scans its
    pool per request), and on 2 cores that starved the server under test (163 instead of 347 req/s)."""
    from contextlib import AsyncExitStack

    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    headers = {"Authorization": f"Bearer {key}"}

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < total:
            i, sent = sent, sent + 1
            t0 = time.perf_counter()
            try:
                r = await http.post(f"{url}/v1/classify", json={"inputs": [texts[i % len(texts)]]}, headers=headers)
                status = str(r.status_code)
            except httpx.HTTPError:
                status = "connection"
            if status == "200":
                latencies.append(time.perf_counter() - t0)
            else:
                errors[status] = errors.get(status, 0) + 1
    async with AsyncExitStack() as stack:
        https = [await stack.enter_async_context(httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=1)))
                 for _ in range(clients)]
        await asyncio.gather(*(http.get(f"{url}/healthz") for http in https), return_exceptions=True)  # connect
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for http in https))
        return latencies, time.perf_counter() - t0, errors


def measure_level(pid: int, url: str, key: str, texts: Sequence[str], clients: int, total: int) -> "LevelResult":
    import numpy as np

    from tunewise.artifacts.serve import LevelResult

    cpu0 = cpu_seconds(pid)
    latencies, wall, errors = asyncio.run(drive(url, key, texts, clients, total))
    cpu = cpu_seconds(pid) - cpu0
    ms = np.asarray(latencies) * 1000.0 if latencies else np.asarray([float("nan")])
    pct = lambda q: round(float(np.percentile(ms, q)), 3)  # noqa: E731
    return LevelResult(clients=clients, requests=total, ok=len(latencies), errors=errors,
                       wall_seconds=round(wall, 4), throughput_rps=round(len(latencies) / wall, 3),
                       p50_ms=pct(50), p95_ms=pct(95), p99_ms=pct(99), max_ms=round(float(ms.max()), 3),
                       cpu_seconds=round(cpu, 3), cpu_s_per_1k=round(cpu / max(len(latencies), 1) * 1000, 3))


def machine(load_before: float, load_after: float) -> "Machine":
    from importlib.metadata import PackageNotFoundError, version

    from tunewise.artifacts.serve import Machine

    libs = {}
    for lib in ("torch", "onnxruntime", "fastapi", "uvicorn"):
        try:
            libs[lib] = version(lib)
        except PackageNotFoundError:
            pass
    return Machine(cpu_model=cpu_facts()["model"], cpus=affinity_cpus(), platform=platform.platform(),
                   python=platform.python_version(), libraries=libs,
                   load_average=(round(load_before, 2), round(load_after, 2)))


def guard_evidence(config) -> "GuardEvidence":  # noqa: ANN001
    """The configured guard's measured detection, from its run's guard/guard.json (read as the typed artifact)."""
    from tunewise.artifacts.guard import GuardReport
    from tunewise.artifacts.serve import GuardEvidence
    from tunewise.rundir import RunDir, sha256_file

    guard_rd = RunDir.open(config.guard.run)
    path = guard_rd.stage_dir("guard") / GuardReport.FILE
    report = GuardReport.read(path)
    return GuardEvidence(run_id=guard_rd.root.name, guard_json_sha256=sha256_file(path),
                         endpoints=list(config.guard.endpoints), block=config.guard.block,
                         target_fpr=report.target_fpr, threshold=report.threshold, backend=config.guard.backend,
                         operating_points=report.operating_points, confidence=report.confidence)
