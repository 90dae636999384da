"""One engine per MLflow store and process: MLflow's own store (`SqlAlchemyStore`) keeps
its engines in a class-wide cache by database URI, which this fills with the engine the bulk
writer uses, so that MlflowClient shares it (its pool, its connection budget: see
`tracking.connections`)."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore


def shared_engine(tracking_uri: str, make: Callable[[], sa.Engine]) -> sa.Engine:
    """The engine MLflow's store uses for `tracking_uri` in this process: `make()`'s, put
    in MLflow's cache, unless MLflow made one first."""
    engines: dict[str, sa.Engine] = SqlAlchemyStore._engine_map
    with SqlAlchemyStore._engine_map_lock:
        engine = engines.get(tracking_uri)
        if engine is None:
            engine = engines[tracking_uri] = make()
    return engine
