"""Read-only lookups: studies, trials, best, compare, export.

Answered from the results tables, plus Optuna's for trials still running; torch and MLflow
are never imported: a question about a study should not wait for loading them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from sweeps.errors import StorageError, UsageError
from sweeps.storage import Stores
from tracking.records import TRIAL_COLUMNS
from tracking.results import ResultsStore


def open_results(stores: Stores) -> ResultsStore:
    """The results store, refusing to create an empty SQLite file by merely asking."""
    url = sa.make_url(stores.storage)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        raise StorageError(f"no sweeps storage at {url.database} (run `sweeps run` first)")
    return ResultsStore(stores.storage)


def _answer(stores: Stores, ask: Any) -> Any:
    """Run one query; the store raises TrackingError/UnknownStudyError as one-line errors."""
    store = open_results(stores)
    try:
        return ask(store)
    finally:
        store.dispose()


def list_studies(stores: Stores) -> list[dict[str, Any]]:
    return _answer(stores, lambda s: s.studies())  # type: ignore[no-any-return]


def best(stores: Stores, study: str, penalty: str | None = None) -> list[dict[str, Any]]:
    """Each penalty of the study with its best trial (best fields None where it has no
    complete trial) and its trials per `COUNT_COLUMNS` (`ResultsStore.best`)."""
    return _answer(stores, lambda s: s.best(study, penalty, every_penalty=True))  # type: ignore[no-any-return]


def compare(stores: Stores, studies: Sequence[str]) -> list[dict[str, Any]]:
    """`best` of every study named (of all, none named), study by study."""
    return _answer(stores, lambda s: s.compare(list(studies) or None, every_penalty=True))  # type: ignore[no-any-return]


def list_trials(stores: Stores, study: str) -> list[dict[str, Any]]:
    """Finished trials from the results table, plus RUNNING/WAITING ones from Optuna."""
    rows: list[dict[str, Any]] = _answer(stores, lambda s: s.trials(study))
    finished = {r["number"] for r in rows}
    rows += [t for t in _unfinished(stores.storage, study) if t["number"] not in finished]
    rows.sort(key=lambda r: r["number"])
    return [{c: r.get(c) for c in TRIAL_COLUMNS} for r in rows]


def _unfinished(storage: str, study: str) -> list[dict[str, Any]]:
    import optuna

    try:
        loaded = optuna.load_study(study_name=study, storage=storage)
    except KeyError:
        return []
    out = []
    for t in loaded.get_trials(deepcopy=False):
        if t.state.is_finished():
            continue
        out.append(
            {
                "number": t.number,
                "state": t.state.name,
                "penalty": t.params.get("penalty"),
                "lambda": t.params.get("lambda"),
                "l1_ratio": t.params.get("l1_ratio"),
            }
        )
    return out


def render_export(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt != "csv":
        raise UsageError(f"unknown export format {fmt!r}; use csv or json")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TRIAL_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(
        {k: ("" if v is None else repr(v) if isinstance(v, float) else v) for k, v in r.items()}
        for r in rows
    )
    return buffer.getvalue()


def write_atomically(path: str, text: str) -> None:
    """Write to a temporary file beside `path` and rename: never a half-written export."""
    target = Path(path)
    if not target.parent.is_dir():
        raise UsageError(f"directory {str(target.parent)!r} does not exist")
    if target.exists() and not target.is_file():
        # Renaming over a device or a FIFO would replace it (as root, /dev/full itself):
        # -o names a file; redirect stdout to write anywhere else.
        raise UsageError(f"-o {path!r} is not a regular file; redirect the output instead")
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as e:
        raise UsageError(f"cannot write {path!r}: {e.strerror}") from None
    try:
        # mkstemp makes the file private (0600); an export is an ordinary file: the umask's
        # permissions, as `open(path, "w")` would give it.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, target)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise UsageError(f"cannot write {path!r}: {e.strerror}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
