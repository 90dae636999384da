"""The run of one stack: K members' epochs as one computation (see trainer.batched).

`StackRun.epoch` is the sequential loop's epoch (trainer.loop) for every live member:
each seed's shuffle order drawn as `train` draws it, one pass over the training
minibatches feeding every member, the metrics of every split, divergence, and the
checkpoint that may prune. Members leave the stack as they diverge or are pruned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from trainer.batched_optim import rows_of
from trainer.config import TrialConfig
from trainer.data import Rows, chunked_mean
from trainer.errors import ConfigError
from trainer.metrics import METRICS
from trainer.result import TrainStatus
from trainer.seeding import stream_generator
from trainer.stacked_model import LinearForward, build_stack
from trainer.tasks import Split, Task

# Called every `every` epochs with (epoch, the members still training — indices into the
# configs, ascending —, their METRICS as a [members, len(METRICS)] float32 CPU tensor);
# returns the members to stop now (pruned), or None.
CheckpointCallback = Callable[[int, list[int], torch.Tensor], Iterable[int] | None]

EVAL_BUDGET_ROWS = 4096  # members × rows of one evaluation chunk (vmap path)


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


class StackRun:
    """One batch's training state; `epoch` runs the sequential loop's epoch for all members.

    `tasks[k]` is member k's task; when they are not all one object the members' data
    differs and each trains and is evaluated on its own (`_OwnData`, in memory),
    otherwise every member reads the one shared dataset (trainer.data's readers: one
    pass of its minibatches feeds every member, each member of seed s taking seed s's
    minibatch).
    """

    def __init__(
        self,
        cfgs: Sequence[TrialConfig],
        tasks: Sequence[Task],
        models: Sequence[nn.Module],
        shared: tuple[Rows, Rows, Rows] | None,
        device: torch.device,
    ) -> None:
        task = self.task = tasks[0]  # the loss and val_is_test, the same for every member
        self.own = _OwnData(tasks, device) if len({id(t) for t in tasks}) > 1 else None
        seeds = list(dict.fromkeys(cfg.seed for cfg in cfgs))  # distinct, in member order
        self.stack, self.forward, self.keys = build_stack(cfgs, seeds, models, device)
        self.readers = shared if self.own is None else None
        self.device = device
        self.shuffles = [stream_generator(s, "shuffle") for s in seeds]  # on CPU, as in train
        self.n_train = len(task.train)
        self.batch = cfgs[0].batch_size or self.n_train  # 0 means full batch
        k = len(cfgs)
        # Row e holds epoch e+1 of every member; a member's rows past its end are garbage.
        dtype = next(iter(self.stack.params.values())).dtype  # the metrics' dtype
        self.history = torch.empty(cfgs[0].epochs, k, len(METRICS), dtype=dtype, device=device)
        # The vmap path evaluates in chunks of members × rows within a budget (a whole
        # split for 64 CNN members ran slower); the linear path keeps train's whole split.
        linear = isinstance(self.forward, LinearForward)
        self.eval_rows = None if linear else max(1, EVAL_BUDGET_ROWS // k)
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
        # [seeds, n]: one draw per seed, as each trial draws
        orders = torch.stack([torch.randperm(n, generator=g) for g in self.shuffles])
        self.forward.train(True)
        if self.readers is None:
            assert self.own is not None
            orders = orders.to(self.device)
            for start in range(0, n, self.batch):  # each member its own order and data
                idx = orders[:, start : start + self.batch][self.stack.seed_rows]
                self._step(*self.own.minibatch(idx), shared=False)
        else:
            for X, y in self.readers[0].minibatches(orders, self.batch):
                self._shared_step(X, y, len(self.shuffles))
        self.forward.train(False)
        values = self._metrics()
        self.history[epoch - 1].index_copy_(0, self.rows, values)
        self._end_epoch(epoch, values, on_checkpoint if epoch % every == 0 else None)

    def _shared_step(self, X: torch.Tensor, y: torch.Tensor, seeds: int) -> None:
        """X, y: the step's minibatch of every seed, seed after seed."""
        if seeds == 1:  # one seed: every member sees the same minibatch
            self._step(X, y, shared=True)
            return
        rows = self.stack.seed_rows
        X, y = X.reshape(seeds, -1, *X.shape[1:]), y.reshape(seeds, -1, *y.shape[1:])
        self._step(X[rows], y[rows], shared=False)  # [K, B, ...]: each member its seed's

    def _step(self, X: torch.Tensor, y: torch.Tensor, shared: bool) -> None:
        stack = self.stack
        loss = self._per_sample(X, y, shared).mean(1)
        term = stack.coefs.term(stack.weights)
        if term is not None:
            loss = loss + term
        params = list(stack.params.values())
        for p in params:
            p.grad = None
        # Members are independent, so d(Σ_k loss_k)/dθ_k = dloss_k/dθ_k exactly.
        loss.sum().backward()  # type: ignore[no-untyped-call]
        stack.optimizer.step(params)

    def _per_sample(self, X: torch.Tensor, y: torch.Tensor, shared: bool) -> torch.Tensor:
        """[K, m] per-sample losses; the task's loss sees the members as one long batch."""
        out = self.forward(self.stack.tensors, X, shared, self.stack.seed_rows)
        k = out.shape[0]
        if shared:
            y = y.expand(k, *y.shape)
        per_sample = self.task.loss(out.flatten(0, 1), y.flatten(0, 1))
        return per_sample.reshape(k, -1)

    def _split_loss(self, which: int) -> torch.Tensor:
        """[K] mean data loss on split `which` (0 train, 1 validation, 2 test)."""
        if self.own is not None:
            split = self.own.splits[which]
            return self._per_sample(split.X, split.y, shared=False).mean(1)
        assert self.readers is not None
        rows = self.readers[which]
        chunks = rows.chunks(self.eval_rows)
        return chunked_mean(chunks, lambda X, y: self._per_sample(X, y, True), dim=1)

    @torch.no_grad()
    def _metrics(self) -> torch.Tensor:
        """METRICS of every live member, [K, 5], on the device."""
        val_loss = self._split_loss(1)
        weights = self.stack.weights
        values = [
            self._split_loss(0),
            val_loss,
            val_loss if self.task.val_is_test else self._split_loss(2),
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
