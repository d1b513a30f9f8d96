"""Engines and transactions for SQLite (embedded default) and PostgreSQL.

Every write runs in one transaction that takes the write lock up front
(SQLite `BEGIN IMMEDIATE`), so a command either applies all of its changes or
none, and a busy database is reported as exit 5 instead of a half-done run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    MetaData,
    Table,
    create_engine,
    event,
    text,
)
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session

from pbclients.errors import DatabaseBusy, UsageError
from pbclients.paths import is_url, touch_private

_WRITE = "pbclients_write"


def lock_timeout_seconds() -> float:
    """How long a command waits for another writer before giving up with exit 5."""
    raw = os.environ.get("PBCLIENTS_LOCK_TIMEOUT", "10")
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise UsageError(f"PBCLIENTS_LOCK_TIMEOUT={raw!r} is not a number of seconds.") from None


def sqlalchemy_url(target: str) -> str:
    if not is_url(target):
        return f"sqlite:///{Path(target).expanduser().resolve()}"
    scheme, rest = target.split("://", 1)
    if scheme in ("postgres", "postgresql", "postgresql+psycopg"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise UsageError(
                "PostgreSQL needs the driver: install it with pip install 'pbclients[postgres]'."
            ) from None
        return f"postgresql+psycopg://{rest}"
    if scheme.startswith("sqlite"):
        return target
    raise UsageError(
        f"--db {target!r} is neither a file path nor a postgresql:// URL; give one of those."
    )


def database_exists(target: str) -> bool:
    return is_url(target) or Path(target).expanduser().exists()


def make_engine(target: str, *, create: bool = False) -> Engine:
    """An engine for a file path or URL; `create` allows a new SQLite file (mode 0600)."""
    url = sqlalchemy_url(target)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url.removeprefix("sqlite:///"))
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
    if url.startswith("postgresql"):
        timeout_ms = int(lock_timeout_seconds() * 1000)
        return create_engine(
            url,
            connect_args={"options": f"-c lock_timeout={timeout_ms} -c TimeZone=UTC"},
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
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        writes = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


def is_sqlite(engine_or_session: Engine | Session) -> bool:
    bind = (
        engine_or_session.get_bind()
        if isinstance(engine_or_session, Session)
        else engine_or_session
    )
    return bind.dialect.name == "sqlite"


def _is_busy(error: DBAPIError) -> bool:
    if isinstance(error, OperationalError) and "locked" in str(error.orig).lower():
        return True
    # PostgreSQL: lock_not_available (lock_timeout), and could-not-serialize.
    return getattr(error.orig, "sqlstate", None) in ("55P03", "40001", "40P01")


@contextmanager
def translate_busy() -> Iterator[None]:
    try:
        yield
    except DBAPIError as error:
        if _is_busy(error):
            raise DatabaseBusy(
                "The database is busy (another pbclients run or the portal holds it); "
                "nothing was changed, try again in a moment."
            ) from error
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
