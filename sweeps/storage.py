"""Where a study lives: store URLs, Optuna's RDBStorage, its heartbeats and lost trials.

`resolve_stores` applies the defaults under HOME and validates the URLs; `open_storage`
builds Optuna's RDBStorage explicitly, with heartbeats and the retry of stale trials.

Lost trials are RUNNING in Optuna while nobody trains them. Optuna fails a RUNNING trial
once its heartbeat is stale (`fail_stale_trials`, which every worker runs before each
trial), but only a trial that has a heartbeat. A worker killed between creating a trial and
its first beat (the instant after `ask` in `study.optimize`; the time to ask K trials in
`--batch` mode) leaves one that stays RUNNING forever, uncounted and never retried. Here
such a trial counts as lost once it started longer ago than the grace period, like a stale
one, and is failed the way Optuna fails stale trials: state FAIL, then the storage's
stale-trial callback (the recorder writes its row and run, then Optuna's retry enqueues its
parameters again).

Finding them reads Optuna's tables (`sweeps._optuna.lost`). Where that is not allowed
(`sweeps._optuna.fenced`: an untested schema, a private name gone, SWEEPS_OPTUNA_PUBLIC=1)
no trial is listed as lost and failing them is Optuna's own `fail_stale_trials`: stale
trials are still failed and retried, beatless ones are not.

Optuna is imported inside the functions that use it: the read-only lookups
(`sweeps.lookup`) resolve their stores here and need not load it.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from sweeps.errors import StorageError, UsageError, mask_secrets
from tracking.connections import Use, budgeted
from tracking.db import (
    connect_error,
    engine_options,
    reached,
    transient_faults_retried,
    use_wal,
)
from tracking.reconnect import retry_window_s
from tracking.secrets import register_url

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from sweeps._optuna.lost import LostTrialIds

# Heartbeat: a RUNNING trial whose worker stopped beating for 2 intervals is failed by the
# next worker that starts a trial, and retried with the same parameters.
DEFAULT_HEARTBEAT_S = 10
MAX_HEARTBEAT_S = 86_400  # a day; beyond it a dead worker's trials would wait forever
MAX_RETRIES = 3
# An SQLite database, the files SQLite keeps beside it while it is in use, and the lock
# of the results tables' migrations (`tracking.results.migrate`).
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal", ".migrate.lock")
# What lives under HOME by default: the storage, the MLflow store and its artifacts.
HOME_STORAGE = "sweeps.db"
HOME_TRACKING = "mlflow.db"
HOME_ARTIFACTS = "mlartifacts"


@dataclass(frozen=True)
class Stores:
    """The resolved locations of everything a command touches."""

    home: Path
    storage: str  # Optuna storage and results tables
    tracking_uri: str  # MLflow
    artifact_root: Path | None  # local MLflow artifacts; None for an MLflow server

    @property
    def uses_home(self) -> bool:
        """Whether anything lives under `home` (then it must be created before use)."""
        path = _sqlite_path(self.storage)
        return self.artifact_root is not None or (
            path is not None and path.is_relative_to(self.home)
        )

    @property
    def home_storage(self) -> str:
        return default_storage(self.home)

    @property
    def home_tracking(self) -> str:
        return default_tracking(self.home)

    def make_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)

    @property
    def ui_log(self) -> Path:
        """Where `sweeps ui` keeps the MLflow server's own output."""
        return self.home / "mlflow-ui.log"

    def owned_files(self) -> dict[Path, str]:
        """Every file the stores and the home folder keep, with what it is: the SQLite
        stores (named, or HOME's defaults) and SQLite's files beside them, the UI's log."""
        databases = {
            self.home / HOME_STORAGE: "the sweeps storage",
            self.home / HOME_TRACKING: "the MLflow store",
        }
        for url, what in (
            (self.storage, "the sweeps storage"),
            (self.tracking_uri, "the MLflow store"),
        ):
            if (path := _sqlite_path(url)) is not None:
                databases[path] = what
        owned = {
            path.with_name(path.name + suffix): what
            for path, what in databases.items()
            for suffix in SQLITE_SUFFIXES
        }
        owned[self.ui_log] = "the MLflow UI's log"
        return owned

    def owned_folders(self) -> dict[Path, str]:
        """The folders whose every file is the stores' own: MLflow's local artifacts."""
        folders = {self.home / HOME_ARTIFACTS: "the MLflow artifacts folder"}
        if self.artifact_root is not None:
            folders[self.artifact_root] = "the MLflow artifacts folder"
        return folders

    def check_files(self, *, write: bool, storage: bool = True, tracking: bool = True) -> None:
        """Refuse (StoreFileError, one line) a damaged or foreign SQLite store file, or with
        `write` one this command could not write (nor its artifacts), before any work."""
        from tracking.store_files import check_store_file, check_writable_dir

        if storage and (path := _sqlite_path(self.storage)) is not None:
            check_store_file(path, "sweeps", write=write)
        if tracking and (path := _sqlite_path(self.tracking_uri)) is not None:
            check_store_file(path, "mlflow", write=write)
        if tracking and write and self.artifact_root is not None:
            check_writable_dir(self.artifact_root, "the MLflow artifacts folder")


def default_storage(home: Path) -> str:
    """The storage URL of a study whose --storage is not given: an SQLite file in HOME."""
    return sqlite_url(home / HOME_STORAGE)


def default_tracking(home: Path) -> str:
    """The MLflow tracking URI where --tracking-uri is not given: an SQLite file in HOME."""
    return sqlite_url(home / HOME_TRACKING)


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of the SQLite file `path`, with `%`, `?` and `#` in it escaped
    (`make_url(...).database` reads the path back)."""
    return sa.URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite"):
        return None
    database = sa.make_url(url).database
    return _resolved(Path(database).expanduser(), "the SQLite file") if database else None


def _same_file(url: str, other: str) -> bool:
    """Whether two SQLite URLs name one file, however spelled (`..`, symlinks, links)."""
    path, other_path = _sqlite_path(url), _sqlite_path(other)
    if path is None or other_path is None:
        return False
    if path == other_path:
        return True
    try:
        return os.path.samefile(path, other_path)
    except OSError:  # one of them does not exist yet
        return False


def resolve_stores(home: str, storage: str | None, tracking_uri: str | None) -> Stores:
    """Apply defaults under HOME and validate both URLs. Creates nothing."""
    if not home:  # Path("") is the current directory: the stores would land there unasked
        raise UsageError("--home is empty; give a directory (or leave it out: ./sweeps-data)")
    retry_window_s()  # a bad SWEEPS_DB_RETRY_S is refused here, not first met in an outage
    for url in (storage, tracking_uri):
        if url:
            register_url(url)  # its password is masked wherever it shows up
    home_path = _resolved(Path(home).expanduser(), "--home")
    storage_url = normalize_storage_url(storage or default_storage(home_path), home_path)
    tracking, artifacts = _tracking_store(tracking_uri, home_path)
    if storage_url == tracking or _same_file(storage_url, tracking):
        raise StorageError("the Optuna storage and the MLflow tracking store must differ")
    return Stores(home_path, storage_url, tracking, artifacts)


def _tracking_store(tracking_uri: str | None, home: Path) -> tuple[str, Path | None]:
    """The MLflow tracking URI (HOME's store by default), validated, and where its
    artifacts go (None for an MLflow server, which keeps them)."""
    if tracking_uri is None:
        return default_tracking(home), home / HOME_ARTIFACTS
    scheme = tracking_uri.split("://", 1)[0].lower() if "://" in tracking_uri else ""
    if scheme == "sqlite":
        normalize_storage_url(tracking_uri, home)
        return tracking_uri, home / HOME_ARTIFACTS
    if scheme in {"postgresql", "postgresql+psycopg"}:
        # Artifacts under HOME, not ./mlruns under whatever directory.
        return normalize_storage_url(tracking_uri, home), home / HOME_ARTIFACTS
    if scheme not in {"http", "https"}:
        raise StorageError(
            f"unsupported tracking URI {mask_secrets(tracking_uri)!r}; use sqlite:///PATH or"
            " http://host:port"
        )
    return tracking_uri, None


def _resolved(path: Path, what: str) -> Path:
    """`path` made absolute through its symlinks; one line for a loop of them, or for a
    path longer than the file system holds."""
    try:
        resolved = path.resolve()
    except (RuntimeError, OSError) as e:  # Path.resolve: RuntimeError for a symlink loop
        raise StorageError(f"{what} {str(path)!r} cannot be resolved: {e}") from None
    _check_length(resolved, what)
    return resolved


def _check_length(path: Path, what: str) -> None:
    """Refuse a path with a name longer than NAME_MAX, or longer than PATH_MAX as a whole,
    with room for the longest of SQLite's files beside it: checked before any folder on
    the way to it is created, which every later look at it would fail on."""
    existing = path
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
        path_max = os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError):  # no such limits known here: the POSIX usual ones
        name_max, path_max = 255, 4096
    room = max(len(suffix) for suffix in SQLITE_SUFFIXES)
    names = [len(os.fsencode(part)) for part in path.parts]
    if max(names[:-1], default=0) > name_max or names[-1] + room > name_max:
        raise StorageError(f"{what} {str(path)!r} has a name longer than the file system holds")
    if len(os.fsencode(path)) + room >= path_max:
        raise StorageError(f"{what} {str(path)!r} is longer than the file system holds")


def normalize_storage_url(url: str, home: Path) -> str:
    """Check an SQLAlchemy URL; map postgresql:// to the psycopg 3 driver we ship."""
    try:
        parsed = sa.make_url(url)
        parsed.port  # noqa: B018 (a non-numeric port fails here, not in a driver later)
    except (sa.exc.ArgumentError, ValueError):
        raise StorageError(f"malformed storage URL {mask_secrets(url)!r}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        db = parsed.database
        if not db or db == ":memory:":
            raise StorageError("an SQLite storage needs a file path: sqlite:///PATH/sweeps.db")
        parent = _resolved(Path(db).expanduser(), "the SQLite file").parent
        # HOME itself is created on first use; any other directory must exist.
        if not parent.is_dir() and parent != home:
            raise StorageError(f"directory {str(parent)!r} of the SQLite storage does not exist")
        return url
    if backend in {"postgresql", "postgres"}:
        if parsed.get_driver_name() in {"psycopg2", "pg8000", "asyncpg"} or "+" not in url:
            parsed = parsed.set(drivername="postgresql+psycopg")
        return parsed.render_as_string(hide_password=False)
    raise StorageError(
        f"unsupported storage {mask_secrets(url)!r}; use sqlite:///PATH or postgresql://..."
    )


def check_reachable(url: str) -> None:
    """Fail fast with one line when a server is down or refuses us."""
    if url.startswith("sqlite"):
        return
    reason = connect_error(url)
    if reason is not None:
        raise StorageError(f"cannot reach storage {mask_secrets(url)}: {reason}")


def heartbeat_interval() -> int:
    """Seconds between heartbeats; SWEEPS_HEARTBEAT_S overrides (tests use 1)."""
    raw = os.environ.get("SWEEPS_HEARTBEAT_S", str(DEFAULT_HEARTBEAT_S))
    try:
        value = int(raw)
    except ValueError:
        raise StorageError(f"SWEEPS_HEARTBEAT_S must be whole seconds, got {raw!r}") from None
    if not 1 <= value <= MAX_HEARTBEAT_S:
        raise StorageError(
            f"SWEEPS_HEARTBEAT_S must be 1 to {MAX_HEARTBEAT_S} seconds, got {raw!r}"
        )
    return value


StaleTrialCallback = Callable[["optuna.Study", "FrozenTrial"], None]


def open_storage(
    url: str, on_stale: Callable[[StaleTrialCallback], StaleTrialCallback] | None = None
) -> optuna.storages.RDBStorage:
    """Optuna's RDBStorage with heartbeat and retry of heartbeat-stale trials; `on_stale`
    wraps the retry (e.g. to record a stale trial before it is retried).

    Several processes creating the schema at once can collide on PostgreSQL; the loser
    retries and finds the tables made.
    """
    import optuna

    check_reachable(url)
    interval = heartbeat_interval()
    retry: StaleTrialCallback = optuna.storages.RetryHeartbeatStaleTrialCallback(
        max_retry=MAX_RETRIES
    )
    callback = retry if on_stale is None else on_stale(retry)
    beats: dict[str, Any] = {
        "heartbeat_interval": interval,
        "grace_period": 2 * interval,
        "heartbeat_stale_trial_callback": callback,
    }
    last: Exception | None = None
    for attempt in range(5):
        try:
            storage = _rdb_storage(url, beats)
            if url.startswith("sqlite"):
                use_wal(storage.engine)
            reached(storage.engine)
            transient_faults_retried(storage.engine)
            return storage
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.OperationalError) as e:
            last = e
            time.sleep(0.2 * (attempt + 1))
    reason = str(getattr(last, "orig", last)).strip().splitlines()[0]
    raise StorageError(f"cannot open storage {mask_secrets(url)}: {reason}")


def _rdb_storage(url: str, beats: dict[str, Any]) -> optuna.storages.RDBStorage:
    """Optuna's storage at `url`, its tables created and checked. On PostgreSQL the
    storage kept holds one connection (`tracking.connections`); Optuna's checks open a
    second one inside a first, so they run first on connections made for them alone."""
    import optuna

    if not url.startswith("postgresql"):
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_options(url), **beats)
    checked = optuna.storages.RDBStorage(url, engine_kwargs=engine_options(url, Use.PROBE), **beats)
    checked.engine.dispose()
    storage = optuna.storages.RDBStorage(
        url,
        engine_kwargs=engine_options(url),
        skip_compatibility_check=True,
        skip_table_creation=True,
        **beats,
    )
    budgeted(storage.engine)
    return storage


def close_storage(storage: optuna.storages.RDBStorage) -> None:
    """Close the storage's connections (its engine's pool): a call of the Python API
    leaves none open behind it."""
    storage.remove_session()
    storage.engine.dispose()


_FINDING_LOST = "finding lost trials"  # what Optuna's tables are read for (see fenced)


def lost_trials(study: optuna.Study, storage: optuna.storages.RDBStorage) -> list[FrozenTrial]:
    """RUNNING trials with a stale heartbeat, or none and a start older than the grace
    (none at all where Optuna's tables may not be read: see above)."""
    from sweeps._optuna import fenced, study_id

    if storage.heartbeat_interval is None:
        return []
    finder = fenced(study, _FINDING_LOST, _finder, storage)
    if finder is None:
        return []
    grace = timedelta(seconds=storage.grace_period or 2 * storage.heartbeat_interval)
    sid = study_id(study, storage)
    lost = {i: storage.get_trial(i) for i in finder.stale(storage, sid)}
    # Optuna stores naive local times (datetime.now()) for datetime_start.
    cutoff = datetime.now() - grace
    for trial_id in finder.beatless(sid):
        trial = storage.get_trial(trial_id)
        if trial.datetime_start is None or trial.datetime_start < cutoff:
            lost[trial_id] = trial
    return sorted(lost.values(), key=lambda t: t.number)


def fail_lost_trials(study: optuna.Study, storage: optuna.storages.RDBStorage) -> list[int]:
    """Fails every lost trial (see `fail_trial`); returns the numbers this call failed."""
    from sweeps._optuna import fenced

    if storage.heartbeat_interval is None:
        return []
    if fenced(study, _FINDING_LOST, _finder, storage) is None:
        return _fail_stale_trials(study)
    return [t.number for t in lost_trials(study, storage) if fail_trial(study, storage, t)]


def fail_trial(
    study: optuna.Study, storage: optuna.storages.RDBStorage, trial: FrozenTrial
) -> bool:
    """Sets a lost trial FAIL and runs the storage's stale-trial callback on it.

    False when it was finished meanwhile (by its worker after all, or failed by another
    process, which then ran the callback).
    """
    import optuna
    from optuna.trial import TrialState

    from sweeps._optuna import frozen_trial_id

    trial_id = frozen_trial_id(trial, study, storage)
    try:
        if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    callback = storage.get_heartbeat_stale_trial_callback()
    if callback is not None:
        callback(study, copy.deepcopy(storage.get_trial(trial_id)))
    return True


def _fail_stale_trials(study: optuna.Study) -> list[int]:
    """Optuna's public `fail_stale_trials`, and the numbers of the trials it failed."""
    import optuna
    from optuna.trial import TrialState

    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    optuna.storages.fail_stale_trials(study)
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    return sorted(t.number for t in failed if t.number in running)


def _finder(engine: sa.Engine) -> LostTrialIds:
    from sweeps._optuna.lost import LostTrialIds

    return LostTrialIds(engine)
