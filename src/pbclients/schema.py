"""Creating, upgrading and checking the schema of a practice database.

The schema is versioned with Alembic (revisions in pbclients/migrations,
shipped with the package) and run from code: `init` upgrades a database to
the newest revision in one transaction, on SQLite and PostgreSQL alike, and
every other command refuses to touch a database whose schema is missing or
behind, rather than fail halfway through with an SQL error.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy import Connection, Engine, inspect, text

from pbclients.db import _WRITE, translate_busy
from pbclients.errors import UsageError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

SCRIPT_LOCATION = "pbclients:migrations"

# The newest revision in pbclients/migrations/versions. Every command checks the
# database against it, so it is a constant here instead of loading Alembic each time;
# a test checks it is Alembic's head (update it with each new migration).
HEAD = "0001"

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

# Serialises concurrent `init` runs on one PostgreSQL database.
_INIT_LOCK = 7310002


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
    names = set(inspect(connection).get_table_names())
    return names & BASELINE_TABLES if "alembic_version" not in names else set()


def upgrade_connection(connection: Connection) -> SchemaStatus:
    """Upgrade to the newest revision inside the caller's transaction; returns (before, head)."""
    from alembic import command

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
    with translate_busy(), engine.execution_options(**{_WRITE: True}).begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _INIT_LOCK})
        return upgrade_connection(connection)


def schema_status(engine: Engine) -> SchemaStatus:
    """The database's revision (None when it has no pbclients schema) and the newest one."""
    with translate_busy(), engine.connect() as connection:
        current = current_revision(connection)
        if current is None and _pre_migration_tables(connection) == BASELINE_TABLES:
            current = "pre-migrations"
    return SchemaStatus(current, head_revision())


def require_schema(engine: Engine) -> None:
    """Refuse (exit 2) a database whose schema is missing, behind, or from a newer pbclients."""
    status = schema_status(engine)
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
