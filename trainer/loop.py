"""The sequential training loop: one TrialConfig → one TrialResult."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from trainer.accuracy import final_accuracy
from trainer.config import Penalty, TrialConfig
from trainer.data import Rows, chunked_mean, readers
from trainer.devices import device_label, resolve_device
from trainer.dropout import DropoutMasks, seed_dropout
from trainer.errors import AllocationError, ConfigError, task_exit_is_task_error
from trainer.metrics import METRICS
from trainer.optim import FunctionalOptimizer, ParamGroup
from trainer.penalties import l2_norm, penalty_term, penalty_value, select_penalized
from trainer.result import TrainStatus, TrialResult
from trainer.seeding import stream_generator
from trainer.tasks import Task, load_task

# Called after every finished epoch with (epoch, metrics); returning True stops training
# (the sweep uses this for pruning without the trainer knowing about Optuna).
EpochCallback = Callable[[int, Mapping[str, float]], bool | None]


def make_optimizer(
    cfg: TrialConfig, penalized: list[nn.Parameter], others: list[nn.Parameter]
) -> FunctionalOptimizer:
    """Optimizer with the penalized group apart, so weight_decay touches only that group.

    weight_decay is explicit on both groups (torch's AdamW would decay everything by 0.01).
    """
    decay = cfg.lambda_ if cfg.penalty is Penalty.WEIGHT_DECAY else 0.0
    groups = [ParamGroup(penalized, decay)]
    if others:
        groups.append(ParamGroup(others, 0.0))
    return FunctionalOptimizer(cfg.optimizer, groups, lr=cfg.lr)


def check_config(cfg: TrialConfig, task: Task | None = None) -> Task:
    """Refuse a config before any work: the task builds, the batch fits the training
    split, and the penalty scope matches the model."""
    with task_exit_is_task_error(cfg.task):
        return _check_config(cfg, task)


def _check_config(cfg: TrialConfig, task: Task | None) -> Task:
    with _allocation_refused(cfg):
        task = task or load_task(cfg)
    if cfg.batch_size > len(task.train):
        raise ConfigError(
            f"batch size {cfg.batch_size} is larger than the {len(task.train)} training rows"
            " of this task; use a smaller --batch-size (0 means full batch)"
        )
    with _allocation_refused(cfg):
        model = task.make_model(stream_generator(cfg.seed, "init"))
    select_penalized(model.named_parameters(), cfg.penalize)
    return task


_TORCH_ALLOCATION = re.compile(r"can't allocate memory|out of memory|tried to allocate")
_TORCH_SIZE = re.compile(r"tried to allocate (\d+) bytes")


@contextmanager
def _allocation_refused(cfg: TrialConfig) -> Iterator[None]:
    """The allocator refusing the task's data or model (sizes within the options' maxima
    whose product no machine holds) as one AllocationError line, not torch's traceback."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        found = _TORCH_ALLOCATION.search(str(e))
        if not isinstance(e, MemoryError) and found is None:
            raise
        size = ""
        if (asked := _TORCH_SIZE.search(str(e))) is not None:
            size = f" ({int(asked.group(1)) / 2**30:,.1f} GiB asked for)"
        raise AllocationError(
            f"cannot allocate the data and model of task {cfg.task!r}{size}; use smaller"
            " sizes (training rows, inputs, hidden layers)"
        ) from None


def _data_loss(model: nn.Module, task: Task, rows: Rows) -> torch.Tensor:
    return chunked_mean(rows.chunks(), lambda X, y: task.loss(model(X), y))


def train(
    cfg: TrialConfig,
    task: Task | None = None,
    on_epoch: EpochCallback | None = None,
    device: torch.device | None = None,
) -> TrialResult:
    """Train one configuration and record per-epoch metrics.

    The minibatch loss is the mean data loss plus the penalty, so the SGD step sees
    mean data gradient + λ·∂penalty — d2l's `l.sum().backward(); sgd(.., batch_size)`.
    A non-finite loss or ‖w‖ ends the run at the end of that epoch with DIVERGED.
    A task that ends the process from its own code fails instead (TaskError).
    """
    with task_exit_is_task_error(cfg.task):
        return _train(cfg, task, on_epoch, device)


def _train(
    cfg: TrialConfig,
    task: Task | None,
    on_epoch: EpochCallback | None,
    device: torch.device | None,
) -> TrialResult:
    device = device or resolve_device(cfg.device)
    task = task or load_task(cfg)
    started = time.perf_counter()

    model = task.make_model(stream_generator(cfg.seed, "init")).to(device)
    seed_dropout(model, DropoutMasks([cfg.seed], device))
    named = list(model.named_parameters())
    chosen = select_penalized(named, cfg.penalize)
    chosen_ids = {id(p) for _, p in chosen}
    weights = [p for _, p in chosen]
    optimizer = make_optimizer(cfg, weights, [p for _, p in named if id(p) not in chosen_ids])

    train_rows, val_rows, test_rows = readers(task, device)
    n = len(train_rows)
    batch = n if cfg.batch_size == 0 else cfg.batch_size
    shuffle = stream_generator(cfg.seed, "shuffle")
    history: dict[str, list[float]] = {m: [] for m in METRICS}
    status, diverged_epoch = TrainStatus.COMPLETED, None

    for epoch in range(1, cfg.epochs + 1):
        order = torch.randperm(n, generator=shuffle).unsqueeze(0)
        model.train()
        for X, y in train_rows.minibatches(order, batch):
            loss = task.loss(model(X), y).mean()
            term = penalty_term(weights, cfg.penalty, cfg.lambda_, cfg.l1_ratio)
            if term is not None:
                loss = loss + term
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()

        model.eval()
        with torch.no_grad():
            val = _data_loss(model, task, val_rows)
            test = val if task.val_is_test else _data_loss(model, task, test_rows)
            values = torch.stack(
                [
                    _data_loss(model, task, train_rows),
                    val,
                    test,
                    l2_norm(weights),
                    penalty_value(weights, cfg),
                ]
            ).tolist()  # one device sync per epoch
        if not all(math.isfinite(v) for v in values):
            status, diverged_epoch = TrainStatus.DIVERGED, epoch
            break
        metrics = dict(zip(METRICS, values, strict=True))
        for name, value in metrics.items():
            history[name].append(value)
        if on_epoch is not None and on_epoch(epoch, metrics):
            status = TrainStatus.STOPPED
            break

    accuracy = {} if status is TrainStatus.DIVERGED else final_accuracy(task, model, device)
    return TrialResult(
        config=cfg,
        status=status,
        device=device_label(device),
        duration_s=time.perf_counter() - started,
        history=history,
        state_dict={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        diverged_epoch=diverged_epoch,
        val_is_test=task.val_is_test,
        accuracy=accuracy,
    )
