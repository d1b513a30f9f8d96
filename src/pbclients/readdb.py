"""Reading a practice through the bare driver (sqlite3 or psycopg): no SQLAlchemy, no models.

The read commands (`list`, `show`, `plan`, `audit`, the completion of client
references, `browse`'s pages) run one or two indexed queries; importing
SQLAlchemy, SQLModel and pydantic to build them would cost ten times the
query. So they write SQL text against the tables the models define (the
models, through Alembic, stay the one definition of the schema; the tests run
every query here on both engines), with `?` placeholders, which a PostgreSQL
reader turns into psycopg's `%s`.

Values come back as the driver gives them; `utc()` reads a stored time the way
the models' `UTCDateTime` does, and `Reader.at()` writes one the way it stores
it, so comparisons match the ORM's to the microsecond.

A read-only command never takes the write lock: each `Database.read()` is one
plain transaction (one snapshot on SQLite), like `pbclients.db.reading`.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from pbclients.dbfile import (
    BUSY,
    POSTGRES_SCHEMES,
    is_busy,
    lock_timeout_seconds,
    postgres_options,
    require_writable,
)
from pbclients.errors import DatabaseBusy, UsageError
from pbclients.paths import is_url, shown

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlmodel import Session

SQLITE = "sqlite"
POSTGRESQL = "postgresql"


@lru_cache(maxsize=256)
def _for_psycopg(sql: str) -> str:
    # A literal % must be doubled for psycopg; none of the queries has a literal `?`.
    return sql.replace("%", "%%").replace("?", "%s")


@overload
def utc(value: None) -> None: ...
@overload
def utc(value: str | datetime) -> datetime: ...
def utc(value: Any) -> datetime | None:
    """A stored time as an aware UTC datetime, as `UTCDateTime` reads it back.

    SQLite holds text ('2026-11-30 09:00:00.000000'); PostgreSQL a timestamp without
    time zone. Both are UTC by the tool's own rule of writing.
    """
    if value is None:
        return None
    moment: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class Reader:
    """One open read: run SQL text with `?` placeholders and get the driver's rows."""

    def __init__(self, connection: Any, dialect: str) -> None:
        self._connection = connection
        self.dialect = dialect

    @classmethod
    def of(cls, session: Session) -> Reader:
        """A reader inside a session's own transaction (its connection, its snapshot).

        For the functions here that the write paths share: what a change checks is
        then read by the same statements as what `list` and `show` print.
        """
        connection = session.connection()
        return cls(connection.connection.dbapi_connection, connection.dialect.name)

    def at(self, moment: datetime) -> Any:
        """`moment` as the database stores times, to compare stored times with it."""
        naive = moment.astimezone(UTC).replace(tzinfo=None)
        if self.dialect == SQLITE:
            # SQLAlchemy's SQLite DATETIME storage format, microseconds always written.
            return naive.strftime("%Y-%m-%d %H:%M:%S.%f")
        return naive

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return list(self.iterate(sql, *params))

    def iterate(self, sql: str, *params: Any) -> Iterator[tuple[Any, ...]]:
        cursor = self._connection.cursor()
        try:
            cursor.execute(sql if self.dialect == SQLITE else _for_psycopg(sql), params)
            yield from cursor
        except Exception as error:
            _raise_busy(error)
            raise
        finally:
            cursor.close()

    def first(self, sql: str, *params: Any) -> tuple[Any, ...] | None:
        return next(iter(self.rows(sql, *params)), None)

    def scalar(self, sql: str, *params: Any) -> Any:
        row = self.first(sql, *params)
        return None if row is None else row[0]


def _raise_busy(error: Exception) -> None:
    """A lock held by a writer past the lock timeout is exit 5, as for every command."""
    if is_busy(error):
        raise DatabaseBusy(BUSY) from error


@dataclass(frozen=True)
class Database:
    """A practice whose schema was checked, opened for reading as often as needed."""

    dialect: str
    path: Path | None = None  # SQLite
    conninfo: str | None = None  # PostgreSQL, a libpq URL
    engine: Engine | None = None  # any other SQLAlchemy URL (sqlite:///...): its engine

    @contextmanager
    def read(self) -> Iterator[Reader]:
        """One read: a plain transaction (no lock), rolled back and closed at the end."""
        if self.engine is not None:
            pooled = self.engine.raw_connection()
            connection: Any = pooled.driver_connection
            close = pooled.close
        elif self.path is not None:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            connection.execute(f"PRAGMA busy_timeout = {int(lock_timeout_seconds() * 1000)}")
            close = connection.close
        else:
            connection = _connect_postgres(self.conninfo)
            close = connection.close
        if self.dialect == SQLITE:
            # One snapshot for every statement of the read, as a session's transaction.
            connection.execute("BEGIN")
        try:
            yield Reader(connection, self.dialect)
        finally:
            connection.rollback()
            close()


def sqlite_path(target: str) -> Path | None:
    """The file a plain --db path names, resolved; None for any URL."""
    return None if is_url(target) else Path(target).expanduser().resolve()


def open_database(target: str) -> Database:
    """The practice `target` names, checked (a practice, schema at head) without writing.

    The same checks, messages and exit codes as `schema.open_practice`: a SQLite file is
    probed read-only and must be writable (every command refuses one it could not
    change), a server database is inspected over the connection.
    """
    from pbclients import schema

    path = sqlite_path(target)
    if path is not None:
        schema.require_practice(schema.probe_sqlite(path), str(path))
        require_writable(path)
        return Database(SQLITE, path=path)
    scheme, rest = target.split("://", 1)
    if scheme not in POSTGRES_SCHEMES:
        return Database(SQLITE, engine=schema.open_practice(target))
    conninfo = f"postgresql://{rest}"
    connection = _connect_postgres(conninfo)
    try:
        found = _inspect_postgres(Reader(connection, POSTGRESQL))
    finally:
        connection.close()
    if found.kind is not schema.Kind.PRACTICE or found.current != schema.HEAD:
        schema.require_practice(found, shown(target))
    return Database(POSTGRESQL, conninfo=conninfo)


def _connect_postgres(conninfo: str | None) -> Any:
    try:
        import psycopg
    except ImportError:
        raise UsageError(
            "PostgreSQL needs the driver: install it with pip install 'pbclients[postgres]'."
        ) from None
    try:
        return psycopg.connect(conninfo or "", options=postgres_options())
    except psycopg.Error as error:
        problem = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(
            f"Cannot open the PostgreSQL server ({problem}); check --db or PBCLIENTS_DB."
        ) from error


def _inspect_postgres(reader: Reader) -> Any:
    """schema.inspect_connection for a bare psycopg connection: tables and views of the
    current schema (what SQLAlchemy's inspector lists), then the recorded revision."""
    from pbclients import schema

    names = {
        name
        for (name,) in reader.iterate(
            "SELECT c.relname FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v')"
        )
    }
    current = None
    if schema.kind_of(names) is schema.Kind.PRACTICE and "alembic_version" in names:
        versions = [v for (v,) in reader.iterate("SELECT version_num FROM alembic_version")]
        current = ",".join(sorted(versions)) or None
    return schema.inspection(names, current)


def is_driver_error(error: BaseException) -> bool:
    """A SQLAlchemy DBAPIError, told without importing SQLAlchemy: if its module was never
    imported, nothing could have raised one."""
    exc = sys.modules.get("sqlalchemy.exc")
    return exc is not None and isinstance(error, exc.DBAPIError)


def placeholders(count: int) -> str:
    """`?, ?, ?` for an IN list of `count` values."""
    return ", ".join("?" * count)
