"""Another library's log records as our one-line warnings, each kind once per process.

MLflow logs a database error with its whole traceback (SQLAlchemy's chain: 100 lines and
more), once per failed call: a server restarting or a full disk would flood stderr with
the same failure again and again. `OneLinePerKind` writes a record as one line on stderr
(`sweeps: warning: mlflow: ...`, passwords masked), and a kind of record (its logger, its
message's template and its exception's type) only the first time.
"""

from __future__ import annotations

import logging
import sys
import threading

from sweeps.errors import mask_secrets


class OneLinePerKind(logging.Handler):
    """See the module docstring."""

    def __init__(self, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self._seen: set[tuple[str, str, str]] = set()
        self._seen_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        kind = (record.name, str(record.msg), type(error).__name__)
        with self._seen_lock:
            if kind in self._seen:
                return
            self._seen.add(kind)
        try:
            text = _first_line(record.getMessage())
            if error is not None:
                text += f" ({type(error).__name__}: {_first_line(str(error))})"
            library = record.name.split(".", 1)[0]
            sys.stderr.write(f"sweeps: warning: {library}: {mask_secrets(text)}\n")
        except Exception:
            self.handleError(record)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def one_line_per_kind(*names: str) -> None:
    """The loggers `names` write through one `OneLinePerKind` only (their own handlers
    replaced, nothing passed to the root logger's)."""
    handler = OneLinePerKind()
    for name in names:
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
        if logger.level == logging.NOTSET or logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)
