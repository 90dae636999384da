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
    histories and weights after 100 epochs (measured: within 3.3e-6 relative beyond 1e-6
    absolute). Exception: Adam/AdamW with a non-smooth penalty (l1, elastic_net,
    l2_unsquared; λ > 0). Near the kink, Adam's normalized steps flip weights by ±lr, so
    one rounding difference becomes another trajectory (measured: percent-level gaps in
    losses and w_norm); only the outcome (status, epochs) is comparable there, as between
    two runs of train() on different BLAS builds.

Nothing runs per member per epoch: the histories are one [epochs, K, metrics] tensor on the
training device, moved to the host at checkpoints (for pruning, `CheckpointCallback`) and
at the end; divergence costs one scalar read per epoch. Python per member runs only when
a member leaves the stack and when results are built.

`duration_s` of each result is the batch's wall time divided by K: members share every
step, so no per-member time exists.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from trainer.accuracy import accuracy_of_state
from trainer.batched_optim import PenaltyCoefficients, StackedOptimizer, rows_of
from trainer.config import Penalty, TrialConfig
from trainer.devices import device_label, resolve_device
from trainer.errors import ConfigError, task_exit_is_task_error
from trainer.penalties import select_penalized
from trainer.result import METRICS, TrainStatus, TrialResult
from trainer.seeding import stream_generator
from trainer.tasks import Split, Task, load_task

# Called every `every` epochs with (epoch, the members still training — indices into the
# configs, ascending —, their METRICS as a [members, len(METRICS)] float32 CPU tensor);
# returns the members to stop now (pruned), or None.
CheckpointCallback = Callable[[int, list[int], torch.Tensor], Iterable[int] | None]

# TrialConfig.data_key: (data seed, split seed), what a task's data depends on
DataKey = tuple[int, int | None]

# (stacked params and buffers, input [B, ...] shared by all members or [K, B, ...], shared?)
# → output [K, B, ...]
Forward = Callable[[dict[str, torch.Tensor], torch.Tensor, bool], torch.Tensor]


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


# --- the stacked model -----------------------------------------------------------------


def _linear_forward(
    tensors: dict[str, torch.Tensor], X: torch.Tensor, shared: bool
) -> torch.Tensor:
    """nn.Linear for K members: y = X·Wᵀ + b, as bmm(W, Xᵀ)ᵀ.

    This orientation makes MKL run, per member, the kernel `F.linear` runs on one model
    (for one output it is a gemv over the samples), so the sums round identically.
    """
    W = tensors["weight"]
    n = X.shape[-2]
    if n == 1:
        # bmm sends a one-sample product to a naive loop that sums in another order; a
        # duplicated sample keeps it on the BLAS kernel the single model uses.
        X = torch.cat([X, X], dim=-2)
    Xt = X.t().expand(W.shape[0], -1, -1) if shared else X.transpose(1, 2)
    out = torch.bmm(W, Xt)[..., :n].transpose(1, 2)
    bias = tensors.get("bias")
    return out if bias is None else out + bias.unsqueeze(1)


def _vmap_forward(template: nn.Module) -> Forward:
    """Any module: functional_call under vmap over the stacked parameters and buffers."""
    base = copy.deepcopy(template).to("meta")  # only its structure is used

    def one(tensors: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = functional_call(base, tensors, (x,))
        return out

    def forward(tensors: dict[str, torch.Tensor], X: torch.Tensor, shared: bool) -> torch.Tensor:
        out: torch.Tensor = torch.vmap(one, in_dims=(0, None if shared else 0))(tensors, X)
        return out

    return forward


@dataclass
class _Stack:
    """The live members' stacked tensors; row r is original member `members[r]`."""

    members: list[int]
    params: dict[str, torch.Tensor]  # leaves [K, ...] requiring grad
    buffers: dict[str, torch.Tensor]
    penalized: list[str]  # names the penalty and weight_decay cover, in model order
    coefs: PenaltyCoefficients
    optimizer: StackedOptimizer
    seed_rows: torch.Tensor  # [K] row of each member's shuffle order

    @property
    def weights(self) -> list[torch.Tensor]:
        return [self.params[n] for n in self.penalized]

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        return {**self.params, **self.buffers}

    def select(self, rows: list[int]) -> None:
        """Keep only `rows`: fresh leaves, so nothing of the dropped members remains."""
        index = torch.tensor(rows, dtype=torch.long, device=self.seed_rows.device)
        self.members = [self.members[r] for r in rows]
        self.params = {n: p.detach()[index].requires_grad_() for n, p in self.params.items()}
        self.buffers = {n: b[index] for n, b in self.buffers.items()}
        self.coefs = self.coefs.select(index)
        self.optimizer.select(rows)
        self.seed_rows = self.seed_rows[index]

    def snapshot(self, rows: list[int], keys: Sequence[str]) -> list[dict[str, torch.Tensor]]:
        """State dicts of `rows` on CPU, in the single model's key order (one copy per key)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.seed_rows.device)
        tensors = self.tensors
        moved = {k: tensors[k].detach()[index].cpu() for k in keys}
        # clone: each state dict must own its storage, not a view of the stacked one
        return [{k: moved[k][i].clone() for k in keys} for i in range(len(rows))]


def _build_stack(
    cfgs: Sequence[TrialConfig], seeds: list[int], tasks: Sequence[Task], device: torch.device
) -> tuple[_Stack, Forward, list[str]]:
    """Each member's model from its own init stream (and its own task's factory), stacked;
    plus its forward and keys."""
    built: dict[tuple[int, int], nn.Module] = {}
    models = []
    for cfg, task in zip(cfgs, tasks, strict=True):  # members with one seed share one init
        key = (cfg.seed, id(task))
        if key not in built:
            built[key] = task.make_model(stream_generator(cfg.seed, "init"))
        models.append(built[key])
    template = models[0]
    penalized = [n for n, _ in select_penalized(template.named_parameters(), cfgs[0].penalize)]
    stacked, buffers = stack_module_state(models)
    params = {n: p.detach().to(device).requires_grad_() for n, p in stacked.items()}
    stack = _Stack(
        members=list(range(len(cfgs))),
        params=params,
        buffers={n: b.to(device) for n, b in buffers.items()},
        penalized=penalized,
        coefs=PenaltyCoefficients.of(cfgs, device),
        optimizer=_make_optimizer(cfgs, list(params), penalized, device),
        seed_rows=torch.tensor([seeds.index(cfg.seed) for cfg in cfgs], device=device),
    )
    forward = _linear_forward if type(template) is nn.Linear else _vmap_forward(template)
    return stack, forward, list(template.state_dict())


def _make_optimizer(
    cfgs: Sequence[TrialConfig], names: list[str], penalized: list[str], device: torch.device
) -> StackedOptimizer:
    """Per-member lr; weight_decay λ on the penalized tensors of weight_decay members only."""
    decay = [cfg.lambda_ if cfg.penalty is Penalty.WEIGHT_DECAY else 0.0 for cfg in cfgs]
    wd = torch.tensor(decay, dtype=torch.float64) if any(decay) else None
    return StackedOptimizer(
        kind=cfgs[0].optimizer,
        lr=torch.tensor([cfg.lr for cfg in cfgs], dtype=torch.float64),
        weight_decay=[wd if n in penalized else None for n in names],
        device=device,
    )


# --- the loop --------------------------------------------------------------------------


class _OwnData:
    """Each live member's own train/val/test splits, stacked [K, n, ...]: for members
    whose data differs (several data seeds). Row r is the stack's row r."""

    def __init__(self, tasks: Sequence[Task], device: torch.device) -> None:
        distinct = list({id(t): t for t in tasks}.values())
        row_of = {id(t): i for i, t in enumerate(distinct)}
        rows = torch.tensor([row_of[id(t)] for t in tasks], dtype=torch.long)
        self.splits = [
            _stacked([getattr(t, which) for t in distinct], which, rows, device)
            for which in ("train", "val", "test")
        ]
        self._index = torch.arange(len(tasks), device=device).unsqueeze(1)

    def select(self, index: torch.Tensor) -> None:
        self.splits = [Split(s.X[index], s.y[index]) for s in self.splits]
        self._index = self._index[: len(index)]

    def minibatch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Member k's samples rows[k] of its own training split: X [K, B, ...], y [K, B, ...]."""
        train = self.splits[0]
        return train.X[self._index, rows], train.y[self._index, rows]


def _stacked(parts: Sequence[Split], which: str, rows: torch.Tensor, device: torch.device) -> Split:
    """The distinct datasets' `which` splits as one [K, n, ...] Split, row k member k's."""
    shapes = {(tuple(p.X.shape), tuple(p.y.shape), p.X.dtype, p.y.dtype) for p in parts}
    if len(shapes) > 1:
        raise ConfigError(
            f"members' {which} splits differ in shape or type ({sorted(map(str, shapes))}):"
            " members of several data seeds stack only when their data has one shape"
        )
    X = torch.stack([p.X for p in parts])[rows]
    y = torch.stack([p.y for p in parts])[rows]
    return Split(X.to(device), y.to(device))


class _BatchRun:
    """One batch's training state; `epoch` runs the sequential loop's epoch for all members.

    `tasks[k]` is member k's task; when they are not all one object the members' data
    differs and each trains and is evaluated on its own (`_OwnData`), otherwise every
    member reads the one shared dataset.
    """

    def __init__(
        self, cfgs: Sequence[TrialConfig], tasks: Sequence[Task], device: torch.device
    ) -> None:
        task = self.task = tasks[0]  # the loss and val_is_test, the same for every member
        self.own = _OwnData(tasks, device) if len({id(t) for t in tasks}) > 1 else None
        seeds = list(dict.fromkeys(cfg.seed for cfg in cfgs))  # distinct, in member order
        self.stack, self.forward, self.keys = _build_stack(cfgs, seeds, tasks, device)
        self.splits = [s.to(device) for s in (task.train, task.val, task.test)]
        self.device = device
        self.shuffles = [stream_generator(s, "shuffle") for s in seeds]  # on CPU, as in train
        self.n_train = len(task.train)
        self.batch = cfgs[0].batch_size or self.n_train  # 0 means full batch
        k = len(cfgs)
        # Row e holds epoch e+1 of every member; a member's rows past its end are garbage.
        dtype = next(iter(self.stack.params.values())).dtype  # the metrics' dtype
        self.history = torch.empty(cfgs[0].epochs, k, len(METRICS), dtype=dtype, device=device)
        self.rows = torch.arange(k, device=device)  # the live members, as stack.members
        self.epochs_run = [0] * k
        self.status = [TrainStatus.COMPLETED] * k
        self.diverged_epoch: list[int | None] = [None] * k
        self.state_dicts: list[dict[str, torch.Tensor]] = [{} for _ in cfgs]

    @property
    def live(self) -> bool:
        return bool(self.stack.members)

    def epoch(self, epoch: int, on_checkpoint: CheckpointCallback | None, every: int) -> None:
        n = self.n_train
        orders = torch.stack([torch.randperm(n, generator=g) for g in self.shuffles])
        orders = orders.to(self.device)  # [seeds, n]: one draw per seed, as each trial draws
        for start in range(0, n, self.batch):
            self._step(orders[:, start : start + self.batch])
        values = self._metrics()
        self.history[epoch - 1].index_copy_(0, self.rows, values)
        self._end_epoch(epoch, values, on_checkpoint if epoch % every == 0 else None)

    def _step(self, idx: torch.Tensor) -> None:
        train, stack = self.splits[0], self.stack
        if self.own is not None:  # each member its own order over its own data
            X, y = self.own.minibatch(idx[stack.seed_rows])
            loss = self._data_loss(X, y, shared=False)
        elif idx.shape[0] == 1:  # one seed: every member sees the same minibatch
            loss = self._data_loss(train.X[idx[0]], train.y[idx[0]], shared=True)
        else:
            rows = idx[stack.seed_rows]  # [K, B]
            loss = self._data_loss(train.X[rows], train.y[rows], shared=False)
        term = stack.coefs.term(stack.weights)
        if term is not None:
            loss = loss + term
        params = list(stack.params.values())
        for p in params:
            p.grad = None
        # Members are independent, so d(Σ_k loss_k)/dθ_k = dloss_k/dθ_k exactly.
        loss.sum().backward()  # type: ignore[no-untyped-call]
        stack.optimizer.step(params)

    def _data_loss(self, X: torch.Tensor, y: torch.Tensor, shared: bool) -> torch.Tensor:
        """[K] mean per-sample loss; the task's loss sees the members as one long batch."""
        out = self.forward(self.stack.tensors, X, shared)
        k = out.shape[0]
        if shared:
            y = y.expand(k, *y.shape)
        per_sample = self.task.loss(out.flatten(0, 1), y.flatten(0, 1))
        return per_sample.reshape(k, -1).mean(1)

    @torch.no_grad()
    def _metrics(self) -> torch.Tensor:
        """METRICS of every live member, [K, 5], on the device."""
        shared = self.own is None
        train, val, test = self.splits if self.own is None else self.own.splits
        val_loss = self._data_loss(val.X, val.y, shared)
        weights = self.stack.weights
        values = [
            self._data_loss(train.X, train.y, shared),
            val_loss,
            val_loss if self.task.val_is_test else self._data_loss(test.X, test.y, shared),
            torch.stack([rows_of(w).pow(2).sum(1) for w in weights], 1).sum(1).sqrt(),
            self.stack.coefs.value(weights),
        ]
        return torch.stack(values, 1)

    def _end_epoch(
        self, epoch: int, values: torch.Tensor, on_checkpoint: CheckpointCallback | None
    ) -> None:
        """The sequential loop's end of epoch for all members: divergence (a non-finite
        metric ends a member without recording the epoch), then the checkpoint."""
        finite = torch.isfinite(values).all(1)
        done: dict[int, None] = {}  # rows leaving the stack, in order
        if not bool(finite.all()):  # the one read of the device every epoch
            for row in (~finite).nonzero().flatten().tolist():
                member = self.stack.members[row]
                self.status[member], self.diverged_epoch[member] = TrainStatus.DIVERGED, epoch
                self.epochs_run[member] = epoch - 1
                done[row] = None
        if on_checkpoint is not None:
            rows = [r for r in range(len(self.stack.members)) if r not in done]
            host = values.cpu()[rows]
            members = [self.stack.members[r] for r in rows]
            row_of = dict(zip(members, rows, strict=True))
            for member in on_checkpoint(epoch, members, host) or ():
                if member in row_of:  # members not training any more are ignored
                    self.status[member], self.epochs_run[member] = TrainStatus.STOPPED, epoch
                    done[row_of[member]] = None
        if done:
            self._retire(sorted(done))

    def _retire(self, rows: list[int]) -> None:
        """Save the members at `rows` as they are now and drop them from the stack."""
        for row, state in zip(rows, self.stack.snapshot(rows, self.keys), strict=True):
            self.state_dicts[self.stack.members[row]] = state
        gone = set(rows)
        keep = [r for r in range(len(self.stack.members)) if r not in gone]
        self.stack.select(keep)
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.rows = self.rows[index]
        if self.own is not None:
            self.own.select(index)

    def finish(self, epochs: int) -> None:
        """Members still in the stack ran every epoch."""
        for member in self.stack.members:
            self.epochs_run[member] = epochs
        if self.live:
            self._retire(list(range(len(self.stack.members))))

    def histories(self) -> list[dict[str, list[float]]]:
        """Each member's METRICS per epoch, moved to the host in one copy."""
        per_member: list[list[list[float]]] = self.history.permute(1, 2, 0).cpu().tolist()
        return [
            {m: values[:ran] for m, values in zip(METRICS, rows, strict=True)}
            for rows, ran in zip(per_member, self.epochs_run, strict=True)
        ]


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
    started = time.perf_counter()
    run = _BatchRun(cfgs, tasks, device)
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
