"""Schema migrations: init builds or upgrades to head on both engines, old databases are
upgraded in place, and the migrations build exactly what the models describe."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlmodel import SQLModel
from typer.testing import CliRunner

from pbclients.cli.app import app
from pbclients.db import make_engine, reading
from pbclients.schema import (
    BASELINE,
    BASELINE_TABLES,
    HEAD,
    Kind,
    alembic_config,
    init_schema,
    kind_of,
    schema_status,
)
from tests.helpers import snapshot

INDEX_WHERE = "status != 'deleted'"


def run(db: str, *args: str):
    return CliRunner().invoke(app, ["--db", db, *args], catch_exceptions=False)


@pytest.fixture
def empty(db_target: str):
    """An engine on a database with no tables at all."""
    engine = make_engine(db_target, create=True)
    yield engine
    engine.dispose()


def test_head_constant_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    assert ScriptDirectory.from_config(alembic_config()).get_heads() == [HEAD]


def test_migrations_build_exactly_what_the_models_describe(empty) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    init_schema(empty)
    with empty.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []


def test_the_live_email_index_is_partial_on_both_engines(empty) -> None:
    init_schema(empty)
    with empty.connect() as connection:
        if empty.dialect.name == "sqlite":
            definition = connection.execute(
                text("SELECT sql FROM sqlite_master WHERE name = 'ix_client_email_key_live'")
            ).scalar_one()
        else:
            definition = connection.execute(
                text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_client_email_key_live'")
            ).scalar_one()
    assert "UNIQUE" in definition.upper()
    assert "WHERE" in definition.upper() and "deleted" in definition


def test_init_creates_the_schema_then_is_idempotent(db_target: str) -> None:
    first = run(db_target, "init")
    assert first.exit_code == 0, first.stderr
    engine = make_engine(db_target)
    try:
        assert schema_status(engine) == (HEAD, HEAD)
        assert run(db_target, "init").exit_code == 0
        assert schema_status(engine) == (HEAD, HEAD)
    finally:
        engine.dispose()


def test_commands_refuse_a_database_without_schema(empty, db_target: str) -> None:
    result = run(db_target, "list")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: This database has no pbclients schema yet; run `pbclients init` first.\n"
    )


def _legacy_database(engine) -> None:
    """What pbclients made before it had migrations: the baseline's tables, some data."""
    from alembic import command

    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), BASELINE)
        connection.execute(text("DROP TABLE alembic_version"))
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO client (id, email, email_key, first_name, last_name, status, "
                "created_at) VALUES (1, 'Ana@example.org', 'ana@example.org', 'Ana', 'Silva', "
                "'active', '2026-01-02 03:04:05')"
            )
        )
        connection.execute(text("INSERT INTO setting (key, value) VALUES ('plan_limit', '9')"))


def test_a_database_from_before_migrations_is_upgraded_in_place(empty, db_target: str) -> None:
    _legacy_database(empty)
    before = snapshot(empty)
    refused = run(db_target, "list")
    assert refused.exit_code == 2
    assert "run `pbclients init` to upgrade it" in refused.stderr
    assert json.loads(run(db_target, "db", "status", "-f", "json").stdout)["up_to_date"] is False

    upgraded = run(db_target, "init")
    assert upgraded.exit_code == 0, upgraded.stderr
    assert schema_status(empty) == (HEAD, HEAD)
    after = snapshot(empty)
    assert {table: rows for table, rows in after.items() if table in before} == before
    added_later = set(after) - set(before)
    assert added_later == {table.name for table in SQLModel.metadata.sorted_tables} - before.keys()
    assert added_later >= {"undo_record", "schedule"}
    assert all(after[table] == [] for table in added_later)
    listed = run(db_target, "list", "--format", "ids")
    assert (listed.exit_code, listed.stdout) == (0, "1\n")


def test_a_database_with_only_some_tables_is_refused(empty, db_target: str) -> None:
    with empty.begin() as connection:
        SQLModel.metadata.tables["setting"].create(connection)
    result = run(db_target, "init")
    assert result.exit_code == 2
    assert "holds only some pbclients tables (setting)" in result.stderr
    with reading(empty) as session:
        assert session.execute(text("SELECT count(*) FROM setting")).scalar_one() == 0


def test_a_database_from_a_newer_pbclients_is_refused(engine, db_target: str) -> None:
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    for command in (["list"], ["init"]):
        result = run(db_target, *command)
        assert result.exit_code == 2, command
        assert "newer than this pbclients knows" in result.stderr
        assert "upgrade pbclients" in result.stderr


def test_db_status_reports_revision_engine_and_whether_up_to_date(engine, db_target: str) -> None:
    result = run(db_target, "db", "status", "--format", "json")
    assert result.exit_code == 0, result.stderr
    status = json.loads(result.stdout)
    assert status == {
        "database": status["database"],
        "engine": engine.dialect.name,
        "current": HEAD,
        "head": HEAD,
        "up_to_date": True,
    }
    if engine.dialect.name == "sqlite":
        assert status["database"] == db_target
    table = run(db_target, "db", "status")
    assert table.stdout.splitlines()[1:] == [
        f"engine:   {engine.dialect.name}",
        f"schema:   {HEAD} (newest: {HEAD})",
        "Up to date.",
    ]


def test_db_status_of_an_empty_database_says_to_run_init(empty, db_target: str) -> None:
    result = run(db_target, "db", "status")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[2:] == [
        f"schema:   none (newest: {HEAD})",
        "No pbclients schema yet; create it with `pbclients init`.",
    ]


def test_init_on_sqlite_builds_the_schema_in_one_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration that fails after building every table leaves no half-built schema behind."""
    from alembic import command

    upgrade = command.upgrade

    def fails_at_the_end(*args, **kwargs):
        upgrade(*args, **kwargs)
        raise RuntimeError("disk unplugged after the last migration step")

    monkeypatch.setattr(command, "upgrade", fails_at_the_end)
    path = tmp_path / "p.db"
    engine = make_engine(str(path), create=True)
    try:
        with pytest.raises(RuntimeError, match="disk unplugged"):
            init_schema(engine)
    finally:
        engine.dispose()
    names = {row[0] for row in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert names == set()


def test_init_refuses_a_database_with_other_tables_and_writes_nothing(
    empty, db_target: str
) -> None:
    """Even called directly (not through the CLI's read-only check), init_schema refuses."""
    from pbclients.errors import BadInput

    with empty.begin() as connection:
        connection.execute(text("CREATE TABLE invoices (id INTEGER PRIMARY KEY)"))
    with pytest.raises(BadInput, match=r"is not a pbclients practice database \(it holds other"):
        init_schema(empty)
    with empty.connect() as connection:
        assert set(inspect(connection).get_table_names()) == {"invoices"}


@pytest.mark.parametrize(
    ("names", "kind"),
    [
        (set(), Kind.NEW),
        (set(BASELINE_TABLES), Kind.PRACTICE),
        (set(BASELINE_TABLES) | {"alembic_version"}, Kind.PRACTICE),
        # A newer pbclients may add tables: still ours while the core ones are there.
        ({"alembic_version", "client", "audit_event", "setting", "future"}, Kind.PRACTICE),
        ({"setting"}, Kind.PARTIAL),
        ({"alembic_version", "invoices"}, Kind.FOREIGN),
        ({"alembic_version", "setting"}, Kind.FOREIGN),
        (set(BASELINE_TABLES - {"client"}) | {"notes"}, Kind.FOREIGN),
    ],
)
def test_what_a_database_holds_is_told_by_its_tables(names: set[str], kind: Kind) -> None:
    assert kind_of(names) is kind
