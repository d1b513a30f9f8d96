"""Creating and checking the schema of a practice database."""

from __future__ import annotations

from sqlalchemy import Engine, inspect
from sqlmodel import SQLModel

from pbclients import models  # noqa: F401  (registers the tables)
from pbclients.errors import UsageError


def init_schema(engine: Engine) -> None:
    """Create every table and index that is missing; existing data is left alone."""
    SQLModel.metadata.create_all(engine)


def require_schema(engine: Engine) -> None:
    if not inspect(engine).has_table("client"):
        raise UsageError("This database has no pbclients schema yet; run `pbclients init` first.")
