"""Serving benchmark: `tunewise serve` /v1/classify against a naive server, same model, same machine, loopback.

    python bench/serve.py RUN                         # a trained classifier run directory
    python bench/serve.py --train-demo                # train the helpdesk demo first (examples/helpdesk.yaml)
    python bench/serve.py RUN --quick                 # a few requests per level, to check the script itself
    python bench/serve.py RUN --write-docs            # also put the table in docs/benchmarks.md

Systems, each its own server process on 127.0.0.1, each given the same CPUs:
  naive     FastAPI + uvicorn, a sync endpoint calling a transformers `pipeline("text-classification")` per request
            (the way a first deployment is usually written): no batching, no keys, no log
  tunewise  `tunewise serve RUN` with its defaults: keys, limits, PII scan, micro-batching (N=32 requests or 5 ms),
            every request committed to the SQLite prediction log (WAL, synchronous=FULL) before it is answered;
            the model runs on ONNX Runtime when the run has `tunewise export RUN --onnx --int8` (serve.backend auto;
            --train-demo makes it), in length buckets, one single-threaded run at a time per spare CPU

Load: for each level of concurrent clients (1, 8, 32, 64), an asyncio + httpx client sends a bounded number of
requests (one test-split text each) as fast as answers come. Reported per level: throughput (requests/s),
p50/p95/p99 latency, and cost as CPU-seconds of the server process per 1,000 requests (user + system time from
/proc, children included), converted to money at --price-per-core-hour. Results go to bench/results/serve.json.
Run it on a quiet machine: other busy processes distort every number.

This script compares tunewise with a naive server. The evidence the release gate reads is one run's own serving
benchmark, `tunewise serve-bench RUN` (tunewise.serve.bench, servebench/bench.json), which measures `tunewise serve`
the same way (closed-loop httpx clients, /proc CPU time) without the naive side.
"""

# no `from __future__ import annotations`: FastAPI must resolve the naive server's local body model
import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY = "tw-bench-key-0123456789abcdef0123456789"
LEVELS = (1, 8, 32, 64)


# ---------------------------------------------------------------- the naive server (run as a subprocess)


def naive_server(run_dir: Path, port: int) -> None:
    """FastAPI calling a transformers pipeline per request, as in most tutorials."""
    import uvicorn
    from fastapi import FastAPI
    from pydantic import BaseModel
    from transformers import pipeline

    clf = pipeline("text-classification", model=str(run_dir / "model"), top_k=None, device="cpu")
    app = FastAPI()

    class Body(BaseModel):
        inputs: list[str]

    @app.post("/v1/classify")
    def classify(body: Body):
        out = clf(body.inputs, truncation=True)
        return {"results": [{"label": max(scores, key=lambda s: s["score"])["label"],
                             "probabilities": {s["label"]: s["score"] for s in scores}} for scores in out]}

    @app.get("/readyz")
    def ready():
        return {"status": "ready"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ---------------------------------------------------------------- driving the servers


def start(system: str, run_dir: Path, workdir: Path, overrides: list[str] = ()) -> tuple[subprocess.Popen, str]:
    from tunewise.serve.launch import ServerNotReady, free_port, launch

    port = free_port()
    env = {**os.environ, "TUNEWISE_API_KEYS": f"bench={KEY}", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if system == "naive":
        cmd = [sys.executable, __file__, "--naive-server", str(run_dir), "--port", str(port)]
    else:
        # the per-key rate limit (600/min by default) is a policy, not a capacity: lift it, or the bench measures 429s
        cmd = [sys.executable, "-m", "tunewise", "serve", str(run_dir), "--port", str(port),
               "--log", f"sqlite:///{workdir / 'bench-log.sqlite'}", "serve.rate_per_minute=100000000", *overrides]
    try:
        return launch(cmd, port=port, env=env, log=workdir / f"{system}.log", timeout=300)
    except ServerNotReady as e:
        raise SystemExit(f"{system} server: {e}") from None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its waited-for children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


async def drive(url: str, texts: list[str], clients: int, total: int) -> tuple[list[float], float, int]:
    """`clients` concurrent loops sharing `total` requests (tunewise serve-bench's client: one connection each);
    returns the latencies, the wall time, the errors."""
    from tunewise.serve.bench import drive as serve_bench_drive

    latencies, wall, errors = await serve_bench_drive(url, KEY, texts, clients, total)
    return latencies, wall, sum(errors.values())


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


def bench_system(system: str, run_dir: Path, texts: list[str], levels: list[int], requests: int, warmup: int,
                 price: float, workdir: Path, overrides: list[str] = ()) -> list[dict]:
    from tunewise.serve.launch import stop

    proc, url = start(system, run_dir, workdir, overrides)
    rows = []
    try:
        asyncio.run(drive(url, texts, 4, warmup))  # load caches and lazy kernels outside the measurement
        for clients in levels:
            total = max(requests, clients * 4)
            cpu0 = cpu_seconds(proc.pid)
            lat, wall, errors = asyncio.run(drive(url, texts, clients, total))
            cpu = cpu_seconds(proc.pid) - cpu0
            per_1k = cpu / max(len(lat), 1) * 1000
            rows.append({"system": system, "clients": clients, "requests": total, "errors": errors,
                         "throughput_rps": round(len(lat) / wall, 2),
                         "p50_ms": round(percentile(lat, 50) * 1000, 2), "p95_ms": round(percentile(lat, 95) * 1000, 2),
                         "p99_ms": round(percentile(lat, 99) * 1000, 2), "cpu_s_per_1k": round(per_1k, 2),
                         "cost_per_1m": round(per_1k * 1000 / 3600 * price, 4)})
            print(f"  {system:8s} {clients:3d} clients: {rows[-1]['throughput_rps']:8.1f} req/s  "
                  f"p50 {rows[-1]['p50_ms']:7.1f} ms  p99 {rows[-1]['p99_ms']:7.1f} ms  "
                  f"{per_1k:6.1f} CPU-s/1k  errors {errors}", flush=True)
            if errors:  # throughput over failed requests measures the failure path, not the server
                raise SystemExit(f"{system}: {errors} of {total} requests failed at {clients} clients; see "
                                 f"{workdir / (system + '.log')}")
    finally:
        stop(proc)
    return rows


def train_demo(workdir: Path) -> Path:
    out = workdir / "runs"
    subprocess.run([sys.executable, "-m", "tunewise", "run", str(ROOT / "examples" / "helpdesk.yaml"),
                    f"output_dir={out}"], check=True)
    run = next(out.iterdir())
    # the int8 ONNX export that `serve.backend: auto` serves (with its accuracy change against torch on record)
    subprocess.run([sys.executable, "-m", "tunewise", "export", str(run), "--onnx", "--int8"], check=True)
    return run


def table(rows: list[dict], price: float, currency: str) -> str:
    by = {(r["system"], r["clients"]): r for r in rows}
    lines = [f"| clients | system | req/s | p50 ms | p95 ms | p99 ms | CPU-s / 1k req | {currency} / 1M req | speed-up |",
             "|---|---|---|---|---|---|---|---|---|"]
    for clients in sorted({r["clients"] for r in rows}):
        naive = by.get(("naive", clients))
        for system in ("naive", "tunewise"):
            r = by.get((system, clients))
            if r is None:
                continue
            up = (f"{r['throughput_rps'] / naive['throughput_rps']:.2f}x"
                  if naive and naive["throughput_rps"] and system == "tunewise" else "")
            lines.append(f"| {clients} | {system} | {r['throughput_rps']} | {r['p50_ms']} | {r['p95_ms']} | "
                         f"{r['p99_ms']} | {r['cpu_s_per_1k']} | {r['cost_per_1m']} | {up} |")
    return "\n".join(lines) + f"\n\nCost at {price} {currency} per core-hour."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", type=Path, help="a trained classifier run directory")
    ap.add_argument("--train-demo", action="store_true", help="train examples/helpdesk.yaml first and use that run")
    ap.add_argument("--clients", default=",".join(map(str, LEVELS)), help="concurrency levels, comma-separated")
    ap.add_argument("--requests", type=int, default=2000, help="requests per level (at least 4 per client)")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--systems", default="naive,tunewise")
    ap.add_argument("--set", action="append", default=[], metavar="serve.KEY=VALUE",
                    help="a serve.* override for the tunewise server, e.g. --set serve.batch_workers=3 (repeatable)")
    ap.add_argument("--price-per-core-hour", type=float, default=0.05)
    ap.add_argument("--currency", default="USD")
    ap.add_argument("--quick", action="store_true", help="20 requests per level: checks the script, measures nothing")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve.json")
    ap.add_argument("--write-docs", action="store_true", help="put the table in docs/benchmarks.md")
    ap.add_argument("--naive-server", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.naive_server is not None:
        return naive_server(args.naive_server, args.port)

    workdir = Path(tempfile.mkdtemp(prefix="tunewise-bench-serve-"))
    run_dir = train_demo(workdir) if args.train_demo else args.run
    if run_dir is None or not (run_dir / "model" / "config.json").is_file():
        raise SystemExit("give a trained classifier run directory (RUN/model/ must exist), or --train-demo")
    texts = [json.loads(line)["text"] for line in (run_dir / "data" / "test.jsonl").read_text().splitlines()
             if line.strip()]
    levels = [int(x) for x in args.clients.split(",")]
    requests, warmup = (20, 8) if args.quick else (args.requests, args.warmup)
    rows: list[dict] = []
    for system in args.systems.split(","):
        print(f"{system}: serving {run_dir}", flush=True)
        rows += bench_system(system, run_dir, texts, levels, requests, warmup, args.price_per_core_hour, workdir,
                             args.set)
    md = table(rows, args.price_per_core_hour, args.currency)
    print("\n" + md)
    facts = {"run": str(run_dir), "cpus": len(os.sched_getaffinity(0)), "quick": args.quick,
             "serve_overrides": args.set, "price_per_core_hour": args.price_per_core_hour,
             "currency": args.currency, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(facts, indent=2) + "\n")
    print(f"results: {args.out}")
    if args.write_docs:
        sys.path.insert(0, str(ROOT / "bench"))
        from _docs import replace_block

        body = (f"`python bench/serve.py {run_dir}` on {facts['cpus']} CPUs, loopback, one test-split text per "
                f"request.\n\n{md}")
        replace_block(ROOT / "docs" / "benchmarks.md", "serve", body, "Serving: /v1/classify against a naive server")


if __name__ == "__main__":
    main()
