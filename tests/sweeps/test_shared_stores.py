"""Which stores workers on several machines can share (`sweeps.launchers.shared_stores`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeps.errors import UsageError
from sweeps.launchers.shared_stores import local_stores, require_shared_stores
from sweeps.storage import resolve_stores

PG = "postgresql+psycopg://u:S3cret-pw@db.example/sweeps"
PG_MLFLOW = "postgresql+psycopg://u:S3cret-pw@db.example/mlflow"


@pytest.mark.parametrize(
    ("storage", "tracking", "track", "local"),
    [
        (None, None, True, ["the storage sqlite:", "the MLflow store sqlite:"]),
        (None, None, False, ["the storage sqlite:"]),
        (PG, None, True, ["the MLflow store sqlite:"]),
        (PG, PG_MLFLOW, True, ["the MLflow artifacts folder /"]),  # artifacts on this disk
        (PG, PG_MLFLOW, False, []),
        (PG, "http://mlflow:5000", True, []),
    ],
)
def test_local_stores(
    tmp_path: Path, storage: str | None, tracking: str | None, track: bool, local: list[str]
) -> None:
    stores = resolve_stores(str(tmp_path / "h"), storage, tracking)
    found = local_stores(stores, track)
    assert len(found) == len(local)
    for said, start in zip(found, local, strict=True):
        assert said.startswith(start) and "S3cret-pw" not in said


def test_refusal_says_what_to_use(tmp_path: Path) -> None:
    stores = resolve_stores(str(tmp_path / "h"), PG, None)
    with pytest.raises(UsageError) as raised:
        require_shared_stores(stores, True, "a Ray cluster of 3 nodes")
    message = str(raised.value)
    assert message.startswith("a Ray cluster of 3 nodes needs stores that every machine reaches")
    assert "--tracking-uri http://HOST:5000" in message and "\n" not in message
    require_shared_stores(stores, False, "a Ray cluster of 3 nodes")  # untracked: fine
