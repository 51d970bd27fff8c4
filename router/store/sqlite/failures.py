"""What is wrong with a database file, its folder or its disk, said in one line (a StoreError).

SQLite and the OS report these as error codes (`sqlite3.Error.sqlite_errorcode`, `errno`);
the user needs the file, the cause and what to do. Errors that are not about the file (a
busy lock, a constraint, a bug) are left as they are.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path
from types import TracebackType

from ...errors import StoreError, StoreFullError

# SQLite's primary result codes (the low byte of an extended code), from sqlite3.h.
SQLITE_PERM = 3
SQLITE_READONLY = 8
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
SQLITE_NOTADB = 26
SQLITE_READONLY_DIRECTORY = SQLITE_READONLY | (6 << 8)

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def store_error(path: Path, exc: BaseException) -> StoreError | None:
    """The StoreError that says what `exc`, met on the database at `path`, means; None when
    `exc` is not about the file, its folder or its disk."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, sqlite3.Error):
        return _from_sqlite(path, exc)
    if isinstance(exc, OSError):
        return _from_os(path, exc)
    return None


def _from_sqlite(path: Path, exc: sqlite3.Error) -> StoreError | None:
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(code, int):
        return None
    reason = str(exc)
    primary = code & 0xFF
    if primary == SQLITE_FULL:
        return StoreFullError(f"{path}: the disk is full ({reason}); free some space and try again")
    if primary == SQLITE_NOTADB:
        return StoreError(f"{path}: not a SQLite database ({reason})")
    if primary == SQLITE_CORRUPT:
        return StoreError(f"{path}: the database is corrupt ({reason}); restore it from a backup")
    if code == SQLITE_READONLY_DIRECTORY:
        return StoreError(f"{path}: the folder {_folder(path)} is not writable ({reason})")
    if primary == SQLITE_READONLY:
        return StoreError(f"{path}: the file is not writable ({reason})")
    if primary == SQLITE_CANTOPEN:
        return StoreError(f"{path}: the database file cannot be opened ({reason})")
    if primary in (SQLITE_IOERR, SQLITE_PERM):
        return StoreError(f"{path}: the disk failed to read or write it ({reason})")
    return None


def _from_os(path: Path, exc: OSError) -> StoreError:
    reason = _lower_first(exc.strerror or str(exc))
    if exc.errno in _FULL_ERRNOS:
        return StoreFullError(f"{path}: the disk is full ({reason}); free some space and try again")
    if exc.errno in (errno.EACCES, errno.EPERM):
        if os.path.lexists(path):
            return StoreError(f"{path}: the file is not writable ({reason})")
        return StoreError(f"{path}: the folder {_folder(path)} is not writable ({reason})")
    if exc.errno == errno.EROFS:
        return StoreError(f"{path}: the folder {_folder(path)} is on a read-only file system")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):  # EEXIST: mkdir met a file where a folder goes
        blocker = next((p for p in _ancestors(path) if os.path.lexists(p) and not os.path.isdir(p)), None)
        if blocker is not None:
            return StoreError(f"{path}: {blocker} is a file, not a folder")
    if exc.errno == errno.EISDIR:
        return StoreError(f"{path}: this is a folder, not a database file")
    return StoreError(f"{path}: {reason}")


def _ancestors(path: Path) -> list[Path]:
    """The folders above `path`, nearest last (the order in which a walk down meets them)."""
    return list(reversed(path.absolute().parents))


def _folder(path: Path) -> Path:
    """The nearest existing folder above `path`: the one a new file or folder would go in."""
    for parent in path.absolute().parents:
        if os.path.isdir(parent):
            return parent
    return path.absolute().parent


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


class StoreErrors:
    """`with StoreErrors(path):` lets file, folder and disk errors out as the StoreError for
    them; anything else passes unchanged. A class, not a generator: it wraps hot reads too."""

    __slots__ = ("path",)

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, (OSError, sqlite3.Error)):
            error = store_error(self.path, exc)
            if error is not None:
                raise error from exc
