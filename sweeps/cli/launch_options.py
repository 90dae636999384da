"""`sweeps run`'s launcher options: which engine starts the `--workers` processes and what
each of them is given."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from sweeps.launchers import Launcher

F = TypeVar("F", bound=Callable[..., Any])

LAUNCHERS = ["local", "ray"]
RAY_ADDRESS_ENV = "RAY_ADDRESS"  # Ray's own variable for the cluster to join


@dataclass(frozen=True)
class LaunchOptions:
    launcher: str = "local"
    ray_address: str | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float | None = None


_OPTIONS = (
    click.option(
        "--launcher",
        type=click.Choice(LAUNCHERS),
        default="local",
        show_default=True,
        help="Who starts the --workers processes: this machine, or Ray's scheduler.",
    ),
    click.option(
        "--ray-address",
        help=f"The Ray cluster to run on (host:port) [env {RAY_ADDRESS_ENV}; neither: a Ray"
        " instance on this machine for the run].",
    ),
    click.option(
        "--gpus-per-worker",
        type=float,
        help="GPUs Ray gives each worker; a fraction shares one GPU (0.25: four workers)"
        " [0: the CPU].",
    ),
    click.option("--cpus-per-worker", type=float, help="CPUs Ray reserves for each worker [1]."),
)


def launch_options(f: F) -> F:
    """The options above, handed to the command as one `launch: LaunchOptions`."""

    @functools.wraps(f)
    def command(
        *args: Any,
        launcher: str,
        ray_address: str | None,
        gpus_per_worker: float | None,
        cpus_per_worker: float | None,
        **kwargs: Any,
    ) -> Any:
        launch = LaunchOptions(launcher, ray_address, gpus_per_worker, cpus_per_worker)
        return f(*args, launch=launch, **kwargs)

    for option in reversed(_OPTIONS):
        command = option(command)
    return command  # type: ignore[return-value]


def make_launcher(launch: LaunchOptions) -> Launcher | None:
    """The launcher the options name; None for local processes (the library's default).
    Options of another launcher are refused as bad input."""
    from sweeps.errors import UsageError

    if launch.launcher == "local":
        given = [
            name
            for name, value in (
                ("--ray-address", launch.ray_address),
                ("--gpus-per-worker", launch.gpus_per_worker),
                ("--cpus-per-worker", launch.cpus_per_worker),
            )
            if value is not None
        ]
        if given:
            raise UsageError(f"{given[0]} places workers on a cluster: add --launcher ray")
        return None
    from sweeps.launchers import RayLauncher

    return RayLauncher(
        launch.ray_address or os.environ.get(RAY_ADDRESS_ENV) or None,
        gpus_per_worker=launch.gpus_per_worker or 0.0,
        cpus_per_worker=1.0 if launch.cpus_per_worker is None else launch.cpus_per_worker,
    )
