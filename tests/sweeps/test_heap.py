"""`frozen_heap`: the collector skips what was alive before a study, and only during it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from sweeps.heap import frozen_heap


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_frozen_inside_and_unfrozen_after_even_on_error() -> None:
    with pytest.raises(RuntimeError), frozen_heap():
        assert gc.get_freeze_count() > 0
        raise RuntimeError("boom")
    assert gc.get_freeze_count() == 0


def test_a_callers_freeze_is_left_alone() -> None:
    gc.freeze()
    with frozen_heap():
        pass
    assert gc.get_freeze_count() > 0
