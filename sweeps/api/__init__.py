"""The public Python API, re-exported by `sweeps` (docs/python-api.md)."""

from sweeps.api._queries import best, compare, studies, trials
from sweeps.api._results import Rows, RunResult, TrainResult
from sweeps.api._run import resume, run
from sweeps.api._train import train
from sweeps.api._verify import check, confirm

__all__ = [
    "Rows",
    "RunResult",
    "TrainResult",
    "best",
    "check",
    "compare",
    "confirm",
    "resume",
    "run",
    "studies",
    "train",
    "trials",
]
