"""The SQLite file and the lock wait, without SQLAlchemy: what every command needs first.

The read commands (`pbclients.readdb`) and the schema check use these before, or
instead of, an engine, so they cost no SQLAlchemy import.
"""

from __future__ import annotations

import math
import os
import sqlite3
from pathlib import Path

from pbclients.errors import UsageError

BUSY = (
    "The database is busy (another pbclients run or the portal holds it); "
    "nothing was changed, try again in a moment."
)
# The URL schemes --db takes for PostgreSQL (psycopg 3 is the driver).
POSTGRES_SCHEMES = ("postgres", "postgresql", "postgresql+psycopg")

# PostgreSQL's lock_not_available (lock_timeout), serialization_failure, deadlock_detected.
_BUSY_STATES = ("55P03", "40001", "40P01")

READ_ONLY = (
    "The database is read-only for pbclients (a read-only file, folder or server); "
    "nothing was changed, make it writable or point --db at a writable copy."
)

SQLITE_MAGIC = b"SQLite format 3\x00"
# Byte 18 of a SQLite header ("file format write version") is 2 in WAL mode.
_WAL_HEADER_BYTE = 18


def lock_timeout_seconds() -> float:
    """How long a command waits for another writer before giving up with exit 5."""
    raw = os.environ.get("PBCLIENTS_LOCK_TIMEOUT", "10")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    # A day is longer than any cron run waits; inf and nan would overflow the drivers.
    if not 0 <= seconds <= 86_400:
        raise UsageError(
            f"PBCLIENTS_LOCK_TIMEOUT={raw!r} is not a number of seconds from 0 to 86400."
        )
    return seconds


def sqlite_header(path: Path) -> bytes:
    """The first 100 bytes of a file (its SQLite header if it is a SQLite database)."""
    with path.open("rb") as file:
        return file.read(100)


def read_only_connection(path: Path) -> sqlite3.Connection:
    """A connection that cannot change `path`: SQLite `mode=ro`, and no pragma that writes.

    A database in WAL mode whose -wal file is absent is opened `immutable=1`:
    reading it with plain `mode=ro` would create -wal and -shm files beside it and
    leave them there. Without a -wal file the main file holds every committed page,
    so nothing is missed; when one exists (another process has the database open),
    `mode=ro` reads through it and creates nothing new.
    """
    from urllib.parse import quote

    header = sqlite_header(path)
    wal_mode = len(header) > _WAL_HEADER_BYTE and header[_WAL_HEADER_BYTE] == 2
    flags = "mode=ro"
    if wal_mode and not Path(f"{path}-wal").exists():
        flags += "&immutable=1"
    connection = sqlite3.connect(
        f"file:{quote(str(path))}?{flags}", uri=True, check_same_thread=False
    )
    connection.execute(f"PRAGMA busy_timeout = {int(lock_timeout_seconds() * 1000)}")
    return connection


def require_writable(path: Path) -> None:
    """Refuse (exit 2) a database file or folder this process cannot write.

    SQLite writes the file and creates its -wal, -shm and journal files in the same
    folder; without that every command would fail half-way with a raw SQLite error.
    """
    problem = None
    if not os.access(path, os.R_OK | os.W_OK):
        problem = "the file is read-only for you"
    elif not os.access(path.parent, os.W_OK | os.X_OK):
        problem = "its folder is read-only for you, and SQLite writes its -wal and -shm files there"
    if problem:
        raise UsageError(
            f"Cannot use {path}: {problem}; nothing was changed, make the file and its folder "
            "writable (or copy the database somewhere writable) and try again."
        )


def is_busy(driver_error: BaseException) -> bool:
    """A driver's error that means another writer holds the lock (exit 5, try again)."""
    if isinstance(driver_error, sqlite3.OperationalError):
        return "locked" in str(driver_error).lower()
    return getattr(driver_error, "sqlstate", None) in _BUSY_STATES


def postgres_options() -> str:
    """Session settings of every PostgreSQL connection: wait for locks as long as SQLite
    does, and read times in UTC, as they are stored."""
    return f"-c lock_timeout={int(lock_timeout_seconds() * 1000)} -c TimeZone=UTC"
