"""Alembic environment of the results tables.

tracking.results runs it programmatically and hands over its connection through
`config.attributes["connection"]`. For `alembic revision --autogenerate` during development a
`sqlalchemy.url` main option works too.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from tracking.results.models import TABLE_PREFIX, VERSION_TABLE, Base


def _ours(name: str | None, type_: str, parent_names: object) -> bool:
    # Optuna's tables share the database: autogenerate must not propose dropping them.
    return type_ != "table" or (name or "").startswith(TABLE_PREFIX)


def _migrate(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,  # SQLite cannot ALTER freely; batch mode copies tables
        include_name=_ours,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run() -> None:
    if context.is_offline_mode():
        raise RuntimeError("the results migrations run online only")
    connection = context.config.attributes.get("connection")
    if isinstance(connection, sa.Connection):
        _migrate(connection)
        return
    engine = sa.create_engine(context.config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.begin() as conn:
            _migrate(conn)
    finally:
        engine.dispose()


_run()
