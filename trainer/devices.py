"""Device selection: decided once, before any work starts, then passed down."""

from __future__ import annotations

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


DEFAULT_CPU_THREADS = 1


def set_cpu_threads(threads: int | None) -> int:
    """Sets torch's intra-op CPU threads of this process; returns the number set.

    None means DEFAULT_CPU_THREADS. Why not torch's default (one thread per core): the
    models this product trains are small, a second thread buys nothing on a quiet machine,
    and threads that spin for cores someone else holds make training several times slower
    (another worker, another job, a CI run). `python -m bench --threads` measures it;
    docs/performance.md has the figures.
    """
    if threads is None:
        threads = DEFAULT_CPU_THREADS
    if threads < 1:
        raise ValueError(f"CPU threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return threads
