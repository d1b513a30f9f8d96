"""FHIR inside every backup: `fhir/<Type>.ndjson` members, listed, checksummed and verified.

A backup a deletion depends on must be readable without pbclients: besides its own
records it carries the client's resources as FHIR R4B (the mapping `export --format
fhir` uses), which verification checks like every other member. Backups written before
(format 1, no FHIR members) still verify and restore: `tests/data/` keeps one that the
previous writer made.
"""

from __future__ import annotations

import base64
import hashlib
import json
import posixpath
import shutil
import subprocess
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from pbclients.backup.archive import FORMAT_VERSION, backup_files
from pbclients.backup.reader import verify_backup
from pbclients.backup.writer import content_digest, write_backup
from pbclients.backup.writer import snapshot as read_snapshot
from pbclients.db import reading
from pbclients.fhir import FHIR_VERSION
from pbclients.models import RECORD_MODELS
from pbclients.operation import Change
from pbclients.purge import purge
from tests.factory import NOW
from tests.helpers import NOW_TEXT, records, statuses, subprocess_env
from tests.test_fhir import spec_problems, validate

Members = dict[str, bytes]
SQLITE_ONLY = pytest.mark.parametrize("db_target", ["sqlite"], indirect=True)
# A backup of client 1 of the small practice (tests/factory.py), written at NOW by the
# writer of format 1, before backups carried FHIR members.
FORMAT_1_BACKUP = Path(__file__).parent / "data" / "client-000001-20261126T090000Z.pbbackup.zip"
TYPES = (
    "Patient",
    "CarePlan",
    "Appointment",
    "Communication",
    "QuestionnaireResponse",
    "DocumentReference",
)
# The record kinds each resource type is mapped from (the README's mapping table).
KINDS_OF = {
    "CarePlan": ("enrolments",),
    "Appointment": ("appointments",),
    "Communication": ("messages",),
    "QuestionnaireResponse": ("forms",),
    "DocumentReference": ("documents", "session_notes", "protocols", "journal_entries"),
}


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)


def read_members(path: Path) -> Members:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def write_members(path: Path, members: Members) -> Path:
    path.unlink(missing_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def rewrite(path: Path, change: Callable[[Members, dict[str, Any]], None]) -> Path:
    """Rebuild a backup with `change(members, manifest)` applied, manifest written back."""
    members = read_members(path)
    manifest = json.loads(members["manifest.json"])
    change(members, manifest)
    members["manifest.json"] = json.dumps(manifest).encode()
    return write_members(path, members)


def resign(members: Members, manifest: dict[str, Any]) -> None:
    """Make the manifest's checksums and sizes agree with the members, as a forger would."""
    manifest["members"] = {
        name: hashlib.sha256(data).hexdigest()
        for name, data in members.items()
        if name != "manifest.json"
    }
    manifest["sizes"] = {n: len(d) for n, d in members.items() if n != "manifest.json"}


def fhir_of(members: Members) -> dict[str, list[dict[str, Any]]]:
    """The resources of every `fhir/` member, by the type its name gives."""
    return {
        name.removeprefix("fhir/").removesuffix(".ndjson"): [
            json.loads(line) for line in data.decode().splitlines()
        ]
        for name, data in members.items()
        if name.startswith("fhir/")
    }


def resolver(members: Members) -> Callable[[str], bytes]:
    """What an attachment's url points to, resolved against its `fhir/` member (RFC 3986)."""

    def resolve(url: str) -> bytes:
        name = posixpath.normpath(posixpath.join("fhir", url))
        assert not name.startswith(".."), url
        return members[name]

    return resolve


def expected_types(counts: dict[str, int]) -> dict[str, int]:
    """Resources per type the record counts give: one Patient, one resource a record."""
    expected = {"Patient": 1}
    for kind, kinds in KINDS_OF.items():
        if number := sum(counts[k] for k in kinds):
            expected[kind] = number
    return expected


def inline(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource with its attachments' `data` or `url` removed: what is left must be the
    same in a backup (file by url) and in `export --format fhir` (file inline)."""
    copy = json.loads(json.dumps(resource))
    for content in copy.get("content", []):
        content["attachment"].pop("data", None)
        content["attachment"].pop("url", None)
    return copy


def export_backup(cli, client: str, folder: Path) -> Path:
    result = cli("export", client, "--backup-dir", str(folder), "--format", "json")
    assert result.exit_code == 0, result.stderr
    [row] = records(result.stdout)
    return Path(row["backup"])


def record_rows(engine, client_id: int) -> dict[str, list[tuple[Any, ...]]]:
    """Every record of every kind of one client, in id order."""
    found = {}
    with reading(engine) as session:
        for kind, model in RECORD_MODELS.items():
            table = model.__table__  # type: ignore[attr-defined]
            found[kind] = [
                tuple(row)
                for row in session.execute(
                    table.select().where(table.c.client_id == client_id).order_by(table.c.id)
                )
            ]
    return found


def delete_and_purge(cli, engine, client: str, tmp_path: Path) -> None:
    result = cli("delete", client, "--backup-dir", str(tmp_path / "deleted"), "--yes")
    assert result.exit_code == 0, result.stderr
    purge(engine, Change("cron", None, NOW + timedelta(days=31)))
    with reading(engine) as session:
        left = session.execute(
            text("SELECT count(*) FROM client WHERE id = :i"), {"i": int(client)}
        )
        assert left.scalar_one() == 0


# --- what a backup holds ---------------------------------------------------------------------


def test_a_demo_practice_backs_up_as_valid_fhir_the_same_as_the_fhir_export(cli, tmp_path, capsys):
    assert cli("demo", "--clients", "30").exit_code == 0
    ids = cli("list", "--format", "ids").stdout.split()
    assert len(ids) >= 20
    exported = cli("export", *ids, "--backup-dir", str(tmp_path / "b"), "--format", "json")
    assert exported.exit_code == 0, exported.stderr
    fhir_out = tmp_path / "fhir"
    assert cli("export", *ids, "--format", "fhir", "--out", str(fhir_out)).exit_code == 0
    from_export: dict[str, list[dict[str, Any]]] = {}
    for kind in TYPES:
        for line in (fhir_out / f"{kind}.ndjson").read_text("utf-8").splitlines():
            resource = json.loads(line)
            patient = resource["id"] if kind == "Patient" else _subject(resource)
            from_export.setdefault(patient, []).append(inline(resource))

    validated: Counter[str] = Counter()
    by_url = documents = 0
    for row in records(exported.stdout):
        members = read_members(Path(row["backup"]))
        manifest = json.loads(members["manifest.json"])
        assert manifest["format_version"] == FORMAT_VERSION == 2
        assert manifest["fhir"]["version"] == FHIR_VERSION == "4.3.0"
        resources = fhir_of(members)
        # One member per type the client has, each listed with its checksum and size.
        assert {t: len(r) for t, r in resources.items()} == manifest["fhir"]["counts"]
        assert manifest["fhir"]["counts"] == expected_types(manifest["counts"])
        documents += manifest["counts"]["documents"]
        for kind in resources:
            data = members[f"fhir/{kind}.ndjson"]
            assert manifest["members"][f"fhir/{kind}.ndjson"] == hashlib.sha256(data).hexdigest()
            assert manifest["sizes"][f"fhir/{kind}.ndjson"] == len(data)
        assert list(resources) == [t for t in TYPES if t in resources]
        resolve = resolver(members)
        for kind, items in resources.items():
            for resource in items:
                assert resource["resourceType"] == kind
                validate(resource)
                assert spec_problems(resource, resolve) == [], resource["id"]
                validated[kind] += 1
                by_url += sum("url" in c["attachment"] for c in resource.get("content", []))
        # The same resources `export --format fhir` writes for the client at the same time,
        # but a document's file is the backup's own member, referred to by url.
        mine = [inline(r) for kind in resources for r in resources[kind]]
        assert mine == from_export[f"client-{row['id']}"]
    assert set(validated) == set(TYPES)
    # Every file is referred to by url (notes keep their text inline, as in the export).
    assert by_url == documents > 0
    with capsys.disabled():
        print(f"\nFHIR resources in {len(ids)} backups, valid R4B: {dict(validated)}")


def _subject(resource: dict[str, Any]) -> str:
    reference = resource.get("subject") or resource["participant"][0]["actor"]
    return str(reference["reference"]).removeprefix("Patient/")


def test_the_small_practices_backup_refers_to_its_document_by_url(cli, practice, tmp_path):
    members = read_members(export_backup(cli, "1", tmp_path))
    resources = fhir_of(members)
    assert {t: len(r) for t, r in resources.items()} == {
        "Patient": 1, "CarePlan": 1, "Appointment": 2, "Communication": 1,
        "DocumentReference": 3,
    }  # fmt: skip
    [document] = [r for r in resources["DocumentReference"] if r["id"] == "document-1"]
    assert document["content"][0]["attachment"] == {
        "contentType": "text/plain",
        "url": "../documents/1-labs.txt",
        "size": 11,
        "hash": base64.b64encode(hashlib.sha1(b"ferritin 45").digest()).decode(),
        "title": "labs.txt",
        "creation": document["date"],
    }
    assert resolver(members)("../documents/1-labs.txt") == b"ferritin 45"
    [patient] = resources["Patient"]
    assert (patient["id"], patient["active"], patient["name"]) == (
        "client-1", True, [{"family": "Silva", "given": ["Ana"]}],
    )  # fmt: skip


def test_appointments_are_mapped_as_of_the_backups_own_time_and_the_digest_ignores_it(
    engine, practice, tmp_path
):
    """A backup is deterministic: its FHIR follows from its records and its created_at, so
    the content digest deletion compares (records only) stays the same whenever it is made."""
    later = NOW + timedelta(days=365)
    with read_snapshot(engine) as session:
        first = write_backup(session, 1, tmp_path / "a", NOW)
        again = write_backup(session, 1, tmp_path / "b", NOW)
        next_year = write_backup(session, 1, tmp_path / "c", later)
        digest = content_digest(session, 1)
    assert first.content == again.content == next_year.content == digest
    one, two, three = (read_members(b.path) for b in (first, again, next_year))
    assert {n: d for n, d in one.items() if n.startswith("fhir/")} == {
        n: d for n, d in two.items() if n.startswith("fhir/")
    }
    now_status = [a["status"] for a in fhir_of(one)["Appointment"]]
    later_status = [a["status"] for a in fhir_of(three)["Appointment"]]
    assert (now_status, later_status) == (["booked", "fulfilled"], ["fulfilled", "fulfilled"])
    assert json.loads(three["manifest.json"])["created_at"] == "2027-11-26T09:00:00Z"
    # Everything but the time-dependent members is the same.
    timed = ("manifest.json", "fhir/Appointment.ndjson")
    assert {n: d for n, d in one.items() if n not in timed} == {
        n: d for n, d in three.items() if n not in timed
    }
    assert verify_backup(next_year.path).fhir["Appointment"] == 2


def test_verify_reports_the_fhir_resources(cli, practice, tmp_path):
    path = export_backup(cli, "1", tmp_path)
    result = cli("export", "--verify", str(path), "--format", "json")
    assert result.exit_code == 0, result.stderr
    checked = records(result.stdout)
    assert (checked["format_version"], checked["members"]) == (2, 21)
    assert checked["fhir"] == {
        "Patient": 1, "CarePlan": 1, "Appointment": 2, "Communication": 1,
        "DocumentReference": 3,
    }  # fmt: skip
    csv = cli("export", "--verify", str(path), "--format", "csv")
    assert csv.stdout.splitlines()[0] == (
        "path,sha256,format_version,pbclients_version,schema_version,client_id,created_at,members"
    )


# --- verification refuses damaged or incomplete FHIR members ----------------------------------


def _data_offset(path: Path, member: str) -> int:
    """Where a member's (compressed) bytes start in the archive."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    raw = path.read_bytes()
    name_length = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_length = int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
    return info.header_offset + 30 + name_length + extra_length


@pytest.mark.parametrize("member", ["fhir/Patient.ndjson", "fhir/DocumentReference.ndjson"])
def test_a_flipped_byte_in_a_fhir_member_fails_verify_and_restore_with_exit_3(
    cli, practice, engine, tmp_path, member
):
    path = export_backup(cli, "1", tmp_path)
    delete_and_purge(cli, engine, "1", tmp_path)
    raw = bytearray(path.read_bytes())
    raw[_data_offset(path, member) + 2] ^= 0x01
    path.write_bytes(bytes(raw))
    for args in (("export", "--verify", str(path)), ("restore", str(path), "--yes")):
        result = cli(*args)
        assert result.exit_code == 3, (args, result.stderr)
        message = " ".join(result.stderr.split())
        assert message.startswith(f"Error: Backup {path} is damaged ({member} ")
        assert "use another backup" in message
    assert 1 not in statuses(engine)


def _drop_line(members: Members, manifest: dict[str, Any]) -> None:
    lines = members["fhir/Appointment.ndjson"].splitlines(keepends=True)
    members["fhir/Appointment.ndjson"] = lines[0]
    resign(members, manifest)


def _swap_types(members: Members, manifest: dict[str, Any]) -> None:
    patient = members["fhir/Patient.ndjson"]
    members["fhir/Appointment.ndjson"] = patient + patient
    resign(members, manifest)


def _unlisted_appointments(members: Members, manifest: dict[str, Any]) -> None:
    del members["fhir/Appointment.ndjson"]
    resign(members, manifest)


def _uncounted_appointments(members: Members, manifest: dict[str, Any]) -> None:
    del manifest["fhir"]["counts"]["Appointment"]
    _unlisted_appointments(members, manifest)


def _basic_member(members: Members, manifest: dict[str, Any]) -> None:
    members["fhir/Basic.ndjson"] = b"{}\n"
    resign(members, manifest)


def _patient_member(members: Members, manifest: dict[str, Any]) -> None:
    members["fhir/Patient.ndjson"] = b'{"resourceType":"Patient"}\n'
    resign(members, manifest)


def _cut_last_line(members: Members, manifest: dict[str, Any]) -> None:
    members["fhir/Appointment.ndjson"] = members["fhir/Appointment.ndjson"][:-1]
    resign(members, manifest)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            lambda m, _: m.pop("fhir/Appointment.ndjson"),
            "holds other members than its manifest lists",
        ),
        (
            _unlisted_appointments,
            "does not list the FHIR member of every type it counts ('fhir/Appointment.ndjson')",
        ),
        (
            _uncounted_appointments,
            "has 0 FHIR Appointment resources where its records give 2",
        ),
        (
            lambda m, d: d["fhir"]["counts"].update(Appointment=3),
            "has 3 FHIR Appointment resources where its records give 2",
        ),
        (
            _drop_line,
            "holds 1 Appointment resources in fhir/Appointment.ndjson where its manifest says 2",
        ),
        (
            _swap_types,
            "has a malformed fhir/Appointment.ndjson (line 1 is not a resource of type "
            "Appointment)",
        ),
        (_cut_last_line, "has a malformed fhir/Appointment.ndjson (its last line is cut off)"),
        (
            _basic_member,
            "lists a member pbclients never writes ('fhir/Basic.ndjson')",
        ),
        (lambda m, d: d.pop("fhir"), "has an incomplete manifest (its FHIR resources)"),
        (
            lambda m, d: d["fhir"]["counts"].update(Basic=1),
            "counts FHIR resources of an unknown type ('Basic')",
        ),
    ],
)
def test_a_missing_or_inconsistent_fhir_member_is_refused_with_exit_3(
    cli, practice, tmp_path, change, problem
):
    path = rewrite(export_backup(cli, "1", tmp_path), change)
    result = cli("export", "--verify", str(path))
    assert result.exit_code == 3, result.stderr
    assert problem in " ".join(result.stderr.split())


def _held_delete(db: str, folder: Path, release: Path) -> subprocess.Popen[str]:
    """`delete 1` in a real process that waits after writing the backup, before verifying."""
    return subprocess.Popen(
        [sys.executable, "-m", "pbclients", "--db", db, "delete", "1", "--backup-dir",
         str(folder), "--yes"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=subprocess_env(PBCLIENTS_FAULT=f"wait-after:backup.written:{release}"),
    )  # fmt: skip


@SQLITE_ONLY
def test_delete_refuses_a_backup_whose_fhir_member_changed_before_it_was_verified(
    db_target, practice, engine, tmp_path
):
    folder, release = tmp_path / "b", tmp_path / "release"
    process = _held_delete(db_target, folder, release)
    deadline = time.monotonic() + 30
    while not backup_files(folder):
        assert time.monotonic() < deadline, "no backup was written"
        time.sleep(0.02)
    [written] = backup_files(folder)
    members = read_members(written)
    members["fhir/Patient.ndjson"] = members["fhir/Patient.ndjson"].replace(b"Ana", b"Ann")
    write_members(written, members)
    release.touch()
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 4, err
    err = " ".join(err.split())
    assert f"Backup {written} is damaged (fhir/Patient.ndjson does not match its checksum)" in err
    assert "no client was deleted" in err
    assert set(statuses(engine).values()) == {"active"}


# --- restore ----------------------------------------------------------------------------------


def test_a_backup_with_fhir_members_restores_the_records_on_both_engines(
    cli, practice, engine, tmp_path
):
    before = record_rows(engine, 1)
    path = export_backup(cli, "1", tmp_path)
    delete_and_purge(cli, engine, "1", tmp_path)
    result = cli("restore", str(path), "--yes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    [row] = records(result.stdout)
    assert (row["id"], row["before"], row["after"], row["outcome"]) == (
        1, "purged", "deactivated", "changed",
    )  # fmt: skip
    assert record_rows(engine, 1) == before


# --- backups written before FHIR members (format 1) --------------------------------------------


def test_a_format_1_backup_still_verifies(cli, practice, tmp_path):
    path = shutil.copyfile(FORMAT_1_BACKUP, tmp_path / FORMAT_1_BACKUP.name)
    assert not [n for n in read_members(path) if n.startswith("fhir/")]
    result = cli("export", "--verify", str(path), "--format", "json")
    assert result.exit_code == 0, result.stderr
    checked = records(result.stdout)
    assert (checked["format_version"], checked["client_id"], checked["fhir"]) == (1, 1, {})
    assert checked["counts"]["documents"] == 1
    table = cli("export", "--verify", str(path))
    assert "is intact: client 1" in " ".join(table.stdout.split())
    assert "(format 1)" in " ".join(table.stdout.split())


def test_a_format_1_backup_still_restores_on_both_engines(cli, practice, engine, tmp_path):
    before = record_rows(engine, 1)
    delete_and_purge(cli, engine, "1", tmp_path)
    path = shutil.copyfile(FORMAT_1_BACKUP, tmp_path / FORMAT_1_BACKUP.name)
    result = cli("restore", str(path), "--yes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    [row] = records(result.stdout)
    assert (row["id"], row["email"], row["outcome"]) == (1, "ana@example.org", "changed")
    assert record_rows(engine, 1) == before
    assert statuses(engine)[1] == "deactivated"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            _patient_member,
            "lists a member pbclients never writes ('fhir/Patient.ndjson')",
        ),
        (
            lambda m, d: d.__setitem__("fhir", {"version": "4.3.0", "counts": {}}),
            "has an incomplete manifest (fhir in a format 1 backup)",
        ),
    ],
)  # fmt: skip
def test_a_format_1_backup_cannot_carry_fhir_members(cli, practice, tmp_path, change, problem):
    path = rewrite(shutil.copyfile(FORMAT_1_BACKUP, tmp_path / FORMAT_1_BACKUP.name), change)
    result = cli("export", "--verify", str(path))
    assert result.exit_code == 3, result.stderr
    assert problem in " ".join(result.stderr.split())
