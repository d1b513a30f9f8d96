"""`demo` must never touch the practice database named by the environment."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from pbclients.cli.app import app


def test_demo_ignores_pbclients_db_and_writes_its_own_file(
    tmp_path: Path, isolated_home: Path, monkeypatch
) -> None:
    practice_db = tmp_path / "practice.db"
    monkeypatch.setenv("PBCLIENTS_DB", str(practice_db))

    result = CliRunner().invoke(app, ["demo", "--clients", "5"])

    assert result.exit_code == 0, result.stderr
    assert not practice_db.exists()
    demo_file = isolated_home / "xdg_data_home" / "pbclients" / "demo.db"
    assert demo_file.exists()
    assert f"Demo practice ready: {demo_file}" in result.stdout


def test_explicit_db_option_still_names_the_demo_target(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PBCLIENTS_DB", str(tmp_path / "practice.db"))
    target = tmp_path / "try.db"

    result = CliRunner().invoke(app, ["--db", str(target), "demo", "--clients", "5"])

    assert result.exit_code == 0, result.stderr
    assert target.exists()
    assert not (tmp_path / "practice.db").exists()
