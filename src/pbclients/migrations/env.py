"""Alembic environment for pbclients: the schema is SQLModel's metadata.

pbclients runs Alembic in code (see pbclients.schema) and hands over an open
connection in `config.attributes["connection"]`, so migrations run inside the
caller's transaction; a `sqlalchemy.url` main option is the fallback for
running the `alembic` command by hand during development.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine
from sqlmodel import SQLModel

from pbclients import models  # noqa: F401  (registers the tables)

target_metadata = SQLModel.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("Run migrations through `pbclients init`, or set sqlalchemy.url.")
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("pbclients migrations run online only (`pbclients init`).")
run_migrations_online()
