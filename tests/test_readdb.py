"""The read commands through the bare driver (pbclients.readdb): other URL forms, locks, times."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from pbclients import roster_view
from pbclients.readdb import utc
from tests.helpers import pbclients, subprocess_env

READS = [
    ["list", "--status", "all", "--format", "json"],
    ["show", "2", "--format", "json"],
    ["plan", "--format", "json"],
    ["audit", "--format", "json"],
]


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    db = tmp_path / "p.db"
    assert pbclients("--db", str(db), "demo", "--clients", "12").returncode == 0
    assert pbclients("--db", str(db), "delete", "3", "--yes").returncode == 0
    assert pbclients("--db", str(db), "hold", "4", "--reason", "case 7", "--yes").returncode == 0
    return db


@pytest.mark.parametrize("args", READS, ids=" ".join)
def test_a_sqlite_url_reads_the_same_as_the_file_path(demo: Path, args: list[str]) -> None:
    by_path = pbclients("--db", str(demo), *args)
    by_url = pbclients("--db", f"sqlite:///{demo}", *args)
    assert by_path.returncode == by_url.returncode == 0, by_url.stderr
    assert json.loads(by_url.stdout) == json.loads(by_path.stdout)


@pytest.mark.parametrize("args", READS, ids=" ".join)
def test_a_read_waits_for_a_lock_then_exits_5(demo: Path, args: list[str]) -> None:
    holder = sqlite3.connect(demo, isolation_level=None)
    # Exclusive: even WAL readers must wait (a checkpoint or another tool's lock).
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE setting SET value = value")
    try:
        run = pbclients("--db", str(demo), *args, env=subprocess_env(PBCLIENTS_LOCK_TIMEOUT="0.2"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert run.returncode == 5
    assert run.stdout == b""
    assert run.stderr.decode() == (
        "Error: The database is busy (another pbclients run or the portal holds it); "
        "nothing was changed, try again in a moment.\n"
    )


def test_stored_times_read_back_as_the_models_read_them(engine: Engine, practice: object) -> None:
    from sqlmodel import select

    from pbclients.db import reading
    from pbclients.models import Client

    with reading(engine) as session:
        expected = {c.id: (c.created_at, c.deactivated_at) for c in session.exec(select(Client))}
    found = {
        s.id: (s.created_at, s.deactivated_at)
        for s in roster_view.iter_clients(engine, roster_view.ClientFilter(limit=None))
    }
    assert found == expected
    assert all(moment is not None and moment.tzinfo is UTC for moment, _ in found.values())


def test_a_reader_writes_times_as_the_database_stores_them(
    engine: Engine, practice: object
) -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE client SET deactivated_at = :at WHERE id = 1"), {"at": None}
        )
    from pbclients.db import writing
    from pbclients.models import Client

    with writing(engine) as session:
        client = session.get(Client, 1)
        assert client is not None
        client.deactivated_at = moment
    with roster_view.database_of(engine).read() as reader:
        assert (
            reader.scalar("SELECT count(*) FROM client WHERE deactivated_at = ?", reader.at(moment))
            == 1
        )
        stored = reader.scalar("SELECT deactivated_at FROM client WHERE id = 1")
    assert utc(stored) == moment


def test_utc_reads_text_and_naive_and_aware_times() -> None:
    assert utc(None) is None
    assert utc("2026-11-30 09:00:00.000001") == datetime(2026, 11, 30, 9, 0, 0, 1, tzinfo=UTC)
    assert utc("2026-11-30 09:00:00") == datetime(2026, 11, 30, 9, tzinfo=UTC)
    assert utc(datetime(2026, 11, 30, 9)) == datetime(2026, 11, 30, 9, tzinfo=UTC)
    aware = datetime.fromisoformat("2026-11-30T10:00:00+01:00")
    assert utc(aware) == datetime(2026, 11, 30, 9, tzinfo=UTC)
