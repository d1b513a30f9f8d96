"""Copy a whole practice into a new database: SQLite -> PostgreSQL (or back).

Everything is written in one transaction on the target, whose schema is built by
the same migrations in that transaction: a copy that fails or does not add up leaves
the target as it was. Rows stream in batches (one multi-row insert per batch,
never a round trip per row), in foreign-key order, and every table's count is
checked against the source before the transaction commits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, Integer, Table, func, insert, inspect, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError
from sqlmodel import SQLModel

from pbclients import faults, models  # noqa: F401  (models registers the tables)
from pbclients.db import (
    _WRITE,
    _is_busy,
    database_exists,
    make_engine,
    read_only_engine,
    sqlalchemy_url,
    sqlite_file,
    translate_busy,
)
from pbclients.dbfile import require_writable
from pbclients.errors import BadInput, PbClientsError, UsageError
from pbclients.paths import is_url, shown
from pbclients.schema import (
    Kind,
    head_revision,
    listed,
    probe_sqlite,
    require_schema,
    require_writable_folder,
    upgrade_connection,
    what_it_holds,
)

BATCH_ROWS = 2000

# Serialises copies and `init` on one PostgreSQL database (the same key as schema.init_schema).
_INIT_LOCK = 7310002


class CopyFailed(PbClientsError):
    """The copied rows do not add up; the target transaction was rolled back."""


@dataclass(frozen=True)
class TableCount:
    table: str
    rows: int


@dataclass(frozen=True)
class CopyReport:
    source: str
    target: str
    revision: str
    tables: list[TableCount]
    dry_run: bool = False

    @property
    def total(self) -> int:
        return sum(t.rows for t in self.tables)

    def rows(self, table: str) -> int:
        return next(t.rows for t in self.tables if t.table == table)

    def as_record(self) -> dict[str, object]:
        return {
            "source": self.source,
            "target": self.target,
            "revision": self.revision,
            "tables": {t.table: t.rows for t in self.tables},
            "total": self.total,
            "copied": not self.dry_run,
        }


def tables() -> list[Table]:
    """Every pbclients table, parents before the tables that refer to them."""
    return list(SQLModel.metadata.sorted_tables)


def describe(engine: Engine) -> str:
    """The database an engine opens, as a person would name it."""
    if engine.dialect.name == "sqlite":
        return str(engine.url.database)
    return engine.url.render_as_string(hide_password=True)


@contextmanager
def _opening(target: str) -> Iterator[None]:
    """A target that cannot be reached is a wrong --to, not an unexpected error."""
    try:
        yield
    except OperationalError as error:
        if _is_busy(error):
            raise
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise UsageError(
            f"Cannot open {shown(target)} ({reason}); nothing was copied, check the URL "
            "and that the database exists (create it with createdb)."
        ) from None


def _counts(connection: Connection) -> list[TableCount]:
    return [
        TableCount(table.name, connection.execute(select(func.count()).select_from(table)).one()[0])
        for table in tables()
    ]


@contextmanager
def _snapshot(source: Engine) -> Iterator[Connection]:
    """A read of the source that sees one moment and that no writer changes meanwhile."""
    with translate_busy():
        if source.dialect.name == "sqlite":
            # The write lock keeps other pbclients runs out until the copy is done.
            with (
                source.execution_options(**{_WRITE: True}).connect() as connection,
                connection.begin(),
            ):
                yield connection
        else:
            with source.connect() as connection:
                connection = connection.execution_options(isolation_level="REPEATABLE READ")
                with connection.begin():
                    yield connection


def _same_database(source: Engine, target: Engine) -> bool:
    return _same_url(source.url, target.url)


def _same_url(source: URL, target: URL) -> bool:
    return source.render_as_string(hide_password=False) == target.render_as_string(
        hide_password=False
    )


def _require_empty(connection: Connection, target: str) -> None:
    names = set(inspect(connection).get_table_names())
    ours = {table.name for table in tables()}
    other = sorted(names - ours - {"alembic_version"})
    if other:
        _refuse_other_tables(target, other)
    for table in tables():
        if table.name in names and connection.execute(select(table).limit(1)).first():
            raise BadInput(
                f"{shown(target)} already holds a pbclients practice (its {table.name} table "
                "has rows); nothing was copied, give a new, empty database."
            )


def _check_target(source: Engine, target: str) -> None:
    """Refuse a target that is the source, not empty, or not ours, without writing to it.

    A SQLite target is read through a read-only connection (`mode=ro`, no WAL switch),
    so a refused file (another application's database, a text file) is left
    byte-for-byte as it was.
    """
    if _same_url(source.url, sqlalchemy_url(target)):
        raise BadInput("The target is the database being copied; give a new database.")
    path = sqlite_file(target)
    if path is None:
        engine = make_engine(target)
        try:
            with _opening(target), translate_busy(), engine.connect() as connection:
                _require_empty(connection, target)
        finally:
            engine.dispose()
        return
    if not path.exists():
        require_writable_folder(path)
        return
    found = probe_sqlite(path)
    if found.kind is Kind.FOREIGN:
        if found.problem:
            raise BadInput(
                f"{shown(target)} is not an empty database ({what_it_holds(found)}); nothing was "
                "copied, give a new, empty database."
            )
        _refuse_other_tables(target, found.others)
    require_writable(path)
    if found.kind is Kind.NEW:
        return
    reader = read_only_engine(path)
    try:
        with _opening(target), translate_busy(), reader.connect() as connection:
            _require_empty(connection, target)
    finally:
        reader.dispose()


def _refuse_other_tables(target: str, other: Sequence[str]) -> None:
    raise BadInput(
        f"{shown(target)} already holds other tables ({listed(other)}); nothing was copied, "
        "give a new, empty database."
    )


def plan_copy(source: Engine, target: str) -> CopyReport:
    """What a copy would write, after checking the target is new or empty; writes nothing."""
    require_schema(source)
    with _snapshot(source) as connection:
        counts = _counts(connection)
    _check_target(source, target)
    return CopyReport(describe(source), shown(target), head_revision(), counts, True)


def _fix_sequences(connection: Connection) -> None:
    """Rows came with their ids; move each id sequence past them so new rows fit after."""
    for table in tables():
        key = list(table.primary_key.columns)
        if len(key) != 1 or not isinstance(key[0].type, Integer):
            continue
        connection.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', '{key[0].name}'), "
                f"COALESCE((SELECT MAX({key[0].name}) FROM {table.name}), 0) + 1, false)"
            )
        )


def _copy_table(source: Connection, target: Connection, table: Table) -> int:
    copied = 0
    query = select(table).order_by(*table.primary_key.columns)
    result = source.execution_options(yield_per=BATCH_ROWS).execute(query)
    for rows in result.mappings().partitions():
        target.execute(insert(table), [dict(row) for row in rows])
        copied += len(rows)
    return copied


def copy_practice(
    source: Engine, target: str, *, on_table: Callable[[str, int], None] | None = None
) -> CopyReport:
    """Copy every table of `source` into `target` (new or empty) in one target transaction.

    The target's schema is created by the migrations in the same transaction, and each
    table's row count is verified against the source before it commits.
    """
    require_schema(source)
    _check_target(source, target)
    created = not database_exists(target)
    engine = make_engine(target, create=True)
    try:
        if _same_database(source, engine):
            raise BadInput("The target is the database being copied; give a new database.")
        with _opening(target), engine.connect():
            pass
        with (
            _snapshot(source) as reader,
            translate_busy(),
            engine.execution_options(**{_WRITE: True}).begin() as writer,
        ):
            if writer.dialect.name == "postgresql":
                writer.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _INIT_LOCK})
            _require_empty(writer, target)
            upgrade_connection(writer)
            counts = []
            for table in tables():
                expected = reader.execute(select(func.count()).select_from(table)).one()[0]
                copied = _copy_table(reader, writer, table)
                landed = writer.execute(select(func.count()).select_from(table)).one()[0]
                if not expected == copied == landed:
                    raise CopyFailed(
                        f"Table {table.name}: {expected} rows in the source but {landed} in the "
                        "target; the copy was rolled back, nothing was written."
                    )
                counts.append(TableCount(table.name, landed))
                if on_table is not None:
                    on_table(table.name, landed)
            if writer.dialect.name == "postgresql":
                _fix_sequences(writer)
            faults.checkpoint("dbcopy.copied")
    except BaseException:
        engine.dispose()
        if created and not is_url(target):
            # Leave nothing behind, not even an empty file, when the copy did not happen.
            for suffix in ("", "-wal", "-shm"):
                with suppress(FileNotFoundError):
                    Path(f"{Path(target).expanduser()}{suffix}").unlink()
        raise
    engine.dispose()
    return CopyReport(describe(source), shown(target), head_revision(), counts)
