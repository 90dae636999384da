"""Training of `sweeps confirm`'s (candidate, seed) pairs: every pair that can share a
stack (`trainer.batched.batch_key`: with fixed data, all of them; with fresh data, the
candidates of one seed) trains in one `train_batch`, at most `batch` runs a stack."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sweeps.lifecycle import build_record, conclude
from tracking.records import TrialRecord, now_ms
from trainer import TrialConfig, load_task, resolve_device
from trainer.batched import batch_key, train_batch


def stacks(
    pairs: Sequence[tuple[int, TrialConfig]], batch: int | None
) -> list[list[tuple[int, TrialConfig]]]:
    """The pairs grouped by batch key (first seen first), cut into stacks of `batch`."""
    groups: dict[tuple[object, ...], list[tuple[int, TrialConfig]]] = {}
    for pair in pairs:
        groups.setdefault(batch_key(pair[1]), []).append(pair)
    size = batch or max(len(g) for g in groups.values())
    return [g[i : i + size] for g in groups.values() for i in range(0, len(g), size)]


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
    for stack in stacks(pairs, batch):
        cfgs = [cfg for _, cfg in stack]
        started = now_ms()
        results = train_batch(cfgs, load_task(cfgs[0]), device=device)
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
