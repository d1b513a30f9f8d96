"""Databases that are not ours: every command refuses them and leaves them byte-for-byte
unchanged, with nothing new beside them (no WAL switch, no -wal/-shm, no lock file, no table).

A --db may name another application's SQLite file, an empty file, a text file, random
bytes or a folder. Every command but init refuses with exit 2 ("not a pbclients practice
database"); init refuses another's database with exit 3 (making it a practice is a decision
of its own) and initialises only an empty file. The same holds for a refused `db copy`
target and for PostgreSQL databases that hold other applications' tables.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from pbclients.cli.app import app
from tests.conftest import create_postgres_database, drop_postgres_database, postgres_admin_url

NOT_OURS = "is not a pbclients practice database"


def _other_app(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        connection.execute("INSERT INTO notes (body) VALUES ('shopping list')")
    connection.close()


def _other_app_in_wal_mode(path: Path) -> None:
    """Many applications keep their database in WAL mode: reading it with a plain read-only
    connection would leave -wal and -shm files beside it."""
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, at TEXT)")
    connection.execute("INSERT INTO events (at) VALUES ('2026-01-01')")
    connection.commit()
    connection.close()
    assert not Path(f"{path}-wal").exists()


def _other_app_with_alembic(path: Path) -> None:
    """Another Alembic application whose revision id happens to be ours ("0001")."""
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        connection.execute("INSERT INTO alembic_version VALUES ('0001')")
        connection.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
        # A table named like one of ours does not make it a practice either.
        connection.execute("CREATE TABLE setting (key TEXT PRIMARY KEY, value TEXT)")
    connection.close()


def _only_a_view(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE VIEW answer AS SELECT 42 AS value")
    connection.close()


def _hostile_table_name(path: Path) -> None:
    """Its table names end up in our error message: they must not reach the terminal raw."""
    with sqlite3.connect(path) as connection:
        connection.execute('CREATE TABLE "[bold red]x\x1b[2J\x1b]52;c;ZXZpbA==\x07" (id INTEGER)')
    connection.close()


def _text_file(path: Path) -> None:
    path.write_text("name,email\nAna,ana@example.org\n")


def _random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(7).randbytes(8192))


def _sqlite_header_then_garbage(path: Path) -> None:
    """Looks like SQLite for 16 bytes, then is not (a damaged or encrypted database)."""
    path.write_bytes(b"SQLite format 3\x00" + random.Random(8).randbytes(4096))


def _empty_file(path: Path) -> None:
    path.write_bytes(b"")


FOREIGN: dict[str, Callable[[Path], None]] = {
    "other-app": _other_app,
    "other-app-wal": _other_app_in_wal_mode,
    "other-alembic-app": _other_app_with_alembic,
    "only-a-view": _only_a_view,
    "hostile-table-name": _hostile_table_name,
    "text-file": _text_file,
    "random-bytes": _random_bytes,
    "sqlite-header-garbage": _sqlite_header_then_garbage,
}

# Every command that opens the practice database, with arguments that would work on one.
COMMANDS: dict[str, list[str]] = {
    "list": ["list"],
    "list-json": ["list", "--format", "json"],
    "show": ["show", "1"],
    "deactivate": ["deactivate", "1", "--yes"],
    "activate": ["activate", "1", "--yes"],
    "add": ["add", "--email", "a@example.org", "--first-name", "A", "--last-name", "B", "--yes"],
    "import": ["import", "{csv}", "--yes"],
    "export": ["export", "1", "--backup-dir", "{backups}"],
    "delete": ["delete", "1", "--yes", "--backup-dir", "{backups}"],
    "undo": ["undo", "b-20260101-000000-abcd", "--yes"],
    "purge": ["purge", "--yes"],
    "purge-dry-run": ["purge", "--dry-run"],
    "plan": ["plan"],
    "plan-set-limit": ["plan", "--set-limit", "9", "--yes"],
    "audit": ["audit"],
    "audit-verify": ["audit", "verify"],
    "db-status": ["db", "status"],
    "db-copy": ["db", "copy", "--to", "{copy}", "--yes"],
}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"


def folder(path: Path) -> list[str]:
    return sorted(os.listdir(path))


def invoke(db: Path | str, args: list[str], tmp_path: Path):
    csv = tmp_path / "in" / "clients.csv"
    csv.parent.mkdir(exist_ok=True)
    csv.write_text("email,first_name,last_name\nz@example.org,Z,Y\n")
    filled = [
        a.format(csv=csv, backups=tmp_path / "backups", copy=tmp_path / "copy" / "new.db")
        for a in args
    ]
    return CliRunner().invoke(app, ["--db", str(db), *filled])


@pytest.fixture
def foreign_dir(tmp_path: Path) -> Path:
    where = tmp_path / "db"
    where.mkdir()
    return where


@pytest.mark.parametrize("case", list(FOREIGN))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_refuses_a_foreign_file_and_leaves_it_unchanged(
    case: str, command: str, foreign_dir: Path, tmp_path: Path
) -> None:
    db = foreign_dir / "other.db"
    FOREIGN[case](db)
    before, files = digest(db), folder(foreign_dir)

    result = invoke(db, COMMANDS[command], tmp_path)

    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith(f"Error: {db} {NOT_OURS} (")
    assert result.stderr.endswith("check --db or PBCLIENTS_DB.\n")
    assert len(result.stderr.splitlines()) == 1
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert digest(db) == before
    assert folder(foreign_dir) == files
    assert not (tmp_path / "copy").exists()
    assert not (tmp_path / "backups").exists()


@pytest.mark.parametrize("case", list(FOREIGN))
def test_init_and_demo_refuse_a_foreign_file_with_exit_3(
    case: str, foreign_dir: Path, tmp_path: Path
) -> None:
    db = foreign_dir / "other.db"
    FOREIGN[case](db)
    before, files = digest(db), folder(foreign_dir)

    for args in (["init"], ["demo", "--clients", "3"]):
        result = invoke(db, args, tmp_path)
        assert result.exit_code == 3, (args, result.stderr)
        assert result.stderr.startswith(f"Error: {db} {NOT_OURS} (")
        assert "nothing was changed" in result.stderr
        assert len(result.stderr.splitlines()) == 1
        assert "\x1b" not in result.stderr
        assert digest(db) == before, args
        assert folder(foreign_dir) == files, args


def test_the_refusal_names_the_other_tables_and_escapes_hostile_ones(
    foreign_dir: Path, tmp_path: Path
) -> None:
    db = foreign_dir / "other.db"
    _other_app(db)
    assert invoke(db, ["list"], tmp_path).stderr == (
        f"Error: {db} {NOT_OURS} (it holds other tables: notes); nothing was changed, "
        "check --db or PBCLIENTS_DB.\n"
    )
    hostile = foreign_dir / "hostile.db"
    _hostile_table_name(hostile)
    assert r"[bold red]x\x1b[2J\x1b]52;c;ZXZpbA==\x07" in invoke(hostile, ["list"], tmp_path).stderr
    text_file = foreign_dir / "notes.db"
    _text_file(text_file)
    assert invoke(text_file, ["db", "status"], tmp_path).stderr == (
        f"Error: {text_file} {NOT_OURS} (not a SQLite database file); check --db or PBCLIENTS_DB.\n"
    )


def test_a_folder_given_as_the_database_is_refused(foreign_dir: Path, tmp_path: Path) -> None:
    for args in (["list"], ["init"]):
        result = invoke(foreign_dir, args, tmp_path)
        assert result.exit_code in (2, 3)
        assert "it is a folder" in result.stderr
    assert folder(foreign_dir) == []


def test_an_empty_file_is_refused_by_commands_and_initialised_by_init(
    foreign_dir: Path, tmp_path: Path
) -> None:
    """A 0-byte file is a new database: `init` (and `demo`) may build one there; every
    other command says to run init, and leaves it empty."""
    db = foreign_dir / "new.db"
    _empty_file(db)
    for command, args in COMMANDS.items():
        result = invoke(db, args, tmp_path)
        if command == "db-status":
            assert result.exit_code == 0
            assert "No pbclients schema yet; create it with `pbclients init`." in result.stdout
        else:
            assert result.exit_code == 2, (command, result.stderr)
            assert "no pbclients schema yet; run `pbclients init` first" in result.stderr
        assert db.read_bytes() == b"", command
        assert folder(foreign_dir) == ["new.db"], command

    assert invoke(db, ["init"], tmp_path).exit_code == 0
    assert invoke(db, ["list", "--format", "ids"], tmp_path).exit_code == 0


def test_a_practice_is_read_read_only_until_it_passes_the_check(
    sqlite_template: Path, tmp_path: Path
) -> None:
    """The check itself leaves a practice alone too: a refused one (from before migrations,
    in rollback-journal mode) is not switched to WAL or touched in any other way."""
    db = tmp_path / "old.db"
    db.write_bytes(sqlite_template.read_bytes())
    with sqlite3.connect(db) as connection:
        connection.execute("DROP TABLE alembic_version")
        connection.execute("PRAGMA journal_mode = DELETE")
    connection.close()
    before = digest(db)

    result = invoke(db, ["deactivate", "1", "--yes"], tmp_path)

    assert result.exit_code == 2
    assert "run `pbclients init` to upgrade it" in result.stderr
    assert digest(db) == before
    assert folder(tmp_path / "in") == ["clients.csv"]
    assert sorted(p.name for p in tmp_path.glob("old.db*")) == ["old.db"]


# -- db copy: a refused target is left as it was --------------------------------------------


@pytest.mark.parametrize("case", list(FOREIGN))
def test_db_copy_into_a_foreign_file_is_refused_and_writes_nothing(
    case: str, cli, practice, foreign_dir: Path
) -> None:
    target = foreign_dir / "other.db"
    FOREIGN[case](target)
    before, files = digest(target), folder(foreign_dir)

    for dry in ([], ["--dry-run"]):
        result = cli("db", "copy", "--to", str(target), "--yes", *dry)
        assert result.exit_code == 3, result.stderr
        assert "nothing was copied, give a new, empty database" in result.stderr
        assert "\x1b" not in result.stderr
        assert digest(target) == before
        assert folder(foreign_dir) == files


def test_db_copy_into_an_empty_file_works(cli, practice, foreign_dir: Path) -> None:
    target = foreign_dir / "new.db"
    _empty_file(target)
    result = cli("db", "copy", "--to", str(target), "--yes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert CliRunner().invoke(app, ["--db", str(target), "list", "--format", "ids"]).stdout == (
        "1\n2\n3\n4\n5\n"
    )


# -- PostgreSQL databases that hold another application's tables ----------------------------


@pytest.fixture
def foreign_postgres() -> object:
    """A PostgreSQL database of another application, which also uses Alembic ("0001")."""
    admin_url = postgres_admin_url()
    url = create_postgres_database(admin_url)
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total INTEGER)")
        connection.execute("INSERT INTO invoices VALUES (1, 100)")
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        connection.execute("INSERT INTO alembic_version VALUES ('0001')")
    try:
        yield url
    finally:
        drop_postgres_database(admin_url, url)


def postgres_contents(url: str) -> dict[str, list[tuple[object, ...]]]:
    from pbclients.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            names = connection.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ).scalars()
            return {
                name: sorted(connection.execute(text(f'SELECT * FROM "{name}"')).all())
                for name in sorted(names)
            }
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_foreign_postgresql_database_is_refused_and_left_alone(
    foreign_postgres: str, tmp_path: Path
) -> None:
    before = postgres_contents(foreign_postgres)
    assert list(before) == ["alembic_version", "invoices"]
    for command, args in COMMANDS.items():
        result = invoke(foreign_postgres, args, tmp_path)
        assert result.exit_code == 2, (command, result.stderr)
        assert f"{NOT_OURS} (it holds other tables: invoices)" in result.stderr, command
    for args in (["init"], ["demo", "--clients", "3"]):
        result = invoke(foreign_postgres, args, tmp_path)
        assert result.exit_code == 3, (args, result.stderr)
        assert NOT_OURS in result.stderr
    assert postgres_contents(foreign_postgres) == before


@pytest.mark.postgres
def test_db_copy_into_a_foreign_postgresql_database_is_refused(
    foreign_postgres: str, sqlite_template: Path, tmp_path: Path
) -> None:
    db = tmp_path / "practice.db"
    db.write_bytes(sqlite_template.read_bytes())
    before = postgres_contents(foreign_postgres)
    result = invoke(db, ["db", "copy", "--to", foreign_postgres, "--yes"], tmp_path)
    assert result.exit_code == 3
    assert "already holds other tables (invoices); nothing was copied" in result.stderr
    assert postgres_contents(foreign_postgres) == before


# -- the database's own file name is data, not syntax ----------------------------------------


@pytest.mark.parametrize(
    "name", ["a?b.db", "c#d.db", "e%20f.db", "g h.db", "[bold red]i[link=x].db", "j\x1b[2Jk.db"]
)
def test_a_database_file_name_is_used_exactly_as_given(name: str, tmp_path: Path) -> None:
    """Read as a URL, "a?b.db" opened (and init created) a file named "a" and "e%20f.db"
    one named "e f.db": another file than the one given, possibly someone else's."""
    where = tmp_path / "dbs"
    where.mkdir()
    db = where / name

    assert invoke(db, ["init"], tmp_path).exit_code == 0
    added = invoke(
        db, ["add", "--email", "a@example.org", "--first-name", "A", "--last-name", "B", "--yes"],
        tmp_path,
    )  # fmt: skip
    assert added.exit_code == 0, added.stderr
    listed = invoke(db, ["list", "--format", "ids"], tmp_path)
    assert (listed.exit_code, listed.stdout) == (0, "1\n")
    assert folder(where) == [name]
    status = invoke(db, ["db", "status", "--format", "json"], tmp_path)
    assert status.exit_code == 0, status.stderr
    assert json.loads(status.stdout)["database"] == str(db)
