"""Engines for the results store, tuned for several worker processes sharing one database."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from tracking.connections import budgeted
from tracking.db import (
    engine_options,
    immediate_transactions,
    transient_faults_retried,
    use_wal,
)
from tracking.errors import TrackingError
from tracking.secrets import mask_secrets

# mask_secrets needs a well-formed "scheme://"; a malformed URL may lack it yet hold a password.
_LOOSE_PASSWORD = re.compile(r":[^:@/\s]+@")
_URL_FORMS = "dialect[+driver]://user:password@host[:port]/database or sqlite:///path/to/file.db"


def masked_url(url: str) -> str:
    """`url` with any password replaced by ***, also when the URL is malformed."""
    return _LOOSE_PASSWORD.sub(":***@", mask_secrets(url))


def make_engine(url: str) -> sa.Engine:
    """Create the engine of a results store.

    Settings come from `tracking.db`, shared with Optuna's storage on the same database.

    Args:
        url: A SQLAlchemy database URL, e.g. `sqlite:///sweeps-data/sweeps.db` or
            `postgresql+psycopg://user:password@host/db`.

    Returns:
        The engine; no connection is opened yet.

    Raises:
        TrackingError: The URL is malformed, names an unknown database or its driver is
            missing. The message shows the URL with its password masked.
    """
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as e:
        raise TrackingError(
            f"malformed database URL '{masked_url(url)}': expected {_URL_FORMS}"
        ) from e
    try:
        engine = budgeted(sa.create_engine(parsed, **engine_options(parsed.drivername)))
        use_wal(engine)
        immediate_transactions(engine)
        transient_faults_retried(engine)
        return engine
    except sa.exc.NoSuchModuleError as e:
        raise TrackingError(f"unknown database in URL '{masked_url(url)}': {e}") from e
    except ImportError as e:
        raise TrackingError(
            f"the database driver for '{masked_url(url)}' is not installed: {e}"
        ) from e


@contextmanager
def database_errors(engine: sa.Engine) -> Iterator[None]:
    """Turn an unreachable, refusing or locked database into one clear TrackingError line."""
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as e:
        reason = (str(e.orig).strip().splitlines() or ["unknown error"])[0]
        shown = engine.url.render_as_string(hide_password=True)
        raise TrackingError(f"results store '{shown}' failed: {masked_url(reason)}") from e
