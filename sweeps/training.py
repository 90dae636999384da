"""Training a round's trials: a round of one trains its repeats one after another with
`trainer.train`, exactly as `sweeps train` trains them; a larger round trains as one
stacked model (`trainer.batched`), in separate stacks for configs that cannot share one
(`trainer.batched.batch_key`). Every `checkpoint_every` epochs the first repeat's
validation loss is reported and the pruner asked (`sweeps.checkpoints`)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import optuna
import torch

from sweeps.checkpoints import Checkpoints
from sweeps.pruning import PruningView, Reports
from tracking.records import now_ms
from trainer import Task, TrainStatus, TrialConfig, TrialResult, train
from trainer.batched import batch_key, train_batch
from trainer.metrics import METRICS

VAL_LOSS = METRICS.index("val_loss")  # the objective's column of the trainer's metrics


@dataclass
class Slot:
    """One asked trial of the round: its config, checkpoints and its repeats' results."""

    trial: optuna.Trial
    cfg: TrialConfig
    checkpoints: Checkpoints
    repeats: int
    started_ms: int = field(default_factory=now_ms)
    results: list[TrialResult | None] = field(init=False)  # one a repeat; None: not trained

    def __post_init__(self) -> None:
        self.results = [None] * self.repeats

    def finished(self) -> list[TrialResult]:
        """Its repeats up to the first that did not complete (a sequential trial trains no
        further; a stack trains them all, and those after it do not count)."""
        results: list[TrialResult] = []
        for result in self.results:
            assert result is not None
            results.append(result)
            if result.status is not TrainStatus.COMPLETED:
                break
        return results


def repeat_configs(cfg: TrialConfig, repeats: int) -> list[TrialConfig]:
    """Seeds seed … seed+R−1 for init and shuffling, all on the same data."""
    if repeats == 1 and cfg.effective_data_seed == cfg.seed:
        return [cfg]  # already the one repeat
    return [cfg.replace(seed=cfg.seed + r, data_seed=cfg.seed) for r in range(repeats)]


@dataclass(frozen=True)
class _Member:
    """One stacked model: trial `slot`'s repeat `repeat`."""

    slot: int
    repeat: int
    cfg: TrialConfig


@dataclass(frozen=True)
class RoundTraining:
    """How a study trains its rounds; `reports` None: no pruner, no checkpoints."""

    task: Task
    device: torch.device
    repeats: int
    every: int  # checkpoint every this many epochs
    reports: Reports | None

    def train(self, slots: list[Slot], pruning: PruningView, *, one_by_one: bool) -> None:
        """Fills each slot's `results`, one per repeat (None: not trained)."""
        if one_by_one:
            for slot in slots:
                self._train_one(slot)
        else:
            for stack in self._stacks(slots):
                self._train_stack(slots, stack, pruning)

    def _train_one(self, slot: Slot) -> None:
        """Repeats one after another, pruned on the first seed's curve, up to the first
        that did not complete."""
        for r, member in enumerate(repeat_configs(slot.cfg, self.repeats)):
            hook = slot.checkpoints if r == 0 and self.reports is not None else None
            result = train(member, self.task, on_epoch=hook, device=self.device)
            slot.results[r] = result
            if result.status is not TrainStatus.COMPLETED:
                return

    def _stacks(self, slots: list[Slot]) -> list[list[_Member]]:
        """Every repeat of every trial, grouped into the stacks that can train together."""
        stacks: dict[tuple[object, ...], list[_Member]] = defaultdict(list)
        for i, slot in enumerate(slots):
            for r, member in enumerate(repeat_configs(slot.cfg, self.repeats)):
                stacks[batch_key(member)].append(_Member(i, r, member))
        return list(stacks.values())

    def _train_stack(self, slots: list[Slot], group: list[_Member], pruning: PruningView) -> None:
        reports = self.reports

        def on_checkpoint(epoch: int, members: list[int], metrics: torch.Tensor) -> set[int]:
            """Report each trial's first repeat (added together); a pruned trial stops all
            its repeats."""
            assert reports is not None
            if not slots[group[0].slot].checkpoints.due(epoch):
                return set()  # the last epoch: nothing left to prune
            pruning.refresh()  # a round is long: see other workers' completions
            val_loss = metrics[:, VAL_LOSS].tolist()
            due = [
                (group[i].slot, value)
                for i, value in zip(members, val_loss, strict=True)
                if group[i].repeat == 0
            ]
            reports.add([slots[s].checkpoints.report(epoch, value) for s, value in due])
            pruned = {s for s, _ in due if slots[s].checkpoints.decide(epoch)}
            return {i for i in members if group[i].slot in pruned}

        results = train_batch(
            [m.cfg for m in group],
            self.task,
            on_checkpoint=on_checkpoint if reports is not None else None,
            device=self.device,
            every=self.every,
        )
        for m, result in zip(group, results, strict=True):
            slots[m.slot].results[m.repeat] = result
