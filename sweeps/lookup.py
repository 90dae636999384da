"""Read-only lookups: studies, trials, best, compare, export.

Answered from the results tables, plus Optuna's for trials still running; torch and MLflow
are never imported: a question about a study should not wait for loading them.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from sweeps.errors import StorageError, UnknownStudyError, UsageError
from sweeps.storage import Stores, check_reachable
from tracking.records import TRIAL_COLUMNS
from tracking.results import ResultsStore


def open_results(stores: Stores) -> ResultsStore:
    """The results store, refusing to create an empty SQLite file by merely asking."""
    url = sa.make_url(stores.storage)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        raise StorageError(f"no sweeps storage at {url.database} (run `sweeps run` first)")
    return ResultsStore(stores.storage)


def require_storage(stores: Stores, study: str) -> None:
    """Refuse (UnknownStudyError) a storage that holds no sweeps study at all, found without
    creating anything there: no directory, no SQLite file, no table. Joining or checking
    a study reads its storage; only `sweeps run` creates one."""
    check_reachable(stores.storage)
    url = sa.make_url(stores.storage)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        raise UnknownStudyError(
            f"no study named {study!r}: no sweeps storage at {url.database} (`sweeps run`"
            " creates it)"
        )
    store = ResultsStore(stores.storage)
    try:
        if not store.exists():
            raise UnknownStudyError(f"no study named {study!r} in this storage")
    finally:
        store.dispose()


def _answer(stores: Stores, ask: Any) -> Any:
    """Run one query; the store raises TrackingError/UnknownStudyError as one-line errors."""
    store = open_results(stores)
    try:
        return ask(store)
    finally:
        store.dispose()


def _stored_config(stores: Stores, study: str) -> dict[str, Any] | None:
    """The configuration an existing study was created with, read without creating
    anything; None for a study not in this storage (yet)."""
    check_reachable(stores.storage)  # an unreachable server is said as every command says it
    store = ResultsStore(stores.storage)
    try:
        if store.find_study_uid(study) is None:
            return None
        return dict(store.get_study(study).config)
    finally:
        store.dispose()


def stored_penalties(stores: Stores, study: str) -> list[str] | None:
    """The penalties an existing study was created with (None: no such study yet). A
    resume that names no --penalties keeps them, whatever today's default set is."""
    penalties = (_stored_config(stores, study) or {}).get("penalties")
    return list(penalties) if penalties else None


def stored_lr_range(stores: Stores, study: str) -> tuple[float, float] | None:
    """The lr range an existing study searches (None: it fixes lr, or no such study). A
    resume that names no lr keeps it."""
    config = _stored_config(stores, study) or {}
    if config.get("lr_min") is None or config.get("lr_max") is None:
        return None
    return float(config["lr_min"]), float(config["lr_max"])


def searches_lr(stores: Stores, studies: Sequence[str]) -> bool:
    """Whether any of `studies` searches lr: the tables then show each row's lr."""
    return any(stored_lr_range(stores, study) is not None for study in dict.fromkeys(studies))


def list_studies(stores: Stores) -> list[dict[str, Any]]:
    return _answer(stores, lambda s: s.studies())  # type: ignore[no-any-return]


def best(stores: Stores, study: str, penalty: str | None = None) -> list[dict[str, Any]]:
    """Each penalty of the study with its best trial (best fields None where it has no
    complete trial), its trials per `COUNT_COLUMNS` (`ResultsStore.best`) and, where the
    study was confirmed, CONFIRMED_COLUMNS."""

    def rows(store: ResultsStore) -> list[dict[str, Any]]:
        return with_confirmed(store, store.best(study, penalty, every_penalty=True))

    return _answer(stores, rows)  # type: ignore[no-any-return]


def compare(stores: Stores, studies: Sequence[str]) -> list[dict[str, Any]]:
    """`best` of every study named (of all, none named), study by study."""

    def rows(store: ResultsStore) -> list[dict[str, Any]]:
        return with_confirmed(store, store.compare(list(studies) or None, every_penalty=True))

    return _answer(stores, rows)  # type: ignore[no-any-return]


# Beside a best row whose trial was confirmed (`sweeps confirm`): its test loss over the
# fresh seeds, mean and 95% CI, and how many seeds.
CONFIRMED_COLUMNS = ("confirmed_mean", "confirmed_ci_low", "confirmed_ci_high", "confirmed_seeds")


def with_confirmed(store: ResultsStore, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` (best rows) with CONFIRMED_COLUMNS added where their study has confirmations
    (null for a trial of such a study that was not confirmed); unchanged otherwise. The
    fresh-data confirmations are used where a trial has them, else the fixed-data ones."""
    out = []
    per_study: dict[str, dict[int, list[float]]] = {}
    for row in rows:
        study = row["study"]
        if study not in per_study:
            per_study[study] = _confirmed_values(store.confirmations(study))
        found = per_study[study]
        if not found:
            out.append(row)
            continue
        number = row.get("trial_number")  # None: a penalty without a complete trial
        values = None if number is None else found.get(int(number))
        out.append({**row, **_confirmed(values)})
    return out


def _confirmed_values(rows: list[dict[str, Any]]) -> dict[int, list[float]]:
    fresh: dict[int, list[float]] = {}
    fixed: dict[int, list[float]] = {}
    for r in rows:
        if r["state"] == "COMPLETE" and r["test_loss"] is not None:
            kind = fresh if r["seed"] == r["data_seed"] else fixed
            kind.setdefault(int(r["candidate"]), []).append(float(r["test_loss"]))
    return {**fixed, **fresh}


def _confirmed(values: list[float] | None) -> dict[str, Any]:
    if not values:
        return dict.fromkeys(CONFIRMED_COLUMNS)
    from sweeps.confirm_stats import summarize

    s = summarize(values)
    return dict(zip(CONFIRMED_COLUMNS, (s.mean, s.ci_low, s.ci_high, len(values)), strict=True))


def list_trials(stores: Stores, study: str) -> list[dict[str, Any]]:
    """Finished trials from the results table, plus RUNNING/WAITING ones from Optuna."""
    rows: list[dict[str, Any]] = _answer(stores, lambda s: s.trials(study))
    finished = {r["number"] for r in rows}
    rows += [t for t in _unfinished(stores.storage, study) if t["number"] not in finished]
    rows.sort(key=lambda r: r["number"])
    return [{c: r.get(c) for c in TRIAL_COLUMNS} for r in rows]


def _unfinished(storage: str, study: str) -> list[dict[str, Any]]:
    import optuna

    from sweeps.storage import close_storage

    opened = optuna.storages.RDBStorage(storage)
    try:
        loaded = optuna.load_study(study_name=study, storage=opened)
        trials = loaded.get_trials(deepcopy=False)
    except KeyError:
        return []
    finally:
        close_storage(opened)
    out = []
    for t in trials:
        if t.state.is_finished():
            continue
        out.append(
            {
                "number": t.number,
                "state": t.state.name,
                "penalty": t.params.get("penalty"),
                "lambda": t.params.get("lambda"),
                "l1_ratio": t.params.get("l1_ratio"),
                "lr": t.params.get("lr"),  # only where searched: the study's lr is not here
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
