"""Keeping Python's garbage collector off the objects a study process lives with.

Importing torch, Optuna and MLflow leaves hundreds of thousands of objects that every full
collection walks, and a study triggers full collections (when MLflow creates its store,
when the parent run's figures are drawn); those objects outlive the study anyway. The
commands that run studies import them first, then freeze them (`study_heap`), and freeze
again once the study's stores are open (the ~100,000 objects of their engines, ORM
mappers and migrations would otherwise be walked by every full collection, several times a
round). From then on young collections are rarer too (`STUDY_THRESHOLDS`). The heap is
the process's business, so all of this happens here at the command, never inside the
library (which only says when its stores are open: `on_ready`); docs/performance.md has
the figures.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Leave the objects alive now out of every collection until the block ends.

    Everything allocated inside the block is collected as usual. Afterwards the heap is
    unfrozen again, unless the caller had frozen it already.
    """
    caller_froze = gc.get_freeze_count() > 0
    gc.freeze()
    try:
        yield
    finally:
        if not caller_froze:
            gc.unfreeze()


# A round of K trials allocates tens of containers per trial (configs, results, records,
# Optuna's trials), all alive until the round is told. At Python's default threshold (700
# allocations) a large round triggers dozens of young collections and several of the
# middle generation, each walking the round's live objects again; at 50,000 about one.
# What a collection frees (cycles; tensors and rows are freed by reference counts) waits a
# little longer.
STUDY_THRESHOLDS = (50_000, 10, 10)


@contextmanager
def study_heap(*, track: bool) -> Iterator[Callable[[], None]]:
    """Import what a study process lives with (torch, Optuna, and MLflow when `track`),
    then run the block with the heap frozen (`frozen_heap`). The block gets the call that
    freezes what was made since and raises the collector's thresholds to
    `STUDY_THRESHOLDS`, for `run_study(on_ready=...)`; the thresholds are restored after."""
    import optuna  # noqa: F401
    import torch  # noqa: F401

    if track:
        import tracking.mlflow_runs  # noqa: F401 (MLflow and what the tracker uses)
    thresholds = gc.get_threshold()

    def ready() -> None:
        gc.freeze()
        gc.set_threshold(*STUDY_THRESHOLDS)

    try:
        with frozen_heap():
            yield ready
    finally:
        gc.set_threshold(*thresholds)
