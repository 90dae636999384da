"""Files written where the user says (`sweeps export -o FILE`): written whole, and never
over what the study keeps.

A path is compared with the stores by where it really leads (symlinks and `..` resolved,
and by inode where both exist, so a hard link is caught too). Refused, with one line:
  - one of the stores' files (`Stores.owned_files`: the SQLite stores and SQLite's files
    beside them, HOME's defaults, the UI's log) or a file in MLflow's artifacts folder;
  - anything that is not a regular file: a directory, a device, a FIFO. Renaming over a
    device would replace it (as root, /dev/full itself); standard output is `-o -` or no
    `-o` at all, or a shell redirection.
A symlink named by `-o` is followed: the file it leads to is replaced, the link is kept.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from sweeps.errors import UsageError
from sweeps.storage import Stores

STDOUT = "-"  # `-o -`: standard output, as without -o


def output_path(path: str, stores: Stores) -> Path:
    """The file to write for `-o path`: its real path, once it is none of the stores'
    files and not a device or a directory (UsageError, one line, otherwise)."""
    try:
        st: os.stat_result | None = os.stat(path)  # through symlinks, /dev/stdout's too
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise UsageError(f"-o {path!r} cannot be used: {e.strerror}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UsageError(f"-o {path!r} is a directory; name a file in it")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UsageError(
            f"-o {path!r} is not a regular file (a device or a pipe); leave out -o, or give"
            " -o -, to write to standard output"
        )
    real = Path(os.path.realpath(path))
    what = _owner(real, st, stores)
    if what is not None:
        raise UsageError(f"-o {path!r} is {what}; write the export to another file")
    return real


def _owner(real: Path, st: os.stat_result | None, stores: Stores) -> str | None:
    """What of the stores' `real` is, or None."""
    for owned, what in stores.owned_files().items():
        if Path(os.path.realpath(owned)) == real or _same_inode(st, owned):
            return f"{what} {owned}"
    for folder, what in stores.owned_folders().items():
        if real.is_relative_to(os.path.realpath(folder)):
            return f"in {what} {folder}"
    return None


def _same_inode(st: os.stat_result | None, other: Path) -> bool:
    if st is None:
        return False
    try:
        theirs = os.stat(other)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (theirs.st_dev, theirs.st_ino)


def write_whole(target: Path, text: str) -> None:
    """Write to a temporary file beside `target` and rename: never a half-written file."""
    shown = str(target)
    if not target.parent.is_dir():
        raise UsageError(f"directory {str(target.parent)!r} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as e:
        raise UsageError(f"cannot write {shown!r}: {e.strerror}") from None
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
        raise UsageError(f"cannot write {shown!r}: {e.strerror}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
