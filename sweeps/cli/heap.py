"""Keeping Python's garbage collector off the objects a study process lives with.

Importing torch, Optuna and MLflow leaves hundreds of thousands of objects that every full
collection walks, and a study triggers full collections (when MLflow creates its store,
when the parent run's figures are drawn); those objects outlive the study anyway. The
commands that run studies import them first, then freeze them (`study_heap`), and freeze
again once the study's stores are open (the ~100,000 objects of their engines, ORM
mappers and migrations would otherwise be walked by every full collection, several times a
round). Freezing is the process's business, so it happens here at the command, never
inside the library (which only says when its stores are open: `on_ready`); the README
has the figures.
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


@contextmanager
def study_heap(*, track: bool) -> Iterator[Callable[[], None]]:
    """Import what a study process lives with (torch, Optuna, and MLflow when `track`),
    then run the block with the heap frozen (`frozen_heap`). The block gets the call that
    freezes what was made since, for `run_study(on_ready=...)`."""
    import optuna  # noqa: F401
    import torch  # noqa: F401

    if track:
        import tracking.mlflow_runs  # noqa: F401 (MLflow and what the tracker uses)
    with frozen_heap():
        yield gc.freeze
