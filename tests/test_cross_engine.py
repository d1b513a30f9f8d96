"""The backup format is engine-neutral: a client exported from SQLite restores into
PostgreSQL with every record intact, and the other way round."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlmodel import col
from typer.testing import CliRunner

from pbclients import models
from pbclients.cli.app import app
from pbclients.db import make_engine, reading
from tests.conftest import create_postgres_database, drop_postgres_database, postgres_admin_url

pytestmark = pytest.mark.postgres

PROFILE = ["id", "email", "email_key", "first_name", "last_name", "phone",
           "portal_password_hash", "created_at"]  # fmt: skip


@pytest.fixture
def other_engine(
    db_target: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, Engine]]:
    """A database with the schema on the engine `db_target` is not on."""
    if "://" in db_target:
        path = tmp_path / "other.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        target = str(path)
        cleanup = None
    else:
        admin_url = postgres_admin_url()
        target = create_postgres_database(
            admin_url, template=request.getfixturevalue("postgres_template")
        )
        cleanup = admin_url
    engine = make_engine(target)
    try:
        yield target, engine
    finally:
        engine.dispose()
        if cleanup:
            drop_postgres_database(cleanup, target)


def run(db: str, *args: str):
    return CliRunner().invoke(app, ["--db", db, *args], catch_exceptions=False)


def client_records(engine: Engine, client_id: int) -> dict[str, Any]:
    """The client's profile and every record of every kind, as plain values."""
    with reading(engine) as session:
        client = session.get(models.Client, client_id)
        assert client is not None
        found: dict[str, Any] = {"profile": {f: getattr(client, f) for f in PROFILE}}
        for kind, model in models.RECORD_MODELS.items():
            table = model.__table__  # type: ignore[attr-defined]
            rows = session.execute(
                select(table).where(table.c.client_id == client_id).order_by(table.c.id)
            ).mappings()
            found[kind] = [dict(row) for row in rows]
        enrolled = session.execute(
            select(col(models.Program.name))
            .join(models.Enrolment, col(models.Enrolment.program_id) == models.Program.id)
            .where(col(models.Enrolment.client_id) == client_id)
        ).scalars()
        found["program_names"] = sorted(enrolled)
    return found


@pytest.mark.parametrize("client_id", [1, 2])
def test_a_backup_restores_on_the_other_engine_with_every_record(
    cli, practice, engine, other_engine, tmp_path, client_id
):
    other_target, other = other_engine
    original = client_records(engine, client_id)
    exported = cli("export", str(client_id), "--backup-dir", str(tmp_path / "b"), "-f", "json")
    assert exported.exit_code == 0, exported.stderr
    backup = json.loads(exported.stdout)[0]["backup"]

    restored = run(other_target, "restore", backup, "--yes", "--format", "json")
    assert restored.exit_code == 0, restored.stderr
    [result] = json.loads(restored.stdout)
    assert (result["id"], result["after"], result["outcome"]) == (
        client_id,
        "deactivated",
        "changed",
    )
    assert client_records(other, client_id) == original
    shown_before = json.loads(cli("show", str(client_id), "-f", "json").stdout)
    shown_after = json.loads(run(other_target, "show", str(client_id), "-f", "json").stdout)
    assert shown_after["counts"] == shown_before["counts"]
    assert run(other_target, "audit", "verify").exit_code == 0
