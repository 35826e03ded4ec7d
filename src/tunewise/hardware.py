"""Which device and precision a run uses. bf16 autocast is the CPU speed lever on AMX / AVX-512-bf16 chips."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Placement:
    device: str       # "cpu" or "cuda"
    precision: str    # "bf16" or "fp32"
    reason: str

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "bf16" else None


def cpu_supports_fast_bf16() -> bool:
    """True where bf16 matmuls run in hardware (AMX tiles or AVX-512 bf16); elsewhere bf16 autocast is slower than fp32."""
    cpu = torch.cpu
    amx = getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    avx512_bf16 = getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
    return bool(amx or avx512_bf16)


def choose_placement(device: str = "auto", precision: str = "auto") -> Placement:
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
    return Placement(dev, "bf16" if ok else "fp32", "CPU has AMX/AVX-512 bf16" if ok else "CPU lacks fast bf16")
