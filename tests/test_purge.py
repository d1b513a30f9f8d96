"""purge: retention boundary, chunks, all-or-nothing under SIGKILL, one run at a time,
silence under cron, and no purged bytes left in the SQLite files."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, update
from sqlmodel import col, select

from pbclients import audit, settings
from pbclients.db import reading, writing
from pbclients.errors import DatabaseBusy, Declined
from pbclients.models import RECORD_MODELS, AuditEvent, Client, Document, JournalEntry
from pbclients.operation import Action, Change, Plan
from pbclients.purge import preview as preview_purge
from pbclients.purge import purge, purge_lock
from pbclients.roster import NewClient, add_clients
from tests.factory import NOW

DELETED_AT = NOW - timedelta(days=30)  # with the default 30-day retention: due exactly at NOW


def backup_sha(client_id: int) -> str:
    return hashlib.sha256(f"backup of client {client_id}".encode()).hexdigest()


def mark_deleted(engine: Engine, ids: Sequence[int], *, at: datetime = DELETED_AT) -> str:
    """What `delete` leaves in the database, without writing backups (fast, any date):

    status 'deleted', deleted_at, purge_after = deleted_at + retention, and one
    `delete` audit event per client (before = previous status, detail = backup
    path and SHA-256), all in one batch and one transaction.
    """
    batch_id = audit.new_batch_id()
    with writing(engine) as session:
        retention = settings.retention_days(session)
        rows = session.exec(
            select(Client.id, Client.status).where(col(Client.id).in_(list(ids)))
        ).all()
        session.execute(
            update(Client)
            .where(col(Client.id).in_(list(ids)))
            .values(status="deleted", deleted_at=at, purge_after=at + timedelta(days=retention))
        )
        events = []
        for client_id, status in rows:
            assert client_id is not None  # a stored client always has its id
            events.append(
                audit.NewEvent(
                    Action.DELETE,
                    client_id,
                    status,
                    "deleted",
                    {
                        "backup": f"/backups/client-{client_id}.json",
                        "sha256": backup_sha(client_id),
                    },
                )
            )
        audit.append(
            session,
            events,
            batch_id=batch_id,
            actor="tester",
            reason=None,
            at=at,
        )
    return batch_id


def client_ids(engine: Engine) -> list[int]:
    with reading(engine) as session:
        return sorted(session.exec(select(Client.id)).all())  # type: ignore[arg-type]


def record_owners(engine: Engine) -> dict[str, list[int]]:
    """kind -> sorted client ids that still have records of that kind."""
    with reading(engine) as session:
        return {
            kind: sorted(set(session.exec(select(model.client_id)).all()))  # type: ignore[attr-defined]
            for kind, model in RECORD_MODELS.items()
        }


def purge_events(engine: Engine) -> list[AuditEvent]:
    with reading(engine) as session:
        return audit.events(session, action="purge")


def trail_intact(engine: Engine) -> bool:
    with reading(engine) as session:
        return audit.verify(session).intact


def at(moment: datetime) -> Change:
    return Change("cron", None, moment)


# -- the retention boundary --------------------------------------------------------------


def test_a_client_is_purged_from_the_second_purge_after_is_reached(engine, practice):
    mark_deleted(engine, [4])
    with reading(engine) as session:
        assert session.get(Client, 4).purge_after == NOW  # type: ignore[union-attr]

    early = purge(engine, at(NOW - timedelta(seconds=1)))
    assert (early.changing, early.batch_id) == (0, None)
    assert 4 in client_ids(engine)

    on_time = purge(engine, at(NOW))
    assert [(r.client_id, r.before, r.after, r.outcome.value) for r in on_time.results] == [
        (4, "deleted", "purged", "changed")
    ]
    assert client_ids(engine) == [1, 2, 3, 5]


def test_preview_uses_the_same_boundary_and_writes_nothing(engine, practice):
    mark_deleted(engine, [3, 4])
    mark_deleted(engine, [5], at=DELETED_AT + timedelta(seconds=1))
    events_before = len(purge_events(engine))
    preview = preview_purge(engine, NOW)
    assert [(r.client_id, r.email, r.outcome.value) for r in preview.results] == [
        (3, "chloe@example.org", "planned"),
        (4, "dev@example.org", "planned"),
    ]
    assert isinstance(preview, Plan)
    assert client_ids(engine) == [1, 2, 3, 4, 5]
    assert len(purge_events(engine)) == events_before


# -- what goes, what stays, what the trail keeps ------------------------------------------


def test_purge_removes_the_client_and_every_record_and_nothing_else(engine, practice):
    mark_deleted(engine, [1, 2])  # 1 has records of most kinds, 2 a payment plan and method
    owners_before = record_owners(engine)
    assert 1 in owners_before["documents"] and 2 in owners_before["payment_plans"]

    batch = purge(engine, at(NOW))

    assert batch.changing == 2
    assert client_ids(engine) == [3, 4, 5]
    owners_after = record_owners(engine)
    for kind, owners in owners_before.items():
        assert owners_after[kind] == [o for o in owners if o not in (1, 2)], kind
    assert trail_intact(engine)


def test_purge_audit_events_hold_only_id_time_and_backup_checksum(engine, practice):
    mark_deleted(engine, [1, 3])
    batch = purge(engine, at(NOW))
    events = purge_events(engine)
    assert [
        (e.client_id, e.before, e.after, e.batch_id, e.reason, json.loads(e.detail or "null"))
        for e in events
    ] == [
        (1, "deleted", "purged", batch.batch_id, None, {"sha256": backup_sha(1)}),
        (3, "deleted", "purged", batch.batch_id, None, {"sha256": backup_sha(3)}),
    ]
    assert {e.at for e in events} == {NOW}
    assert [(r.client_id, r.email, r.sha256) for r in batch.results] == [
        (1, None, backup_sha(1)),
        (3, None, backup_sha(3)),
    ]


def test_a_client_deleted_again_after_a_restore_is_purged_with_its_newest_checksum(
    engine, practice
):
    mark_deleted(engine, [2], at=DELETED_AT - timedelta(days=5))
    with writing(engine) as session:
        audit.append(
            session,
            [audit.NewEvent(Action.DELETE, 2, "deactivated", "deleted", {"sha256": "f" * 64})],
            batch_id="later",
            actor="tester",
            reason=None,
            at=DELETED_AT,
        )
    purge(engine, at(NOW))
    assert json.loads(purge_events(engine)[0].detail or "{}") == {"sha256": "f" * 64}


def test_clients_not_deleted_or_not_yet_due_stay(engine, practice):
    mark_deleted(engine, [5], at=NOW - timedelta(days=29))
    with writing(engine) as session:
        # A live client with a stale purge_after must never be purged.
        session.execute(update(Client).where(col(Client.id) == 1).values(purge_after=NOW))
    batch = purge(engine, at(NOW))
    assert batch.changing == 0
    assert client_ids(engine) == [1, 2, 3, 4, 5]


def test_purge_works_in_chunks_of_one_batch(engine, practice):
    mark_deleted(engine, [1, 2, 3, 4, 5])
    batch = purge(engine, at(NOW), chunk_size=2)
    assert batch.detail.chunks == 3
    assert client_ids(engine) == []
    events = purge_events(engine)
    assert [e.client_id for e in events] == [1, 2, 3, 4, 5]
    assert {e.batch_id for e in events} == {batch.batch_id}
    assert trail_intact(engine)


def test_purge_twice_is_harmless(engine, practice):
    mark_deleted(engine, [2, 4])
    first = purge(engine, at(NOW))
    second = purge(engine, at(NOW + timedelta(hours=1)))
    assert (first.changing, second.changing, second.batch_id) == (2, 0, None)
    assert len(purge_events(engine)) == 2
    assert client_ids(engine) == [1, 3, 5]


def test_declining_the_confirmation_changes_nothing(engine, practice):
    mark_deleted(engine, [4])
    asked: list[int] = []

    def decline(preview):
        asked.append(preview.changing)
        raise Declined("Not confirmed; nothing was changed.")

    with pytest.raises(Declined):
        purge(engine, at(NOW), confirm=decline)
    assert asked == [1]
    assert client_ids(engine) == [1, 2, 3, 4, 5]
    assert purge_events(engine) == []


def test_a_purge_holding_the_lock_makes_another_stop_without_touching_anything(engine, practice):
    mark_deleted(engine, [4])
    busy = pytest.raises(DatabaseBusy, match="Another purge or run-due is running")
    with purge_lock(engine), busy:
        purge(engine, at(NOW))
    assert client_ids(engine) == [1, 2, 3, 4, 5]
    # The lock is released with the block: the next run does the work.
    assert purge(engine, at(NOW)).changing == 1


def test_sqlite_lock_file_is_private_and_next_to_the_database(
    tmp_path, engine, practice, db_target
):
    if "://" in db_target:
        pytest.skip("the lock file is SQLite's; PostgreSQL uses an advisory lock")
    purge(engine, at(NOW))
    lock = Path(f"{db_target}.purge.lock")
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600


# -- the command under cron ---------------------------------------------------------------


def run_pbclients(
    db: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbclients", "--db", db, *args],
        env={**os.environ, "PBCLIENTS_NOW": "2026-11-26T09:00:00Z", **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def log_lines(home: Path) -> list[str]:
    log = home / "xdg_state_home" / "pbclients" / "log" / "purge.log"
    return log.read_text().splitlines() if log.exists() else []


def test_cron_purge_prints_nothing_and_logs_one_private_line(
    engine, practice, db_target, isolated_home
):
    mark_deleted(engine, [2, 4])
    result = run_pbclients(db_target, "purge", "--yes")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert client_ids(engine) == [1, 3, 5]

    log = isolated_home / "xdg_state_home" / "pbclients" / "log" / "purge.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    [line] = log_lines(isolated_home)
    assert " start=2026-11-26T09:00:00Z end=2026-11-26T09:00:00Z purged=2 chunks=1 " in line
    assert " exit=0 db=" in line
    for secret in ("ben@", "dev@", "Okafor", "Schmidt"):
        assert secret not in line

    again = run_pbclients(db_target, "purge", "--yes")
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert " purged=0 chunks=0 " in log_lines(isolated_home)[1]


def test_purge_without_a_terminal_and_without_yes_refuses_and_logs_it(
    cli, engine, practice, isolated_home
):
    mark_deleted(engine, [4])
    result = cli("purge")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "pass --yes" in result.stderr
    assert client_ids(engine) == [1, 2, 3, 4, 5]
    [line] = log_lines(isolated_home)
    assert " purged=0 chunks=0 " in line and " exit=2 " in line


def test_purge_dry_run_lists_who_would_go(cli, engine, practice, monkeypatch, isolated_home):
    monkeypatch.setenv("PBCLIENTS_NOW", "2026-11-26T09:00:00Z")
    mark_deleted(engine, [3])
    mark_deleted(engine, [5], at=NOW - timedelta(days=2))
    result = cli("purge", "--dry-run", "--format", "json")
    assert result.exit_code == 0, result.stderr
    listed = [(r["id"], r["email"], r["outcome"]) for r in json.loads(result.stdout)]
    assert listed == [(3, "chloe@example.org", "planned")]
    table = cli("purge", "--dry-run")
    assert table.stdout.splitlines()[-1] == (
        "Dry run: would purge 1 client permanently; nothing was written."
    )
    assert client_ids(engine) == [1, 2, 3, 4, 5]
    assert log_lines(isolated_home) == []


def test_purge_reports_in_json_when_asked(cli, engine, practice, monkeypatch):
    monkeypatch.setenv("PBCLIENTS_NOW", "2026-11-26T09:00:00Z")
    mark_deleted(engine, [4])
    result = cli("purge", "--yes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    [record] = json.loads(result.stdout)
    assert {k: record[k] for k in ("id", "email", "before", "after", "outcome", "sha256")} == {
        "id": 4, "email": None, "before": "deleted", "after": "purged", "outcome": "changed",
        "sha256": backup_sha(4),
    }  # fmt: skip


def test_every_caller_of_purge_writes_the_run_log(engine, practice, isolated_home):
    """The log line is the domain's: a script calling purge, or preview and apply, logs
    like the command does, declined runs included."""
    from pbclients import purge as purging

    mark_deleted(engine, [2, 4])

    def decline(plan):
        raise Declined("Not confirmed; nothing was changed.")

    with pytest.raises(Declined):
        purge(engine, at(NOW), confirm=decline)
    plan = purging.preview(engine, NOW)
    batch = purging.apply(engine, plan, at(NOW), chunk_size=1)
    assert (batch.changing, batch.detail.chunks) == (2, 2)
    lines = log_lines(isolated_home)
    assert len(lines) == 2
    assert " purged=0 chunks=0 exit=1 " in lines[0]
    assert " start=2026-11-26T09:00:00Z " in lines[1]
    assert " purged=2 chunks=2 " in lines[1] and " exit=0 db=" in lines[1]


def test_a_purge_failing_part_way_logs_what_it_committed(
    engine, practice, monkeypatch, isolated_home
):
    from pbclients import faults

    mark_deleted(engine, [1, 2, 3])
    checkpoint = faults.checkpoint
    committed: list[str] = []

    def meanwhile(step: str) -> None:
        checkpoint(step)
        if step == "purge.committed":
            committed.append(step)
            if len(committed) == 2:
                raise RuntimeError("disk full")

    monkeypatch.setattr(faults, "checkpoint", meanwhile)
    with pytest.raises(RuntimeError, match="disk full"):
        purge(engine, at(NOW), chunk_size=1)
    assert client_ids(engine) == [3, 4, 5]
    [line] = log_lines(isolated_home)
    assert " purged=2 chunks=2 exit=1 " in line


def test_log_names_a_postgresql_database_without_its_password():
    from pbclients.purge import RunLog

    line = RunLog("postgresql://admin:s3cret@db.example:5432/practice").line(5)
    assert line.endswith(" exit=5 db=postgresql://admin@db.example:5432/practice")


# -- SIGKILL between every pair of steps ---------------------------------------------------

BEFORE_COMMIT = ["purge.locked", "purge.selected", "purge.records-deleted",
                 "purge.clients-deleted", "purge.audited"]  # fmt: skip
AFTER_COMMIT = ["purge.committed", "purge.cleaned"]


def integrity_ok(engine: Engine, db_target: str) -> bool:
    if "://" in db_target:
        return True  # PostgreSQL's transactions are its own integrity check
    with sqlite3.connect(db_target) as raw:
        return raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


@pytest.mark.parametrize("step", BEFORE_COMMIT + AFTER_COMMIT)
def test_sigkill_at_any_step_leaves_clients_present_or_fully_purged(
    engine, practice, db_target, step
):
    mark_deleted(engine, [1, 2])
    owners_before = record_owners(engine)

    killed = run_pbclients(
        db_target, "purge", "--yes", env={"PBCLIENTS_FAULT": f"kill-after:{step}"}
    )

    assert killed.returncode == -9, killed.stderr
    assert integrity_ok(engine, db_target)
    assert trail_intact(engine)
    if step in BEFORE_COMMIT:
        assert client_ids(engine) == [1, 2, 3, 4, 5]
        assert record_owners(engine) == owners_before
        assert purge_events(engine) == []
    else:
        assert client_ids(engine) == [3, 4, 5]
        assert [e.client_id for e in purge_events(engine)] == [1, 2]
    # The lock died with the process: the next run is not refused and finishes the job once.
    purge(engine, at(NOW))
    assert client_ids(engine) == [3, 4, 5]
    assert all(1 not in owners and 2 not in owners for owners in record_owners(engine).values())
    assert [e.client_id for e in purge_events(engine)] == [1, 2]
    assert integrity_ok(engine, db_target)
    assert trail_intact(engine)


# -- never two at once ---------------------------------------------------------------------


@pytest.mark.parametrize("runs", [2, 3])
def test_purges_started_at_once_one_works_the_others_exit_5_untouched(
    engine, practice, db_target, tmp_path, isolated_home, runs
):
    mark_deleted(engine, [2, 4])
    release = tmp_path / "release"
    env = {
        **os.environ,
        "PBCLIENTS_NOW": "2026-11-26T09:00:00Z",
        # Whoever takes the lock waits there until the test has seen the others give up.
        "PBCLIENTS_FAULT": f"wait-after:purge.locked:{release}",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pbclients", "--db", db_target, "purge", "--yes"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(runs)
    ]
    outputs: dict[int, tuple[str, str]] = {}
    try:
        deadline = time.monotonic() + 30
        while sum(p.poll() is not None for p in procs) < runs - 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        finished = [p for p in procs if p.poll() is not None]
        waiting = [p for p in procs if p.poll() is None]
        assert (len(finished), len(waiting)) == (runs - 1, 1)
        for proc in finished:
            outputs[proc.pid] = proc.communicate()
            assert proc.returncode == 5
            assert outputs[proc.pid][0] == ""
            assert outputs[proc.pid][1].startswith(
                "Error: Another purge or run-due is running on this database; nothing"
            )
        # While the winner holds the lock, the losers have touched nothing.
        assert client_ids(engine) == [1, 2, 3, 4, 5]
        assert purge_events(engine) == []
    finally:
        release.touch()
        for proc in procs:
            if proc.pid not in outputs:
                outputs[proc.pid] = proc.communicate(timeout=60)
    [winner] = waiting
    assert (winner.returncode, *outputs[winner.pid]) == (0, "", "")
    assert client_ids(engine) == [1, 3, 5]
    assert [e.client_id for e in purge_events(engine)] == [2, 4]
    lines = log_lines(isolated_home)
    assert sorted(line.split(" exit=")[1].split()[0] for line in lines) == ["0"] + ["5"] * (
        runs - 1
    )
    assert sum(" purged=2 " in line for line in lines) == 1


def test_a_client_brought_back_and_deleted_again_mid_purge_is_not_purged_early(
    engine, practice, tmp_path, monkeypatch
):
    """Undo, then a fresh delete (purge_after a month away), between purge's select and its
    deletes: that client must stay. PostgreSQL needs the row lock; SQLite's write lock is held."""
    from pbclients import faults
    from pbclients.csvinput import Reference
    from pbclients.deletion import delete_clients
    from pbclients.selection import Selection
    from pbclients.undo import undo_batch

    batch = mark_deleted(engine, [4])
    brought_back: list[bool] = []
    checkpoint = faults.checkpoint

    def meanwhile(step: str) -> None:
        checkpoint(step)
        if step != "purge.selected" or brought_back:
            return
        try:
            undo_batch(engine, batch, Change("admin", None, NOW))
        except DatabaseBusy:
            brought_back.append(False)
            return
        brought_back.append(True)
        delete_clients(
            engine, Selection([Reference("4", "argument", None)]), Change("admin", None, NOW),
            tmp_path,
        )  # fmt: skip

    monkeypatch.setattr(faults, "checkpoint", meanwhile)
    purge(engine, at(NOW))
    monkeypatch.setattr(faults, "checkpoint", checkpoint)
    with reading(engine) as session:
        client = session.get(Client, 4)
    if brought_back == [True]:
        assert client is not None and client.purge_after == NOW + timedelta(days=30)
    else:
        assert (brought_back, client) == ([False], None)
    assert trail_intact(engine)


# -- nothing left in the files -------------------------------------------------------------

SECRETS = {
    "email": b"zephyrine.quillfeather@example.org",
    "first name": b"Zephyrine",
    "last name": b"Quillfeather",
    "phone": b"+44 7700 900123",
    "journal": b"Dreamt of marmalade lighthouses",
    "document": b"ferritin-xq-77-unique",
}


def sqlite_bytes(path: Path) -> bytes:
    return b"".join(
        Path(f"{path}{suffix}").read_bytes()
        for suffix in ("", "-wal", "-shm")
        if Path(f"{path}{suffix}").exists()
    )


def test_purged_names_and_emails_are_gone_from_the_sqlite_files(tmp_path, isolated_home):
    from pbclients.db import make_engine
    from pbclients.schema import init_schema

    db = tmp_path / "bytes.db"
    engine = make_engine(str(db), create=True)
    init_schema(engine)
    # A reader that stays connected keeps SQLite from checkpointing and removing the WAL
    # when the others close: the client's rows sit in the -wal file when purge starts,
    # and what the files hold afterwards is purge's own doing.
    reader = sqlite3.connect(db)
    reader.execute("SELECT count(*) FROM client").fetchone()
    add_clients(
        engine,
        [NewClient(f"keep{i}@example.org", f"Keep{i}", "Stays") for i in range(40)]
        + [NewClient("Zephyrine.Quillfeather@example.org", "Zephyrine", "Quillfeather",
                     "+44 7700 900123")]
        + [NewClient(f"late{i}@example.org", f"Late{i}", "Stays") for i in range(40)],
        Change("setup", None, NOW - timedelta(days=90)),
    )  # fmt: skip
    with writing(engine) as session:
        zephyrine = session.exec(select(Client.id).where(Client.last_name == "Quillfeather")).one()
        assert zephyrine is not None
        session.execute(
            insert(JournalEntry),
            [{"client_id": zephyrine, "written_at": NOW, "body": SECRETS["journal"].decode()}],
        )
        session.execute(
            insert(Document),
            [{"client_id": zephyrine, "filename": "labs.txt", "content_type": "text/plain",
              "uploaded_at": NOW, "content": SECRETS["document"]}],
        )  # fmt: skip
    mark_deleted(engine, [zephyrine])
    engine.dispose()

    try:
        wal = Path(f"{db}-wal").read_bytes()
        for what, secret in SECRETS.items():
            assert secret in wal, f"the test data should be in the -wal file before ({what})"

        result = run_pbclients(str(db), "purge", "--yes")
        assert (result.returncode, result.stderr) == (0, "")

        after = sqlite_bytes(db)
        for what, secret in SECRETS.items():
            assert secret not in after, f"purged {what} is still in the database files"
            assert secret.lower() not in after.lower(), f"purged {what} (any case) is still there"
        assert b"keep7@example.org" in after  # the others are still there, readable
        assert reader.execute("SELECT count(*) FROM client").fetchone() == (80,)
        assert reader.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        reader.close()


def test_purge_after_the_real_delete_command_keeps_its_backup_checksum(
    cli, engine, practice, monkeypatch, tmp_path
):
    monkeypatch.setenv("PBCLIENTS_NOW", "2026-10-27T09:00:00Z")  # 30 days before NOW
    deleted = cli("delete", "2", "--backup-dir", str(tmp_path / "backups"), "--yes",
                  "--format", "json")  # fmt: skip
    assert deleted.exit_code == 0, deleted.stderr
    [record] = json.loads(deleted.stdout)
    monkeypatch.setenv("PBCLIENTS_NOW", "2026-11-26T08:59:59Z")
    assert json.loads(cli("purge", "--yes", "--format", "json").stdout) == []
    monkeypatch.setenv("PBCLIENTS_NOW", "2026-11-26T09:00:00Z")
    purged = cli("purge", "--yes", "--format", "json")
    assert [(r["id"], r["sha256"]) for r in json.loads(purged.stdout)] == [(2, record["sha256"])]
    assert json.loads(purge_events(engine)[0].detail or "{}") == {"sha256": record["sha256"]}
    assert client_ids(engine) == [1, 3, 4, 5]


@pytest.mark.parametrize(("answer", "code"), [("n", 1), ("y", 0)])
def test_on_a_terminal_purge_asks_stating_count_and_irreversibility(
    engine, practice, db_target, answer, code
):
    from tests.helpers import run_in_pty, subprocess_env

    mark_deleted(engine, [2, 4])
    exit_code, prompt, rest = run_in_pty(
        ["--db", db_target, "purge"], answer, env=subprocess_env(COLUMNS="200")
    )
    assert exit_code == code, rest
    assert "Permanently purge 2 clients and all of their records? This is irreversible" in prompt
    if answer == "n":
        assert "Not confirmed; nothing was changed." in rest
        assert client_ids(engine) == [1, 2, 3, 4, 5]
    else:
        assert rest.strip().splitlines()[-1].startswith("Purged 2 clients permanently (batch ")
        assert client_ids(engine) == [1, 3, 5]


# -- PostgreSQL: the session lock dies with its connection ---------------------------------


def terminate_lock_holder(db_target: str) -> int:
    """Kill the backend holding purge's advisory lock, as a server restart or an operator's
    pg_terminate_backend would; returns how many backends were terminated.

    Only once it is idle, i.e. the purge has taken the lock and moved on (to its chunks, or
    to waiting at a fault-injection checkpoint). The timeout makes it wait until the backend
    has exited: without one it only sends the signal, and the purge's next check could still
    see the dying backend holding the lock."""
    import psycopg

    with psycopg.connect(db_target, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(l.pid, 10000) FROM pg_locks AS l "
            "JOIN pg_stat_activity AS a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
            "AND l.objid = 7310003 AND a.state = 'idle' AND l.database = (SELECT oid "
            "FROM pg_database WHERE datname = current_database())"
        ).fetchall()
    return sum(1 for (terminated,) in killed if terminated)


def kill_lock_after_first_chunk(monkeypatch, db_target: str) -> list[int]:
    from pbclients import faults

    checkpoint = faults.checkpoint
    killed: list[int] = []

    def meanwhile(step: str) -> None:
        checkpoint(step)
        if step == "purge.committed" and not killed:
            killed.append(terminate_lock_holder(db_target))

    monkeypatch.setattr(faults, "checkpoint", meanwhile)
    return killed


def test_a_purge_whose_lock_was_lost_stops_before_its_next_chunk(
    engine, practice, db_target, monkeypatch
):
    if "://" not in db_target:
        pytest.skip("SQLite's flock lives as long as the process; only a server can drop it")
    from pbclients.purge import PurgeStopped

    mark_deleted(engine, [1, 2, 3])
    killed = kill_lock_after_first_chunk(monkeypatch, db_target)

    with pytest.raises(PurgeStopped) as stopped:
        purge(engine, at(NOW), chunk_size=1)

    assert killed == [1]
    assert (stopped.value.purged, stopped.value.chunks) == (1, 1)
    assert stopped.value.exit_code == 5
    assert "the 1 client(s) of its first 1 chunk(s) (batch " in str(stopped.value)
    # Only the first chunk went; the next one was never started without the lock.
    assert client_ids(engine) == [2, 3, 4, 5]
    assert [e.client_id for e in purge_events(engine)] == [1]
    assert {e.batch_id for e in purge_events(engine)} == {stopped.value.batch_id}
    assert trail_intact(engine)
    # The lock is free again (it died with its connection): the next run finishes the job.
    monkeypatch.undo()
    assert purge(engine, at(NOW)).changing == 2
    assert client_ids(engine) == [4, 5]


def test_a_lost_lock_before_any_chunk_purges_nothing(engine, practice, db_target, monkeypatch):
    if "://" not in db_target:
        pytest.skip("SQLite's flock lives as long as the process; only a server can drop it")
    from pbclients import faults
    from pbclients.purge import PurgeStopped

    mark_deleted(engine, [2])
    checkpoint = faults.checkpoint

    def meanwhile(step: str) -> None:
        checkpoint(step)
        if step == "purge.locked":
            assert terminate_lock_holder(db_target) == 1

    monkeypatch.setattr(faults, "checkpoint", meanwhile)
    with pytest.raises(PurgeStopped, match="nothing was purged, run purge again to finish"):
        purge(engine, at(NOW))
    assert client_ids(engine) == [1, 2, 3, 4, 5]
    assert purge_events(engine) == []


def test_cron_purge_that_lost_its_lock_exits_5_and_logs_what_it_committed(
    cli, engine, practice, db_target, monkeypatch, isolated_home
):
    if "://" not in db_target:
        pytest.skip("SQLite's flock lives as long as the process; only a server can drop it")
    from pbclients.purge import CHUNK

    # A full chunk and one client more (client 1 and ids 100-1099), so there is a next
    # chunk to stop before.
    first_new, extra = 100, CHUNK
    with writing(engine) as session:
        session.execute(
            insert(Client),
            [
                {"id": first_new + i, "email": f"c{i}@x.org", "email_key": f"c{i}@x.org",
                 "first_name": "C", "last_name": str(i), "created_at": NOW}
                for i in range(extra)
            ],
        )  # fmt: skip
    mark_deleted(engine, [1, *range(first_new, first_new + extra)])
    killed = kill_lock_after_first_chunk(monkeypatch, db_target)
    monkeypatch.setenv("PBCLIENTS_NOW", "2026-11-26T09:00:00Z")

    result = cli("purge", "--yes")

    assert killed == [1]
    assert result.exit_code == 5
    assert result.stdout == ""
    assert result.stderr.startswith("Error: The purge lost its database lock (the PostgreSQL ")
    assert f"the {CHUNK} client(s) of its first 1 chunk(s) (batch " in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert client_ids(engine) == [2, 3, 4, 5, first_new + extra - 1]
    assert len(purge_events(engine)) == CHUNK
    [line] = log_lines(isolated_home)
    assert f" purged={CHUNK} chunks=1 stopped=lock-lost exit=5 " in line
    assert trail_intact(engine)


def test_after_a_lost_lock_a_second_purge_takes_over_and_the_first_never_resumes(
    engine, practice, db_target, tmp_path, isolated_home
):
    if "://" not in db_target:
        pytest.skip("SQLite's flock lives as long as the process; only a server can drop it")
    mark_deleted(engine, [2, 4])
    release = tmp_path / "release"
    first = subprocess.Popen(
        [sys.executable, "-m", "pbclients", "--db", db_target, "purge", "--yes"],
        env={**os.environ, "PBCLIENTS_NOW": "2026-11-26T09:00:00Z",
             "PBCLIENTS_FAULT": f"wait-after:purge.locked:{release}"},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        killed = 0
        while not killed and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
            killed = terminate_lock_holder(db_target)
        assert killed == 1
        # The lock is free: a second purge takes it and does the whole job.
        second = run_pbclients(db_target, "purge", "--yes")
        assert (second.returncode, second.stdout, second.stderr) == (0, "", "")
        assert client_ids(engine) == [1, 3, 5]
    finally:
        release.touch()
        out, err = first.communicate(timeout=60)
    assert first.returncode == 5, err
    assert out == ""
    assert err.startswith("Error: The purge lost its database lock")
    assert "nothing was purged" in err
    assert [e.client_id for e in purge_events(engine)] == [2, 4]
    lines = log_lines(isolated_home)
    assert sorted(line.split(" exit=")[1].split()[0] for line in lines) == ["0", "5"]
    assert any(" purged=0 chunks=0 stopped=lock-lost exit=5 " in line for line in lines)
    assert any(" purged=2 chunks=1 " in line and " exit=0 " in line for line in lines)
