"""`--launcher ray`: each worker is one Ray task, placed by Ray's scheduler with the CPUs
and GPUs it asks for (a fraction of a GPU packs several small workers on one), and run
again by Ray when its `sweeps worker` process or its node dies.

Ray Core only: the study, its sampler and its storage stay this project's; Ray places and
restarts the processes. The stores' URLs (and the SWEEPS_* and MLFLOW_* settings of this
process) reach the tasks as one object put in Ray's object store and passed by reference:
they are not in the tasks' arguments, their names or a runtime_env, which Ray's dashboard
and state API show, nor in the pickled function, which Ray keeps in its control store.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any

from sweeps.errors import UsageError
from sweeps.launchers.base import WorkerPlan, WorkerReport
from sweeps.launchers.ray_task import WorkerProcessDied, run_worker_process
from sweeps.launchers.shared_stores import require_shared_stores

if TYPE_CHECKING:
    from sweeps.storage import Stores

INSTALL_HINT = "pip install 'sweeps[ray]'"
RESTARTS = 3  # how often Ray starts a worker again whose process or node died
FORWARDED = ("SWEEPS_", "MLFLOW_")  # this process's settings that its workers share
EXIT_CANCELLED = 130  # a worker stopped by Ctrl-C, as the `sweeps` command exits then
CONNECT_TIMEOUT_S = 10.0  # how long a cluster's address may take to answer
EXIT_LOST_TASK = 1  # a task Ray could not run to its end (its node lost too often)


def import_ray() -> ModuleType:
    """Ray, or a one-line UsageError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError(
            f"--launcher ray needs Ray, which is not installed: {INSTALL_HINT}"
        ) from None
    return ray


def forwarded_env() -> dict[str, str]:
    """This process's SWEEPS_* and MLFLOW_* variables: a Ray worker's environment is its
    node's, not the launching shell's."""
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED)}


class RayLauncher:
    """N `sweeps worker` processes as Ray tasks on the cluster at `address` ("host:port",
    "ray://host:10001"), or on a Ray instance started for the run and stopped after it
    when `address` is None."""

    places_devices = True

    def __init__(
        self,
        address: str | None = None,
        *,
        gpus_per_worker: float = 0.0,
        cpus_per_worker: float = 1.0,
        restarts: int = RESTARTS,
    ) -> None:
        if not (math.isfinite(gpus_per_worker) and gpus_per_worker >= 0):
            raise UsageError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker}")
        if not (math.isfinite(cpus_per_worker) and cpus_per_worker > 0):
            raise UsageError(f"--cpus-per-worker must be > 0, got {cpus_per_worker}")
        self.address = address
        self.gpus_per_worker = gpus_per_worker
        self.cpus_per_worker = cpus_per_worker
        self.restarts = restarts
        self._ray: Any = None
        self._connected_here = False
        self._pending: dict[Any, int] = {}  # task ref -> worker index
        self._reports: dict[int, WorkerReport] = {}

    def prepare(self, stores: Stores, track: bool) -> None:
        """Connect (or start a local instance); refuse local stores on several nodes."""
        ray = import_ray()
        if not ray.is_initialized():
            self._connect(ray)
        self._ray = ray
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        self._check_fits(nodes)
        if len(nodes) > 1:
            require_shared_stores(stores, track, f"a Ray cluster of {len(nodes)} nodes")

    def _connect(self, ray: Any) -> None:
        options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
        if self.address is None:
            options.update(address="local", include_dashboard=False)
        else:
            probe(self.address)
            options["address"] = self.address
        on_sigterm = signal.getsignal(signal.SIGTERM)
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = self.address or "a local instance"
            raise UsageError(f"cannot start Ray workers on {where}: {_first_line(e)}") from None
        finally:  # ray.init sets its own, which exits on the spot
            if on_sigterm is not None and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, on_sigterm)
        self._connected_here = True

    def _check_fits(self, nodes: list[dict[str, Any]]) -> None:
        """A worker no node can hold waits for ever: refused on a local instance; on a
        cluster, whose autoscaler may add such a node, it is the cluster's to say."""
        need = {"GPU": self.gpus_per_worker, "CPU": self.cpus_per_worker}
        fits = any(
            all(node.get("Resources", {}).get(k, 0) >= v for k, v in need.items() if v)
            for node in nodes
        )
        if not fits and self.address is None:
            have = {
                k: max((n.get("Resources", {}).get(k, 0) for n in nodes), default=0) for k in need
            }
            raise UsageError(
                f"this machine's Ray instance has {have['CPU']:g} CPUs and {have['GPU']:g} GPUs,"
                f" too few for a worker of --cpus-per-worker {self.cpus_per_worker:g}"
                f" --gpus-per-worker {self.gpus_per_worker:g}"
            )

    def start(self, plan: WorkerPlan) -> None:
        ray = self._ray
        env = ray.put({**forwarded_env(), **plan.env})  # by reference: see the module's doc
        task = ray.remote(run_worker_process)
        for index, args in enumerate(plan.argv):
            placed = task.options(
                name=f"sweeps worker {index}",
                num_cpus=self.cpus_per_worker,
                num_gpus=self.gpus_per_worker,
                max_retries=self.restarts,
                retry_exceptions=[WorkerProcessDied],
            )
            self._pending[placed.remote(index, args, env)] = index

    def running(self) -> bool:
        if self._pending:
            refs = list(self._pending)
            ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in ready:
                self._collect(ref)
        return bool(self._pending)

    def _collect(self, ref: Any) -> None:
        index = self._pending.pop(ref)
        self._reports[index] = self._report(index, ref)

    def _report(self, index: int, ref: Any) -> WorkerReport:
        errors = self._ray.exceptions
        try:
            got = self._ray.get(ref)
        except errors.TaskCancelledError:
            return WorkerReport(index, EXIT_CANCELLED)
        except errors.RayTaskError as e:
            cause = e.cause
            if isinstance(cause, WorkerProcessDied):
                spent = f"{cause} (after {self.restarts} restarts)"
                return WorkerReport(
                    index, 128 + cause.signal_number, error=f"{spent}\n{cause.tail}"
                )
            return WorkerReport(index, EXIT_LOST_TASK, error=_first_line(e))
        except errors.RayError as e:  # its Ray worker or node died more often than allowed
            return WorkerReport(index, EXIT_LOST_TASK, error=_first_line(e))
        return WorkerReport(
            index, int(got["exit_code"]), got["node"], tuple(got["gpus"]), got["error"]
        )

    def cancel(self) -> None:
        """Each running task gets KeyboardInterrupt, which it passes on as Ctrl-C to its
        worker; a task not yet placed is dropped."""
        for ref in self._pending:
            self._ray.cancel(ref)

    def exit_codes(self) -> list[int]:
        return [r.exit_code for r in self.reports() if r.exit_code != 0]

    def reports(self) -> list[WorkerReport]:
        return [self._reports[i] for i in sorted(self._reports)]

    def close(self) -> None:
        """Force-cancels what outlived a cancel's grace period (its worker process dies
        with its task), then disconnects; a local instance is stopped."""
        if self._ray is None:
            return
        for ref, index in self._pending.items():
            self._ray.cancel(ref, force=True)
            self._reports[index] = WorkerReport(index, EXIT_CANCELLED)
        self._pending.clear()
        if self._connected_here:
            self._ray.shutdown()
        self._ray = None


def probe(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse (UsageError) a "host:port" or "ray://host:port" nobody listens on: Ray itself
    waits minutes for a cluster that is not there."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # Ray's own forms ("auto"), or one Ray refuses with its own words
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise UsageError(f"no Ray cluster answers at {address} ({reason})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
