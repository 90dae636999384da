"""Stores that every machine of a cluster reaches: a server, never a local file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sweeps.errors import UsageError, mask_secrets

if TYPE_CHECKING:
    from sweeps.storage import Stores

USE_INSTEAD = (
    "use PostgreSQL for the storage (--storage postgresql+psycopg://USER@HOST/DB) and an"
    " MLflow server for tracking (--tracking-uri http://HOST:5000), or --no-track"
)


def local_stores(stores: Stores, track: bool) -> list[str]:
    """What of `stores` lives on this machine's disk: a SQLite storage, a SQLite MLflow
    store, MLflow artifacts under a local folder (any tracking URI but a server's)."""
    local = []
    if stores.storage.lower().startswith("sqlite"):
        local.append(f"the storage {mask_secrets(stores.storage)}")
    if track and stores.tracking_uri.lower().startswith("sqlite"):
        local.append(f"the MLflow store {mask_secrets(stores.tracking_uri)}")
    elif track and stores.artifact_root is not None:
        local.append(f"the MLflow artifacts folder {stores.artifact_root}")
    return local


def require_shared_stores(stores: Stores, track: bool, where: str) -> None:
    """Refuse (UsageError) stores on a local path for workers placed on several machines
    (`where` names them, e.g. "a Ray cluster of 3 nodes"): those elsewhere would each
    write a file of their own, or fail."""
    local = local_stores(stores, track)
    if local:
        verb = "is" if len(local) == 1 else "are"
        raise UsageError(
            f"{where} needs stores that every machine reaches, but {' and '.join(local)}"
            f" {verb} on this machine's disk; {USE_INSTEAD}"
        )
