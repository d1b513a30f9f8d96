"""Creating, upgrading and checking the schema of a practice database.

The schema is versioned with Alembic (revisions in pbclients/migrations,
shipped with the package) and run from code: `init` upgrades a database to
the newest revision in one transaction, on SQLite and PostgreSQL alike, and
every other command refuses to touch a database whose schema is missing or
behind, rather than fail halfway through with an SQL error.

Before any of that, a database is recognised for what it is (`Kind`): new and
empty, a pbclients practice, or something else (another application's tables,
a file that is not SQLite at all). SQLite files are looked at read-only, and a
database that is not ours is refused before anything is written to it: other
commands exit 2, and `init` exits 3, since turning someone else's database into
a practice is a decision to take separately (give `init` a new file).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from enum import Enum
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, NoReturn

from pbclients.dbfile import SQLITE_MAGIC, read_only_connection, require_writable, sqlite_header
from pbclients.errors import BadInput, UsageError
from pbclients.paths import shown

# SQLAlchemy is imported by the functions that use it: the read commands check a
# database's kind and revision through here without it (pbclients.readdb).
if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy import Connection, Engine

SCRIPT_LOCATION = "pbclients:migrations"

# The newest revision in pbclients/migrations/versions. Every command checks the
# database against it, so it is a constant here instead of loading Alembic each time;
# a test checks it is Alembic's head (update it with each new migration).
HEAD = "0006"

# The revision whose schema equals what pbclients made before it had migrations
# (tables created straight from the models, no alembic_version table).
BASELINE = "0001"
BASELINE_TABLES = frozenset(
    {
        "appointment", "audit_event", "client", "document", "enrolment", "form_request",
        "journal_entry", "message", "notification", "payment_method", "payment_plan",
        "program", "protocol", "session_note", "setting",
    }
)  # fmt: skip

# Tables a pbclients database has at every revision (with alembic_version): what tells a
# practice from another application's database that also uses Alembic.
CORE_TABLES = frozenset({"client", "audit_event", "setting"})

# Serialises concurrent `init` runs on one PostgreSQL database.
_INIT_LOCK = 7310002


class Kind(Enum):
    """What a database holds, as far as pbclients is concerned."""

    NEW = "new"  # no tables at all: a 0-byte file, a fresh `createdb`
    PRACTICE = "practice"  # a pbclients schema (any revision, or from before migrations)
    PARTIAL = "partial"  # only some pbclients tables and nothing else
    FOREIGN = "foreign"  # other tables, or not a SQLite database at all


class Inspection(NamedTuple):
    kind: Kind
    current: str | None = None  # the schema revision, "pre-migrations", or None
    others: tuple[str, ...] = ()  # tables that are not ours (FOREIGN)
    problem: str | None = None  # why it is not a database at all (FOREIGN)


def kind_of(names: set[str]) -> Kind:
    """Classify a database by the names of its tables and views."""
    if not names:
        return Kind.NEW
    if names >= BASELINE_TABLES or ("alembic_version" in names and names >= CORE_TABLES):
        return Kind.PRACTICE
    if names <= BASELINE_TABLES:
        return Kind.PARTIAL
    return Kind.FOREIGN


def inspect_connection(connection: Connection) -> Inspection:
    """What the database behind `connection` holds; reads only."""
    from sqlalchemy import inspect

    inspector = inspect(connection)
    names = set(inspector.get_table_names()) | set(inspector.get_view_names())
    practice = kind_of(names) is Kind.PRACTICE
    return inspection(names, current_revision(connection) if practice else None)


def inspection(names: set[str], current: str | None) -> Inspection:
    kind = kind_of(names)
    if kind is Kind.FOREIGN:
        others = sorted(names - BASELINE_TABLES - {"alembic_version"}) or sorted(names)
        return Inspection(kind, others=tuple(others))
    if kind is not Kind.PRACTICE:
        return Inspection(kind)
    if current is None and "alembic_version" not in names:
        current = "pre-migrations"
    return Inspection(kind, current)


def probe_sqlite(path: Path) -> Inspection:
    """What a SQLite file holds, read without writing a byte (no WAL switch, no -wal/-shm)."""
    if not path.exists():
        raise UsageError(
            f"There is no practice database at {path}; create it with "
            "`pbclients init` or point --db at an existing one."
        )
    try:
        header = sqlite_header(path)
    except IsADirectoryError:
        return Inspection(Kind.FOREIGN, problem="it is a folder")
    except PermissionError:
        raise UsageError(
            f"Cannot read {path} (permission denied); check its permissions or --db."
        ) from None
    if not header:
        return Inspection(Kind.NEW)
    if not header.startswith(SQLITE_MAGIC):
        return Inspection(Kind.FOREIGN, problem="not a SQLite database file")
    # Plain sqlite3 rather than an engine and SQLAlchemy's inspector: every command
    # runs this first, and it costs a fraction of a millisecond this way.
    try:
        connection = read_only_connection(path)
    except sqlite3.Error as error:
        _raise_as_dbapi_error(error)
    try:
        names = {
            name
            for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                "AND name NOT LIKE 'sqlite~_%' ESCAPE '~'"
            )
        }
        current = None
        if kind_of(names) is Kind.PRACTICE and "alembic_version" in names:
            versions = connection.execute("SELECT version_num FROM alembic_version").fetchall()
            current = ",".join(sorted(v for (v,) in versions)) or None
    except sqlite3.OperationalError as error:
        # A file that cannot be read (a hot journal it may not roll back, a lock).
        _raise_as_dbapi_error(error)
    except sqlite3.DatabaseError as error:
        # A damaged or encrypted file, or an application's own SQLite variant.
        return Inspection(Kind.FOREIGN, problem=str(error).strip().splitlines()[0])
    finally:
        connection.close()
    return inspection(names, current)


def _raise_as_dbapi_error(error: sqlite3.Error) -> NoReturn:
    """sqlite3's error in SQLAlchemy's clothes, as the callers' handlers expect: a lock
    is exit 5 like any busy database, anything else "Cannot open" (exit 2)."""
    from sqlalchemy.exc import OperationalError

    from pbclients.db import translate_busy

    with translate_busy():
        raise OperationalError("open the database read-only", None, error) from error
    raise AssertionError("unreachable: translate_busy re-raises")


def inspect_target(target: str, engine: Engine | None = None) -> Inspection:
    """What `target` holds: a SQLite file read-only, a server through `engine` (or a new one)."""
    from pbclients.db import make_engine, sqlite_file, translate_busy

    path = sqlite_file(target)
    if path is not None:
        return probe_sqlite(path)
    bind = engine if engine is not None else make_engine(target)
    try:
        with translate_busy(), bind.connect() as connection:
            return inspect_connection(connection)
    finally:
        if engine is None:
            bind.dispose()


def _printable(name: str) -> str:
    """A table name from someone else's database, safe to put in a one-line message."""
    cleaned = "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)
    return cleaned if len(cleaned) <= 40 else cleaned[:39] + "…"


def listed(names: Sequence[str]) -> str:
    """Table names for a one-line message: the first five, printable, and how many more."""
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return ", ".join(_printable(name) for name in names[:5]) + more


def what_it_holds(found: Inspection) -> str:
    """Why a database is not ours, for messages: "it holds other tables: a, b" and the like."""
    return found.problem or f"it holds other tables: {listed(found.others)}"


class NotAPractice(UsageError):
    """--db names something that is not a pbclients practice database (exit 2)."""


def not_a_practice(found: Inspection, where: str) -> str:
    return f"{where} is not a pbclients practice database ({what_it_holds(found)})"


class SchemaStatus(NamedTuple):
    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code: no alembic.ini is needed at run time."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    return HEAD


def current_revision(connection: Connection) -> str | None:
    """The revision recorded in the database (None without an alembic_version table)."""
    from sqlalchemy import inspect, text

    if not inspect(connection).has_table("alembic_version"):
        return None
    versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
    return ",".join(sorted(versions)) or None


def _is_known(revision: str) -> bool:
    from alembic.util.exc import CommandError

    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:
        return False


def _pre_migration_tables(connection: Connection) -> set[str]:
    """Our tables in a database that has no alembic_version table."""
    from sqlalchemy import inspect

    names = set(inspect(connection).get_table_names())
    return names & BASELINE_TABLES if "alembic_version" not in names else set()


def upgrade_connection(connection: Connection, *, where: str = "This database") -> SchemaStatus:
    """Upgrade to the newest revision inside the caller's transaction; returns (before, head).

    A database holding other applications' tables is refused (exit 3) before anything
    is written: making it a practice is not something `init` decides on its own.
    """
    from alembic import command

    found = inspect_connection(connection)
    if found.kind is Kind.FOREIGN:
        raise BadInput(
            f"{not_a_practice(found, where)}; nothing was changed. pbclients creates a "
            "practice only in a new, empty database: give --db a new file or database."
        )
    head = head_revision()
    config = alembic_config(connection)
    current = current_revision(connection)
    if current is None:
        legacy = _pre_migration_tables(connection)
        if legacy == BASELINE_TABLES:
            command.stamp(config, BASELINE)
        elif legacy:
            raise UsageError(
                f"This database holds only some pbclients tables ({', '.join(sorted(legacy))}), "
                "so it cannot be upgraded; nothing was changed, point --db at a complete "
                "practice database or a new one."
            )
    elif not _is_known(current):
        raise UsageError(
            f"This database's schema (revision {current}) is newer than this pbclients "
            f"knows (newest {head}); nothing was changed, upgrade pbclients to use it."
        )
    if current != head:
        command.upgrade(config, "head")
    return SchemaStatus(current, head)


def init_schema(engine: Engine) -> SchemaStatus:
    """Create the schema, or upgrade it to the newest revision, in one transaction.

    Safe to run again; existing data is kept. Returns the revision the database
    was at before (None when new) and the one it is at now.
    """
    from sqlalchemy import text

    from pbclients.db import _WRITE, translate_busy

    where = _where(engine)
    with translate_busy(), engine.execution_options(**{_WRITE: True}).begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _INIT_LOCK})
        return upgrade_connection(connection, where=where)


def _where(engine: Engine) -> str:
    if engine.dialect.name == "sqlite":
        return str(engine.url.database or "This database")
    return engine.url.render_as_string(hide_password=True)


def open_for_init(target: str) -> Engine:
    """An engine for `init`: a new file, an empty one, or a practice; never another's database.

    An existing SQLite file is looked at read-only first, so a refused one (exit 3)
    is left byte-for-byte as it was.
    """
    from pbclients.db import make_engine, sqlite_file

    path = sqlite_file(target)
    if path is not None and path.exists():
        found = probe_sqlite(path)
        if found.kind is Kind.FOREIGN:
            raise BadInput(
                f"{not_a_practice(found, str(path))}; nothing was changed. pbclients creates "
                "a practice only in a new, empty database: give --db a new file."
            )
        require_writable(path)
    elif path is not None:
        require_writable_folder(path)
    return make_engine(target, create=True)


def require_writable_folder(path: Path) -> None:
    """The nearest existing folder of a file to be created must be writable (exit 2 if not)."""
    import os

    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(
            f"Cannot create {path}: {folder} is read-only for you; nothing was changed, "
            "choose a writable place with --db."
        )


def open_practice(target: str) -> Engine:
    """An engine on an existing practice whose schema is at head, for every command but init.

    A SQLite file is checked read-only (`mode=ro`) before the write engine exists:
    a file that is not a practice (exit 2) or whose schema is missing or behind
    (exit 2) is refused without a byte written, and so is one this process may not
    write. A server database is checked through the engine the command then uses.
    """
    from pbclients.db import make_engine, sqlite_file

    path = sqlite_file(target)
    if path is not None:
        require_practice(probe_sqlite(path), str(path))
        require_writable(path)
        return make_engine(target)
    engine = make_engine(target)
    try:
        require_practice(inspect_target(target, engine), shown(target))
    except BaseException:
        engine.dispose()
        raise
    return engine


def schema_status(engine: Engine) -> SchemaStatus:
    """The database's revision (None when it has no pbclients schema) and the newest one."""
    from pbclients.db import translate_busy

    with translate_busy(), engine.connect() as connection:
        found = inspect_connection(connection)
    return SchemaStatus(found.current, head_revision())


class DatabaseStatus(NamedTuple):
    database: str
    engine: str
    status: SchemaStatus


def database_status(target: str) -> DatabaseStatus:
    """`db status`: read-only on SQLite; refuses (exit 2) a database that is not a practice."""
    from pbclients.db import make_engine, sqlite_file

    path = sqlite_file(target)
    if path is not None:
        found = probe_sqlite(path)
        database, dialect = str(path), "sqlite"
    else:
        engine = make_engine(target)
        try:
            found = inspect_target(target, engine)
            database = engine.url.render_as_string(hide_password=True)
            dialect = engine.dialect.name
        finally:
            engine.dispose()
    if found.kind is Kind.FOREIGN:
        where = database if path is not None else shown(target)
        raise NotAPractice(f"{not_a_practice(found, where)}; check --db or PBCLIENTS_DB.")
    return DatabaseStatus(database, dialect, SchemaStatus(found.current, head_revision()))


def require_practice(found: Inspection, where: str) -> None:
    """Refuse (exit 2) what is not a practice at head: another's database, no schema, old, new."""
    if found.kind is Kind.FOREIGN:
        raise NotAPractice(
            f"{not_a_practice(found, where)}; nothing was changed, check --db or PBCLIENTS_DB."
        )
    _require_head(SchemaStatus(found.current, head_revision()))


def require_schema(engine: Engine) -> None:
    """Refuse (exit 2) a database whose schema is missing, behind, or from a newer pbclients."""
    from pbclients.db import translate_busy

    with translate_busy(), engine.connect() as connection:
        found = inspect_connection(connection)
    require_practice(found, _where(engine))


def _require_head(status: SchemaStatus) -> None:
    if status.up_to_date:
        return
    if status.current is None:
        raise UsageError("This database has no pbclients schema yet; run `pbclients init` first.")
    if status.current != "pre-migrations" and not _is_known(status.current):
        raise UsageError(
            f"This database's schema (revision {status.current}) is newer than this pbclients "
            f"knows (newest {status.head}); upgrade pbclients to use it."
        )
    raise UsageError(
        f"This database's schema is at revision {status.current} and this pbclients needs "
        f"{status.head}; nothing was changed, run `pbclients init` to upgrade it."
    )
