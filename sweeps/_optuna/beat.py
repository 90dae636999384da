"""Heartbeats for a round's trials in one transaction.

`RDBStorage.record_heartbeat` opens a session per trial (a read, then an insert or a locked
update): beating for a round of K trials from the heartbeat thread would take K sessions
every interval, and while they ran they would hold the interpreter against the round's
training, slowing it as K grows. Here one transaction stamps every trial of the round with
the database's clock, as Optuna's own beat does: existing rows updated, missing ones
inserted.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from optuna.storages._rdb import models

_BEATS = models.TrialHeartbeatModel.__table__


class BulkHeartbeat:
    """`record_heartbeat` for many trials at once (see above)."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def beat(self, trial_ids: Sequence[int]) -> None:
        if not trial_ids:
            return
        with self._engine.begin() as conn:
            now = conn.execute(sa.select(sa.func.now())).scalar_one()  # reads no table
            # Written before anything is read: on SQLite, a transaction that reads and then
            # writes fails at once ("database is locked", whatever the busy timeout) when
            # another process committed in between (a recording process telling a round).
            conn.execute(
                sa.update(_BEATS).where(_BEATS.c.trial_id.in_(trial_ids)).values(heartbeat=now)
            )
            known = set(
                conn.execute(
                    sa.select(_BEATS.c.trial_id).where(_BEATS.c.trial_id.in_(trial_ids))
                ).scalars()
            )
            new = [{"trial_id": i, "heartbeat": now} for i in trial_ids if i not in known]
            if new:
                conn.execute(sa.insert(_BEATS), new)
