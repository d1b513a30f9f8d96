"""`pbclients db copy --to`: a whole practice moves to a new database (SQLite <-> PostgreSQL)
in one transaction, every count verified, or nothing is written."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from pbclients import dbcopy
from pbclients.cli.app import app
from pbclients.db import make_engine
from pbclients.schema import HEAD, schema_status
from tests.conftest import create_postgres_database, drop_postgres_database, postgres_admin_url
from tests.helpers import pbclients, snapshot, subprocess_env

TABLES = [
    "audit_event", "client", "program", "schedule", "setting", "undo_record", "appointment",
    "document",
    "enrolment",
    "form_request", "journal_entry", "legal_hold", "message", "notification", "payment_method",
    "protocol",
    "session_note", "payment_plan",
]  # fmt: skip


@pytest.fixture(params=["to-sqlite", pytest.param("to-postgres", marks=pytest.mark.postgres)])
def new_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where the practice is copied to: a SQLite path that does not exist yet, or an
    empty PostgreSQL database (as `createdb` leaves it)."""
    if request.param == "to-sqlite":
        yield str(tmp_path / "moved" / "practice.db")
        return
    admin_url = postgres_admin_url()
    url = create_postgres_database(admin_url)
    try:
        yield url
    finally:
        drop_postgres_database(admin_url, url)


def run(db: str, *args: str):
    return CliRunner().invoke(app, ["--db", db, *args], catch_exceptions=False)


def target_rows(target: str) -> dict[str, int]:
    if "://" not in target and not Path(target).exists():
        return {}
    engine = make_engine(target)
    try:
        with engine.connect() as connection:
            present = set(
                connection.execute(
                    text(
                        "SELECT name FROM sqlite_master WHERE type = 'table'"
                        if engine.dialect.name == "sqlite"
                        else "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                    )
                ).scalars()
            )
            return {
                name: connection.execute(text(f"SELECT count(*) FROM {name}")).scalar_one()
                for name in sorted(present & set(TABLES))
            }
    finally:
        engine.dispose()


def test_copy_moves_every_row_and_the_copy_is_a_working_practice(cli, practice, engine, new_target):
    before = snapshot(engine)
    result = cli("db", "copy", "--to", new_target, "--yes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["tables"] == {name: len(rows) for name, rows in before.items()}
    assert list(report["tables"]) == TABLES  # parents before the tables that refer to them
    assert report["total"] == sum(len(rows) for rows in before.values())
    assert report["tables"]["client"] == 5 and report["tables"]["document"] == 1
    assert (report["revision"], report["copied"]) == (HEAD, True)

    moved = make_engine(new_target)
    try:
        assert snapshot(moved) == before
        assert snapshot(engine) == before  # the source is left as it was
        assert schema_status(moved) == (HEAD, HEAD)
    finally:
        moved.dispose()
    verified = run(new_target, "audit", "verify")
    assert (verified.exit_code, verified.stdout) == (
        0,
        f"Audit trail intact: {len(before['audit_event'])} events verified.\n",
    )
    # New rows get fresh ids after the copied ones (PostgreSQL sequences were moved on).
    added = run(
        new_target, "add", "--email", "fay@example.org", "--first-name", "Fay",
        "--last-name", "Lund", "--program", "Spring Reset", "--yes", "--format", "json",
    )  # fmt: skip
    assert added.exit_code == 0, added.stderr
    assert json.loads(added.stdout)[0]["id"] == 6
    deactivated = run(new_target, "deactivate", "1", "--yes", "--format", "json")
    assert json.loads(deactivated.stdout)[0]["outcome"] == "changed"


def test_copy_table_output_reports_counts(cli, practice, new_target):
    result = cli("db", "copy", "--to", new_target, "--yes")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["table", "rows"]
    assert lines[2].split() == ["client", "5"]
    assert f"in {len(TABLES)} tables to" in result.stdout
    assert "every count matches the source" in result.stdout


def test_a_target_that_holds_a_practice_is_refused_and_left_alone(cli, practice, new_target):
    assert cli("db", "copy", "--to", new_target, "--yes").exit_code == 0
    rows = target_rows(new_target)
    again = cli("db", "copy", "--to", new_target, "--yes")
    assert again.exit_code == 3
    assert again.stderr == (
        f"Error: {new_target} already holds a pbclients practice (its audit_event table has "
        "rows); nothing was copied, give a new, empty database.\n"
    )
    assert target_rows(new_target) == rows


def test_a_target_with_other_tables_is_refused(cli, practice, new_target):
    if "://" not in new_target:
        Path(new_target).parent.mkdir()
    other = make_engine(new_target, create=True)
    try:
        with other.begin() as connection:
            connection.execute(text("CREATE TABLE invoices (id INTEGER PRIMARY KEY)"))
    finally:
        other.dispose()
    result = cli("db", "copy", "--to", new_target, "--yes")
    assert result.exit_code == 3
    assert "already holds other tables (invoices); nothing was copied" in result.stderr
    assert target_rows(new_target) == {}


def test_copy_needs_yes_without_a_terminal_and_dry_run_writes_nothing(cli, practice, new_target):
    refused = cli("db", "copy", "--to", new_target)
    assert refused.exit_code == 2
    assert "pass --yes to go ahead" in refused.stderr
    dry = cli("db", "copy", "--to", new_target, "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert dry.stdout.splitlines()[-1].startswith("Dry run: would copy ")
    assert "nothing was written." in dry.stdout
    assert (
        json.loads(cli("db", "copy", "--to", new_target, "-n", "-f", "json").stdout)["copied"]
        is False
    )
    assert target_rows(new_target) == {}


def test_a_copy_that_does_not_add_up_is_rolled_back(practice, engine, new_target, monkeypatch):
    copy_table = dbcopy._copy_table

    def lossy(source, target, table):
        copied = copy_table(source, target, table)
        if table.name == "message":
            target.execute(text("DELETE FROM message"))
        return copied

    monkeypatch.setattr(dbcopy, "_copy_table", lossy)
    with pytest.raises(dbcopy.CopyFailed, match="Table message: 1 rows in the source but 0"):
        dbcopy.copy_practice(engine, new_target)
    assert target_rows(new_target) == {}
    if "://" not in new_target:
        assert not Path(new_target).exists()


def test_a_copy_killed_before_commit_leaves_the_target_empty_and_can_be_rerun(
    practice, db_target, new_target
):
    args = ("--db", db_target, "db", "copy", "--to", new_target, "--yes")
    killed = pbclients(*args, env=subprocess_env(PBCLIENTS_FAULT="kill-after:dbcopy.copied"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert sum(target_rows(new_target).values()) == 0
    rerun = run(db_target, *args[2:])
    assert rerun.exit_code == 0, rerun.stderr
    assert target_rows(new_target)["client"] == 5


def test_an_unreachable_target_is_a_usage_error(cli, practice):
    result = cli("db", "copy", "--to", "postgresql://nobody@127.0.0.1:1/practice", "--yes")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: Cannot open postgresql://nobody@127.0.0.1:1/practice")
    assert "nothing was copied" in result.stderr
