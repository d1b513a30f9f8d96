"""export and the backup format: one private ZIP per client, checked member by member."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from pbclients import audit
from pbclients.backup.archive import FORMAT_VERSION, BackupInvalid, backup_files
from pbclients.backup.reader import verify_backup
from pbclients.backup.writer import snapshot as read_snapshot
from pbclients.backup.writer import write_backup
from pbclients.db import reading
from pbclients.paths import default_backup_dir
from tests.factory import NOW
from tests.helpers import NOW_TEXT, records, snapshot


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)


def export_one(cli, client: str, folder: Path) -> dict:
    result = cli("export", client, "--backup-dir", str(folder), "--format", "json")
    assert result.exit_code == 0, result.stderr
    [row] = records(result.stdout)
    return row


def rewrite(path: Path, change) -> None:
    """Rebuild an archive with `change(members)` applied, keeping everything else."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    change(members)
    path.unlink()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_export_writes_one_private_verified_archive_per_client(cli, practice, engine, tmp_path):
    folder = tmp_path / "backups"
    before = snapshot(engine)
    result = cli("export", "1", "ben@example.org", "--backup-dir", str(folder), "--format", "json")
    assert result.exit_code == 0, result.stderr
    rows = records(result.stdout)
    assert [(r["id"], r["before"], r["after"], r["outcome"]) for r in rows] == [
        (1, "active", "active", "exported"),
        (2, "active", "active", "exported"),
    ]
    assert sorted(p.name for p in folder.iterdir()) == [
        "client-000001-20261126T090000Z.pbbackup.zip",
        "client-000002-20261126T090000Z.pbbackup.zip",
    ]
    assert os.stat(folder).st_mode & 0o777 == 0o700
    for row in rows:
        path = Path(row["backup"])
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    # Nothing in the roster changed; the export is in the audit trail.
    after = snapshot(engine)
    assert {k: v for k, v in after.items() if k not in ("audit_event", "setting")} == {
        k: v for k, v in before.items() if k not in ("audit_event", "setting")
    }
    with reading(engine) as session:
        events = audit.events(session, action="export")
    # The trail names the file by the tool's own pattern, never by a path (folders may
    # carry a client's name, and the trail outlives the client).
    assert [(e.client_id, json.loads(e.detail or "{}")) for e in events] == [
        (1, {"backup": "client-000001-20261126T090000Z.pbbackup.zip", "sha256": rows[0]["sha256"]}),
        (2, {"backup": "client-000002-20261126T090000Z.pbbackup.zip", "sha256": rows[1]["sha256"]}),
    ]


def test_the_archive_holds_the_complete_record_and_a_manifest(cli, practice, tmp_path):
    row = export_one(cli, "1", tmp_path)
    with zipfile.ZipFile(row["backup"]) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("manifest.json"))
        profile = json.loads(archive.read("client.json"))
        documents = [
            json.loads(line) for line in archive.read("records/documents.jsonl").splitlines()
        ]
        content = archive.read("documents/1-labs.txt")
        appointments = archive.read("records/appointments.jsonl").decode().splitlines()
        programs = json.loads(archive.read("programs.json"))
        history = [json.loads(line) for line in archive.read("audit_events.jsonl").splitlines()]
        member_hashes = {
            name: hashlib.sha256(archive.read(name)).hexdigest()
            for name in names - {"manifest.json"}
        }
    assert {
        "manifest.json", "client.json", "programs.json", "audit_events.jsonl",
        "documents/1-labs.txt", "records/enrolments.jsonl", "records/appointments.jsonl",
        "records/journal_entries.jsonl", "records/protocols.jsonl", "records/session_notes.jsonl",
        "records/messages.jsonl", "records/forms.jsonl", "records/documents.jsonl",
        "records/payment_methods.jsonl", "records/payment_plans.jsonl",
        "records/notifications.jsonl",
        # The same record as FHIR, one member per resource type the client has (no forms,
        # so no QuestionnaireResponse); tests/test_backup_fhir.py checks their content.
        "fhir/Patient.ndjson", "fhir/CarePlan.ndjson", "fhir/Appointment.ndjson",
        "fhir/Communication.ndjson", "fhir/DocumentReference.ndjson",
    } == names  # fmt: skip
    assert manifest["format"] == "pbclients-backup"
    assert manifest["format_version"] == FORMAT_VERSION == 2
    assert manifest["pbclients_version"] == "0.1.0"
    assert manifest["schema_version"]
    assert manifest["client_id"] == 1
    assert manifest["created_at"] == "2026-11-26T09:00:00Z"
    assert manifest["counts"] == {
        "enrolments": 1, "appointments": 2, "journal_entries": 1, "protocols": 0,
        "session_notes": 1, "messages": 1, "forms": 0, "documents": 1, "payment_methods": 0,
        "payment_plans": 0, "notifications": 0, "audit_events": 1,
    }  # fmt: skip
    assert manifest["fhir"] == {
        "version": "4.3.0",
        "counts": {"Patient": 1, "CarePlan": 1, "Appointment": 2, "Communication": 1,
                   "DocumentReference": 3},
    }  # fmt: skip
    assert manifest["members"] == member_hashes
    assert (profile["id"], profile["email"], profile["first_name"], profile["phone"]) == (
        1, "ana@example.org", "Ana", "+1 555 0101",
    )  # fmt: skip
    assert content == b"ferritin 45"
    assert documents[0]["content_member"] == "documents/1-labs.txt"
    assert "content" not in documents[0]
    assert json.loads(appointments[0])["starts_at"] == "2026-11-29T09:00:00Z"
    assert programs == [{"id": 1, "kind": "program", "name": "Spring Reset"}]
    assert [(h["action"], h["after"]) for h in history] == [("add", "active")]


def test_payments_are_in_the_backup(cli, practice, tmp_path):
    row = export_one(cli, "2", tmp_path)
    with zipfile.ZipFile(row["backup"]) as archive:
        methods = archive.read("records/payment_methods.jsonl").decode().splitlines()
        plans = [
            json.loads(line) for line in archive.read("records/payment_plans.jsonl").splitlines()
        ]
    assert [json.loads(m)["last4"] for m in methods] == ["4242"]
    assert [(p["payment_method_id"], p["amount_cents"]) for p in plans] == [(1, 12000)]


def test_export_never_overwrites_an_existing_file(cli, practice, tmp_path):
    first = export_one(cli, "1", tmp_path)
    original = Path(first["backup"]).read_bytes()
    second = export_one(cli, "1", tmp_path)
    assert Path(second["backup"]).name == "client-000001-20261126T090000Z-2.pbbackup.zip"
    assert Path(first["backup"]).read_bytes() == original
    assert len(backup_files(tmp_path)) == 2


def test_file_names_never_carry_a_name_or_an_email(cli, practice, tmp_path):
    export_one(cli, "ana@example.org", tmp_path)
    [path] = backup_files(tmp_path)
    assert "ana" not in path.name.lower() and "silva" not in path.name.lower()


def test_the_default_folder_is_backups_in_the_user_data_dir(cli, practice):
    result = cli("export", "3", "--format", "json")
    assert result.exit_code == 0, result.stderr
    [row] = records(result.stdout)
    assert Path(row["backup"]).parent == default_backup_dir()
    assert os.stat(default_backup_dir()).st_mode & 0o777 == 0o700


def test_export_into_a_file_fails_with_exit_4(cli, practice, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = cli("export", "1", "--backup-dir", str(blocker))
    assert result.exit_code == 4
    assert "it is a file, not a folder" in result.stderr


def test_export_of_an_unknown_client_writes_nothing(cli, practice, tmp_path):
    result = cli("export", "1", "99", "--backup-dir", str(tmp_path / "b"))
    assert result.exit_code == 3
    assert "'99'" in result.stderr
    assert backup_files(tmp_path / "b") == []


# --- export --verify ----------------------------------------------------------------------


def test_verify_reports_an_intact_backup(cli, practice, tmp_path):
    row = export_one(cli, "1", tmp_path)
    result = cli("export", "--verify", row["backup"], "--format", "json")
    assert result.exit_code == 0, result.stderr
    checked = records(result.stdout)
    assert (checked["client_id"], checked["sha256"], checked["counts"]["documents"]) == (
        1, row["sha256"], 1,
    )  # fmt: skip
    table = cli("export", "--verify", row["backup"])
    assert table.exit_code == 0
    assert "is intact: client 1" in " ".join(table.stdout.split())


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _data_offset(path: Path, member: str) -> int:
    """Where a member's (compressed) bytes start in the archive."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    raw = path.read_bytes()
    name_length = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_length = int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
    return info.header_offset + 30 + name_length + extra_length


@pytest.mark.parametrize(
    "member",
    ["client.json", "documents/1-labs.txt", "records/messages.jsonl", "manifest.json",
     "fhir/Communication.ndjson"],
)  # fmt: skip
def test_verify_refuses_a_corrupted_archive_with_exit_3(cli, practice, tmp_path, member):
    path = Path(export_one(cli, "1", tmp_path)["backup"])
    _flip(path, _data_offset(path, member) + 1)
    result = cli("export", "--verify", str(path))
    assert result.exit_code == 3
    assert result.stderr.startswith(f"Error: Backup {path}")
    assert "use another backup" in result.stderr


def test_verify_refuses_a_truncated_archive_with_exit_3(cli, practice, tmp_path):
    path = Path(export_one(cli, "1", tmp_path)["backup"])
    path.write_bytes(path.read_bytes()[:-200])
    result = cli("export", "--verify", str(path))
    assert result.exit_code == 3
    assert "is not a readable backup archive" in result.stderr


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda m: m.__setitem__("extra.txt", b"x"), "holds other members than its manifest lists"),
        (lambda m: m.pop("documents/1-labs.txt"), "holds other members than its manifest lists"),
        (lambda m: m.pop("fhir/Patient.ndjson"), "holds other members than its manifest lists"),
        (
            lambda m: m.__setitem__("fhir/Patient.ndjson", m["fhir/Patient.ndjson"] + b"\n"),
            "does not match its checksum",
        ),
        (
            lambda m: m.__setitem__("documents/1-labs.txt", b"ferritin 4"),
            "does not match its checksum",
        ),
        (lambda m: m.pop("manifest.json"), "has no manifest.json"),
    ],
)
def test_verify_checks_every_member_against_the_manifest(cli, practice, tmp_path, change, problem):
    path = Path(export_one(cli, "1", tmp_path)["backup"])
    rewrite(path, change)
    with pytest.raises(BackupInvalid, match=problem):
        verify_backup(path)


def test_verify_checks_the_counts_against_the_rows(cli, practice, tmp_path):
    """A member dropped together with its checksum is still caught by the record counts."""
    path = Path(export_one(cli, "1", tmp_path)["backup"])

    def drop_a_message(members: dict[str, bytes]) -> None:
        members["records/messages.jsonl"] = b""
        manifest = json.loads(members["manifest.json"])
        manifest["members"]["records/messages.jsonl"] = hashlib.sha256(b"").hexdigest()
        manifest["sizes"]["records/messages.jsonl"] = 0
        members["manifest.json"] = json.dumps(manifest).encode()

    rewrite(path, drop_a_message)
    with pytest.raises(BackupInvalid, match="holds 0 messages where its manifest says 1"):
        verify_backup(path)


def test_verify_compares_counts_with_the_database(engine, practice, tmp_path):
    with read_snapshot(engine) as session:
        written = write_backup(session, 1, tmp_path, NOW)
    assert verify_backup(written.path, written.counts).client_id == 1
    with pytest.raises(BackupInvalid, match="holds 1 messages of client 1 but the database has 2"):
        verify_backup(written.path, {**written.counts, "messages": 2})
    with pytest.raises(BackupInvalid, match="changed on disk after it was written"):
        verify_backup(written.path, expected_sha256="0" * 64)


def test_verify_refuses_what_is_not_a_backup(cli, practice, tmp_path):
    not_zip = tmp_path / "notes.zip"
    not_zip.write_text("hello")
    result = cli("export", "--verify", str(not_zip))
    assert (result.exit_code, "is not a readable backup archive" in result.stderr) == (3, True)
    result = cli("export", "--verify", str(tmp_path / "missing.zip"))
    assert result.exit_code == 3
    assert "There is no backup file" in result.stderr


def test_verify_refuses_a_newer_format(cli, practice, tmp_path):
    path = Path(export_one(cli, "1", tmp_path)["backup"])

    def bump(members: dict[str, bytes]) -> None:
        manifest = json.loads(members["manifest.json"])
        manifest["format_version"] = FORMAT_VERSION + 1
        members["manifest.json"] = json.dumps(manifest).encode()

    rewrite(path, bump)
    result = cli("export", "--verify", str(path))
    assert result.exit_code == 3
    assert "use a newer pbclients" in result.stderr


def test_verify_with_clients_is_a_usage_error(cli, practice, tmp_path):
    result = cli("export", "1", "--verify", str(tmp_path / "x.zip"))
    assert result.exit_code == 2


def test_backups_written_but_not_yet_handed_out_are_removed_when_the_caller_stops(
    engine, practice, tmp_path
):
    """A group's backups are written, then counted and verified one by one: those the
    caller never received (it stopped after the first) are not left behind."""
    from contextlib import closing

    from pbclients.backup.writer import write_verified_backups

    with closing(write_verified_backups(engine, [1, 2, 3], tmp_path, NOW)) as backups:
        first = next(backups)
        assert len(backup_files(tmp_path)) == 3
    assert backup_files(tmp_path) == [first.path]
    assert verify_backup(first.path).client_id == 1


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed-file", "hidden-temporary"])
def test_a_backup_is_named_only_once_complete(engine, practice, tmp_path, monkeypatch, unnamed):
    """Written as an unnamed file (Linux O_TMPFILE) where the system has them, else under a
    hidden temporary name; either way only the finished backup is left, with its name."""
    import pbclients.backup.writer as writer

    if unnamed and not (hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")):
        pytest.skip("this system has no unnamed files")
    if not unnamed:
        monkeypatch.setattr(writer, "_OWN_DESCRIPTORS", str(tmp_path / "no-proc"))
    linked: list[str] = []
    real_link = os.link

    def link(source, name, **options):
        linked.append(str(source))
        return real_link(source, name, **options)

    monkeypatch.setattr(os, "link", link)
    with read_snapshot(engine) as session:
        written = write_backup(session, 1, tmp_path / "b", NOW)
    assert [p.name for p in (tmp_path / "b").iterdir()] == [written.path.name]
    assert (written.path.stat().st_mode & 0o777) == 0o600
    assert verify_backup(written.path).client_id == 1
    [source] = linked
    if unnamed:
        assert source.startswith("/proc/self/fd/")
    else:
        assert Path(source).name.startswith(".client-000001-") and source.endswith(".tmp")
