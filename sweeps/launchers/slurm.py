"""`--launcher slurm`: the workers are the elements of one Slurm job array.

Plain `sbatch` submits it (`sweeps.launchers.slurm_job`), `squeue` follows it, `scancel`
stops it, `scontrol` says where its elements ran and how they ended: the client commands
every Slurm site has, and nothing on the compute nodes but `sweeps worker` itself. Its
elements are requeue-able: one preempted, requeued or whose node failed starts again and
runs the rest of its share (`sweeps.shares`); the trial it held is healed as a killed
worker's.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from sweeps.errors import SweepsError, UsageError
from sweeps.launchers.base import POLL_S, WorkerPlan, WorkerReport
from sweeps.launchers.shared_stores import require_shared_stores
from sweeps.launchers.slurm_job import (
    Element,
    SlurmOptions,
    batch_script,
    elements,
    job_id,
    sbatch_command,
)

if TYPE_CHECKING:
    from sweeps.storage import Stores

COMMANDS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo")
# How often the controller is asked about the array: once in a few of `follow`'s polls.
SQUEUE_EVERY_S = max(2.0, POLL_S)
TIMEOUT_S = 60.0  # a Slurm command that takes longer than this is a controller in trouble
_PROBE = WorkerPlan("probe", [[]])  # one element: what `sbatch --test-only` is shown


class SlurmLauncher:
    """The plan's N workers as the elements 0..N-1 of one `sbatch --array` job."""

    places_devices = True  # Slurm gives each element its GPUs (CUDA_VISIBLE_DEVICES)

    def __init__(self, options: SlurmOptions) -> None:
        self.options = options
        self.job: str | None = None
        self._running = False
        self._detached = False
        self._asked: float | None = None  # when squeue was last asked (monotonic)
        self._gpus: dict[int, tuple[str, ...]] = {}  # seen while the elements ran
        self._warned = False
        self._ended: list[Element] | None = None

    def prepare(self, stores: Stores, track: bool) -> None:
        """Slurm's commands on PATH, stores every node reaches, and an element as
        `sbatch --test-only` sees it (partition, resources, time limit, --slurm-arg).
        The elements' output goes under the home unless the options say where."""
        if self.options.logs is None:
            self.options = replace(self.options, logs=stores.home / "slurm")
        for command in COMMANDS:
            if shutil.which(command) is None:
                raise UsageError(
                    f"--launcher slurm needs Slurm's commands on PATH, and {command} is not"
                    " there (install Slurm's client, or run where it is)"
                )
        query = ["sinfo", "--noheader", "--format=%n"]
        if self.options.partition is not None:
            query.append(f"--partition={self.options.partition}")
        here = {socket.gethostname(), socket.gethostname().split(".")[0]}
        others = sorted(set(_slurm(query).split()) - here)
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            where = f"a Slurm partition with {len(others)} node(s) other than this one ({shown})"
            require_shared_stores(stores, track, where)
        _slurm(sbatch_command(_PROBE, self.options, test_only=True), batch_script(_PROBE))

    def start(self, plan: WorkerPlan) -> None:
        if self.options.logs is not None:
            self.options.logs.mkdir(parents=True, exist_ok=True)
        command = sbatch_command(plan, self.options, test_only=False)
        out = _slurm(command, batch_script(plan), env={**os.environ, **plan.env})
        try:
            self.job = job_id(out)
        except ValueError as e:
            raise SweepsError(str(e)) from None
        self._running = True

    def detach(self) -> str:
        """The workers stay with Slurm; the job id names them (`squeue -j ID`)."""
        assert self.job is not None, "detach() before start()"
        self._detached = True
        return self.job

    def running(self) -> bool:
        """Whether squeue still lists an element (pending, requeued, running, completing);
        asked at most every SQUEUE_EVERY_S. A controller that does not answer leaves the
        array running, said once."""
        if self.job is None or not self._running:
            return False
        now = time.monotonic()
        if self._asked is not None and now - self._asked < SQUEUE_EVERY_S:
            return True
        self._asked = now
        query = ["squeue", "--noheader", f"--jobs={self.job}", "--format=%T"]
        try:
            states = _run(query).stdout.split()
        except _Refused as e:
            if "Invalid job id" in e.message:
                self._running = False  # ended, and already forgotten by the controller
            elif not self._warned:
                self._warned = True
                _warn(f"squeue does not answer, still waiting: {e.message}")
            return self._running
        self._running = bool(states)
        if "RUNNING" in states and self.options.gpus_per_worker:
            self._note_gpus()
        return self._running

    def _note_gpus(self) -> None:
        """The GPUs of the running elements: Slurm says them only while they run."""
        try:
            shown = _run(["scontrol", "--details", "--oneliner", "show", "job", self.job or ""])
        except _Refused:
            return
        for element in elements(shown.stdout):
            if element.gpus:
                self._gpus.setdefault(element.index, element.gpus)

    def cancel(self) -> None:
        """Ctrl-C: the pending elements cancelled, the running ones interrupted (SIGINT,
        as local workers are), so that each records its trial in flight as interrupted."""
        if self.job is None:
            return
        for command in (
            ["scancel", "--state=PENDING", self.job],
            ["scancel", "--signal=INT", "--batch", self.job],
        ):
            try:
                _run(command)
            except _Refused as e:
                _warn(f"{' '.join(command[:2])}: {e.message}")

    def exit_codes(self) -> list[int]:
        return [r.exit_code for r in self.reports() if r.exit_code != 0]

    def reports(self) -> list[WorkerReport]:
        """Each element as `scontrol` keeps it for a while after its end (MinJobAge, 300 s
        by default): its node, its GPUs, and a failed one's last line of output."""
        return [self._report(e) for e in self._elements()]

    def _elements(self) -> list[Element]:
        if self._ended is None and self.job is not None and not self._running:
            try:
                shown = _run(["scontrol", "--oneliner", "show", "job", self.job])
                self._ended = elements(shown.stdout)
            except _Refused as e:
                _warn(f"how Slurm job {self.job} ended is unknown: {e.message}")
                self._ended = []
        return self._ended or []

    def _report(self, element: Element) -> WorkerReport:
        error = None
        if element.code != 0:
            error = f"{element.state}; {self._last_line(element.index)}".rstrip("; ")
        gpus = self._gpus.get(element.index, ())
        return WorkerReport(element.index, element.code, element.node, gpus, error)

    def _last_line(self, index: int) -> str:
        """The end of an element's output file, where this machine sees it."""
        if self.options.logs is None:
            return ""
        path = self.options.logs / f"{self.job}_{index}.out"
        try:
            lines = path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return f"its output: {path}"
        return f"{lines[-1]} ({path})" if lines else f"no output in {path}"

    def close(self) -> None:
        """Cancels what outlived a cancel's grace period, so no element is left behind;
        nothing once detached or after the workers' own end. Safe to call again."""
        if self.job is None or self._detached or not self._running:
            return
        self._asked = None
        if self.running():
            try:
                _run(["scancel", self.job])
            except _Refused as e:
                _warn(f"scancel {self.job}: {e.message}")
            self._running = False


class _Refused(Exception):
    """A Slurm command exited non-zero (or hung): the line that says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _warn(message: str) -> None:
    from sweeps.recording import warn

    warn(message)


def _run(
    command: list[str], env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            command,
            input=stdin,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise _Refused(f"{command[0]} did not answer in {TIMEOUT_S:g} s") from None
    except OSError as e:  # gone from PATH since `prepare`
        raise _Refused(f"{command[0]}: {e.strerror}") from None
    if done.returncode != 0:
        raise _Refused(_why(done) or f"{command[0]} exited {done.returncode}")
    return done


def _why(done: subprocess.CompletedProcess[str]) -> str:
    """A failed command's reason: its first line saying `error`, else its last line."""
    lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    said = [line for line in lines if "error" in line.lower()]
    return (said or lines[-1:] or [""])[0]


def _slurm(command: list[str], stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    """A command whose refusal is the user's to fix (exit 2, one line): its stdout and
    stderr together (`sbatch --test-only` answers on stderr)."""
    try:
        done = _run(command, env, stdin)
    except _Refused as e:
        raise UsageError(f"Slurm refuses the job array: {e.message}") from None
    return done.stdout + done.stderr
