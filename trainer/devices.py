"""Device selection: decided once, before any work starts, then passed down."""

from __future__ import annotations

import os
import re

import torch

from trainer.errors import DeviceError

_CUDA_INDEX = re.compile(r"^cuda:(\d+)$")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(spec: str) -> torch.device:
    """Map `auto|cpu|cuda|cuda:N|mps` to a device that exists here, or raise DeviceError.

    `auto` prefers cuda, then mps, then cpu.
    """
    spec = spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not _mps_available():
            raise DeviceError("device 'mps' was requested but MPS is not available on this machine")
        return torch.device("mps")
    match = _CUDA_INDEX.match(spec)
    if spec == "cuda" or match:
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {spec!r} was requested but CUDA is not available on this machine"
                f" (torch {torch.__version__})"
            )
        index = int(match.group(1)) if match else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(
                f"device {spec!r} does not exist: this machine has {count} CUDA device(s)"
            )
        return torch.device("cuda", index)
    raise DeviceError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps")


def device_label(device: torch.device) -> str:
    """A stable name for records, e.g. 'cpu' or 'cuda:0'."""
    if device.type == "cuda":
        return f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}"
    return device.type


def set_cpu_threads(threads: int | None, processes: int = 1) -> int:
    """Sets torch's intra-op CPU threads of this process; returns the number set.

    None means this machine's usable cores shared among `processes` local processes, at
    least one each. Why not torch's default: every process starts one thread per core, so
    N workers on N cores run N² threads that spin against each other. Measured on 2 cores,
    two processes training a digits MLP: 11.5 s each at 2 threads, 2.6 s at 1 thread.
    """
    if threads is None:
        threads = max(1, usable_cores() // max(1, processes))
    if threads < 1:
        raise ValueError(f"CPU threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return threads


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity API
        return os.cpu_count() or 1
