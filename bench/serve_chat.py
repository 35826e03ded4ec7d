"""Chat throughput of `tunewise serve`: total generated tokens/s at 1 and at 8 concurrent streams.

The target (issue 10): 8 concurrent streams together generate >= 3x the tokens/s of one stream, because the engine
decodes all running requests in one batched step (serve/generation.py) instead of one request at a time.

It starts `tunewise serve RUN` as a subprocess on loopback (the real CLI, one worker), then for each concurrency
level runs C clients (asyncio + httpx), each streaming `--requests` chat completions one after another
(`stream: true`, greedy, `max_tokens`), and reads the token counts from the streams' usage chunks. It reports the
total tokens/s, tokens/s per stream, time to first token (p50/p95) and the engine's mean decoding batch (from
/metrics). A quiet machine is needed: other busy processes make every number meaningless.

    python bench/serve_chat.py RUN                       # RUN: a generation/chat run with export/
    python bench/serve_chat.py RUN --max-tokens 8 --requests 1 --levels 1 2    # a tiny smoke run
    python bench/serve_chat.py RUN --json bench/results/serve_chat.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

KEY = "tw-bench-chat-key"
PROMPTS = ["Write a short story about a lighthouse keeper.", "Explain how a bicycle works.",
           "Describe the city of Paris to a child.", "List some tips for learning a new language.",
           "Write a poem about the autumn rain.", "Explain why the sky is blue.",
           "Describe a day in the life of a baker.", "What should I pack for a hiking trip?"]


def start_server(run: Path, port: int, log: Path) -> subprocess.Popen:
    from tunewise.serve.launch import ServerNotReady, launch

    env = dict(os.environ, TUNEWISE_API_KEYS=f"bench={KEY}", HF_HUB_OFFLINE="1", TQDM_DISABLE="1",
               TUNEWISE_KEYS_FILE=str(log.with_suffix(".keys.json")))
    argv = [sys.executable, "-m", "tunewise", "serve", str(run), "--host", "127.0.0.1", "--port", str(port),
            f"serve.log=sqlite:///{log.with_suffix('.sqlite')}", "serve.rate_per_minute=1000000",
            "serve.rate_burst=100000", "serve.request_timeout_s=3600"]
    try:
        proc, _ = launch(argv, port=port, env=env, log=log, timeout=600)  # a causal LM loads slowly on a busy box
    except ServerNotReady as e:
        raise SystemExit(str(e)) from None
    return proc


async def one_stream(client, model: str, prompt: str, max_tokens: int) -> tuple[int, float]:
    """(completion tokens, seconds to the first content) of one streamed chat completion."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    t0, first, tokens = time.perf_counter(), None, 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise SystemExit(f"HTTP {r.status_code}: {(await r.aread()).decode()[:300]}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise SystemExit(f"stream error: {chunk['error']}")
            if first is None and any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                first = time.perf_counter() - t0
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return tokens, first if first is not None else time.perf_counter() - t0


async def level(base: str, model: str, clients: int, requests: int, max_tokens: int) -> dict:
    import httpx

    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {KEY}"},
                                 timeout=httpx.Timeout(3600)) as client:
        async def worker(c: int) -> list[tuple[int, float]]:
            return [await one_stream(client, model, PROMPTS[(c + i) % len(PROMPTS)], max_tokens)
                    for i in range(requests)]

        t0 = time.perf_counter()
        results = [x for per in await asyncio.gather(*(worker(c) for c in range(clients))) for x in per]
        seconds = time.perf_counter() - t0
    tokens = sum(t for t, _ in results)
    ttft = sorted(f for _, f in results)
    return {"streams": clients, "requests": len(results), "completion_tokens": tokens,
            "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
            "tokens_per_s_per_stream": round(tokens / seconds / clients, 1),
            "ttft_p50_s": round(statistics.median(ttft), 3),
            "ttft_p95_s": round(ttft[min(len(ttft) - 1, int(0.95 * len(ttft)))], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a generation or chat run directory (with export/)")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 8], help="concurrent streams (default 1 8)")
    ap.add_argument("--requests", type=int, default=3, help="streams each client runs one after another")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    import httpx

    from tunewise.serve.launch import free_port, stop

    port = free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"tunewise-bench-chat-{port}.log"
    server = start_server(args.run.resolve(), port, log)
    base = f"http://127.0.0.1:{port}"
    try:
        model = httpx.get(base + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()["data"][0]["id"]
        asyncio.run(level(base, model, 1, 1, 4))  # warm-up: first-call allocations stay out of the numbers
        rows = []
        for clients in args.levels:
            before = httpx.get(base + "/metrics").text
            row = asyncio.run(level(base, model, clients, args.requests, args.max_tokens))
            after = httpx.get(base + "/metrics").text
            row["mean_decode_batch"] = _delta_mean(before, after)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        stop(server)
    one = next((r for r in rows if r["streams"] == 1), None)
    print("\n| streams | requests | tokens | seconds | tokens/s | per stream | TTFT p50 | mean decode batch | vs 1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        speedup = f"{r['tokens_per_s'] / one['tokens_per_s']:.2f}x" if one and one["tokens_per_s"] else "-"
        print(f"| {r['streams']} | {r['requests']} | {r['completion_tokens']} | {r['seconds']} | {r['tokens_per_s']} "
              f"| {r['tokens_per_s_per_stream']} | {r['ttft_p50_s']} s | {r['mean_decode_batch']} | {speedup} |")
    from tunewise.hardware import cpu_facts

    result = {"run": str(args.run), "max_tokens": args.max_tokens, "cpu": cpu_facts(), "levels": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


def _delta_mean(before: str, after: str) -> float | None:
    def totals(text: str) -> tuple[float, float]:
        s = re.search(r'tunewise_batch_size_sum\{endpoint="chat"\} ([0-9.e+]+)', text)
        c = re.search(r'tunewise_batch_size_count\{endpoint="chat"\} ([0-9.e+]+)', text)
        return (float(s.group(1)) if s else 0.0), (float(c.group(1)) if c else 0.0)
    (s0, c0), (s1, c1) = totals(before), totals(after)
    return round((s1 - s0) / (c1 - c0), 2) if c1 > c0 else None


if __name__ == "__main__":
    main()
