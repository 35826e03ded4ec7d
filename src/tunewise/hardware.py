"""Which device and precision a run uses, and the CPU facts a run records. bf16 autocast is the CPU speed lever only
where the CPU has AMX."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Placement:
    device: str       # "cpu" or "cuda"
    precision: str    # "bf16" or "fp32"
    reason: str

    @property
    def autocast_dtype(self) -> "torch.dtype | None":
        import torch

        return torch.bfloat16 if self.precision == "bf16" else None


# ISA flags that decide the precision, as /proc/cpuinfo names them; recorded in each run's manifest
ISA_FLAGS = ("amx_bf16", "amx_tile", "amx_int8", "avx512_bf16", "avx512f", "avx512_vnni", "avx2", "fma")


def cpu_supports_fast_bf16() -> bool:
    """True where bf16 matmuls beat fp32: AMX tiles only. Measured on these machines: with AMX a 2048² bf16 matmul
    ran at about 2,850 GFLOP/s against about 300 in fp32; with AVX-512 bf16 but no AMX it ran at 149-161 against
    290 in fp32, so there bf16 autocast would halve the speed."""
    import torch

    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def cpu_facts() -> dict:
    """The CPU model, the ISA flags that matter for precision, and the CPUs this process may use: kernels differ
    between CPU kinds, so bit-identical results need the same kind. Reads /proc/cpuinfo; never imports torch, so
    making a run directory stays fast."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:  # not Linux: the model name from platform, no flags
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "isa": [f for f in ISA_FLAGS if f in flags], "cpus_available": cpus,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "fast_bf16": "amx_tile" in flags if flags else cpu_supports_fast_bf16()}


def choose_placement(device: str = "auto", precision: str = "auto") -> Placement:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        from tunewise.errors import TunewiseError

        raise TunewiseError("train.device=cuda, but no CUDA GPU is visible; use train.device=auto or cpu")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    dev = "cuda" if use_cuda else "cpu"
    if precision != "auto":
        return Placement(dev, precision, f"precision={precision} set in the recipe")
    if use_cuda:
        ok = torch.cuda.is_bf16_supported()
        return Placement(dev, "bf16" if ok else "fp32", "GPU supports bf16" if ok else "GPU lacks bf16")
    ok = cpu_supports_fast_bf16()
    return Placement(dev, "bf16" if ok else "fp32", "CPU has AMX bf16 tiles" if ok else
                     "CPU has no AMX: bf16 matmuls would be slower than fp32 here")
