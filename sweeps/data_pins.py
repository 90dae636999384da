"""A study pins its data: the files its task reads, by content hash.

A study is created with the SHA-256 of every file its task reads (`trainer.tasks.data_files`:
the csv task's tables, a `python:` task's module). A process that runs its trials (a resumed
`sweeps run`, a `sweeps worker`) hashes them once as it starts, before any trial, and is
refused (`DataChanged`, one line naming the file) where one differs from what the study
holds; `accept_change` takes the new files as the study's next data version instead.

The study keeps every version it has had (its user attribute `sweeps.data`, the current one
last), and each trial the version it was trained on (`sweeps.data_version`, the version's
digest): a result is taken for an identical configuration only from a trial of the same
version (`sweeps.reuse`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import optuna

from sweeps.attr_keys import DATA_ATTR
from sweeps.errors import DataChanged, UsageError
from trainer.config import TrialConfig

ACCEPT_FLAG = "--accept-data-change"


@dataclass(frozen=True)
class DataFiles:
    """The files a task reads, each by its role (`train_csv`, `module`): path and SHA-256."""

    files: dict[str, dict[str, str]]

    @property
    def digest(self) -> str:
        """One hash of all the files' contents (not their paths: a worker elsewhere reads
        the same data from another folder): the data version's identity."""
        hashes = {role: f["sha256"] for role, f in self.files.items()}
        text = json.dumps(hashes, sort_keys=True).encode()
        return hashlib.sha256(text).hexdigest()[:16]


def hash_data(cfg: TrialConfig) -> DataFiles:
    """Hash every file `cfg`'s task reads, each read once, in chunks (a large table is
    never held in memory for it)."""
    from trainer.tasks import data_files

    files = {}
    for role, path in sorted(data_files(cfg).items()):
        try:
            with open(path, "rb") as f:
                sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as e:
            raise UsageError(f"cannot read data file {path!r}: {e.strerror or e}") from None
        files[role] = {"path": path, "sha256": sha256}
    return DataFiles(files)


def versions(study: optuna.Study) -> list[dict[str, Any]]:
    """The study's data versions, oldest first (none for a study made before pinning)."""
    stored = study.user_attrs.get(DATA_ATTR)
    return list(stored) if isinstance(stored, list) else []


def pin(study: optuna.Study, data: DataFiles, *, accept_change: bool) -> None:
    """Check `data` against the study's current version (see above): the same, nothing
    is written; changed, refused unless `accept_change`, which records it as the next
    version. A study without any version (new, or made before pinning) takes `data` as
    its first."""
    known = versions(study)
    if known:
        changed = _changed(known[-1]["files"], data.files)
        if changed is None:
            return
        if not accept_change:
            raise DataChanged(
                f"study {study.study_name!r}: data file {changed!r} changed since the study"
                f" pinned it (sha256 differs); pass {ACCEPT_FLAG} to go on with the new"
                " data (no result of the old data is reused), or use another --study name"
            )
    entry = {
        "version": len(known) + 1,
        "digest": data.digest,
        "files": data.files,
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    study.set_user_attr(DATA_ATTR, [*known, entry])


def _changed(pinned: dict[str, dict[str, str]], here: dict[str, dict[str, str]]) -> str | None:
    """The path of the first file that differs (here, or as pinned where it is gone)."""
    for role in sorted(pinned.keys() | here.keys()):
        before, now = pinned.get(role), here.get(role)
        if before is None or now is None or before["sha256"] != now["sha256"]:
            return (now or before or {}).get("path", role)
    return None
