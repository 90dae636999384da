"""CLI plumbing: one-line errors with exit code 2, shared options, output helpers."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn, TextIO, TypeVar, cast

import click

from sweeps.cli.stops import interrupted_exit_code
from sweeps.errors import SweepsError, UsageError, mask_secrets
from tracking.errors import TrackingError
from trainer.errors import TrainerError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print one line on stderr (secrets masked) and exit."""
    one_line = mask_secrets(message).replace("\r", "\\r").replace("\n", "\\n")
    click.echo(f"sweeps: error: {one_line}", err=True)
    sys.exit(code)


class SweepsGroup(click.Group):
    """A group whose errors are one clear line and exit 2 — never a traceback."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        from sweeps.cli.process import log_warnings_to_stderr, working_directory_importable

        kwargs["standalone_mode"] = False
        log_warnings_to_stderr()
        working_directory_importable()
        try:
            with _checked_stdout():
                rv = super().main(*args, **kwargs)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.exceptions.NoArgsIsHelpError as e:
            click.echo(e.ctx.get_help())
            sys.exit(0)
        except click.ClickException as e:
            fail(_click_message(e), e.exit_code if e.exit_code != 1 else EXIT_USAGE)
        except (SweepsError, TrainerError, TrackingError) as e:
            fail(str(e), getattr(e, "exit_code", EXIT_USAGE))
        except (KeyboardInterrupt, click.exceptions.Abort):
            fail("interrupted", interrupted_exit_code())
        except Exception as e:
            database = _database_error(e)
            if database is None:
                raise  # a bug: its traceback is what a report needs
            fail(database)
        sys.exit(rv if isinstance(rv, int) else 0)


class _CheckedStdout:
    """Standard output whose failed writes (a full disk, /dev/full) are a UsageError: one
    line on stderr, not a traceback nor a silent success. Everything else is the stream's."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as e:
            raise UsageError(f"cannot write to standard output: {e.strerror}") from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as e:
            raise UsageError(f"cannot write to standard output: {e.strerror}") from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _checked_stdout() -> Iterator[None]:
    saved = sys.stdout
    sys.stdout = cast("TextIO", _CheckedStdout(saved))
    try:
        yield
    finally:
        sys.stdout = saved


def _database_error(e: BaseException) -> str | None:
    """One line for a store that failed beneath us (damaged pages the up-front file checks
    cannot see, a server that went away mid-command); None for anything else."""
    from sweeps.errors import database_failure

    reason = database_failure(e)
    return None if reason is None else f"the database failed: {reason}"


def _click_message(e: click.ClickException) -> str:
    if isinstance(e, click.UsageError) and e.ctx is not None:
        return f"{e.ctx.command_path}: {e.format_message()}"
    return e.format_message()


def json_safe(value: Any) -> Any:
    """JSON has no inf/nan: write them as null rather than emit invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


@contextlib.contextmanager
def stdout_for_json_only(as_json: bool) -> Iterator[None]:
    """Under --json, stdout holds the one JSON document: while the library runs, what it, a
    user's task or a worker process prints goes to stderr, both Python's `sys.stdout` and
    file descriptor 1 (which child processes inherit)."""
    if not as_json:
        yield
        return
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no descriptor 1 to keep clean
        saved = None
    if saved is not None:
        os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if saved is not None:
            sys.stderr.flush()
            os.dup2(saved, 1)
            os.close(saved)


def echo_json(document: Any) -> None:
    """One JSON document on stdout; floats keep full precision (repr round-trips)."""
    click.echo(json.dumps(json_safe(document), indent=2, default=str))


_HOME = click.option(
    "--home",
    envvar="SWEEPS_HOME",
    show_envvar=True,
    default="./sweeps-data",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Project directory for the default SQLite stores and artifacts.",
)
_STORAGE = click.option(
    "--storage",
    envvar="SWEEPS_STORAGE",
    show_envvar=True,
    default=None,
    help="Optuna storage and results tables URL [default: sqlite:///HOME/sweeps.db].",
)
_TRACKING = click.option(
    "--tracking-uri",
    envvar="SWEEPS_TRACKING_URI",
    show_envvar=True,
    default=None,
    help="MLflow tracking URI [default: sqlite:///HOME/mlflow.db], or http://host:5000.",
)


def store_options(f: F) -> F:
    """--home / --storage / --tracking-uri, for every command that writes or reads MLflow.
    The environment variables are the way to pass a URL with a password (not `ps`)."""
    for decorate in (_TRACKING, _STORAGE, _HOME):
        f = decorate(f)
    return f


def storage_options(f: F) -> F:
    """--home / --storage, for the commands that read the results tables only."""
    for decorate in (_STORAGE, _HOME):
        f = decorate(f)
    return f


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain aligned text table for humans (JSON is for machines)."""

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.6g}"
        return str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)
