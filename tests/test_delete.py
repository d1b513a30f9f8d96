"""delete: a verified backup of every client first, then one transaction; never a deleted
client without a verified backup, whatever fails or dies along the way."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, text

from pbclients import audit
from pbclients.backup.archive import backup_files
from pbclients.backup.reader import verify_backup
from pbclients.db import reading, writing
from pbclients.deletion import Deletion, delete_clients, preview
from pbclients.errors import BackupFailed, UsageError
from pbclients.models import Document, Message
from pbclients.operation import Change
from pbclients.selection import Selection
from tests.factory import NOW
from tests.helpers import (
    NOW_TEXT,
    outcomes,
    records,
    run_in_pty,
    snapshot,
    sql,
    statuses,
    subprocess_env,
)

SQLITE_ONLY = pytest.mark.parametrize("db_target", ["sqlite"], indirect=True)


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)


def sha256_of(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def delete_events(engine) -> dict[int, dict]:
    """The newest delete event's detail per client."""
    with reading(engine) as session:
        return {
            int(e.client_id): json.loads(e.detail)
            for e in audit.events(session, action="delete")
            if e.client_id is not None and e.detail
        }


def assert_safe(engine, db_path: str | None = None, folder: Path | None = None) -> None:
    """The invariant: every deleted client has a verified backup whose SHA-256 is on record.

    The trail names the backup file only (a folder may carry a client's name): it is in `folder`.
    """
    details = delete_events(engine)
    for client_id, status in statuses(engine).items():
        if status != "deleted":
            continue
        detail = details[client_id]
        assert folder is not None, "a client is deleted: name the folder of its backup"
        backup = folder / detail["backup"]
        manifest = verify_backup(backup)
        assert manifest.client_id == client_id
        assert manifest.sha256 == detail["sha256"] == sha256_of(backup)
    with reading(engine) as session:
        assert audit.verify(session).intact
    if db_path:
        with sqlite3.connect(db_path) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# --- the command ------------------------------------------------------------------------


def test_delete_backs_up_then_deletes_and_frees_the_seat(cli, practice, engine, tmp_path):
    folder = tmp_path / "backups"
    result = cli("delete", "1", "BEN@example.org", "--backup-dir", str(folder), "--yes",
                 "--reason", "left", "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = records(result.stdout)
    assert outcomes(result.stdout) == [
        ("1", 1, "active", "deleted", "changed"),
        ("BEN@example.org", 2, "active", "deleted", "changed"),
    ]
    assert [Path(r["backup"]).name for r in rows] == [
        "client-000001-20261126T090000Z.pbbackup.zip",
        "client-000002-20261126T090000Z.pbbackup.zip",
    ]
    for row in rows:
        assert Path(row["backup"]).parent == folder
        assert row["sha256"] == sha256_of(row["backup"])
        assert os.stat(row["backup"]).st_mode & 0o777 == 0o600
    assert os.stat(folder).st_mode & 0o777 == 0o700

    events = delete_events(engine)
    assert events[1] == {"backup": Path(rows[0]["backup"]).name, "sha256": rows[0]["sha256"]}
    assert events[2] == {"backup": Path(rows[1]["backup"]).name, "sha256": rows[1]["sha256"]}
    with reading(engine) as session:
        event = audit.events(session, client_id=1, action="delete")[-1]
    assert (event.before, event.after, event.reason, event.actor) == (
        "active", "deleted", "left", "tester",
    )  # fmt: skip

    listed = records(cli("list", "--format", "json").stdout)
    assert [c["id"] for c in listed] == [3, 4, 5]
    deleted = records(cli("list", "--status", "deleted", "--format", "json").stdout)
    assert [
        (c["id"], c["deleted_at"], c["purge_after"], c["days_until_purge"]) for c in deleted
    ] == [
        (1, "2026-11-26T09:00:00Z", "2026-12-26T09:00:00Z", 30),
        (2, "2026-11-26T09:00:00Z", "2026-12-26T09:00:00Z", 30),
    ]
    plan = records(cli("plan", "--format", "json").stdout)
    assert (plan["counted"], plan["deleted"]) == (3, 2)
    assert_safe(engine, folder=folder)


def test_deactivated_at_is_kept_and_the_retention_setting_is_used(cli, practice, engine, tmp_path):
    assert cli("deactivate", "3", "--yes").exit_code == 0
    assert cli("plan", "--set-retention", "7", "--yes").exit_code == 0
    result = cli("delete", "3", "--backup-dir", str(tmp_path / "b"), "--yes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert outcomes(result.stdout) == [("3", 3, "deactivated", "deleted", "changed")]
    [client] = records(cli("list", "--status", "deleted", "--format", "json").stdout)
    assert (client["deactivated_at"], client["deleted_at"], client["purge_after"]) == (
        "2026-11-26T09:00:00Z", "2026-11-26T09:00:00Z", "2026-12-03T09:00:00Z",
    )  # fmt: skip


def test_already_deleted_is_unchanged_and_gets_no_new_backup(cli, practice, tmp_path):
    folder = tmp_path / "b"
    assert cli("delete", "4", "--backup-dir", str(folder), "--yes").exit_code == 0
    result = cli("delete", "4", "--backup-dir", str(folder), "--yes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert outcomes(result.stdout) == [("4", 4, "deleted", "deleted", "unchanged")]
    assert len(backup_files(folder)) == 1
    # Nothing to do is said as such, not as a dry run.
    result = cli("delete", "4", "--backup-dir", str(folder), "--yes")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "Nothing to delete (1 already deleted)."


def test_dry_run_writes_no_backup_and_changes_nothing(cli, practice, engine, tmp_path):
    before = snapshot(engine)
    folder = tmp_path / "b"
    result = cli("delete", "1", "2", "--backup-dir", str(folder), "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "Dry run: would back up and delete 2 clients, freeing 2 plan seats" in result.stdout
    assert "purged after 30 days (on 2026-12-26)" in result.stdout
    assert not folder.exists()
    assert snapshot(engine) == before


def test_without_a_terminal_and_without_yes_it_refuses(cli, practice, engine, tmp_path):
    before = snapshot(engine)
    result = cli("delete", "1", "--backup-dir", str(tmp_path / "b"))
    assert result.exit_code == 2
    assert "pass --yes" in result.stderr
    assert snapshot(engine) == before
    assert not (tmp_path / "b").exists()


def test_unknown_client_stops_everything_before_any_backup(cli, practice, engine, tmp_path):
    before = snapshot(engine)
    result = cli("delete", "1", "nobody@example.org", "--backup-dir", str(tmp_path / "b"), "--yes")
    assert result.exit_code == 3
    assert "'nobody@example.org'" in result.stderr
    assert snapshot(engine) == before
    assert backup_files(tmp_path / "b") == []


def test_deactivated_before_picks_long_deactivated_clients(cli, practice, engine, tmp_path):
    sql(engine, "UPDATE client SET status='deactivated', deactivated_at=:at WHERE id=3",
        at=(NOW - timedelta(days=400)).replace(tzinfo=None))  # fmt: skip
    sql(engine, "UPDATE client SET status='deactivated', deactivated_at=:at WHERE id=4",
        at=(NOW - timedelta(days=10)).replace(tzinfo=None))  # fmt: skip
    folder = str(tmp_path / "b")
    result = cli("delete", "--deactivated-before", "365d", "--backup-dir", folder, "--yes",
                 "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert outcomes(result.stdout) == [("3", 3, "deactivated", "deleted", "changed")]
    # With other selection options it narrows them: client 1 is active, 4 too recent.
    sql(engine, "UPDATE client SET status='deactivated', deactivated_at=:at WHERE id=5",
        at=(NOW - timedelta(days=40)).replace(tzinfo=None))  # fmt: skip
    result = cli("delete", "1", "4", "5", "--deactivated-before", "2026-11-01", "--backup-dir",
                 folder, "--yes", "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert [(r["id"], r["outcome"], r["note"]) for r in records(result.stdout)] == [
        (1, "skipped", "not deactivated before 2026-11-01T00:00:00Z"),
        (4, "skipped", "not deactivated before 2026-11-01T00:00:00Z"),
        (5, "changed", None),
    ]
    assert statuses(engine) == {1: "active", 2: "active", 3: "deleted", 4: "deactivated",
                                5: "deleted"}  # fmt: skip


def test_deactivated_before_rejects_a_non_date(cli, practice):
    result = cli("delete", "--deactivated-before", "last year", "--yes")
    assert result.exit_code == 2
    assert "--deactivated-before 'last year' is not a date" in result.stderr


def test_a_backup_folder_that_is_a_file_fails_with_exit_4(cli, practice, engine, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    before = snapshot(engine)
    result = cli("delete", "1", "2", "--backup-dir", str(blocker), "--yes")
    assert result.exit_code == 4
    assert "it is a file, not a folder" in result.stderr
    assert snapshot(engine) == before


# --- the domain function ------------------------------------------------------------------


def test_preview_counts_seats_and_consequences(engine, practice, tmp_path):
    plan = preview(engine, Deletion(Selection(_refs("1", "2", "3")), tmp_path))
    assert plan.changing == 3
    assert plan.detail.seats_freed == 3
    assert plan.detail.retention_days == 30
    assert plan.consequences is not None
    assert plan.consequences.active_payment_plans == 1


def test_apply_deletes_the_planned_clients_without_resolving_the_selection_again(
    engine, practice, tmp_path
):
    from pbclients.deletion import apply

    plan = preview(engine, Deletion(Selection(_refs("ana@example.org")), tmp_path))
    # Resolving the e-mail again would no longer find client 1 (exit 3).
    sql(engine, "UPDATE client SET email = 'x@example.org', email_key = 'x@example.org' "
                "WHERE id = 1")  # fmt: skip
    batch = apply(engine, plan, Change("t", None, NOW))
    assert [(r.client_id, r.outcome.value) for r in batch.results] == [(1, "changed")]
    assert statuses(engine)[1] == "deleted"


def test_an_empty_selection_without_a_date_is_a_usage_error(engine, practice, tmp_path):
    with pytest.raises(UsageError, match="--deactivated-before"):
        delete_clients(engine, Selection(), Change("t", None, NOW), tmp_path)


def test_records_added_after_the_backups_stop_the_deletion(engine, practice, tmp_path):
    """The counts are checked again inside the transaction: a stale backup deletes nothing."""

    def add_message(done: int, total: int) -> None:
        if done == total:
            with writing(engine) as session:
                session.execute(insert(Message), [
                    {"client_id": 1, "sent_at": NOW, "sender": "client", "body": "one more"}
                ])  # fmt: skip

    before = statuses(engine)
    with pytest.raises(BackupFailed) as caught:
        delete_clients(engine, Selection(_refs("1", "2")), Change("t", None, NOW), tmp_path,
                       on_progress=add_message)  # fmt: skip
    message = str(caught.value)
    assert "Client 1's records changed after its backup" in message
    assert "no client was deleted (backups already written were kept:" in message
    assert statuses(engine) == before
    assert len(backup_files(tmp_path)) == 2  # kept, and reported


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE journal_entry SET body = 'Slept badly.' WHERE client_id = 1",
        "UPDATE client SET portal_password_hash = 'new' WHERE id = 1",
        "UPDATE document SET content = :other WHERE client_id = 1",
    ],
)
def test_a_record_edited_after_its_backup_stops_the_deletion(engine, practice, tmp_path, change):
    """Same record counts, other content: the backup is stale and nobody is deleted."""

    def edit(done: int, total: int) -> None:
        if done == total:
            sql(engine, change, other=b"ferritin 54")

    before = statuses(engine)
    with pytest.raises(BackupFailed) as caught:
        delete_clients(engine, Selection(_refs("1", "2")), Change("t", None, NOW), tmp_path,
                       on_progress=edit)  # fmt: skip
    assert "Client 1's records changed after its backup" in str(caught.value)
    assert "no client was deleted" in str(caught.value)
    assert statuses(engine) == before


def _refs(*texts: str):
    from pbclients.csvinput import Reference

    return [Reference(t, "argument", None) for t in texts]


# --- typed confirmation on a real terminal -----------------------------------------------


def _run_on_pty(args: list[str], answer: str, marker: bytes) -> tuple[int, str, str]:
    return run_in_pty(args, answer, env=subprocess_env(), marker=marker)


@SQLITE_ONLY
def test_more_than_one_client_needs_the_number_typed(db_target, practice, engine, tmp_path):
    args = ["--db", db_target, "delete", "1", "2", "3", "--backup-dir", str(tmp_path / "b")]
    code, prompt, _ = _run_on_pty(args, "y", b"Type 3 to confirm")
    assert code == 1
    assert "Delete 3 clients?" in prompt
    assert "purged permanently after 30 days (on 2026-12-26)" in prompt
    assert "This frees 3 plan seats." in prompt
    assert "1 upcoming telehealth session leaves the calendar with them." in prompt
    assert "1 active payment plan is theirs; cancel it in billing" in prompt
    assert set(statuses(engine).values()) == {"active"}
    code, _, rest = _run_on_pty(args, "3", b"Type 3 to confirm")
    assert code == 0, rest
    assert [statuses(engine)[i] for i in (1, 2, 3)] == ["deleted"] * 3


@SQLITE_ONLY
def test_one_client_is_confirmed_with_y(db_target, practice, engine, tmp_path):
    args = ["--db", db_target, "delete", "4", "--backup-dir", str(tmp_path / "b")]
    code, prompt, rest = _run_on_pty(args, "y", b"[y/N]")
    assert code == 0, rest
    assert "Delete 1 client?" in prompt
    assert "This frees 1 plan seat." in prompt
    assert statuses(engine)[4] == "deleted"


# --- fault injection in real processes (SQLite) --------------------------------------------

STEPS = [
    "delete.selected",
    "backup.open",
    "backup.temp-written",
    "backup.linked",
    "backup.written",
    "backup.verified",
    "delete.after-backups",
    "delete.checked",
    "delete.state-changed",
    "delete.audited",
    "delete.committed",
]


def _delete(db: str, folder: Path, *clients: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbclients", "--db", db, "delete", *clients, "--backup-dir",
         str(folder), "--yes", "--format", "json"],
        capture_output=True, text=True, env=subprocess_env(**env), timeout=60, check=False,
    )  # fmt: skip


@SQLITE_ONLY
@pytest.mark.parametrize("step", STEPS)
def test_sigkill_at_any_step_never_leaves_a_deleted_client_without_a_backup(
    db_target, practice, engine, tmp_path, step
):
    folder = tmp_path / "b"
    died = _delete(db_target, folder, "1", "2", PBCLIENTS_FAULT=f"kill-after:{step}")
    assert died.returncode == -9, died.stderr
    engine.dispose()
    expected = "deleted" if step == "delete.committed" else "active"
    assert [statuses(engine)[i] for i in (1, 2)] == [expected, expected]
    assert_safe(engine, db_target, folder)
    # The next run finishes the job.
    delete_clients(engine, Selection(_refs("1", "2")), Change("t", None, NOW), folder)
    assert [statuses(engine)[i] for i in (1, 2)] == ["deleted", "deleted"]
    assert_safe(engine, db_target, folder)


@SQLITE_ONLY
def test_a_full_disk_fails_with_exit_4_and_keeps_earlier_backups(
    db_target, practice, engine, tmp_path
):
    # Client 2 has a 300 kB file that does not compress; the process may write 150 kB files.
    with writing(engine) as session:
        session.execute(insert(Document), [{
            "client_id": 2, "filename": "scan.pdf", "content_type": "application/pdf",
            "uploaded_at": NOW, "content": os.urandom(300_000),
        }])  # fmt: skip
    engine.dispose()
    folder = tmp_path / "b"

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))

    result = subprocess.run(
        [sys.executable, "-m", "pbclients", "--db", db_target, "delete", "1", "2",
         "--backup-dir", str(folder), "--yes"],
        capture_output=True, text=True, env=subprocess_env(), timeout=60, check=False,
        preexec_fn=small_disk,
    )  # fmt: skip
    assert result.returncode == 4, result.stderr
    stderr = " ".join(result.stderr.split())
    assert "Cannot write the backup of client 2" in stderr
    assert "no client was deleted (backups already written were kept:" in stderr
    assert "client-000001-20261126T090000Z.pbbackup.zip" in stderr
    assert set(statuses(engine).values()) == {"active"}
    assert [p.name for p in folder.iterdir()] == ["client-000001-20261126T090000Z.pbbackup.zip"]
    verify_backup(folder / "client-000001-20261126T090000Z.pbbackup.zip")
    assert_safe(engine, db_target)


def _delete_on_mounted_folder(
    db: str, folder: Path, options: str
) -> subprocess.CompletedProcess[str]:
    """Run delete with a fresh tmpfs (mounted with `options`) as the backup folder, in a
    private mount namespace: a real read-only or full file system, no hook involved."""
    folder.mkdir()
    command = (
        f"mount -t tmpfs -o {options} tmpfs {folder} && exec {sys.executable} -m pbclients "
        f"--db {db} delete 1 2 --backup-dir {folder} --yes"
    )
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", command],
        capture_output=True, text=True, env=subprocess_env(), timeout=60, check=False,
    )  # fmt: skip
    if result.stderr.startswith(("unshare:", "mount:")):
        pytest.skip(f"cannot mount a file system here: {result.stderr.strip()}")
    return result


@SQLITE_ONLY
def test_a_read_only_backup_folder_fails_with_exit_4(db_target, practice, engine, tmp_path):
    engine.dispose()
    result = _delete_on_mounted_folder(db_target, tmp_path / "b", "ro,mode=0700")
    assert result.returncode == 4, result.stderr
    stderr = " ".join(result.stderr.split())
    assert "Cannot write the backup of client 1" in stderr
    assert "the folder is not writable (Read-only file system)" in stderr
    assert "no client was deleted; fix that and run delete again." in stderr
    assert set(statuses(engine).values()) == {"active"}
    assert_safe(engine, db_target)


@SQLITE_ONLY
def test_a_backup_folder_on_a_full_disk_fails_with_exit_4(db_target, practice, engine, tmp_path):
    with writing(engine) as session:
        session.execute(insert(Document), [{
            "client_id": 2, "filename": "scan.pdf", "content_type": "application/pdf",
            "uploaded_at": NOW, "content": os.urandom(200_000),
        }])  # fmt: skip
    engine.dispose()
    result = _delete_on_mounted_folder(db_target, tmp_path / "b", "size=128k,mode=0700")
    assert result.returncode == 4, result.stderr
    stderr = " ".join(result.stderr.split())
    assert "Cannot write the backup of client 2" in stderr
    assert "the disk is full" in stderr
    assert "no client was deleted (backups already written were kept:" in stderr
    assert set(statuses(engine).values()) == {"active"}
    assert_safe(engine, db_target)


def _held(db: str, folder: Path, step: str, release: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pbclients", "--db", db, "delete", "1", "2", "--backup-dir",
         str(folder), "--yes"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=subprocess_env(PBCLIENTS_FAULT=f"wait-after:{step}:{release}"),
    )  # fmt: skip


def _wait_for(predicate, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@SQLITE_ONLY
def test_a_backup_corrupted_on_disk_fails_verification_with_exit_4(
    db_target, practice, engine, tmp_path
):
    folder, release = tmp_path / "b", tmp_path / "release"
    process = _held(db_target, folder, "backup.written", release)
    _wait_for(lambda: len(backup_files(folder)) == 1)
    [written] = backup_files(folder)
    data = bytearray(written.read_bytes())
    data[len(data) // 3] ^= 0xFF
    written.write_bytes(bytes(data))
    release.touch()
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 4, err
    err = " ".join(err.split())
    assert f"Backup {written}" in err
    assert "no client was deleted" in err
    assert set(statuses(engine).values()) == {"active"}
    assert_safe(engine, db_target)


@SQLITE_ONLY
@pytest.mark.parametrize("step", ["backup.written", "delete.after-backups"])
def test_records_added_meanwhile_fail_with_exit_4(db_target, practice, engine, tmp_path, step):
    """Between a backup and its check, or between the backups and the transaction."""
    folder, release = tmp_path / "b", tmp_path / "release"
    process = _held(db_target, folder, step, release)
    _wait_for(Path(f"{release}.held").exists)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO message (client_id, sent_at, sender, body) "
                "VALUES (1, :at, 'client', 'hi')"
            ),
            {"at": NOW.replace(tzinfo=None)},
        )
    release.touch()
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 4, err
    assert "no client was deleted" in err
    assert set(statuses(engine).values()) == {"active"}
    if step == "backup.written":
        # Client 1's backup is named as stale; client 2's, written after it but never
        # verified nor reported, is not left behind.
        [kept] = backup_files(folder)
        assert kept.name.startswith("client-000001-")
        assert f"Backup {kept} holds" in " ".join(err.split())
    else:
        assert len(backup_files(folder)) == 2
    assert_safe(engine, db_target)
