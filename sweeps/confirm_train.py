"""Training of `sweeps confirm`'s (candidate, seed) pairs: every pair that can share a
stack (`trainer.batched.stack_key`: all of them, on fresh data too, where each member
trains on its own seed's data, when the data has one shape) trains in one `train_batch`,
at most `batch` runs a stack."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

from sweeps.records import build_record, conclude
from tracking.records import TrialRecord, now_ms
from trainer import TrialConfig, load_task, resolve_device
from trainer.batched import DataKey, stack_key, train_batch
from trainer.data import shapes as data_shapes
from trainer.tasks import Task


def stacks(
    pairs: Sequence[tuple[int, TrialConfig]], batch: int | None, tasks: Mapping[DataKey, Task]
) -> list[list[tuple[int, TrialConfig]]]:
    """The pairs grouped by stack key and their data's shapes (`tasks`: by data key), first
    seen first, cut into stacks of `batch`."""
    groups: dict[tuple[object, ...], list[tuple[int, TrialConfig]]] = {}
    for pair in pairs:
        shapes = data_shapes(tasks[pair[1].data_key])
        groups.setdefault((stack_key(pair[1]), shapes), []).append(pair)
    size = batch or max(len(g) for g in groups.values())
    return [g[i : i + size] for g in groups.values() for i in range(0, len(g), size)]


def load_tasks(cfgs: Iterable[TrialConfig]) -> dict[DataKey, Task]:
    """Each dataset's task (by `TrialConfig.data_key`), built once."""
    tasks: dict[DataKey, Task] = {}
    for cfg in cfgs:
        if cfg.data_key not in tasks:
            tasks[cfg.data_key] = load_task(cfg)
    return tasks


def train_pairs(
    study: str,
    pairs: Sequence[tuple[int, TrialConfig]],
    *,
    batch: int | None = None,
    tracked: bool = True,
) -> Iterator[list[TrialRecord]]:
    """Train the pairs stack by stack; yields each stack's records (number = the
    candidate trial's) as soon as it has trained. `tracked`: records carry the weights
    and per-epoch history that only MLflow keeps."""
    if not pairs:
        return
    device = resolve_device(pairs[0][1].device)
    tasks = load_tasks(cfg for _, cfg in pairs)
    for stack in stacks(pairs, batch, tasks):
        cfgs = [cfg for _, cfg in stack]
        started = now_ms()
        results = train_batch(cfgs, tasks, device=device)
        recs = []
        for (number, cfg), result in zip(stack, results, strict=True):
            state, error = conclude([result], pruned_at=None)
            recs.append(
                build_record(
                    study,
                    number,
                    cfg,
                    [result],
                    state,
                    started,
                    error,
                    weights=tracked,
                    keep_history=tracked,
                )
            )
        yield recs
