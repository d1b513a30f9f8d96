"""Shared fixtures: every test runs against its own database in tmp_path (and, when a
PostgreSQL server is given, against a fresh PostgreSQL database too), never a real roster.

Building the schema with Alembic costs about 0.1 s a database, so it is built once per
session into a template (a SQLite file that is copied; a PostgreSQL database used as
`CREATE DATABASE ... TEMPLATE`), and each test that asks for `engine` starts from a copy.
Tests that ask for `db_target` without `engine` get an empty database.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

POSTGRES_ENV = "PBCLIENTS_TEST_POSTGRES_URL"
REQUIRE_POSTGRES_ENV = "PBCLIENTS_REQUIRE_POSTGRES"
NO_SERVER = f"no PostgreSQL server: set {POSTGRES_ENV} (see README, Contributing)"


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


def postgres_admin_url() -> str:
    """The server's URL from the environment; skips the test (fails it in CI) without one."""
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        if os.environ.get(REQUIRE_POSTGRES_ENV):
            pytest.fail(f"{REQUIRE_POSTGRES_ENV} is set but {POSTGRES_ENV} is not")
        pytest.skip(NO_SERVER)
    return admin_url


def database_url(admin_url: str, name: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


def create_postgres_database(admin_url: str, *, template: str | None = None) -> str:
    """A new PostgreSQL database (a copy of `template` if given); returns its URL."""
    import psycopg

    name = f"pbt_{uuid.uuid4().hex[:12]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"{clause}')
    return database_url(admin_url, name)


def drop_postgres_database(admin_url: str, url: str) -> None:
    import psycopg

    name = url.rpartition("/")[2]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _build_schema(target: str) -> None:
    from pbclients.db import make_engine
    from pbclients.schema import init_schema

    engine = make_engine(target, create=True)
    try:
        init_schema(engine)
    finally:
        # Closing the last connection checkpoints SQLite's WAL into the file.
        engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database with the schema at head, built by the migrations once."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    _build_schema(str(path))
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """The name of a PostgreSQL database with the schema at head, used as a template."""
    admin_url = postgres_admin_url()
    url = create_postgres_database(admin_url)
    try:
        _build_schema(url)
        yield url.rpartition("/")[2]
    finally:
        drop_postgres_database(admin_url, url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """What --db is given: a SQLite file path, or a postgresql:// URL of a fresh database.

    The database has the schema when the test also uses `engine` (or a fixture built on
    it such as `cli` or `practice`), and is empty otherwise.
    """
    with_schema = "engine" in request.fixturenames
    if request.param == "sqlite":
        path = tmp_path / "practice.db"
        if with_schema:
            shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
            path.chmod(0o600)
        yield str(path)
        return
    admin_url = postgres_admin_url()
    template = request.getfixturevalue("postgres_template") if with_schema else None
    url = create_postgres_database(admin_url, template=template)
    try:
        yield url
    finally:
        drop_postgres_database(admin_url, url)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for tests that are about PostgreSQL only."""
    admin_url = postgres_admin_url()
    url = create_postgres_database(admin_url)
    try:
        yield url
    finally:
        drop_postgres_database(admin_url, url)


@pytest.fixture
def engine(db_target: str):
    """An engine on `db_target`, whose schema is at the newest migration."""
    from pbclients.db import make_engine

    engine = make_engine(db_target, create=True)
    yield engine
    engine.dispose()


Runner = Callable[..., "object"]


@pytest.fixture
def cli(db_target: str, engine) -> Callable[..., object]:
    """Run `pbclients --db <db_target> ARGS...` in-process; returns click's Result."""
    from pbclients.cli.app import app

    runner = CliRunner()

    def run(*args: str, input: str | bytes | None = None, env: dict[str, str] | None = None):
        return runner.invoke(
            app, ["--db", db_target, *args], input=input, env=env, catch_exceptions=False
        )

    return run


@pytest.fixture
def practice(engine):
    """A small practice: five clients (ids 1-5), two programs, upcoming telehealth for client 1."""
    from tests.factory import build_small_practice

    return build_small_practice(engine)
