"""A --db that is not a practice database is a one-sentence usage error (exit 2)."""

from __future__ import annotations

import socket
from pathlib import Path

from typer.testing import CliRunner

from pbclients.cli.app import app


def _run(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args))


def test_a_file_that_is_not_sqlite_is_named(tmp_path: Path) -> None:
    not_a_db = tmp_path / "notes.db"
    not_a_db.write_text("hello\n")

    result = _run("--db", str(not_a_db), "list")

    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: Cannot open {not_a_db} (file is not a database); check --db or PBCLIENTS_DB.\n"
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
