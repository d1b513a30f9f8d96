"""A --db that is not a practice database, or that cannot be written, is a one-sentence
usage error (exit 2) that leaves it as it was. (tests/hostile/test_foreign_databases.py
tries every command on other applications' databases.)"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pbclients.cli.app import app
from tests.helpers import subprocess_env


def _run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_a_file_that_is_not_sqlite_is_named(tmp_path: Path) -> None:
    not_a_db = tmp_path / "notes.db"
    not_a_db.write_text("hello\n")

    result = _run("--db", str(not_a_db), "list")

    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {not_a_db} is not a pbclients practice database (not a SQLite database file); "
        "nothing was changed, check --db or PBCLIENTS_DB.\n"
    )
    assert not_a_db.read_text() == "hello\n"


def test_a_missing_file_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"

    result = _run("--db", str(missing), "deactivate", "1", "--yes")

    assert result.exit_code == 2
    assert "There is no practice database at" in result.stderr
    assert not missing.exists()


def test_an_unreachable_server_hides_the_url(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    result = _run("--db", f"postgresql://admin:s3cret@127.0.0.1:{port}/practice", "list")

    assert result.exit_code == 2
    assert result.stderr.startswith("Error: Cannot open the PostgreSQL server (")
    assert "s3cret" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# -- a database this process may not write -------------------------------------------------

# Root ignores permission bits (CAP_DAC_OVERRIDE), and CI runs as root: there the command
# runs as root without the capabilities that bypass them, so 0444 and 0555 bind it as they
# bind any user. Everyone else simply runs it.
_DROP_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


def _unprivileged_prefix() -> list[str]:
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permission bits cannot bind this process")
    probe = subprocess.run([*_DROP_DAC, "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"setpriv cannot drop capabilities here: {probe.stderr.decode().strip()}")
    return _DROP_DAC


def _pbclients(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_unprivileged_prefix(), sys.executable, "-m", "pbclients", *args],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def practice_file(tmp_path: Path, sqlite_template: Path) -> Path:
    folder = tmp_path / "practice"
    folder.mkdir()
    db = folder / "practice.db"
    shutil.copyfile(sqlite_template, db)
    with sqlite3.connect(db) as connection:
        connection.execute(
            "INSERT INTO client (id, email, email_key, first_name, last_name, status, created_at) "
            "VALUES (1, 'ana@example.org', 'ana@example.org', 'Ana', 'Silva', 'active', "
            "'2026-01-02 03:04:05')"
        )
    connection.close()
    return db


@pytest.mark.parametrize("command", [["deactivate", "1", "--yes"], ["list"], ["audit", "verify"]])
def test_a_read_only_database_file_is_one_sentence_exit_2(
    practice_file: Path, command: list[str]
) -> None:
    practice_file.chmod(0o444)
    before = _digest(practice_file)
    try:
        result = _pbclients("--db", str(practice_file), *command)
    finally:
        practice_file.chmod(0o600)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"Error: Cannot use {practice_file}: the file is read-only for you; nothing was "
        "changed, make the file and its folder writable (or copy the database somewhere "
        "writable) and try again.\n"
    )
    assert _digest(practice_file) == before
    assert sorted(os.listdir(practice_file.parent)) == ["practice.db"]


def test_a_read_only_folder_is_one_sentence_exit_2(practice_file: Path) -> None:
    folder = practice_file.parent
    before = _digest(practice_file)
    folder.chmod(0o555)
    try:
        result = _pbclients("--db", str(practice_file), "deactivate", "1", "--yes")
        created = _pbclients("--db", str(folder / "new.db"), "init")
    finally:
        folder.chmod(0o700)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        f"Error: Cannot use {practice_file}: its folder is read-only for you, and SQLite "
        "writes its -wal and -shm files there; nothing was changed"
    )
    assert created.returncode == 2, created.stderr
    assert created.stderr == (
        f"Error: Cannot create {folder / 'new.db'}: {folder} is read-only for you; nothing "
        "was changed, choose a writable place with --db.\n"
    )
    assert _digest(practice_file) == before
    assert sorted(os.listdir(folder)) == ["practice.db"]


def test_a_write_refused_by_sqlite_itself_is_exit_2_not_unexpected(practice_file: Path) -> None:
    """Should the file turn read-only after the check (a remount, a race), SQLite's own
    "attempt to write a readonly database" is the same one sentence, not exit 1."""
    from pbclients.db import read_only_engine, translate_busy
    from pbclients.errors import UsageError

    engine = read_only_engine(practice_file)
    try:
        with (
            pytest.raises(UsageError, match="The database is read-only for pbclients"),
            translate_busy(),
            engine.begin() as connection,
        ):
            connection.exec_driver_sql("UPDATE client SET first_name = 'X'")
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_read_only_postgresql_database_is_one_sentence_exit_2(postgres_url: str) -> None:
    """A standby, or a database set default_transaction_read_only: exit 2, nothing written."""
    import psycopg

    assert _run("--db", postgres_url, "init").exit_code == 0
    added = _run("--db", postgres_url, "add", "--email", "a@example.org", "--first-name", "A",
                 "--last-name", "B", "--yes")  # fmt: skip
    assert added.exit_code == 0, added.stderr
    name = postgres_url.rpartition("/")[2]
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')

    result = _run("--db", postgres_url, "deactivate", "1", "--yes")

    assert result.exit_code == 2
    assert result.stderr == (
        "Error: The database is read-only for pbclients (a read-only file, folder or server); "
        "nothing was changed, make it writable or point --db at a writable copy.\n"
    )
    listed = _run("--db", postgres_url, "list", "--format", "ids")
    assert (listed.exit_code, listed.stdout) == (0, "1\n")
