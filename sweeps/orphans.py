"""Child processes that die with their parent (Linux's PR_SET_PDEATHSIG): a parent killed
outright (SIGKILL, the out-of-memory killer) then leaves no child running on its own —
a recording process racing a resume's healing, an MLflow server holding its port."""

from __future__ import annotations

import os
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1  # linux/prctl.h

Prctl = Callable[..., int]


def prctl() -> Prctl | None:
    """libc's prctl, None where there is none (not Linux). Look it up in the parent: a
    child between fork and exec should not load anything."""
    import ctypes

    try:
        found: Prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return found


def die_with_parent(call: Prctl, signal: int, parent_pid: int) -> bool:
    """In a child: have the kernel send it `signal` when its parent dies (kept across
    exec). False where that failed, or where the parent `parent_pid` died already."""
    if call(_PR_SET_PDEATHSIG, signal, 0, 0, 0) != 0:
        return False
    return os.getppid() == parent_pid  # the parent died before the call: no signal comes
