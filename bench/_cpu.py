"""Shared by the benchmark scripts: how a result names the CPU it ran on, and the matmul peaks it is judged by."""

from __future__ import annotations

import time


def has_amx(facts: dict) -> bool:
    """From tunewise's cpu_facts; results written before 2026-12-02 said "fast_bf16", which meant AMX then."""
    return bool(facts.get("amx", facts.get("fast_bf16")) or "amx_tile" in facts.get("isa", []))


def cpu_label(facts: dict) -> str:
    """"CPU <model> (<vendor> family F model M), AMX yes/no[, AVX-512 bf16]": the model name alone does not tell
    AMD Zen 4 from Zen 5, whose bf16 speeds differ 2x."""
    isa = facts.get("isa", [])
    ident = f" ({facts['cpu_id']})" if facts.get("cpu_id") else ""  # results recorded before 2026-12-02 lack it
    amx = has_amx(facts)
    return (f"CPU {facts.get('model')}{ident}, AMX {'yes' if amx else 'no'}"
            + (", AVX-512 bf16" if "avx512_bf16" in isa and not amx else ""))


def matmul_gflops(dtype, seconds: float, n: int = 2048) -> tuple[float, int]:
    """Best GFLOP/s of n x n @ n x n matmuls in `dtype` at the current thread count, over `seconds`; (best, trials)."""
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    t0 = time.perf_counter()
    a @ b
    once = time.perf_counter() - t0
    if once > 1.0:  # an emulated dtype (bf16 on an AVX2-only CPU: ~1 GFLOP/s): one timed matmul says enough
        return 2 * n ** 3 / once / 1e9, 1
    a @ b
    best, trials = 0.0, 0
    deadline = time.perf_counter() + seconds
    while trials < 3 or time.perf_counter() < deadline:
        t0, reps = time.perf_counter(), 0
        while reps < 4 or time.perf_counter() - t0 < 0.25:
            a @ b
            reps += 1
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t0))
        trials += 1
    return best / 1e9, trials
