"""A real Ray cluster on this machine for the tests of `--launcher ray`: a head node that
declares 2 CPUs and 2 GPUs (Ray accepts GPUs that do not exist, so placement is testable
without one), and worker nodes added and removed by a test.

Each node is a `ray start --block` process in a session of its own: SIGTERM stops the
node's processes, and the session's group is killed after that in case one lingers. Ray's
files live in a temporary directory of the cluster's own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from tests.services import free_port

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180.0  # a cold start on a loaded 2-core machine; only catches a hang
STOP_TIMEOUT_S = 30.0
STARTED = "Ray runtime started"
# No usage statistics; no token authentication, which `ray start` turns on by itself
# where a token file is left in the user's home (~/.ray/auth_token, written by any new
# local `ray.init()`) and which a driver given an address does not take up by itself.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def ray_executable() -> str:
    """The `ray` command of the interpreter running the tests (the project venv)."""
    return str(Path(sys.executable).parent / "ray")


@dataclass
class RayNode:
    process: subprocess.Popen[bytes]
    log: Path

    def wait_started(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while STARTED not in self.tail():
            if self.process.poll() is not None:
                raise AssertionError(f"ray start exited {self.process.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"ray start not ready after {START_TIMEOUT_S} s: {self.tail()}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):  # then killed below
                self.process.wait(STOP_TIMEOUT_S)
        with suppress(ProcessLookupError):  # what is left of the node's session
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@dataclass
class RayCluster:
    directory: Path
    port: int = field(default_factory=free_port)
    nodes: list[RayNode] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The nodes' environment: this checkout importable by their workers (the
        `sweeps worker` processes and the tests' gate task), RAY_ENV."""
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        return {**os.environ, "PYTHONPATH": path, **RAY_ENV}

    def _start(self, name: str, args: list[str]) -> RayNode:
        log = self.directory / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [ray_executable(), "start", *args, "--disable-usage-stats", "--block"],
                stdout=out,
                stderr=out,
                env=self.env,
                start_new_session=True,
            )
        node = RayNode(process, log)
        self.nodes.append(node)
        node.wait_started()
        return node

    def start_head(self) -> None:
        args = ["--head", "--port", str(self.port), "--num-cpus", "2", "--num-gpus", "2"]
        args += ["--include-dashboard=false", "--temp-dir", str(self.directory / "ray")]
        self._start("head", args)

    def add_node(self, cpus: int = 1) -> RayNode:
        """A second node of the cluster on this machine (its own raylet and object store)."""
        return self._start(
            f"node{len(self.nodes)}", ["--address", self.address, "--num-cpus", str(cpus)]
        )

    def remove_node(self, node: RayNode) -> None:
        node.stop()
        self.nodes.remove(node)

    def alive_nodes(self) -> int:
        """The nodes the cluster counts alive now, as a driver sees them."""
        code = (
            f"import ray; ray.init(address={self.address!r}, logging_level='ERROR',"
            " log_to_driver=False); print(sum(1 for n in ray.nodes() if n['Alive']))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
        )
        return int(done.stdout.split()[-1])

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        self.nodes.clear()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_cluster() -> RayCluster:
    """A started head node; under /tmp, so that Ray's socket paths stay short."""
    cluster = RayCluster(Path(tempfile.mkdtemp(prefix="sweeps-ray-")))
    try:
        cluster.start_head()
    except BaseException:
        cluster.stop()
        raise
    return cluster
