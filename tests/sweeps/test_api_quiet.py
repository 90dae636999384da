"""A library call prints nothing and leaves the process as it found it.

Checked in a fresh process, where no test setup has quieted anything (tests/conftest.py
settles MLflow's and Optuna's output for the test process, as the `sweeps` command does
for its own): the application there imports the libraries first (their import-time
settings are theirs), opens a matplotlib figure of its own, notes the process's state,
then imports sweeps and calls the API — a tracked study with two worker processes and a
task imported from the application's path, its confirmation, the lookups, a resume, one
training run, a check — with every warning recorded. Its stdout and stderr (file
descriptors 1 and 2, which the workers inherit) must stay empty.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

TASK = """
import torch
from trainer.models import ModelSpec, make_model_factory
from trainer.tasks import Split, Task, squared_loss

def build(data_seed):
    gen = torch.Generator().manual_seed(data_seed)
    X = torch.randn(30, 2, generator=gen)
    y = X @ torch.tensor([[1.0], [-1.0]]) + 0.1 * torch.randn(30, 1, generator=gen)
    train, val, test = (Split(X[i : i + 10], y[i : i + 10]) for i in (0, 10, 20))
    return Task("quiet", train, val, test, make_model_factory(ModelSpec(), 2, 1), squared_loss)
"""

APPLICATION = r"""
import gc, json, logging, os, signal, sys, warnings

import alembic, matplotlib, mlflow, numpy, optuna, pandas, scipy.stats, sqlalchemy, torch
import matplotlib.pyplot as plt

home, task_dir = sys.argv[1], sys.argv[2]
sys.path.insert(0, task_dir)
torch.set_num_threads(1)  # the application's choice: tiny models, shared cores
plt.figure()  # the application's own figure
LOGGERS = ("", "optuna", "mlflow", "alembic", "sqlalchemy.engine", "sweeps")


def state():
    def logger(name):
        found = logging.getLogger(name)
        return [[type(h).__name__ for h in found.handlers], [id(h) for h in found.handlers],
                found.level, found.propagate, found.disabled]

    return {
        "environ": dict(os.environ),
        "gc": [gc.get_threshold(), gc.get_freeze_count(), gc.isenabled()],
        "torch threads": torch.get_num_threads(),
        "loggers": {name: logger(name) for name in LOGGERS},
        "matplotlib": [matplotlib.get_backend(), plt.get_fignums(), matplotlib.is_interactive()],
        "sys.path": list(sys.path),
        "signals": [repr(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM)],
        "streams": [id(sys.stdout), id(sys.stderr)],
    }


before = state()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    filters = repr(warnings.filters)
    import sweeps
    from quiet_task import build

    where = {"home": home}
    run = sweeps.run("q", task=build, penalties="l1,l2", trials=4, epochs=5, workers=2,
                     confirm=2, **where)
    best = sweeps.best("q", **where).as_frame()
    rows = sweeps.trials("q", **where)
    sweeps.compare("q", **where)
    sweeps.studies(**where)
    resumed = sweeps.resume("q", trials=1, task=build, workers=1, **where)
    trained = sweeps.train(penalty="l2", lambda_=1.0, epochs=5, **where)
    report = sweeps.check("q", **where)
    filters_after = repr(warnings.filters)
after = state()
with open(os.path.join(home, "report.json"), "w") as out:
    json.dump({
        "warnings": [f"{w.category.__name__} {w.filename}:{w.lineno}: {w.message}" for w in caught],
        "filters changed": filters != filters_after,
        "changed": {k: [before[k], after[k]] for k in before if before[k] != after[k]},
        "states": run.states,
        "confirmed": run.confirmation is not None,
        "trials": len(rows),
        "best": len(best),
        "resumed": sum(resumed.states.values()),
        "trained": trained.summary["mlflow_run_id"] is not None,
        "consistent": report.consistent,
    }, out)
"""

# What tests/conftest.py (an entry point, like the command) sets for the test process.
ENTRY_POINT_SETTINGS = (
    "MLFLOW_DISABLE_TELEMETRY",
    "DO_NOT_TRACK",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT",
    "MLFLOW_LOGGING_LEVEL",
    "MLFLOW_CONFIGURE_LOGGING",
)


@pytest.mark.slow
def test_library_calls_print_nothing_and_change_nothing_process_wide(tmp_path: Path) -> None:
    task_dir = tmp_path / "application"
    task_dir.mkdir()
    (task_dir / "quiet_task.py").write_text(TASK)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ENTRY_POINT_SETTINGS}
    env["PYTHONPATH"] = str(ROOT)
    # MLflow's telemetry thread sets and unsets a variable of its own: not what is tested.
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    done = subprocess.run(
        [sys.executable, "-c", APPLICATION, str(home), str(task_dir)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert done.stdout.decode() == ""
    assert done.stderr.decode() == ""
    report = json.loads((home / "report.json").read_text())
    assert report["warnings"] == []
    assert report["filters changed"] is False
    changed = report.pop("changed")
    # Importing sweeps gives its logger a NullHandler (the logging HOWTO's advice for a
    # library), and nothing else.
    sweeps_logger = changed.get("loggers", [{}, {}])[1].get("sweeps")
    assert sweeps_logger is not None and sweeps_logger[0] == ["NullHandler"]
    loggers = changed.pop("loggers")
    del loggers[0]["sweeps"], loggers[1]["sweeps"]
    assert loggers[0] == loggers[1]
    assert changed == {}
    assert report.pop("resumed") >= 5  # one more (a repeat of a finished one counts not)
    assert report == {
        "warnings": [],
        "filters changed": False,
        "states": {"COMPLETE": 4},
        "confirmed": True,
        "trials": 4,
        "best": 2,
        "trained": True,
        "consistent": True,
    }
