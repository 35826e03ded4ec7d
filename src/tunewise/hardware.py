"""Which device and precision a run uses, and the CPU facts a run records. bf16 autocast is the CPU speed lever only
where the CPU has AMX."""

from __future__ import annotations

import functools
import os
import platform
from contextlib import contextmanager
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


# bf16 autocast is chosen without AMX only where a bf16 matmul measured at least this much faster than fp32: autocast
# adds casts, and a small win in the matmuls is lost to them
BF16_MIN_SPEEDUP = 1.5


def cpu_has_amx() -> bool:
    import torch

    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


@functools.lru_cache(maxsize=1)
def bf16_verdict() -> tuple[bool, str]:
    """Whether bf16 autocast pays on this CPU, and why. The ISA decides where it can: AMX tiles (a 2048² bf16 matmul
    at ~2,850 GFLOP/s against ~300 in fp32) and no bf16 instructions at all (emulated: 0.28 against 111). Between
    them, AVX-512 bf16 without AMX differs by CPU: 149-161 against 290 in fp32 on one machine, 859 against 200 on
    an AMD Zen 5. There a short matmul measurement decides (`measured_bf16_speedup`, kept on disk per machine)."""
    if cpu_has_amx():
        return True, "CPU has AMX bf16 tiles"
    facts = cpu_facts()
    if facts["amx"] is None:  # no x86 flags to read (not Linux, or not x86)
        return False, "CPU flags unknown here (no /proc/cpuinfo flags): fp32, the safe choice"
    if "avx512_bf16" not in facts["isa"]:
        return False, "CPU has no bf16 instructions (no AMX, no AVX-512 bf16): bf16 would be emulated, far slower"
    bf16, fp32 = measured_bf16_speedup()
    ratio = bf16 / fp32
    measured = f"a bf16 matmul ran {ratio:.2f}x fp32 here ({bf16:.0f} against {fp32:.0f} GFLOP/s)"
    if ratio >= BF16_MIN_SPEEDUP:
        return True, f"CPU has AVX-512 bf16 without AMX, and {measured}"
    return False, f"CPU has no AMX, and {measured}: under the {BF16_MIN_SPEEDUP:g}x at which bf16 autocast pays"


def measured_bf16_speedup(size: int = 1024, seconds: float = 0.2) -> tuple[float, float]:
    """(bf16, fp32) GFLOP/s of a size² matmul at this process's thread count, best of the repeats that fit in
    `seconds` each. Kept in the tunewise cache, keyed by the CPU, its flags, the threads and torch's version, so
    every stage and every later run on this machine makes the same choice (a fresh measurement could flip a
    near-tie between runs)."""
    import json
    import time

    import torch

    from tunewise.errors import DiskFullError
    from tunewise.models import cache_root
    from tunewise.rundir import atomic_write_json

    facts = cpu_facts()
    key = (f"{facts['model']}|{facts['cpu_id']}|{','.join(facts['isa'])}|{torch.get_num_threads()} threads"
           f"|torch {torch.__version__}")
    store = cache_root() / "bf16-speed.json"
    try:
        known = json.loads(store.read_text(encoding="utf-8"))
        if isinstance(known.get(key), list) and len(known[key]) == 2:
            return float(known[key][0]), float(known[key][1])
    except (OSError, ValueError, AttributeError, TypeError):
        known = {}

    def gflops(dtype) -> float:
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b  # warm-up: kernel selection and first-touch of the output
        best, end = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * size ** 3 / (time.perf_counter() - t0) / 1e9)
        return best

    result = (gflops(torch.bfloat16), gflops(torch.float32))
    try:
        atomic_write_json(store, {**known, key: list(result)})
    except (OSError, DiskFullError):  # a read-only or full cache: measure again next time
        pass
    return result


def cpu_facts() -> dict:
    """The CPU model, the ISA flags that matter for precision, and the CPUs this process may use: kernels differ
    between CPU kinds, so bit-identical results need the same kind. Reads /proc/cpuinfo; never imports torch, so
    making a run directory stays fast."""
    model, flags, ident = platform.processor() or platform.machine(), set(), {}
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name":
                model = value.strip()
            elif key in ("vendor_id", "cpu family", "model"):
                ident[key] = value.strip()
            elif key == "flags":
                flags = set(value.split())
                break
    except OSError:  # not Linux: the model name from platform, no flags
        pass
    # Clouds name CPU generations alike ("AMD EPYC" is Zen 4 and Zen 5): vendor, family and model tell them apart.
    cpu_id = (f"{ident.get('vendor_id', '?')} family {ident.get('cpu family', '?')} model {ident.get('model', '?')}"
              if ident else None)
    return {"model": model, "cpu_id": cpu_id, "isa": [f for f in ISA_FLAGS if f in flags],
            "cpus_available": affinity_cpus(), "cpu_quota": cpu_quota(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "tunewise_threads": os.environ.get(THREADS_ENV),
            "amx": "amx_tile" in flags if flags else None}


# ---------------------------------------------------------------- threads: follow the CPUs the process may use

THREADS_ENV = "TUNEWISE_THREADS"


def affinity_cpus() -> int:
    """CPUs this process may run on (taskset, cpuset, a container's --cpuset-cpus); os.cpu_count() counts them all."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _cgroup_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """(cgroup v2 path, cgroup v1 cpu-controller path) of this process, from /proc/self/cgroup."""
    v2 = v1 = None
    try:
        for line in proc_cgroup.read_text(encoding="utf-8").splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                v2 = path
            elif "cpu" in controllers.split(","):
                v1 = path
    except (OSError, ValueError):
        pass
    return v2, v1


def cpu_quota(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU time this process may use per second of wall time (cgroup v2 cpu.max, or v1 cfs_quota/period), e.g.
    1.5 for `docker run --cpus 1.5`; None when unlimited or unknown. The tightest limit on the way up the tree wins."""
    v2, v1 = _cgroup_paths(proc_cgroup)
    limits: list[float] = []
    for base, rel, read in ((root, v2, _read_cpu_max), (root / "cpu", v1, _read_cfs), (root / "cpu,cpuacct", v1, _read_cfs)):
        if rel is None or not base.is_dir():
            continue
        folder = base / rel.lstrip("/")
        while True:  # the cgroup itself and each parent up to the mount point
            limit = read(folder)
            if limit is not None:
                limits.append(limit)
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return min(limits) if limits else None


def _read_cpu_max(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text(encoding="utf-8").split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _read_cfs(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text(encoding="utf-8"))
        period = int((folder / "cpu.cfs_period_us").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


@dataclass(frozen=True)
class ThreadPlan:
    threads: int      # torch intra-op threads per process
    reason: str


def plan_threads(processes_per_node: int = 1, env: dict[str, str] | None = None) -> ThreadPlan:
    """Threads per process: the CPUs this process may really use (affinity, capped by the cgroup quota) shared out
    among the processes on this node, at least 1. More OpenMP threads than CPUs make them wait on each other: two
    training processes with 2 threads each on 2 cores ran 35x slower than with 1 each. `TUNEWISE_THREADS` overrides
    (and an explicit OMP_NUM_THREADS is respected when it is not set)."""
    env = os.environ if env is None else env
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        raw = env.get(name)
        if raw not in (None, ""):
            try:
                n = int(raw)
            except ValueError:
                n = 0
            if n < 1:
                from tunewise.errors import TunewiseError

                raise TunewiseError(f"{name}={raw!r}: expected a whole number of threads, 1 or more")
            return ThreadPlan(n, f"{name}={n} set in the environment")
    cpus, quota = affinity_cpus(), cpu_quota()
    usable = cpus if quota is None else max(1, min(cpus, int(quota + 0.5)))
    n = max(1, usable // max(1, processes_per_node))
    limit = f"{cpus} CPUs in the affinity mask" + (f", cgroup quota {quota:g} CPUs" if quota is not None else "")
    share = f" shared by {processes_per_node} processes" if processes_per_node > 1 else ""
    return ThreadPlan(n, f"{limit}{share}")


def small_batch_threads(env: dict[str, str] | None = None) -> ThreadPlan:
    """Threads for inference on small batches (the monitor's 16-row embedding batches): 1, unless TUNEWISE_THREADS
    or OMP_NUM_THREADS say otherwise. Such batches split too finely for OpenMP to gain, and when another process
    holds a core the waiting threads spin: `bench/drift.py --timing` on 30k rows at window 500, beside one busy
    process, took 64 CPU-s per 100k rows with 1 thread and 647 CPU-s with 2."""
    env = os.environ if env is None else env
    if any(env.get(name) not in (None, "") for name in (THREADS_ENV, "OMP_NUM_THREADS")):
        return plan_threads(1, env)
    return ThreadPlan(1, "small inference batches: one thread")


@contextmanager
def torch_threads(plan: ThreadPlan):
    """torch's intra-op threads set to `plan` inside the block, and restored after it (the caller may be a test
    session or a notebook that set its own)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(plan.threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def apply_threads(plan: ThreadPlan) -> None:
    """Set torch's intra-op threads, and OMP/MKL for anything this process starts."""
    import torch

    torch.set_num_threads(plan.threads)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(plan.threads)


# ---------------------------------------------------------------- the process group a launcher started

@dataclass(frozen=True)
class World:
    """This process's place among those torchrun / accelerate launch started (from their environment variables)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_from_env(env: dict[str, str] | None = None) -> World:
    env = os.environ if env is None else env
    size = int(env.get("WORLD_SIZE", "1"))
    return World(rank=int(env.get("RANK", "0")), local_rank=int(env.get("LOCAL_RANK", "0")), size=size,
                 local_size=int(env.get("LOCAL_WORLD_SIZE", str(size))))


def refuse_silent_single_process(env: dict[str, str] | None = None) -> None:
    """`accelerate launch --cpu --num_processes N` starts ONE plain process (its CPU launcher hands N to mpirun, and
    without --mpirun_hostfile there is none) and sets no WORLD_SIZE: training would quietly run on one process.
    Its traces are ACCELERATE_USE_CPU plus a MASTER_ADDR with no WORLD_SIZE and no MPI rank; refuse them."""
    env = os.environ if env is None else env
    mpi = any(k in env for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_SIZE"))
    if env.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in env and "WORLD_SIZE" not in env \
            and not mpi:
        from tunewise.errors import TunewiseError

        raise TunewiseError(
            "`accelerate launch --cpu --num_processes N` starts only ONE process (accelerate's CPU launcher needs "
            "mpirun for more), so this would train on one process while you asked for N. Use one of: "
            "`tunewise run RECIPE --nproc N`, `torchrun --nproc_per_node N -m tunewise run RECIPE`, or "
            "`accelerate launch --multi_gpu --num_processes N -m tunewise run RECIPE` (on CPU too: tunewise "
            "trains with gloo there)")


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
    ok, why = bf16_verdict()
    return Placement(dev, "bf16" if ok else "fp32", why)


# Under torchrun / accelerate launch every rank runs `tunewise run`. Rank 0 prepares the data and audits it while
# the others wait on a gloo group of their own (with a long timeout: an audit of a large set takes a while); rank 0
# then announces the training (or None: nothing to train, or a failure), all ranks train, and rank 0 leaves the
# group to evaluate and write the card alone.
_coordination: dict = {"group": None, "announced": False}


def join_launched_group(world: World, device: str) -> None:
    import datetime

    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if device == "cuda":
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    _coordination["group"] = dist.new_group(backend="gloo", timeout=datetime.timedelta(hours=12))


def announce_training(job: dict | None) -> None:
    """Rank 0: tell the waiting ranks what to train (a dict), or that there is nothing to train (None). Once."""
    if _coordination["group"] is None or _coordination["announced"]:
        return
    import torch
    import torch.distributed as dist

    _coordination["announced"] = True
    dist.broadcast_object_list([job], src=0, group=_coordination["group"], device=torch.device("cpu"))


def await_training() -> dict | None:
    """A rank other than 0: wait for rank 0's announcement."""
    import torch
    import torch.distributed as dist

    box: list = [None]
    dist.broadcast_object_list(box, src=0, group=_coordination["group"], device=torch.device("cpu"))
    return box[0]


def leave_launched_group() -> None:
    """After training: destroy the process group and forget the launcher's world, so the stages after training
    (which rank 0 runs alone) see one process."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    _coordination["group"] = None
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK"):
        os.environ.pop(key, None)


# ---------------------------------------------------------------- the allocator: give freed memory back

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def return_freed_memory(mmap_threshold: int = 1 << 20, arena_max: int = 2) -> str | None:
    """Make glibc malloc give freed tensor memory back to the OS, for a lower peak RSS in training. By default glibc
    raises its mmap threshold (up to 32 MB) each time a large block is freed, so activation-sized tensors end up on
    the heap, where freed space is kept and fragments; each thread also gets its own arena. A fixed threshold keeps
    every block of 1 MB or more in its own mapping (unmapped when freed), and two arenas bound the per-thread heaps.
    Set with mallopt from inside the process (the MALLOC_* environment variables are read only at start-up).
    Not a training default: every large tensor then becomes a fresh mapping, page-faulted and zeroed each time it is
    allocated (about 2 ms more CPU per 6 MiB tensor, measured); bench/causal_sft.py's `tunewise-malloc` side measures
    the trade.
    Returns what was set, or None where the C library is not glibc (macOS, musl): nothing changes there."""
    import ctypes
    import ctypes.util

    if platform.system() != "Linux" or not platform.libc_ver()[0].startswith("glibc"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = all(libc.mallopt(param, value) == 1 for param, value in (
            (_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, 2 * mmap_threshold), (_M_ARENA_MAX, arena_max)))
    except (OSError, AttributeError):
        return None
    return f"glibc mallopt: mmap threshold {mmap_threshold >> 10} KiB, trim threshold {2 * mmap_threshold >> 10} KiB, " \
           f"{arena_max} arenas" if ok else None


# ---------------------------------------------------------------- the allocator: tcmalloc or jemalloc when installed

# What TUNEWISE_ALLOCATOR may name, in the order `auto` tries them. tcmalloc first: in bench/causal_sft.py (LoRA on
# SmolLM2, 2 AMX cores) it trained 1.23x faster than glibc's malloc at 0.76x the peak RSS; jemalloc 1.09x and 0.75x.
ALLOCATOR_LIBRARIES = {"tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"), "jemalloc": ("libjemalloc.so.2",)}
ALLOCATOR_PACKAGES = {"tcmalloc": "libtcmalloc-minimal4", "jemalloc": "libjemalloc2"}  # Debian/Ubuntu names
_RELAUNCHED = "TUNEWISE_ALLOCATOR_RELAUNCHED"


def _library_folders() -> list[Path]:
    import sysconfig

    triplet = sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu"
    return [Path(p) for p in (f"/usr/lib/{triplet}", f"/lib/{triplet}", "/usr/lib64", "/usr/lib", "/usr/local/lib")]


def find_allocator(choice: str = "auto") -> tuple[str, str] | None:
    """(name, path) of the first installed allocator library that `choice` allows (auto, tcmalloc, jemalloc)."""
    names = list(ALLOCATOR_LIBRARIES) if choice == "auto" else [choice]
    for name in names:
        for library in ALLOCATOR_LIBRARIES[name]:
            for folder in _library_folders():
                if (folder / library).is_file():
                    return name, str(folder / library)
    return None


def allocator_in_use() -> str:
    """The malloc this process runs on: tcmalloc or jemalloc when one is mapped into it, else the C library's."""
    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace")
    except OSError:
        maps = ""
    for name, libraries in ALLOCATOR_LIBRARIES.items():
        if any(lib in maps for lib in libraries):
            return name
    libc = platform.libc_ver()[0]
    return libc or "the C library's"


def allocator_choice(env: dict[str, str] | None = None) -> str:
    """TUNEWISE_ALLOCATOR, checked: auto (default), tcmalloc, jemalloc, or system (the C library's malloc)."""
    from tunewise.errors import TunewiseError

    choice = (os.environ if env is None else env).get("TUNEWISE_ALLOCATOR", "auto").strip().lower() or "auto"
    allowed = ("auto", *ALLOCATOR_LIBRARIES, "system")
    if choice not in allowed:
        raise TunewiseError(f"TUNEWISE_ALLOCATOR={choice!r}: choose one of {', '.join(allowed)}")
    return choice


def allocator_preload_env(env: dict[str, str] | None = None) -> dict[str, str] | None:
    """The environment a process needs to start on tcmalloc or jemalloc (LD_PRELOAD), or None when there is nothing
    to change: not Linux, TUNEWISE_ALLOCATOR=system, no such library installed, or already preloaded. An allocator
    can only be swapped before a process starts, which is why the CLI relaunches itself with this."""
    env = dict(os.environ if env is None else env)
    choice = allocator_choice(env)
    if platform.system() != "Linux" or choice == "system" or env.get(_RELAUNCHED):
        return None
    found = find_allocator(choice)
    if found is None:
        if choice != "auto":
            from tunewise.errors import TunewiseError

            raise TunewiseError(f"TUNEWISE_ALLOCATOR={choice}: none of {', '.join(ALLOCATOR_LIBRARIES[choice])} is "
                                f"installed (Debian/Ubuntu: apt-get install {ALLOCATOR_PACKAGES[choice]})")
        return None
    preload = env.get("LD_PRELOAD", "")
    if any(lib in preload for libs in ALLOCATOR_LIBRARIES.values() for lib in libs):  # the user chose one already
        return None
    env["LD_PRELOAD"] = f"{found[1]} {preload}".strip()
    env[_RELAUNCHED] = found[0]
    return env


def relaunch_on_fast_allocator() -> None:
    """Replace this process by itself started on tcmalloc (or jemalloc) when one is installed and not yet in use.
    Called first thing by the `tunewise` command, before torch is imported; child processes (DDP workers) inherit
    the preload. Does nothing where no relaunch is possible; only a TUNEWISE_ALLOCATOR it cannot honour is an error."""
    import sys

    env = allocator_preload_env()
    if env is None:
        return
    argv = list(getattr(sys, "orig_argv", [])) or [sys.executable, *sys.argv]
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, argv, env)
    except OSError:  # e.g. the interpreter cannot be executed again: stay on the current allocator
        return
