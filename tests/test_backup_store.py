"""The backup store: listing with client states, verify, retention and prune."""

from __future__ import annotations

import os
import stat
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest

from pbclients import clock
from tests.factory import NOW
from tests.helpers import NOW_TEXT, pbclients, records, snapshot, subprocess_env


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)


def later(days: int) -> dict[str, str]:
    return {"PBCLIENTS_NOW": str(clock.iso(NOW + timedelta(days=days)))}


def listing(cli, folder: Path, env: dict[str, str] | None = None) -> dict[int, dict]:
    result = cli("backups", "--backup-dir", str(folder), "--format", "json", env=env)
    assert result.exit_code == 0, result.stderr
    return {row["client_id"]: row for row in records(result.stdout)}


@pytest.fixture
def store(cli, practice, engine, tmp_path) -> Path:
    """Backups of a client who exists (1), is deleted (2), held (3) and purged (4, 5)."""
    folder = tmp_path / "backups"
    assert cli("export", "1", "--backup-dir", str(folder)).exit_code == 0
    assert cli("delete", "2", "3", "4", "5", "--backup-dir", str(folder), "--yes").exit_code == 0
    assert cli("hold", "3", "--reason", "case 5", "--yes").exit_code == 0
    assert cli("plan", "--set-record-retention", "1", "--yes").exit_code == 0
    # Client 2 is held through the purge and released after it: still pending purge.
    assert cli("hold", "2", "--reason", "keep", "--yes").exit_code == 0
    assert cli("purge", "--yes", env=later(31)).exit_code == 0
    assert cli("hold", "--release", "2", "--yes").exit_code == 0
    return folder


def test_backups_lists_each_client_state_and_retention_end(cli, store):
    rows = listing(cli, store, later(32))
    assert {client_id: row["state"] for client_id, row in rows.items()} == {
        1: "exists",
        2: "deleted",
        3: "held",
        4: "purged",
        5: "purged",
    }
    assert rows[3]["held"] is True and rows[4]["held"] is False
    # Purged: last activity from the backup (none after creation) or deletion, if later,
    # plus the record retention of 1 year.
    assert rows[4]["retention_end"] == "2027-11-26T09:00:00Z"
    # Client 1 exists: its last activity is in the database, as of now (NOW+32d): the
    # telehealth session at NOW+3d has happened by then.
    assert rows[1]["retention_end"] == "2027-11-29T09:00:00Z"
    assert rows[4]["file"] == "client-000004-20261126T090000Z.pbbackup.zip"
    assert rows[4]["size"] == (store / rows[4]["file"]).stat().st_size
    table = cli("backups", "--backup-dir", str(store), env=later(32))
    assert table.exit_code == 0
    assert "5 backups in" in table.stdout
    csv = cli("backups", "--backup-dir", str(store), "--format", "csv").stdout
    assert csv.splitlines()[0] == "file,client_id,created,size,state,held,retention_end,problem"


def test_prune_removes_exactly_the_expired_purged_unheld_backups(cli, store, engine):
    early = cli("backups", "prune", "--backup-dir", str(store), "--yes", env=later(364))
    assert early.exit_code == 0 and "Nothing to prune." in early.stdout
    before = snapshot(engine)
    dry = cli(
        "backups", "prune", "--backup-dir", str(store), "--dry-run", "-f", "json", env=later(366)
    )
    assert [(r["id"], r["outcome"]) for r in records(dry.stdout)] == [
        (4, "planned"),
        (5, "planned"),
    ]
    assert snapshot(engine) == before and len(list(store.iterdir())) == 5
    assert cli("backups", "prune", "--backup-dir", str(store), env=later(366)).exit_code == 2

    result = cli(
        "backups", "prune", "--backup-dir", str(store), "--yes", "-f", "json", env=later(366)
    )
    assert result.exit_code == 0, result.stderr
    removed = records(result.stdout)
    assert [(r["id"], r["outcome"]) for r in removed] == [(4, "changed"), (5, "changed")]
    left = sorted(path.name for path in store.iterdir())
    assert left == [
        "client-000001-20261126T090000Z.pbbackup.zip",
        "client-000002-20261126T090000Z.pbbackup.zip",
        "client-000003-20261126T090000Z.pbbackup.zip",
    ]
    events = records(cli("audit", "--action", "prune", "--format", "json").stdout)
    assert [(e["client_id"], e["detail"]) for e in events] == [
        (r["id"], f'{{"sha256": "{r["sha256"]}"}}') for r in removed
    ]
    assert cli("audit", "verify").exit_code == 0
    again = cli("backups", "prune", "--backup-dir", str(store), "--yes", env=later(367))
    assert "Nothing to prune." in again.stdout


def test_prune_stops_when_a_client_comes_back_after_its_plan(cli, store, engine, monkeypatch):
    from pbclients import backup_store
    from pbclients.errors import DatabaseBusy
    from pbclients.operation import Change

    monkeypatch.setenv("PBCLIENTS_NOW", str(clock.iso(NOW + timedelta(days=366))))
    plan = backup_store.preview(engine, backup_store.Prune(store))
    assert plan.changing == 2
    restored = cli("restore", str(store / "client-000004-20261126T090000Z.pbbackup.zip"), "--yes")
    assert restored.exit_code == 0, restored.stderr
    with pytest.raises(DatabaseBusy):
        backup_store.apply(engine, plan, Change("admin", None, NOW + timedelta(days=366)))
    assert len(list(store.iterdir())) == 5


def _data_offset(path: Path, member: str) -> int:
    """Where a member's (compressed) bytes start in the archive."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    raw = path.read_bytes()
    name_length = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_length = int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
    return info.header_offset + 30 + name_length + extra_length


def _drop_member(path: Path, member: str) -> None:
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist() if name != member}
    path.unlink()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_verify_finds_a_flipped_byte_a_truncated_file_and_a_missing_member(cli, store):
    files = sorted(store.iterdir())
    flipped, truncated, missing = files[0], files[1], files[2]
    data = bytearray(flipped.read_bytes())
    data[_data_offset(flipped, "client.json") + 1] ^= 0xFF
    flipped.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    _drop_member(missing, "records/messages.jsonl")

    result = cli("backups", "verify", "--backup-dir", str(store), "--format", "json")
    assert result.exit_code == 4
    status = {Path(r["path"]).name: r["status"] for r in records(result.stdout)}
    assert status == {
        flipped.name: "bad",
        truncated.name: "bad",
        missing.name: "bad",
        files[3].name: "ok",
        files[4].name: "ok",
    }
    assert result.stderr.startswith("Error: 3 of 5 backups failed verification: ")
    for bad in (flipped, truncated, missing):
        assert bad.name in result.stderr
    one = cli("backups", "verify", str(files[4]))
    assert one.exit_code == 0 and "1 of 1 backup intact." in one.stdout
    # The group's --backup-dir reaches the subcommand too.
    grouped = cli("backups", "--backup-dir", str(store), "verify", "--format", "json")
    assert grouped.exit_code == 4 and len(records(grouped.stdout)) == 5


def test_an_empty_store_lists_and_verifies_nothing(cli, practice, tmp_path):
    empty = tmp_path / "none"
    assert cli("backups", "--backup-dir", str(empty)).stdout.startswith("No backups in")
    assert cli("backups", "verify", "--backup-dir", str(empty)).exit_code == 0
    assert cli("backups", "prune", "--backup-dir", str(empty), "--yes").exit_code == 0


def test_backups_are_private_files_under_umask_000(db_target, engine, practice, tmp_path):
    folder = tmp_path / "store"
    env = subprocess_env(PBCLIENTS_DB=db_target)
    os.umask(0o000)
    try:
        exported = pbclients("export", "1", "--backup-dir", str(folder), env=env)
        listed = pbclients("backups", "--backup-dir", str(folder), "--format", "json", env=env)
    finally:
        os.umask(0o022)
    assert exported.returncode == 0, exported.stderr
    assert listed.returncode == 0, listed.stderr
    [path] = folder.iterdir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_a_backup_of_an_earlier_version_lists_verifies_and_prunes(cli, engine, tmp_path):
    import shutil

    folder = tmp_path / "old"
    folder.mkdir()
    name = "client-000001-20261126T090000Z.pbbackup.zip"
    shutil.copyfile(Path(__file__).parent / "data" / name, folder / name)
    [row] = records(cli("backups", "--backup-dir", str(folder), "--format", "json").stdout)
    assert (row["client_id"], row["state"], row["held"]) == (1, "purged", False)
    assert row["retention_end"] is not None and row["retention_end"] > "2033-"
    assert cli("backups", "verify", "--backup-dir", str(folder)).exit_code == 0
    # Seven years (the default) after its last activity it may be pruned.
    end = clock.as_utc(clock.parse_moment(row["retention_end"], "test"))
    dry = cli(
        "backups", "prune", "--backup-dir", str(folder), "--dry-run", "-f", "json",
        env={"PBCLIENTS_NOW": str(clock.iso(end))},
    )  # fmt: skip
    assert [r["reference"] for r in records(dry.stdout)] == [name]
