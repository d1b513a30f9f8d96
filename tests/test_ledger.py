"""The erasure ledger: one private, fsynced, hash-chained line per purged client, outside the
database; a database put back from an older copy is purged again by the next purge (or
run-due); restoring a backup is the deliberate way back; tampering is detected."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pbclients.db import reading
from tests.conftest import create_postgres_database, drop_postgres_database, postgres_admin_url
from tests.helpers import NOW_TEXT, records, snapshot, statuses, subprocess_env

LATER = "2026-12-27T09:00:00Z"  # 31 days after NOW_TEXT: past the 30-day retention


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)


def ledger_path(home: Path) -> Path:
    return home / "xdg_data_home" / "pbclients" / "ledger" / "erasures.jsonl"


def lines(home: Path) -> list[dict]:
    return [json.loads(line) for line in ledger_path(home).read_text().splitlines()]


def delete(cli, *clients: str, tmp_path: Path, reason: str | None = None) -> list[dict]:
    extra = ["--reason", reason] if reason else []
    args = ["delete", *clients, "--backup-dir", str(tmp_path / "backups"), "--yes"]
    run = cli(*args, *extra, "-f", "json")
    assert run.exit_code == 0, run.stderr
    return records(run.stdout)


def purge_later(cli, *extra: str):
    return cli("purge", "--yes", *extra, env={"PBCLIENTS_NOW": LATER})


class Copy:
    """A copy of the whole practice database, to put back over it later (an old backup)."""

    def __init__(self, db_target: str, engine, tmp_path: Path) -> None:
        self.target = db_target
        self.engine = engine
        engine.dispose()
        if "://" in db_target:
            self.admin = postgres_admin_url()
            self.copy = create_postgres_database(self.admin, template=_name(db_target))
        else:
            self.copy = str(tmp_path / "copy-of-practice.db")
            _sqlite_copy(db_target, self.copy)

    def put_back(self) -> None:
        self.engine.dispose()
        if "://" not in self.target:
            _sqlite_copy(self.copy, self.target)
            return
        import psycopg

        with psycopg.connect(self.admin, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{_name(self.target)}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{_name(self.target)}" TEMPLATE "{_name(self.copy)}"')

    def drop(self) -> None:
        if "://" in self.target:
            drop_postgres_database(self.admin, self.copy)


def _name(url: str) -> str:
    return url.rpartition("/")[2]


def _sqlite_copy(source: str, target: str) -> None:
    # The backup API copies a consistent database, WAL included, over whatever is there.
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


@pytest.fixture
def old_copy(db_target, engine, practice, tmp_path):
    """Call it to copy the database now; `.put_back()` restores that copy over it."""
    made: list[Copy] = []

    def make() -> Copy:
        made.append(Copy(db_target, engine, tmp_path))
        return made[-1]

    yield make
    for copy in made:
        copy.drop()


def test_a_purge_appends_one_private_fsynced_line_per_client(cli, practice, tmp_path,
                                                              isolated_home):  # fmt: skip
    deleted = delete(cli, "1", "ben@example.org", tmp_path=tmp_path)
    assert not ledger_path(isolated_home).exists()
    run = purge_later(cli)
    assert run.exit_code == 0, run.stderr
    path = ledger_path(isolated_home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    entries = lines(isolated_home)
    assert [(e["line"], e["event"], e["client"], e["sha256"], e["at"]) for e in entries] == [
        (1, "purged", 1, deleted[0]["sha256"], LATER),
        (2, "purged", 2, deleted[1]["sha256"], LATER),
    ]
    assert entries[1]["prev"] == entries[0]["hash"]
    text = path.read_text().casefold()
    for personal in ("ana", "silva", "ben", "okafor", "@", "example"):
        assert personal not in text
    verified = cli("backups", "ledger", "verify")
    assert (verified.exit_code, verified.stdout, verified.stderr) == (
        0, f"Erasure ledger intact: 2 lines verified ({path}).\n", "",
    )  # fmt: skip
    # A purge with nothing to purge adds nothing.
    assert purge_later(cli).exit_code == 0
    assert len(lines(isolated_home)) == 2


def test_a_database_copied_before_a_purge_and_put_back_is_purged_again(
    cli, practice, engine, tmp_path, old_copy, isolated_home
):
    assert cli("deactivate", "1", "--reason", "Ana moved to Lisbon", "--yes").exit_code == 0
    copy = old_copy()  # client 1 is deactivated here, not even deleted
    delete(cli, "1", tmp_path=tmp_path)
    assert purge_later(cli).exit_code == 0
    assert 1 not in statuses(engine)

    copy.put_back()
    assert statuses(engine)[1] == "deactivated"
    planned = cli("purge", "--dry-run", "-f", "json", env={"PBCLIENTS_NOW": LATER})
    assert [(r["id"], r["before"], r["after"], r["outcome"]) for r in records(planned.stdout)] == [
        (1, "deactivated", "purged", "planned")
    ]
    again = purge_later(cli, "-f", "json")
    assert again.exit_code == 0, again.stderr
    [result] = records(again.stdout)
    assert (result["id"], result["before"], result["after"], result["outcome"]) == (
        1, "deactivated", "purged", "changed",
    )  # fmt: skip
    assert 1 not in statuses(engine)
    assert statuses(engine) == {2: "active", 3: "active", 4: "active", 5: "active"}
    events = records(cli("audit", "--client", "1", "-f", "json").stdout)
    purge_event = events[-1]
    assert (purge_event["action"], purge_event["before"], purge_event["after"]) == (
        "purge", "deactivated", "purged",
    )  # fmt: skip
    assert json.loads(purge_event["detail"]) == {"ledger_line": 1, "sha256": lines(
        isolated_home)[0]["sha256"]}  # fmt: skip
    # The old copy still held the reason that named her: erased with the rest.
    assert [(e["action"], e["reason"], e["reason_erased"]) for e in events[:-1]] == [
        ("add", None, False), ("deactivate", None, True),
    ]  # fmt: skip
    assert cli("audit", "verify").exit_code == 0
    # No second ledger line for the same erasure; the next purge finds nothing to do.
    assert len(lines(isolated_home)) == 1
    before = snapshot(engine)
    assert purge_later(cli).exit_code == 0
    assert {k: v for k, v in snapshot(engine).items() if k != "setting"} == {
        k: v for k, v in before.items() if k != "setting"
    }


def test_run_due_purges_a_returning_client_before_anything_else(
    cli, practice, engine, tmp_path, old_copy
):
    copy = old_copy()
    delete(cli, "2", tmp_path=tmp_path)
    assert purge_later(cli).exit_code == 0
    copy.put_back()
    run = cli("run-due", env={"PBCLIENTS_NOW": LATER})
    assert run.exit_code == 0, run.stderr
    assert 2 not in statuses(engine)
    purges = records(cli("audit", "--action", "purge", "-f", "json").stdout)
    assert [(e["client_id"], json.loads(e["detail"]).get("ledger_line")) for e in purges] == [
        (2, 1)
    ]
    assert cli("audit", "verify").exit_code == 0


def test_restoring_the_backup_is_the_deliberate_way_back(cli, practice, engine, tmp_path,
                                                         isolated_home):  # fmt: skip
    [deleted] = delete(cli, "1", tmp_path=tmp_path)
    assert purge_later(cli).exit_code == 0
    restored = cli("restore", deleted["backup"], "--yes", env={"PBCLIENTS_NOW": LATER})
    assert restored.exit_code == 0, restored.stderr
    assert [(e["line"], e["event"], e["client"], e["sha256"]) for e in lines(isolated_home)] == [
        (1, "purged", 1, deleted["sha256"]),
        (2, "restored", 1, deleted["sha256"]),
    ]
    assert purge_later(cli).exit_code == 0
    assert statuses(engine)[1] == "deactivated"
    # Restoring again changes nothing, and adds no line.
    assert cli("restore", deleted["backup"], "--yes", env={"PBCLIENTS_NOW": LATER}).exit_code == 0
    assert len(lines(isolated_home)) == 2
    assert cli("backups", "ledger", "verify").exit_code == 0


def test_a_new_client_given_a_purged_clients_id_is_someone_else(cli, practice, engine, tmp_path):
    delete(cli, "5", tmp_path=tmp_path)
    assert purge_later(cli).exit_code == 0
    added = cli("add", "--email", "zoe@example.org", "--first-name", "Zoe", "--last-name", "Park",
                "--yes", "-f", "json", env={"PBCLIENTS_NOW": LATER})  # fmt: skip
    assert added.exit_code == 0, added.stderr
    new_id = records(added.stdout)[0]["id"]
    assert purge_later(cli).exit_code == 0
    assert statuses(engine)[new_id] == "active"


def test_another_practice_sharing_the_ledger_is_left_alone(cli, practice, engine, tmp_path):
    delete(cli, "3", tmp_path=tmp_path)
    assert purge_later(cli).exit_code == 0
    # A second practice (a demo, a test copy built afresh) with its own client 3.
    other = tmp_path / "other" / "other.db"
    from typer.testing import CliRunner

    from pbclients.cli.app import app

    runner = CliRunner()
    assert runner.invoke(app, ["--db", str(other), "init"]).exit_code == 0
    csv_file = tmp_path / "people.csv"
    csv_file.write_text("email,first_name,last_name\n" + "".join(
        f"p{i}@example.org,P,{i}\n" for i in range(5)))  # fmt: skip
    assert runner.invoke(app, ["--db", str(other), "import", str(csv_file), "--yes"]).exit_code == 0
    purged = runner.invoke(app, ["--db", str(other), "purge", "--yes", "-f", "json"],
                           env={"PBCLIENTS_NOW": LATER})  # fmt: skip
    assert (purged.exit_code, records(purged.stdout)) == (0, [])


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        ("edit", "line 2 was altered"),
        ("remove", "line 2 is numbered 3: a line before it was removed or moved"),
        (
            "truncate",
            "the ledger ends at line 2 but this database wrote line 4: lines were removed",
        ),
        ("garbage", "line 2 is not a JSON object"),
        ("reorder", "line 1 is numbered 2: a line before it was removed or moved"),
    ],
)
def test_ledger_tampering_is_detected_and_stops_the_purge(
    cli, practice, engine, tmp_path, isolated_home, tamper, problem
):
    delete(cli, "1", "2", "3", tmp_path=tmp_path)
    delete(cli, "4", tmp_path=tmp_path, reason="x")
    assert purge_later(cli).exit_code == 0
    path = ledger_path(isolated_home)
    raw = path.read_bytes().splitlines(keepends=True)
    assert len(raw) == 4
    if tamper == "edit":
        raw[1] = raw[1].replace(b'"client":2', b'"client":4')
    elif tamper == "remove":
        del raw[1]
    elif tamper == "truncate":
        raw = raw[:2]
    elif tamper == "garbage":
        raw[1] = b"not json\n"
    else:
        raw[0], raw[1] = raw[1], raw[0]
    path.write_bytes(b"".join(raw))
    broken_at = int(problem.split("line ", 2)[1].split()[0]) if tamper != "truncate" else 3
    verified = cli("backups", "ledger", "verify")
    assert (verified.exit_code, verified.stdout) == (1, "")
    assert verified.stderr == f"Erasure ledger {path} broken at line {broken_at}: {problem}.\n"
    if tamper == "truncate":
        return  # the chain itself is whole: purge goes on (the database alone knew more)
    assert cli("add", "--email", "x@example.org", "--first-name", "X", "--last-name", "Y",
               "--yes").exit_code == 0  # fmt: skip
    delete(cli, "6", tmp_path=tmp_path)
    before = snapshot(engine)
    refused = cli("purge", "--yes", env={"PBCLIENTS_NOW": "2027-02-01T00:00:00Z"})
    assert refused.exit_code == 3
    assert refused.stderr.startswith(f"Error: The erasure ledger {path} is damaged: line ")
    assert "nothing was changed" in refused.stderr
    assert snapshot(engine) == before


def test_a_ledger_that_cannot_be_written_stops_the_purge(cli, practice, engine, tmp_path,
                                                         monkeypatch):  # fmt: skip
    delete(cli, "1", tmp_path=tmp_path)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("PBCLIENTS_LEDGER", str(blocker / "erasures.jsonl"))
    before = snapshot(engine)
    run = purge_later(cli)
    assert run.exit_code == 4
    assert run.stderr.startswith(f"Error: Could not write the erasure ledger {blocker}")
    assert snapshot(engine) == before


def test_the_ledger_never_lives_beside_the_database_file(cli, practice, engine, db_target,
                                                         tmp_path, monkeypatch):  # fmt: skip
    if "://" in db_target:
        pytest.skip("a server database has no file to stand beside")
    delete(cli, "1", tmp_path=tmp_path)
    monkeypatch.setenv("PBCLIENTS_LEDGER", str(Path(db_target).parent / "erasures.jsonl"))
    before = snapshot(engine)
    run = purge_later(cli)
    assert run.exit_code == 2
    assert "is in the database file's own folder" in run.stderr
    assert snapshot(engine) == before
    monkeypatch.setenv("PBCLIENTS_LEDGER", str(tmp_path / "elsewhere" / "erasures.jsonl"))
    assert purge_later(cli).exit_code == 0
    assert (tmp_path / "elsewhere" / "erasures.jsonl").exists()
    assert cli("paths").stdout.splitlines()[4] == (
        f"erasure ledger: {tmp_path / 'elsewhere' / 'erasures.jsonl'}"
    )


def test_new_ledger_files_are_private_under_umask_000(cli, practice, engine, db_target, tmp_path,
                                                      isolated_home):  # fmt: skip
    delete(cli, "1", tmp_path=tmp_path)
    process = subprocess.run(
        [sys.executable, "-m", "pbclients", "--db", db_target, "purge", "--yes"],
        env=subprocess_env(PBCLIENTS_NOW=LATER),
        capture_output=True,
        preexec_fn=lambda: os.umask(0),  # no threads in this test, so preexec_fn is safe
        timeout=120,
        check=False,
    )
    assert (process.returncode, process.stdout, process.stderr) == (0, b"", b"")
    path = ledger_path(isolated_home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    from pbclients import ledger

    with reading(engine) as session:
        assert ledger.check_database(session, path).intact
