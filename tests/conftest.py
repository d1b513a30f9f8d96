"""Shared fixtures: every test runs against its own database in tmp_path (and, when a
PostgreSQL server is given, against a fresh PostgreSQL database too), never a real roster."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

POSTGRES_ENV = "PBCLIENTS_TEST_POSTGRES_URL"
REQUIRE_POSTGRES_ENV = "PBCLIENTS_REQUIRE_POSTGRES"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every platformdirs location and the tool's variables into tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(name, str(home / name.lower()))
    for name in ("PBCLIENTS_DB", "PBCLIENTS_NOW", "PBCLIENTS_ACTOR", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PBCLIENTS_ACTOR", "tester")
    # Keep lock waits short so busy-database tests finish quickly.
    monkeypatch.setenv("PBCLIENTS_LOCK_TIMEOUT", "1")
    monkeypatch.setenv("COLUMNS", "200")
    return home


def _postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = f"pbt_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """What --db is given: a SQLite file path, or a postgresql:// URL of a fresh database."""
    if request.param == "sqlite":
        yield str(tmp_path / "practice.db")
        return
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        if os.environ.get(REQUIRE_POSTGRES_ENV):
            pytest.fail(f"{REQUIRE_POSTGRES_ENV} is set but {POSTGRES_ENV} is not")
        pytest.skip(f"no PostgreSQL server: set {POSTGRES_ENV} (see README, Contributing)")
    yield from _postgres_database(admin_url)


@pytest.fixture
def engine(db_target: str):  # type: ignore[no-untyped-def]
    from pbclients.db import make_engine
    from pbclients.schema import init_schema

    engine = make_engine(db_target, create=True)
    init_schema(engine)
    yield engine
    engine.dispose()


Runner = Callable[..., "object"]


@pytest.fixture
def cli(db_target: str, engine) -> Callable[..., object]:  # type: ignore[no-untyped-def]
    """Run `pbclients --db <db_target> ARGS...` in-process; returns click's Result."""
    from pbclients.cli.app import app

    runner = CliRunner()

    def run(*args: str, input: str | bytes | None = None, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        return runner.invoke(app, ["--db", db_target, *args], input=input, env=env, catch_exceptions=False)

    return run


@pytest.fixture
def practice(engine):  # type: ignore[no-untyped-def]
    """A small practice: five clients (ids 1-5), two programs, upcoming telehealth for client 1."""
    from tests.factory import build_small_practice

    return build_small_practice(engine)
