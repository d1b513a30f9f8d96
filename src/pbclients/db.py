"""Engines and transactions for SQLite (embedded default) and PostgreSQL.

Every write runs in one transaction that takes the write lock up front
(SQLite `BEGIN IMMEDIATE`), so a command either applies all of its changes or
none, and a busy database is reported as exit 5 instead of a half-done run.

A file given as --db may be anything: another application's SQLite database,
an empty file, a text file. It is looked at through `read_only_connection` (SQLite
`mode=ro`, no pragmas) until the schema check has passed, and the write engine
switches a file to WAL only when it is empty or already holds pbclients tables:
`PRAGMA journal_mode = WAL` rewrites the file's header, so running it on a file
that is then refused would change someone else's database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Engine,
    MetaData,
    Table,
    bindparam,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine
from sqlmodel import Session

from pbclients.dbfile import (
    BUSY,
    POSTGRES_SCHEMES,
    READ_ONLY,
    is_busy,
    lock_timeout_seconds,
    postgres_options,
    read_only_connection,
)
from pbclients.errors import DatabaseBusy, UsageError
from pbclients.paths import is_url, touch_private

_WRITE = "pbclients_write"


def sqlalchemy_url(target: str) -> URL:
    if not is_url(target):
        # Built, not parsed: a file name may hold "?", "#" or "%", which a URL string would
        # read as its query, fragment or an escape and so open a different file.
        return URL.create("sqlite", database=str(Path(target).expanduser().resolve()))
    scheme, rest = target.split("://", 1)
    if scheme in POSTGRES_SCHEMES:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise UsageError(
                "PostgreSQL needs the driver: install it with pip install 'pbclients[postgres]'."
            ) from None
        return make_url(f"postgresql+psycopg://{rest}")
    if scheme.startswith("sqlite"):
        return make_url(target)
    raise UsageError(
        f"--db {target!r} is neither a file path nor a postgresql:// URL; give one of those."
    )


def database_exists(target: str) -> bool:
    return is_url(target) or Path(target).expanduser().exists()


def sqlite_file(target: str) -> Path | None:
    """The file a SQLite --db names (resolved), or None for a server URL or :memory:."""
    return _file_of(sqlalchemy_url(target))


def _file_of(url: URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def read_only_engine(path: Path) -> Engine:
    """An engine over `read_only_connection`: for reads through SQLAlchemy, never writes."""
    from sqlalchemy.pool import NullPool

    return create_engine(
        "sqlite://", creator=lambda: read_only_connection(path), poolclass=NullPool
    )


def make_engine(target: str, *, create: bool = False) -> Engine:
    """An engine for a file path or URL; `create` allows a new SQLite file (mode 0600)."""
    url = sqlalchemy_url(target)
    path = _file_of(url)
    if path is not None:
        if not path.exists():
            if not create:
                raise UsageError(
                    f"There is no practice database at {path}; create it with "
                    "`pbclients init` or point --db at an existing one."
                )
            touch_private(path)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        _configure_sqlite(engine)
        return engine
    if url.get_backend_name() == "postgresql":
        return create_engine(
            url,
            connect_args={"options": postgres_options()},
            pool_pre_ping=True,
        )
    engine = create_engine(url)
    _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    busy_ms = int(lock_timeout_seconds() * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event below decide how each transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = NORMAL")
        if _may_switch_to_wal(cursor):
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        writes = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


def _may_switch_to_wal(cursor: sqlite3.Cursor) -> bool:
    """Only an empty database or one that holds pbclients tables gets WAL (a header write).

    The schema check refuses anything else before it is written; this keeps a
    refused file byte-for-byte unchanged whichever code path opened it.
    """
    from pbclients.schema import Kind, kind_of

    names = cursor.execute(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
        "AND name NOT LIKE 'sqlite~_%' ESCAPE '~'"
    ).fetchall()
    return kind_of({name for (name,) in names}) is not Kind.FOREIGN


def is_sqlite(engine_or_session: Engine | Session) -> bool:
    bind = (
        engine_or_session.get_bind()
        if isinstance(engine_or_session, Session)
        else engine_or_session
    )
    return bind.dialect.name == "sqlite"


def _is_busy(error: DBAPIError) -> bool:
    return error.orig is not None and is_busy(error.orig)


def _is_read_only(error: DBAPIError) -> bool:
    """The database cannot be written: a read-only file, folder or file system, or a
    PostgreSQL read-only transaction (a standby, default_transaction_read_only)."""
    if getattr(error.orig, "sqlstate", None) == "25006":
        return True
    if not isinstance(error, OperationalError):
        return False
    message = str(error.orig).lower()
    return "readonly database" in message or "read-only file system" in message


@contextmanager
def translate_busy() -> Iterator[None]:
    """Turn a busy database into exit 5 and a read-only one into exit 2."""
    try:
        yield
    except DBAPIError as error:
        if _is_busy(error):
            raise DatabaseBusy(BUSY) from error
        if _is_read_only(error):
            raise UsageError(READ_ONLY) from error
        raise


@contextmanager
def reading(engine: Engine) -> Iterator[Session]:
    with translate_busy(), Session(engine, expire_on_commit=False) as session:
        yield session


@contextmanager
def writing(engine: Engine) -> Iterator[Session]:
    """One all-or-nothing transaction holding the write lock from its first statement."""
    bind = engine.execution_options(**{_WRITE: True})
    with translate_busy(), Session(bind, expire_on_commit=False) as session, session.begin():
        yield session


def load_ids(session: Session, ids: Iterable[int]) -> Table:
    """Fill a temporary one-column table with client ids for set-based statements.

    Joining against it keeps bulk work to a few statements however many
    clients a command touches, on SQLite and PostgreSQL alike.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text(
                "CREATE TEMPORARY TABLE IF NOT EXISTS pb_ids (id BIGINT PRIMARY KEY) "
                "ON COMMIT DELETE ROWS"
            )
        )
    else:
        session.execute(
            text("CREATE TEMPORARY TABLE IF NOT EXISTS pb_ids (id INTEGER PRIMARY KEY)")
        )
    session.execute(text("DELETE FROM pb_ids"))
    values = list(ids)
    if values:
        # Straight to the driver: per-row parameter handling would dominate bulk commands.
        connection = session.connection()
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(
                "INSERT INTO pb_ids (id) SELECT unnest(%(ids)s::bigint[])", {"ids": values}
            )
        else:
            connection.exec_driver_sql(
                "INSERT INTO pb_ids (id) VALUES (?)", [(value,) for value in values]
            )
    return _ID_TABLE


_ID_TABLE = Table("pb_ids", MetaData(), Column("id", BigInteger, primary_key=True))


class SqlCondition(ColumnElement[bool]):
    """A WHERE condition written as SQL text with `?` placeholders, for Core queries.

    The bare-driver readers (pbclients.readdb) and the write paths then share one
    statement text (activity's inactivity test); unlike `text()`, it is a boolean
    column element, so it can be negated and combined like any other condition.
    """

    type = Boolean()
    # Built per call around its values; nothing to gain from caching the statement.
    inherit_cache = False

    def __init__(self, sql: str, values: Sequence[tuple[Any, TypeEngine[Any]]]) -> None:
        self.sql = sql
        self.values = [
            bindparam(None, value, type_=value_type, unique=True) for value, value_type in values
        ]


@compiles(SqlCondition)
def _compile_condition(element: SqlCondition, compiler: SQLCompiler, **kw: Any) -> str:
    pieces = element.sql.split("?")
    compiled = [pieces[0]]
    for value, piece in zip(element.values, pieces[1:], strict=True):
        compiled += [compiler.process(value, **kw), piece]
    return f"({''.join(compiled)})"
