"""Who starts the `sweeps worker` processes of `sweeps run --workers N`.

Optuna's storage coordinates the workers; a launcher only places and starts them, follows
them until they end, and stops them on Ctrl-C. Each engine is an existing one (local
processes, Ray, Slurm): this package adapts it to `Launcher`.
"""

from __future__ import annotations

from sweeps.launchers.base import Detachable, Launcher, WorkerPlan, WorkerReport, follow
from sweeps.launchers.local import LocalLauncher
from sweeps.launchers.ray_cluster import RayLauncher
from sweeps.launchers.slurm import SlurmLauncher

__all__ = [
    "Detachable",
    "Launcher",
    "LocalLauncher",
    "RayLauncher",
    "SlurmLauncher",
    "WorkerPlan",
    "WorkerReport",
    "follow",
]
