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

LAUNCHERS = ["local", "ray", "slurm"]
RAY_ADDRESS_ENV = "RAY_ADDRESS"  # Ray's own variable for the cluster to join


@dataclass(frozen=True)
class LaunchOptions:
    launcher: str = "local"
    ray_address: str | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float | None = None
    time: str | None = None  # Slurm's
    partition: str | None = None
    slurm_args: tuple[str, ...] = ()
    detach: bool = False

    def given(self, *names: str) -> list[str]:
        """The options among `names` (attribute names) that were given, as flags."""
        return [
            "--" + name.replace("_", "-").replace("slurm-args", "slurm-arg")
            for name in names
            if getattr(self, name) not in (None, (), False)
        ]


_OPTIONS = (
    click.option(
        "--launcher",
        type=click.Choice(LAUNCHERS),
        default="local",
        show_default=True,
        help="Who starts the --workers processes: this machine, Ray's scheduler, or one"
        " Slurm job array (docs/scale-out.md).",
    ),
    click.option(
        "--ray-address",
        help=f"The Ray cluster to run on (host:port) [env {RAY_ADDRESS_ENV}; neither: a Ray"
        " instance on this machine for the run].",
    ),
    click.option(
        "--gpus-per-worker",
        type=float,
        help="GPUs each worker is given; Ray: a fraction shares one GPU (0.25: four"
        " workers); Slurm: whole GPUs (--gres=gpu:G) [0: the CPU].",
    ),
    click.option(
        "--cpus-per-worker",
        type=float,
        help="CPUs reserved for each worker (Slurm: --cpus-per-task, whole) [1].",
    ),
    click.option(
        "--time",
        "time_limit",
        help="Slurm: each worker's time limit (MINUTES, HH:MM:SS, D-HH:MM:SS).",
    ),
    click.option("--partition", help="Slurm: the partition to submit to [the default one]."),
    click.option(
        "--slurm-arg",
        "slurm_args",
        multiple=True,
        help="Slurm: one more sbatch option, as --slurm-arg=--account=proj (repeatable).",
    ),
    click.option(
        "--detach",
        is_flag=True,
        help="Slurm: submit the workers, print the job id and how to watch it, and return.",
    ),
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
        time_limit: str | None,
        partition: str | None,
        slurm_args: tuple[str, ...],
        detach: bool,
        **kwargs: Any,
    ) -> Any:
        launch = LaunchOptions(
            launcher,
            ray_address,
            gpus_per_worker,
            cpus_per_worker,
            time_limit,
            partition,
            tuple(slurm_args),
            detach,
        )
        return f(*args, launch=launch, **kwargs)

    for option in reversed(_OPTIONS):
        command = option(command)
    return command  # type: ignore[return-value]


_SLURM_ONLY = ("time", "partition", "slurm_args", "detach")


def make_launcher(launch: LaunchOptions) -> Launcher | None:
    """The launcher the options name; None for local processes (the library's default).
    Options of another launcher are refused as bad input."""
    from sweeps.errors import UsageError

    if launch.launcher != "slurm" and (given := launch.given(*_SLURM_ONLY)):
        raise UsageError(f"{given[0]} is an option of --launcher slurm")
    if launch.launcher == "local":
        if launch.ray_address is not None:
            raise UsageError("--ray-address places workers on a cluster: add --launcher ray")
        if given := launch.given("gpus_per_worker", "cpus_per_worker"):
            raise UsageError(f"{given[0]} places workers on a cluster: add --launcher ray or slurm")
        return None
    if launch.launcher == "slurm" and launch.ray_address is not None:
        raise UsageError("--ray-address is an option of --launcher ray")
    if launch.launcher == "slurm":
        return _slurm_launcher(launch)
    from sweeps.launchers import RayLauncher

    return RayLauncher(
        launch.ray_address or os.environ.get(RAY_ADDRESS_ENV) or None,
        gpus_per_worker=launch.gpus_per_worker or 0.0,
        cpus_per_worker=1.0 if launch.cpus_per_worker is None else launch.cpus_per_worker,
    )


def _slurm_launcher(launch: LaunchOptions) -> Launcher:
    from sweeps.launchers.slurm import SlurmLauncher
    from sweeps.launchers.slurm_job import SlurmOptions, whole

    gpus = 0.0 if launch.gpus_per_worker is None else launch.gpus_per_worker
    cpus = 1.0 if launch.cpus_per_worker is None else launch.cpus_per_worker
    options = SlurmOptions(
        gpus_per_worker=whole(gpus, "--gpus-per-worker"),
        cpus_per_worker=whole(cpus, "--cpus-per-worker"),
        time=launch.time,
        partition=launch.partition,
        extra=launch.slurm_args,
    )
    return SlurmLauncher(options)
