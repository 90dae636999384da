"""Vectorized training: K trials as one stacked model, member by member equal to `train`.

For small models a step costs Python and kernel-launch overhead, not arithmetic, so K
configurations that differ only in penalty, λ, l1_ratio, lr and seed train as one stacked
computation at little more than the cost of one. Every member keeps its own random streams
(init and shuffle, drawn exactly as `trainer.loop.train` draws them), penalty, optimizer
scalars, divergence and pruning; a member that diverges or is pruned is removed from the
stack, so its NaN/inf cannot reach any other member's arithmetic.

Equality with `trainer.loop.train(cfg)`:
  - nn.Linear models (the d2l task) take a hand-written path made of the kernels the single
    model runs: `bmm(W, Xᵀ)` is, per member, MKL's gemv that `F.linear` uses; the penalty
    keeps `penalties.penalty_term`'s expression tree; the optimizer fuses multiply-adds as
    torch does (see trainer.batched_optim). On CPU (torch 2.13, MKL, AVX2) every member's
    history and final weights were bit-identical to train()'s: all six penalties, λ from 0
    to 30, SGD/Adam/AdamW, mixed lr and seeds, minibatches of 1, 3, 5, 7 and full batch,
    divergence and pruning, 100 epochs. The tests hold it to that on such a build.
  - Elsewhere — other modules (through `torch.vmap(functional_call)`), tiny products
    (inputs × minibatch < 400, where bmm takes a plain loop), GPUs, other BLAS builds —
    sums round differently, and members agree with train() to rtol 1e-5, atol 1e-6 on
    histories and weights after 100 epochs. Exception: Adam/AdamW with a non-smooth
    penalty (l1, elastic_net, l2_unsquared; λ > 0). Near the kink, Adam's normalized steps
    flip weights by ±lr, so one rounding difference becomes another trajectory (losses and
    w_norm then differ by percents); only the outcome (status, epochs) is comparable there,
    as between two runs of train() on different BLAS builds.

Which models stack: `nn.Linear` by the hand-written path; any other module whose forward
is a function of its parameters, buffers and input through `torch.vmap(functional_call)`
(trainer.stacked_model): Linear, Conv1d/2d, Embedding, LayerNorm, pooling, activations,
and `nn.Dropout`, whose masks each member draws from its seed's own stream exactly as
`train` does (trainer.dropout). What vmap cannot run, or a module that updates buffers in
its forward (BatchNorm's running statistics), is found before any training
(trainer.stackable): those members train one by one with `train` in the same call, and
one warning on the `trainer.batched` logger says why.

Data: one pass over the shared training set per epoch feeds every member (members of S
seeds read their S minibatches of a step as one batch); streamed splits (a Dataset) are
read through trainer.data, in-memory ones indexed on the device, with equal results.
Members of several datasets of which one streams train as one stack per dataset.

Nothing runs per member per epoch: the histories are one [epochs, K, metrics] tensor on the
training device, moved to the host at checkpoints (for pruning, `CheckpointCallback`) and
at the end; divergence costs one scalar read per epoch. Python per member runs only when
a member leaves the stack and when results are built.

`duration_s` of each result is the batch's wall time divided by K: members share every
step, so no per-member time exists.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from trainer.accuracy import accuracy_of_state
from trainer.batched_run import CheckpointCallback, StackRun
from trainer.config import TrialConfig
from trainer.data import first_rows, head, readers, streamed
from trainer.devices import device_label, resolve_device
from trainer.errors import ConfigError, task_exit_is_task_error
from trainer.loop import EpochCallback, train
from trainer.metrics import METRICS
from trainer.result import TrainStatus, TrialResult
from trainer.seeding import stream_generator
from trainer.stackable import refusal
from trainer.tasks import Task, load_task

_logger = logging.getLogger(__name__)


# TrialConfig.data_key: (data seed, split seed), what a task's data depends on
DataKey = tuple[int, int | None]


def stack_key(cfg: TrialConfig) -> tuple[object, ...]:
    """Configs with equal keys can train in one stack (they share step shapes); members
    of different data seeds each train on their own data (see `train_batch`)."""
    scope = ",".join(g.strip() for g in cfg.penalize.split(","))
    return (
        cfg.task,
        cfg.task_options,
        cfg.optimizer,
        cfg.epochs,
        cfg.batch_size,
        scope,
        cfg.device.strip().lower(),
    )


def batch_key(cfg: TrialConfig) -> tuple[object, ...]:
    """Configs with equal keys train in one stack on one shared dataset: the fast path."""
    return (*stack_key(cfg), cfg.data_key)


def _check_batchable(cfgs: Sequence[TrialConfig]) -> None:
    first = stack_key(cfgs[0])
    for i, cfg in enumerate(cfgs[1:], start=1):
        if stack_key(cfg) != first:
            raise ConfigError(
                f"configs 0 and {i} cannot share a batch: (task, task options, optimizer,"
                f" epochs, batch size, penalize, device) differ: {first} vs {stack_key(cfg)}"
            )


def train_batch(
    cfgs: Sequence[TrialConfig],
    task: Task | Mapping[DataKey, Task] | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    device: torch.device | None = None,
    *,
    every: int = 1,
) -> list[TrialResult]:
    """Train K configurations as one stacked model; result k equals `train(cfgs[k])`.

    Members of one data seed (one `batch_key`) share one dataset: `task`, or loaded.
    Members of several data seeds (or split seeds; one `stack_key`) each train on their
    own data of one shape: `task` maps `TrialConfig.data_key`s to their tasks (those
    missing are loaded). Raises ConfigError when the configs do not share one
    `stack_key`, their data differs in shape, or one Task is given for several datasets.
    `on_checkpoint` sees, every `every` epochs, the metrics of the members still training
    and may stop (prune) some. A task that ends the process from its own code fails
    instead (TaskError).
    """
    if not cfgs:
        return []
    with task_exit_is_task_error(cfgs[0].task):
        return _train_batch(cfgs, task, on_checkpoint, device, every)


def _train_batch(
    cfgs: Sequence[TrialConfig],
    task: Task | Mapping[DataKey, Task] | None,
    on_checkpoint: CheckpointCallback | None,
    device: torch.device | None,
    every: int,
) -> list[TrialResult]:
    if every < 1:
        raise ConfigError(f"checkpoints every {every} epochs: must be at least 1")
    _check_batchable(cfgs)
    device = device or resolve_device(cfgs[0].device)
    tasks = _member_tasks(cfgs, task)
    groups = _groups(tasks)
    if len(groups) == 1:
        return _train_group(cfgs, tasks, on_checkpoint, device, every)
    results: list[TrialResult | None] = [None] * len(cfgs)
    for members in groups:
        hook = None if on_checkpoint is None else _Group(members, on_checkpoint).checkpoint
        trained = _train_group(
            [cfgs[k] for k in members], [tasks[k] for k in members], hook, device, every
        )
        for k, result in zip(members, trained, strict=True):
            results[k] = result
    return [r for r in results if r is not None]


def _groups(tasks: Sequence[Task]) -> list[list[int]]:
    """The members that train as one stack: all of them, unless they read several
    datasets of which one streams (each such dataset's members are a stack of their own,
    one after the other: one pass of each dataset's minibatches feeds its members)."""
    distinct = {id(t): t for t in tasks}
    if len(distinct) == 1 or not any(streamed(t) for t in distinct.values()):
        return [list(range(len(tasks)))]
    by_task: dict[int, list[int]] = {}
    for k, t in enumerate(tasks):
        by_task.setdefault(id(t), []).append(k)
    return list(by_task.values())


@dataclass
class _Group:
    """Some members of a batch, seen by the batch's checkpoint callback by their indices
    in the whole batch."""

    members: list[int]
    on_checkpoint: CheckpointCallback

    def checkpoint(self, epoch: int, live: list[int], metrics: torch.Tensor) -> set[int]:
        local = {m: i for i, m in enumerate(self.members)}
        stopped = self.on_checkpoint(epoch, [self.members[i] for i in live], metrics)
        return {local[m] for m in stopped or () if m in local}


def _train_group(
    cfgs: Sequence[TrialConfig],
    tasks: Sequence[Task],
    on_checkpoint: CheckpointCallback | None,
    device: torch.device,
    every: int,
) -> list[TrialResult]:
    """One stack, or member by member with `trainer.train` when the model cannot be
    stacked (trainer.stackable; said once in the log)."""
    models = _member_models(cfgs, tasks)
    shared = readers(tasks[0], device) if len({id(t) for t in tasks}) == 1 else None
    reason = refusal(
        models[0], lambda: (first_rows(shared[0]) if shared else head(tasks[0].train))[0]
    )
    if reason is not None:
        _logger.warning("trainer: %d members of a stack train one by one: %s", len(cfgs), reason)
        return [
            train(cfg, t, on_epoch=_alone(k, on_checkpoint, every), device=device)
            for k, (cfg, t) in enumerate(zip(cfgs, tasks, strict=True))
        ]
    started = time.perf_counter()
    run = StackRun(cfgs, tasks, models, shared, device)
    for epoch in range(1, cfgs[0].epochs + 1):
        if not run.live:
            break
        run.epoch(epoch, on_checkpoint, every)
    run.finish(cfgs[0].epochs)
    histories = run.histories()
    duration_s = (time.perf_counter() - started) / len(cfgs)  # shared steps: wall time / K
    label = device_label(device)
    return [
        TrialResult(
            config=cfg,
            status=status,
            device=label,
            duration_s=duration_s,
            history=history,
            state_dict=state,
            diverged_epoch=diverged,
            val_is_test=task.val_is_test,
            accuracy=(
                {} if status is TrainStatus.DIVERGED else accuracy_of_state(task, state, device)
            ),
        )
        for cfg, task, status, history, state, diverged in zip(
            cfgs, tasks, run.status, histories, run.state_dicts, run.diverged_epoch, strict=True
        )
    ]


def _alone(
    member: int, on_checkpoint: CheckpointCallback | None, every: int
) -> EpochCallback | None:
    """`train`'s epoch callback for one member of a batch: the batch's checkpoint
    callback, every `every` epochs, with this member alone."""
    if on_checkpoint is None:
        return None

    def on_epoch(epoch: int, metrics: Mapping[str, float]) -> bool:
        if epoch % every:
            return False
        values = torch.tensor([[metrics[m] for m in METRICS]], dtype=torch.float32)
        return member in set(on_checkpoint(epoch, [member], values) or ())

    return on_epoch


def _member_models(cfgs: Sequence[TrialConfig], tasks: Sequence[Task]) -> list[nn.Module]:
    """Each member's model from its own init stream (and its own task's factory); members
    of one seed and task share one build."""
    built: dict[tuple[int, int], nn.Module] = {}
    models = []
    for cfg, task in zip(cfgs, tasks, strict=True):
        key = (cfg.seed, id(task))
        if key not in built:
            built[key] = task.make_model(stream_generator(cfg.seed, "init"))
        models.append(built[key])
    return models


def _member_tasks(
    cfgs: Sequence[TrialConfig], given: Task | Mapping[DataKey, Task] | None
) -> list[Task]:
    """Each member's task: one object per data key, given or loaded once."""
    if isinstance(given, Task):
        keys = {cfg.data_key for cfg in cfgs}
        if len(keys) > 1:
            raise ConfigError(
                f"one task given for members of {len(keys)} data seeds: give a task per"
                " data seed (a mapping), or none to load them"
            )
        return [given] * len(cfgs)
    by_key = dict(given or {})
    for cfg in cfgs:
        if cfg.data_key not in by_key:
            by_key[cfg.data_key] = load_task(cfg)
    return [by_key[cfg.data_key] for cfg in cfgs]
