"""A plan as one Slurm job array: its options, its batch script and `sbatch` command line,
and what `scontrol` says of its elements.

The batch script goes to `sbatch` on standard input, so no file holds it on this side; it
names no store: the store URLs reach the elements through the job's environment
(`--export=ALL` of `sbatch`'s own, which the launcher sets), never through a file or a
command line (docs/scale-out.md, "Slurm").
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sweeps.errors import UsageError
from sweeps.launchers.base import WorkerPlan

# Slurm's time limits: MINUTES, MINUTES:SECONDS, HOURS:MINUTES:SECONDS, DAYS-HOURS,
# DAYS-HOURS:MINUTES, DAYS-HOURS:MINUTES:SECONDS; UNLIMITED or INFINITE for none.
_TIME = re.compile(r"\d+(:\d{1,2}){0,2}|\d+-\d{1,2}(:\d{1,2}){0,2}|UNLIMITED|INFINITE", re.I)
# What the launcher sets itself: another value would break the array it follows.
_OWN_OPTIONS = ("--array", "-a", "--export", "--wrap", "--parsable", "--test-only")
# The element states that end it well; any other end is a failed worker.
COMPLETED = "COMPLETED"


@dataclass(frozen=True)
class SlurmOptions:
    """What `sweeps run --launcher slurm` asks of Slurm, validated on construction."""

    gpus_per_worker: int = 0  # --gres=gpu:G per element; Slurm sets CUDA_VISIBLE_DEVICES
    cpus_per_worker: int = 1  # --cpus-per-task
    time: str | None = None  # --time, each element's limit
    partition: str | None = None
    extra: tuple[str, ...] = ()  # --slurm-arg: sbatch options passed on as they are
    logs: Path | None = None  # each element's output: LOGS/JOBID_INDEX.out [HOME/slurm]

    def __post_init__(self) -> None:
        if self.gpus_per_worker < 0:
            raise UsageError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker}")
        if self.cpus_per_worker < 1:
            raise UsageError(f"--cpus-per-worker must be >= 1, got {self.cpus_per_worker}")
        if self.time is not None and not _TIME.fullmatch(self.time):
            raise UsageError(
                f"--time must be a Slurm time limit (MINUTES, HH:MM:SS or D-HH:MM:SS),"
                f" got {self.time!r}"
            )
        if self.partition is not None and not (
            self.partition.strip() and self.partition.isprintable()
        ):
            raise UsageError(f"--partition must be a partition name, got {self.partition!r}")
        for arg in self.extra:
            _check_extra(arg)


def whole(value: float, option: str) -> int:
    """A count Slurm takes whole (GPUs, CPUs per element): fractions are Ray's."""
    if value != int(value):
        raise UsageError(
            f"{option} must be a whole number with --launcher slurm (Slurm allocates whole"
            f" GPUs and CPUs; fractions need --launcher ray), got {value:g}"
        )
    return int(value)


def _check_extra(arg: str) -> None:
    if not arg.startswith("-"):
        raise UsageError(
            f"each --slurm-arg is one sbatch option with its value, such as"
            f" --slurm-arg=--account=proj, got {arg!r}"
        )
    name = arg.split("=", 1)[0]
    if name in _OWN_OPTIONS or (name.startswith("-a") and not name.startswith("--")):
        raise UsageError(f"--slurm-arg {name} is set by sweeps itself; leave it out")


def job_name(study: str) -> str:
    return f"sweeps-{study}"[:128]


def sbatch_command(plan: WorkerPlan, options: SlurmOptions, *, test_only: bool) -> list[str]:
    """`sbatch` for the plan's array: one element per worker, each requeue-able (a
    preempted or requeued element runs the rest of its share: `sweeps worker --share-id`)."""
    command = [
        "sbatch",
        "--parsable",
        f"--array=0-{plan.workers - 1}",
        f"--job-name={job_name(plan.study)}",
        "--export=ALL",  # the launcher's environment, stores included: never SBATCH_EXPORT's
        "--requeue",
        "--open-mode=append",  # a requeued element's output follows its first run's
        "--nodes=1",
        "--ntasks=1",
        f"--cpus-per-task={options.cpus_per_worker}",
    ]
    if options.gpus_per_worker:
        command.append(f"--gres=gpu:{options.gpus_per_worker}")
    if options.time is not None:
        command.append(f"--time={options.time}")
    if options.partition is not None:
        command.append(f"--partition={options.partition}")
    if options.logs is not None:  # % starts Slurm's file name patterns: %% is a plain one
        command.append(f"--output={str(options.logs).replace('%', '%%')}/%A_%a.out")
    command += options.extra  # after the launcher's own: an option given twice takes these
    if test_only:
        command.append("--test-only")
    return command


def batch_script(plan: WorkerPlan, python: str = sys.executable) -> str:
    """Element i runs worker i's command line; `exec`, so that Slurm's signals (scancel,
    preemption, the time limit) reach the worker itself."""
    lines = [
        "#!/bin/sh",
        f"# sweeps: the {plan.workers} `sweeps worker` processes of one study, one per element",
        'case "$SLURM_ARRAY_TASK_ID" in',
    ]
    for index, args in enumerate(plan.argv):
        command = shlex.join([python, "-m", "sweeps", "worker", *args])
        lines.append(f"  {index}) exec {command} ;;")
    lines.append('  *) echo "sweeps: no worker for element $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;')
    lines.append("esac")
    return "\n".join(lines) + "\n"


def job_id(parsable: str) -> str:
    """The job id in `sbatch --parsable`'s output (`ID` or `ID;CLUSTER`)."""
    first = parsable.strip().splitlines()[0] if parsable.strip() else ""
    found = first.split(";", 1)[0]
    if not found.isdigit():
        raise ValueError(f"sbatch printed no job id: {parsable.strip()!r}")
    return found


@dataclass(frozen=True)
class Element:
    """One element of the array as `scontrol show job` says it is or ended."""

    index: int
    state: str
    code: int  # the worker's exit status; minus the signal that ended it; 0 when completed
    node: str | None = None
    gpus: tuple[str, ...] = ()  # the GPU ids Slurm gave it, while it runs (`-d`'s GRES)


def elements(scontrol: str) -> list[Element]:
    """The elements in `scontrol [-d] show job --oneliner ID`'s records (one per element,
    or one for a range of elements still pending or cancelled together)."""
    found = []
    for record in scontrol.splitlines():
        fields = dict(_fields(record))
        if "JobState" not in fields:
            continue
        state = fields["JobState"]
        status, _, signal = fields.get("ExitCode", "0:0").partition(":")
        code = _code(state, int(status or 0), int(signal or 0))
        node = fields.get("NodeList") or None
        gpus = _gpu_ids(fields.get("GRES", ""))
        for index in _indices(fields.get("ArrayTaskId", "0")):
            found.append(Element(index, state, code, None if node == "(null)" else node, gpus))
    return sorted(found, key=lambda e: e.index)


_GPU_IDS = re.compile(r"IDX:([0-9,-]+)")


def _gpu_ids(gres: str) -> tuple[str, ...]:
    """`gpu:2(IDX:0-1)` → ("0", "1"): the GPUs of a running element (`scontrol -d`)."""
    found = _GPU_IDS.search(gres)
    return tuple(str(i) for i in _indices(found.group(1))) if found else ()


def _fields(record: str) -> list[tuple[str, str]]:
    pairs = []
    for word in record.split():
        key, sep, value = word.partition("=")
        if sep:
            pairs.append((key, value))
    return pairs


def _code(state: str, status: int, signal: int) -> int:
    if state == COMPLETED:
        return 0
    if signal:
        return -signal
    return status or 1  # ended otherwise without a code of its own (cancelled while pending)


def _indices(spec: str) -> Sequence[int]:
    """`0`, `2-5`, `1,3,7-9`, with an optional throttle `%N`; `` for none."""
    out: list[int] = []
    for part in spec.split("%", 1)[0].split(","):
        low, _, high = part.partition("-")
        if low.isdigit():
            out += range(int(low), int(high or low) + 1)
    return out
