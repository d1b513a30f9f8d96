"""Crafted backups: `export --verify` and `restore` treat an archive as untrusted input.

A backup may come from another machine, an older version, or someone who built it to
break the tool. Whatever it holds, the answer is exit 0 with a faithful restore, or
exit 3 (4 for a backup written by `delete`) with nothing written: never exit 1, never
memory that grows with what a member claims, never a file written outside the database.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlmodel import col

from pbclients.backup.archive import MAX_MEMBER_BYTES, backup_files, decode_row, table_of
from pbclients.backup.reader import verify_backup
from pbclients.backup.writer import remove_stale_temporaries, write_backup
from pbclients.backup.writer import snapshot as read_snapshot
from pbclients.db import make_engine, reading
from pbclients.errors import PbClientsError
from pbclients.models import RECORD_MODELS, AuditEvent, Client, Program
from pbclients.operation import Change
from pbclients.purge import purge
from pbclients.restore import restore_backup
from tests.factory import NOW
from tests.helpers import NOW_TEXT, records, snapshot, subprocess_env

Members = dict[str, bytes]
STATE = {"status", "deactivated_at", "deleted_at", "purge_after"}
SQLITE_ONLY = pytest.mark.parametrize("db_target", ["sqlite"], indirect=True)


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)


# --- building crafted archives ------------------------------------------------------------


def read_members(path: Path) -> Members:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def write_members(path: Path, members: Members) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def forge(members: Members) -> None:
    """Make the manifest agree with the members again, as a careful forger would."""
    manifest = json.loads(members["manifest.json"])
    manifest["members"] = {
        name: hashlib.sha256(data).hexdigest()
        for name, data in members.items()
        if name != "manifest.json"
    }
    manifest["sizes"] = {
        name: len(data) for name, data in members.items() if name != "manifest.json"
    }
    members["manifest.json"] = json.dumps(manifest).encode()


def edit_line(members: Members, member: str, line: int, change: Callable[[Any], Any]) -> None:
    lines = members[member].decode().splitlines()
    lines[line - 1] = json.dumps(change(json.loads(lines[line - 1])))
    members[member] = ("\n".join(lines) + "\n").encode()


def edit_json(members: Members, member: str, change: Callable[[Any], Any]) -> None:
    members[member] = json.dumps(change(json.loads(members[member]))).encode()


def setting(key: str, value: Any) -> Callable[[Any], Any]:
    def change(data: Any) -> Any:
        data[key] = value
        return data

    return change


def fhir_count(kind: str, value: Any) -> Callable[[Any], Any]:
    """A manifest change: the FHIR resources of one type counted as `value`."""

    def change(manifest: Any) -> Any:
        manifest["fhir"]["counts"][kind] = value
        return manifest

    return change


def dropping(key: str) -> Callable[[Any], Any]:
    def change(data: Any) -> Any:
        data.pop(key)
        return data

    return change


@pytest.fixture
def backup_of_ana(engine, practice, tmp_path) -> Path:
    """A real backup of client 1 (records of every kind it has, a document, a program)."""
    with read_snapshot(engine) as session:
        written = write_backup(session, 1, tmp_path / "exports", NOW)
    return written.path


@pytest.fixture
def purged_ana(engine, practice, backup_of_ana, cli, tmp_path) -> Path:
    """Client 1 deleted and purged: its backup is the only way back."""
    result = cli("delete", "1", "--backup-dir", str(tmp_path / "b"), "--yes")
    assert result.exit_code == 0, result.stderr
    purge(engine, Change("cron", None, NOW + timedelta(days=31)))
    return backup_of_ana


def crafted(
    original: Path, tmp_path: Path, change: Callable[[Members], None], *, sign: bool = True
) -> Path:
    members = read_members(original)
    change(members)
    if sign:
        forge(members)
    return write_members(tmp_path / "crafted.pbbackup.zip", members)


def assert_refused(cli, engine, path: Path, *fragments: str) -> str:
    """export --verify and restore both refuse with exit 3, and nothing is written."""
    before = snapshot(engine)
    verified = cli("export", "--verify", str(path))
    assert verified.exit_code == 3, (verified.stdout, verified.stderr)
    restored = cli("restore", str(path), "--yes")
    assert restored.exit_code == 3, (restored.stdout, restored.stderr)
    assert snapshot(engine) == before
    message = " ".join(restored.stderr.split())
    assert "\x1b" not in message and "Unexpected" not in message
    for fragment in fragments:
        assert fragment in message
    return message


# --- every value checked before use ------------------------------------------------------------

LINE_1_OF = "line 1 of records/"
CASES: dict[str, tuple[Callable[[Members], None], tuple[str, ...]]] = {
    "profile date that is not a date": (
        lambda m: edit_json(m, "client.json", setting("created_at", "yesterday")),
        ("client.json is not valid (created_at 'yesterday' is not a date and time)",),
    ),
    "profile date at the end of the calendar": (
        lambda m: edit_json(m, "client.json", setting("created_at", "0001-01-01T00:00:00+05:00")),
        ("client.json is not valid (created_at",),
    ),
    "profile id is a string": (
        lambda m: edit_json(m, "client.json", setting("id", "1")),
        ("client.json is not valid (id is a string, not a whole number)",),
    ),
    "profile e-mail is a number": (
        lambda m: edit_json(m, "client.json", setting("email", 42)),
        ("client.json is not valid (email is a number, not text)",),
    ),
    "profile is an array": (
        lambda m: m.__setitem__("client.json", b"[1, 2]"),
        ("client.json holds an array where a record belongs",),
    ),
    "profile lacks its e-mail": (
        lambda m: edit_json(m, "client.json", dropping("email")),
        ("client.json is not valid (email is missing)",),
    ),
    "record id is a boolean": (
        lambda m: edit_line(m, "records/appointments.jsonl", 1, setting("id", True)),
        (LINE_1_OF + "appointments.jsonl is not valid (id is a boolean, not a whole number)",),
    ),
    "record id overflows 64 bits": (
        lambda m: edit_line(
            m, "records/appointments.jsonl", 1, setting("id", 99999999999999999999)
        ),
        (LINE_1_OF + "appointments.jsonl is not valid (id 99999999999999999999 is out of range)",),
    ),
    "record id is zero": (
        lambda m: edit_line(m, "records/appointments.jsonl", 1, setting("id", 0)),
        ("id 0 is out of range",),
    ),
    "number past PostgreSQL's INTEGER": (
        lambda m: edit_line(m, "records/appointments.jsonl", 1, setting("duration_minutes", 2**40)),
        ("duration_minutes 1099511627776 is out of range",),
    ),
    "boolean that is a string": (
        lambda m: edit_line(m, "records/appointments.jsonl", 1, setting("telehealth", "yes")),
        ("telehealth is a string, not true or false",),
    ),
    "float where a number belongs": (
        lambda m: edit_line(m, "records/appointments.jsonl", 1, setting("duration_minutes", 1.5)),
        ("duration_minutes is a number, not a whole number",),
    ),
    "array where a record belongs": (
        lambda m: m.__setitem__("records/messages.jsonl", b"[1, 2]\n"),
        (LINE_1_OF + "messages.jsonl holds an array where a record belongs",),
    ),
    "text with a NUL": (
        lambda m: edit_line(m, "records/journal_entries.jsonl", 1, setting("body", "a\x00b")),
        ("body holds a NUL character",),
    ),
    "text that is not Unicode": (
        lambda m: m.__setitem__(
            "records/journal_entries.jsonl",
            m["records/journal_entries.jsonl"].replace(b'"Slept well."', b'"\\ud800"'),
        ),
        ("body is not valid Unicode text",),
    ),
    "missing timestamp": (
        lambda m: edit_line(m, "records/appointments.jsonl", 1, dropping("starts_at")),
        ("starts_at is missing",),
    ),
    "null where a value is required": (
        lambda m: edit_line(m, "records/appointments.jsonl", 1, setting("starts_at", None)),
        ("starts_at is null",),
    ),
    "binary column inside a record": (
        lambda m: edit_line(m, "records/documents.jsonl", 1, setting("content", "AAAA")),
        ("content cannot be given in a record",),
    ),
    "a record of another client": (
        lambda m: edit_line(m, "records/messages.jsonl", 1, setting("client_id", 2)),
        ("holds a record of client 2 on line 1 of records/messages.jsonl",),
    ),
    "the same record twice": (
        lambda m: m.__setitem__(
            "records/appointments.jsonl",
            m["records/appointments.jsonl"].splitlines(keepends=True)[0] * 2,
        ),
        ("repeats or reorders record id 1 on line 2 of records/appointments.jsonl",),
    ),
    "enrolment in a program the backup lacks": (
        lambda m: edit_line(m, "records/enrolments.jsonl", 1, setting("program_id", 7)),
        ("enrols the client in a program it lacks on line 1 of records/enrolments.jsonl",),
    ),
    "programs.json is an object": (
        lambda m: m.__setitem__("programs.json", b'{"id": 1}'),
        ("holds an object where programs.json has a list",),
    ),
    "document whose file is another member": (
        lambda m: edit_line(
            m, "records/documents.jsonl", 1, setting("content_member", "client.json")
        ),
        ("lacks the file of the document on line 1 of records/documents.jsonl",),
    ),
    "document whose file is a path": (
        lambda m: edit_line(
            m, "records/documents.jsonl", 1, setting("content_member", "../../etc/passwd")
        ),
        ("lacks the file of the document on line 1 of records/documents.jsonl",),
    ),
    "nesting deeper than the parser goes": (
        lambda m: m.__setitem__("records/messages.jsonl", b"[" * 200_000 + b"]" * 200_000 + b"\n"),
        ("has a malformed records/messages.jsonl (line 1)",),
    ),
    "a line that is not JSON": (
        lambda m: m.__setitem__(
            "records/appointments.jsonl", m["records/appointments.jsonl"] + b"{oops\n"
        ),
        ("has a malformed records/appointments.jsonl (line 3)",),
    ),
    "FHIR line of another type": (
        lambda m: m.__setitem__("fhir/Appointment.ndjson", m["fhir/Patient.ndjson"] * 2),
        ("has a malformed fhir/Appointment.ndjson (line 1 is not a resource of type Appointment)",),
    ),
    "FHIR member a resource short": (
        lambda m: m.__setitem__(
            "fhir/Appointment.ndjson", m["fhir/Appointment.ndjson"].splitlines(keepends=True)[0]
        ),
        ("holds 1 Appointment resources in fhir/Appointment.ndjson where its manifest says 2",),
    ),
    "FHIR member dropped with its checksum": (
        lambda m: m.__delitem__("fhir/Appointment.ndjson"),
        ("does not list the FHIR member of every type it counts ('fhir/Appointment.ndjson')",),
    ),
    "FHIR member that is one endless line": (
        lambda m: m.__setitem__("fhir/Patient.ndjson", b"x" * (8 << 20)),
        ("has a malformed fhir/Patient.ndjson (its last line is cut off)",),
    ),
    "manifest FHIR counts a type the records lack": (
        lambda m: edit_json(m, "manifest.json", fhir_count("QuestionnaireResponse", 1)),
        ("does not list the FHIR member of every type it counts",),
    ),
    "manifest FHIR count is a string": (
        lambda m: edit_json(m, "manifest.json", fhir_count("Patient", "1")),
        ("has an incomplete manifest (the count of Patient resources)",),
    ),
    "manifest client id is a string": (
        lambda m: edit_json(m, "manifest.json", setting("client_id", "1")),
        ("has an incomplete manifest",),
    ),
    "manifest count is a string": (
        lambda m: edit_json(
            m, "manifest.json", lambda d: {**d, "counts": {**d["counts"], "messages": "1"}}
        ),
        ("has an incomplete manifest (the count of messages)",),
    ),
    "manifest created_at is not a time": (
        lambda m: edit_json(m, "manifest.json", setting("created_at", "9999-99-99")),
        ("has an incomplete manifest (created_at is not a time)",),
    ),
    "manifest members is an array": (
        lambda m: edit_json(m, "manifest.json", setting("members", [])),
        ("has an incomplete manifest",),
    ),
    "manifest is nested too deep": (
        lambda m: m.__setitem__("manifest.json", b"[" * 200_000 + b"]" * 200_000),
        ("has an unreadable manifest.json",),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_value_of_the_wrong_type_is_refused_with_exit_3(cli, engine, purged_ana, tmp_path, case):
    change, fragments = CASES[case]
    signed = not case.startswith("manifest")
    path = crafted(purged_ana, tmp_path, change, sign=signed)
    assert_refused(cli, engine, path, *fragments)


def test_a_payment_plan_may_only_use_a_method_in_the_backup(cli, engine, practice, tmp_path):
    """Else a restored plan would charge another client's card."""
    with read_snapshot(engine) as session:
        written = write_backup(session, 2, tmp_path / "exports", NOW)
    result = cli("delete", "2", "--backup-dir", str(tmp_path / "b"), "--yes")
    assert result.exit_code == 0, result.stderr
    purge(engine, Change("cron", None, NOW + timedelta(days=31)))

    def other_card(members: Members) -> None:
        members["records/payment_methods.jsonl"] = b""
        edit_json(
            members,
            "manifest.json",
            lambda d: {**d, "counts": {**d["counts"], "payment_methods": 0}},
        )

    path = crafted(written.path, tmp_path, other_card)
    assert_refused(
        cli, engine, path, "refers to a payment method it lacks on line 1 of records/payment_plans"
    )


# --- derived columns, rows nothing refers to, member names --------------------------------------


def test_the_email_key_is_derived_again_so_no_two_live_clients_share_a_login(
    cli, engine, purged_ana, tmp_path
):
    """A forged key next to another client's e-mail would slip past the uniqueness check."""

    def steal_ben(members: Members) -> None:
        edit_json(
            members,
            "client.json",
            lambda d: {**d, "email": "BEN@example.org", "email_key": "nobody@nowhere.example"},
        )

    path = crafted(purged_ana, tmp_path, steal_ben)
    before = snapshot(engine)
    result = cli("restore", str(path), "--yes")
    assert result.exit_code == 3, result.stderr
    assert "e-mail BEN@example.org now belongs to client 2" in " ".join(result.stderr.split())
    assert snapshot(engine) == before


def test_a_forged_email_key_is_never_stored(cli, engine, purged_ana, tmp_path):
    path = crafted(
        purged_ana, tmp_path, lambda m: edit_json(m, "client.json", setting("email_key", "x@y.z"))
    )
    result = cli("restore", str(path), "--yes")
    assert result.exit_code == 0, result.stderr
    with reading(engine) as session:
        key = session.execute(select(col(Client.email_key)).where(col(Client.id) == 1)).scalar_one()
    assert key == "ana@example.org"


def test_programs_nothing_in_the_backup_refers_to_are_not_inserted(
    cli, engine, purged_ana, tmp_path
):
    def inject(members: Members) -> None:
        edit_json(
            members,
            "programs.json",
            lambda d: [*d, {"id": 40, "name": "Injected", "kind": "package"}],
        )

    path = crafted(purged_ana, tmp_path, inject)
    result = cli("restore", str(path), "--yes")
    assert result.exit_code == 0, result.stderr
    with reading(engine) as session:
        names = set(session.execute(select(col(Program.name))).scalars())
    assert names == {"Spring Reset", "Sleep Foundations"}


@pytest.mark.parametrize(
    "name",
    ["../../escaped.txt", "/tmp/absolute.txt", "documents/../../x", "documents\\..\\x", "a\x1b[2J"],
)
def test_member_names_are_never_paths(cli, engine, purged_ana, tmp_path, name):
    path = crafted(purged_ana, tmp_path, lambda m: m.__setitem__(name, b"pwned"))
    message = assert_refused(cli, engine, path, "lists a member pbclients never writes")
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/absolute.txt").exists()
    assert "\x1b" not in message


def test_a_member_the_manifest_does_not_list_is_refused(cli, engine, purged_ana, tmp_path):
    path = crafted(purged_ana, tmp_path, lambda m: m.__setitem__("../../x", b"x"), sign=False)
    assert_refused(cli, engine, path, "holds other members than its manifest lists")


# --- bounded memory: ZIP bombs ---------------------------------------------------------------

GIB = 1 << 30


def _bomb_member(archive: zipfile.ZipFile, name: str, size: int) -> None:
    """A member of `size` zero bytes, written in 1 MiB steps (about 1 MB compressed per GB)."""
    info = zipfile.ZipInfo(name, date_time=(2026, 11, 26, 9, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    zeros = bytes(1 << 20)
    with archive.open(info, "w", force_zip64=True) as member:
        for _ in range(size >> 20):
            member.write(zeros)


@pytest.fixture(scope="module")
def gigabyte_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1 GB zero-filled member compressed once (about 1 MB) and reused by every test."""
    path = tmp_path_factory.mktemp("bomb") / "zeros.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        _bomb_member(archive, "records/messages.jsonl", GIB)
    return path


def with_bomb(original: Path, bomb: Path, path: Path, *, manifest: str) -> Path:
    """Copy the compressed 1 GB member into a real backup without compressing it again."""
    members = read_members(original)
    target = "records/messages.jsonl"
    data = json.loads(members["manifest.json"])
    if manifest == "honest":
        data["sizes"][target] = GIB
        data["members"][target] = "0" * 64
    elif manifest == "old":
        data.pop("sizes")
    members["manifest.json"] = json.dumps(data).encode()
    with zipfile.ZipFile(bomb) as source, zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            if name == target:
                _copy_raw(source, source.getinfo(target), archive)
            else:
                archive.writestr(zipfile.ZipInfo(name, (2026, 11, 26, 9, 0, 0)), content,
                                 compress_type=zipfile.ZIP_DEFLATED)  # fmt: skip
    return path


def _copy_raw(source: zipfile.ZipFile, info: zipfile.ZipInfo, target: zipfile.ZipFile) -> None:
    """Append a member's compressed bytes as they are (zipfile has no public API for it)."""
    assert source.fp is not None and target.fp is not None
    source.fp.seek(info.header_offset)
    header = source.fp.read(30)
    skip = int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little")
    source.fp.seek(info.header_offset + 30 + skip)
    raw = source.fp.read(info.compress_size)
    copy = zipfile.ZipInfo(info.filename, info.date_time)
    copy.compress_type = info.compress_type
    copy.CRC = info.CRC
    copy.compress_size = info.compress_size
    copy.file_size = info.file_size
    copy.header_offset = target.fp.tell()
    copy.flag_bits = 0
    copy.extract_version = max(copy.extract_version, 45)
    target.fp.write(copy.FileHeader(zip64=True))
    target.fp.write(raw)
    target.filelist.append(copy)
    target.NameToInfo[copy.filename] = copy
    target.start_dir = target.fp.tell()
    # write the central directory on close (a private flag typeshed leaves out)
    target._didModify = True  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("manifest", "problem"),
    [
        ("honest", "records/messages.jsonl decompresses to more than 512 MiB"),
        ("stale", "records/messages.jsonl does not match its checksum"),
        ("old", "records/messages.jsonl decompresses to more than 512 MiB"),
    ],
)
def test_a_zip_bomb_is_refused_before_it_is_decompressed(
    cli, engine, purged_ana, gigabyte_bomb, tmp_path, manifest, problem
):
    path = with_bomb(purged_ana, gigabyte_bomb, tmp_path / "bomb.pbbackup.zip", manifest=manifest)
    assert path.stat().st_size < 5_000_000
    assert_refused(cli, engine, path, problem)


@SQLITE_ONLY
def test_verifying_a_1_gb_bomb_takes_little_memory_and_time(
    db_target, engine, purged_ana, gigabyte_bomb, tmp_path
):
    path = with_bomb(purged_ana, gigabyte_bomb, tmp_path / "bomb.pbbackup.zip", manifest="old")
    result = subprocess.run(
        [sys.executable, "-c", _PEAK, "export", "--verify", str(path)],
        capture_output=True, text=True, env=subprocess_env(), timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    peak_kib = int(result.stdout.split()[-1])
    assert peak_kib < 150 * 1024, f"{peak_kib} KiB"  # the interpreter and libraries alone ~70 MB


@SQLITE_ONLY
def test_a_member_whose_directory_lies_about_its_size_is_read_no_further(
    cli, engine, purged_ana, tmp_path
):
    """zipfile stops at the size the directory states; the checksum then fails."""
    members = read_members(purged_ana)
    members["records/messages.jsonl"] = bytes(8 << 20)
    path = write_members(tmp_path / "liar.pbbackup.zip", members)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("records/messages.jsonl")
    end = raw.rfind(b"PK\x05\x06")
    directory = int.from_bytes(raw[end + 16 : end + 20], "little")
    entry = raw.find(b"records/messages.jsonl", directory) - 46
    assert raw[entry : entry + 4] == b"PK\x01\x02" and info.file_size == 8 << 20
    raw[entry + 24 : entry + 28] = (100).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    assert_refused(cli, engine, path, "records/messages.jsonl")


# Runs the CLI in a child and prints its peak resident memory (KiB) last on stdout. The
# peak is the kernel's VmHWM of the child's own address space: getrusage's ru_maxrss keeps
# the high-water mark of the address space the child was forked from, so it would report
# the pytest worker's memory whenever the worker is the larger.
_PEAK = (
    "import sys\n"
    "from pbclients.cli.app import app\n"
    "try:\n"
    "    app(sys.argv[1:])\n"
    "    code = 0\n"
    "except SystemExit as e:\n"
    "    code = e.code\n"
    "except BaseException:\n"
    "    code = 99\n"
    "with open('/proc/self/status') as status:\n"
    "    print(next(l.split()[1] for l in status if l.startswith('VmHWM:')))\n"
    "sys.exit(code if isinstance(code, int) else 1)\n"
)


def test_a_large_legitimate_member_is_streamed_not_loaded(engine, practice, tmp_path):
    """Verification hashes a member chunk by chunk: 64 MB of document stays out of memory."""
    from sqlalchemy import insert

    from pbclients.db import writing
    from pbclients.models import Document

    with writing(engine) as session:
        session.execute(insert(Document), [{
            "client_id": 4, "filename": "scan.bin", "content_type": "application/octet-stream",
            "uploaded_at": NOW, "content": os.urandom(1 << 20) * 64,
        }])  # fmt: skip
    with read_snapshot(engine) as session:
        written = write_backup(session, 4, tmp_path, NOW)
    assert verify_backup(written.path).counts["documents"] == 1
    assert written.path.stat().st_size > 60 << 20
    assert MAX_MEMBER_BYTES >= 64 << 20


# --- the property: any mutation is a faithful restore or a clean refusal -----------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.sampled_from(
        ["", "2026-11-26T09:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
         "x\x00y", "=cmd|' /C calc'!A0", "[/]", "\x1b[2J", "\u202e", "١٢٣", "a" * 1000]
    )
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=5,
)  # fmt: skip

NAMES = ["../../x", "/etc/passwd", "documents/1-labs.txt", "records/x.jsonl", "x/", "é/ü",
         "manifest.json", "documents/9-a.txt", "C:\\x", "records/messages.jsonl"]  # fmt: skip


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(
        st.sampled_from(["flip", "truncate", "value", "key", "rename", "size", "drop", "add"])
    )
    if kind == "flip":
        return kind, (draw(st.integers(0, 10**6)), draw(st.integers(1, 255)))
    if kind == "truncate":
        return kind, draw(st.integers(0, 10**6))
    if kind in ("value", "key"):
        return kind, (
            draw(st.integers(0, 100)), draw(st.integers(0, 100)), draw(st.integers(0, 100)),
            draw(JSON_VALUES), draw(st.booleans()),
        )  # fmt: skip
    if kind == "size":
        return kind, (draw(st.integers(0, 100)), draw(st.integers(-5, 2**40) | st.text(max_size=3)))
    if kind in ("rename", "add"):
        return kind, (draw(st.integers(0, 100)), draw(st.sampled_from(NAMES)), draw(st.booleans()))
    return kind, (draw(st.integers(0, 100)), draw(st.booleans()))


def mutate(original: bytes, mutation: tuple[str, Any]) -> bytes:
    """One crafted variant of a real backup's bytes."""
    kind, arguments = mutation
    if kind == "flip":
        offset, mask = arguments
        flipped = bytearray(original)
        flipped[offset % len(flipped)] ^= mask
        return bytes(flipped)
    if kind == "truncate":
        return original[: arguments % len(original)]
    import io

    with zipfile.ZipFile(io.BytesIO(original)) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    names = sorted(members)
    if kind in ("value", "key"):
        pick, line_pick, key_pick, value, sign = arguments
        name = [n for n in names if n.endswith((".json", ".jsonl"))][pick % 15]
        _change_json(members, name, line_pick, key_pick, value, rename_key=kind == "key")
        if sign and name != "manifest.json":
            _forge_if_possible(members)
    elif kind == "size":
        pick, size = arguments
        manifest = json.loads(members["manifest.json"])
        manifest["sizes"][names[pick % len(names)]] = size
        members["manifest.json"] = json.dumps(manifest).encode()
    elif kind == "rename":
        pick, new, sign = arguments
        old = names[pick % len(names)]
        members[new] = members.pop(old)
        if sign:
            _forge_if_possible(members)
    elif kind == "add":
        _pick, new, sign = arguments
        members[new] = b'{"id": 1}\n'
        if sign:
            _forge_if_possible(members)
    else:
        pick, sign = arguments
        members.pop(names[pick % len(names)])
        if sign:
            _forge_if_possible(members)
    import io as _io

    buffer = _io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _forge_if_possible(members: Members) -> None:
    """Re-sign the manifest when the mutation left one that can be re-signed."""
    try:
        manifest = json.loads(members["manifest.json"])
        assert isinstance(manifest, dict)
    except (KeyError, ValueError, AssertionError):
        return
    members["manifest.json"] = json.dumps(manifest).encode()
    forge(members)


def _change_json(
    members: Members, name: str, line_pick: int, key_pick: int, value: Any, *, rename_key: bool
) -> None:
    def change(data: Any) -> Any:
        if isinstance(data, dict) and data:
            keys = sorted(data)
            key = keys[key_pick % len(keys)]
            if rename_key:
                data[str(value)[:10]] = data.pop(key)
            else:
                data[key] = value
            return data
        if isinstance(data, list) and data:
            data[line_pick % len(data)] = change(data[line_pick % len(data)])
            return data
        return value

    if name.endswith(".jsonl"):
        lines = members[name].decode().splitlines()
        if not lines:
            members[name] = (json.dumps(value) + "\n").encode()
            return
        index = line_pick % len(lines)
        lines[index] = json.dumps(change(json.loads(lines[index])))
        members[name] = ("\n".join(lines) + "\n").encode()
    else:
        members[name] = json.dumps(change(json.loads(members[name]))).encode()


def client_state(engine, client_id: int) -> dict[str, Any]:
    """What a restore must bring back, as a backup written now would hold it."""
    with read_snapshot(engine) as session:
        table = table_of(Client)
        profile = session.execute(select(table).where(table.c.id == client_id)).one()
        found: dict[str, Any] = {
            "client": {k: v for k, v in profile._mapping.items() if k not in STATE}
        }
        for kind, model in RECORD_MODELS.items():
            table = table_of(model)
            found[kind] = [
                tuple(row)
                for row in session.execute(
                    select(table).where(table.c.client_id == client_id).order_by(table.c.id)
                )
            ]
    return found


def expected_from(archive_bytes: bytes) -> dict[str, Any]:
    """What the (possibly mutated but accepted) archive says the client's rows are."""
    import io

    with zipfile.ZipFile(io.BytesIO(archive_bytes)) as archive:
        profile = json.loads(archive.read("client.json"))
        row = decode_row(table_of(Client), profile, "client.json", derived=frozenset({"email_key"}))
        row["email_key"] = row["email"].casefold()
        found: dict[str, Any] = {"client": {k: v for k, v in row.items() if k not in STATE}}
        for kind, model in RECORD_MODELS.items():
            table = table_of(model)
            rows = []
            for line in archive.read(f"records/{kind}.jsonl").splitlines():
                if not line.strip():
                    continue
                data = json.loads(line)
                member = data.pop("content_member", None)
                data.pop("content_sha256", None)
                decoded = decode_row(table, data, kind)
                if member is not None:
                    decoded["content"] = archive.read(member)
                rows.append(tuple(decoded.get(c.name) for c in table.columns))
            found[kind] = rows
    return found


def _comparable(state: dict[str, Any]) -> dict[str, Any]:
    client = dict(state["client"])
    return {**state, "client": {k: client.get(k) for k in sorted(client)}}


@pytest.fixture
def restore_lab(engine, practice, tmp_path, db_target):
    """A real backup of client 1, and a function that restores bytes into a fresh copy of the
    database with client 1 purged: (exit code, the copy's snapshot before, after, engine)."""
    with read_snapshot(engine) as session:
        written = write_backup(session, 1, tmp_path / "exports", NOW)
    from pbclients.csvinput import Reference
    from pbclients.deletion import delete_clients
    from pbclients.selection import Selection

    one = Selection([Reference("1", "argument", None)])
    delete_clients(engine, one, Change("t", None, NOW), tmp_path / "b")
    purge(engine, Change("cron", None, NOW + timedelta(days=31)))
    engine.dispose()
    copies = tmp_path / "copies"
    copies.mkdir()
    counter = iter(range(10**6))

    def fresh_engine():
        if db_target.startswith("postgresql"):
            from tests.conftest import create_postgres_database, postgres_admin_url

            name = db_target.rpartition("/")[2]
            engine.dispose()
            url = create_postgres_database(postgres_admin_url(), template=name)
            return make_engine(url), url
        copy = copies / f"{next(counter)}.db"
        shutil.copyfile(db_target, copy)
        return make_engine(str(copy)), None

    def run(data: bytes) -> tuple[int, dict[str, Any], dict[str, Any], Any]:
        path = tmp_path / "crafted.pbbackup.zip"
        path.write_bytes(data)
        target, url = fresh_engine()
        try:
            before = snapshot(target)
            try:
                restore_backup(target, path, Change("tester", None, NOW))
                code = 0
            except PbClientsError as error:
                code = int(error.exit_code)
            after = snapshot(target)
            state = client_state(target, 1) if code == 0 and _has_client(target, 1) else None
            return code, before, after, state
        finally:
            target.dispose()
            if url is not None:
                from tests.conftest import drop_postgres_database, postgres_admin_url

                drop_postgres_database(postgres_admin_url(), url)

    return written.path.read_bytes(), run


def _has_client(engine, client_id: int) -> bool:
    with reading(engine) as session:
        return session.get(Client, client_id) is not None


TRIED: list[str] = []


def _property(restore_lab, examples: int) -> None:
    original, run = restore_lab

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        database=None,
    )
    @given(mutations())
    def restored_faithfully_or_refused(mutation: tuple[str, Any]) -> None:
        data = mutate(original, mutation)
        code, before, after, state = run(data)
        TRIED.append(mutation[0])
        assert code in (0, 3), (mutation, code)
        if code == 3:
            assert after == before, mutation
            return
        assert state is not None, mutation
        assert _comparable(state) == _comparable(expected_from(data)), mutation
        events = [row for row in after["audit_event"] if row not in before["audit_event"]]
        assert [e[3] for e in events] == ["restore"], mutation

    restored_faithfully_or_refused()


@SQLITE_ONLY
def test_any_mutation_of_a_backup_restores_faithfully_or_is_refused(restore_lab):
    TRIED.clear()
    _property(restore_lab, 150)
    print(f"\ncrafted backups tried: {len(TRIED)} ({', '.join(sorted(set(TRIED)))})")
    assert len(TRIED) >= 100


@pytest.mark.postgres
@pytest.mark.parametrize("db_target", ["postgres"], indirect=True)
def test_any_mutation_restores_faithfully_or_is_refused_on_postgresql(restore_lab):
    TRIED.clear()
    _property(restore_lab, 30)
    assert len(TRIED) >= 20


# --- the audit trail keeps no paths -------------------------------------------------------------


def test_the_restore_event_keeps_the_checksum_and_the_tools_file_name_only(
    cli, engine, purged_ana, tmp_path
):
    folder = tmp_path / "Ana Silva (private)"
    folder.mkdir()
    renamed = folder / "ana-silva-backup.zip"
    shutil.copyfile(purged_ana, renamed)
    result = cli("restore", str(renamed), "--yes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    [row] = records(result.stdout)
    with reading(engine) as session:
        detail = session.execute(
            select(col(AuditEvent.detail)).where(col(AuditEvent.action) == "restore")
        ).scalar_one()
    assert json.loads(detail or "") == {
        "backup": "client-000001-20261126T090000Z.pbbackup.zip",
        "sha256": row["sha256"],
    }
    assert "Ana" not in (detail or "") and "silva" not in (detail or "").lower()


# --- temporary files a crash left ----------------------------------------------------------------

STALE = ".client-000001-20261126T090000Z.pbbackup.zip.0badf00d.tmp"


def _leftovers(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STALE).write_bytes(b"PK half a backup")
    others = ["notes.tmp", ".client-1.tmp", "client-000002-x.pbbackup.zip.tmp", ".other.tmp"]
    for name in others:
        (folder / name).write_text("not ours")
    return others


@pytest.mark.parametrize("command", ["export", "delete"])
def test_the_next_export_or_delete_removes_temporary_files_a_crash_left(
    cli, practice, tmp_path, command
):
    folder = tmp_path / "b"
    others = _leftovers(folder)
    extra = ["--yes"] if command == "delete" else []
    result = cli(command, "3", "--backup-dir", str(folder), *extra)
    assert result.exit_code == 0, result.stderr
    names = sorted(p.name for p in folder.iterdir())
    assert STALE not in names
    assert set(others) <= set(names)
    assert [p.name for p in backup_files(folder)] == ["client-000003-20261126T090000Z.pbbackup.zip"]


def test_a_temporary_file_being_written_is_left_alone(tmp_path):
    """A lock held by its writer marks a backup in progress (another export, right now)."""
    busy = tmp_path / ".client-000004-20261126T090000Z.pbbackup.zip.0123abcd.tmp"
    descriptor = os.open(busy, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        (tmp_path / STALE).write_bytes(b"")
        assert remove_stale_temporaries(tmp_path) == 1
        assert busy.exists() and not (tmp_path / STALE).exists()
    finally:
        os.close(descriptor)
    assert remove_stale_temporaries(tmp_path) == 1
    assert not busy.exists()


@SQLITE_ONLY
def test_a_real_crash_leaves_no_backup_and_at_most_a_temporary_the_next_export_removes(
    db_target, practice, engine, tmp_path
):
    """Killed with its archive written but not yet named: no file under a backup's name.
    Where the system has unnamed files (Linux O_TMPFILE) nothing at all is left; elsewhere
    a hidden temporary, which the next export removes."""
    folder = tmp_path / "b"
    died = subprocess.run(
        [sys.executable, "-m", "pbclients", "--db", db_target, "export", "1", "--backup-dir",
         str(folder)],
        capture_output=True, text=True, timeout=60, check=False,
        env=subprocess_env(PBCLIENTS_FAULT="kill-after:backup.temp-written"),
    )  # fmt: skip
    assert died.returncode == -9, died.stderr
    assert all(p.name.endswith(".tmp") for p in folder.iterdir())
    assert len(list(folder.iterdir())) <= 1
    engine.dispose()
    again = subprocess.run(
        [sys.executable, "-m", "pbclients", "--db", db_target, "export", "2", "--backup-dir",
         str(folder)],
        capture_output=True, text=True, env=subprocess_env(), timeout=60, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert [p.name for p in folder.iterdir()] == ["client-000002-20261126T090000Z.pbbackup.zip"]


# --- crafted bytes, not archives -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "is not a readable backup archive"),
        (b"PK\x05\x06" + b"\x00" * 18, "has no manifest.json"),
        (b"PK\x05\x06\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\x00\x00\x00\x00\x00\x00",
         "holds more than 100,000 members"),
        (zlib.compress(b"x" * 100), "is not a readable backup archive"),
    ],
)  # fmt: skip
def test_bytes_that_are_not_a_backup_are_refused(cli, engine, practice, tmp_path, content, problem):
    path = tmp_path / "x.pbbackup.zip"
    path.write_bytes(content)
    assert_refused(cli, engine, path, problem)
