"""A launch's workers: their command lines (`worker_plan`), each with a share of the
trials, and the rest of a share for a worker that its engine started again.

`sweeps run --workers N --trials T` gives worker i a fixed share of T (`split`) and an id
of its own, `LAUNCH.i`, on its command line (`sweeps worker --share-id`). Each trial the
worker tells keeps that id (`SHARE_ATTR`). An engine that starts the same command line
again (a requeued or preempted Slurm element, a restarted Ray task) starts a worker that
counts the trials told under its id and runs only the rest: the launch adds T trials to
the study however often its workers were restarted. The trial a worker held when it was
stopped does not count: cut short by the stop signal it is FAIL "interrupted" and told
without the id; killed outright, it was never told, and the heartbeat rule fails it and
another worker's ask retries it, as for any killed worker.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

import optuna
import sqlalchemy as sa
import torch
from optuna.trial import TrialState

from sweeps._optuna import fenced
from sweeps.attr_keys import REUSED_ATTR, SHARE_ATTR
from sweeps.config import SweepConfig
from sweeps.launchers.base import WorkerPlan

if TYPE_CHECKING:
    from sweeps.storage import Stores

_TOLD = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def split(total: int, workers: int) -> list[int]:
    """Split `total` trials over workers exactly (no overshoot from racing counters)."""
    return [total // workers + (1 if i < total % workers else 0) for i in range(workers)]


def worker_devices(cfg: SweepConfig) -> list[str]:
    """Device per worker: round-robin over --devices, else --device for all."""
    devices = cfg.devices or (cfg.base.device,)
    return [devices[i % len(devices)] for i in range(cfg.workers)]


def worker_plan(
    cfg: SweepConfig, stores: Stores, track: bool, *, summarize: bool = False
) -> WorkerPlan:
    """The `sweeps worker` command lines of `--workers N`: each its share of the trials,
    under an id of its own (a worker its engine starts again runs the rest of its share,
    `sweeps.shares`), and its device; the stores in the environment, so no password shows
    in `ps`. With `summarize` each worker refreshes the parent run's figures as it ends
    (no launcher waits to draw them)."""
    env = {
        "SWEEPS_HOME": str(stores.home),
        "SWEEPS_STORAGE": stores.storage,
        "SWEEPS_TRACKING_URI": stores.tracking_uri,
    }
    launch = uuid.uuid4().hex[:12]
    argv = []
    plan = zip(split(cfg.trials, cfg.workers), worker_devices(cfg), strict=True)
    for index, (n, device) in enumerate(plan):
        if n == 0:
            continue
        args = ["--study", cfg.study, "--trials", str(n), "--device", device]
        args += ["--quiet", "--worker-index", str(index), "--share-id", f"{launch}.{index}"]
        if not summarize:
            args.append("--no-summary")
        # The launcher's per-process share of the cores (sweeps run --threads).
        args += ["--batch", str(cfg.batch), "--threads", str(torch.get_num_threads())]
        if cfg.timeout is not None:
            args += ["--timeout", str(cfg.timeout)]
        if not track:
            args.append("--no-track")
        argv.append(args)
    return WorkerPlan(cfg.study, argv, env)


def left_in_share(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    share: str,
    trials: int,
    *,
    reuses_free: bool,
) -> int:
    """How many of a share of `trials` are still to run: those told under `share` count,
    less the repeats of a finished configuration that took an earlier result, as a
    worker counts them (`RoundOptimizer._free_reuses`: free up to `trials` of them,
    unless `reuses_free` is False, a stratified study's rule)."""
    counted = fenced(study, "counting a share's trials", lambda e: _counts(e, study, share))
    told, reused = counted if counted is not None else _public_counts(study, share)
    free = min(reused, trials) if reuses_free else 0
    return max(0, trials - (told - free))


def _counts(engine: sa.Engine, study: optuna.Study, share: str) -> tuple[int, int]:
    from sweeps._optuna.read import share_counts

    return share_counts(engine, study, SHARE_ATTR, json.dumps(share), REUSED_ATTR)


def _public_counts(study: optuna.Study, share: str) -> tuple[int, int]:
    mine = [
        t
        for t in study.get_trials(deepcopy=False, states=_TOLD)
        if t.user_attrs.get(SHARE_ATTR) == share
    ]
    return len(mine), sum(1 for t in mine if REUSED_ATTR in t.user_attrs)
