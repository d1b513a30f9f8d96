"""Backups: one verified ZIP archive per client, written before anything is deleted.

An archive (`client-000042-20261126T090000Z.pbbackup.zip`: the client id and a
UTC time, never a name or an e-mail) holds:

- `client.json`: the profile row, portal credentials included;
- `records/<kind>.jsonl`: one JSON object a line for every kind of record in
  `models.RECORD_MODELS` (times as ISO-8601 UTC);
- `documents/<id>-<filename>`: each document's file, byte for byte (its
  `records/documents.jsonl` row names the member and its SHA-256);
- `programs.json`: the programs the enrolments refer to, so a restore can
  recreate one that no longer exists;
- `audit_events.jsonl`: the client's audit events (its status history);
- `manifest.json`: format and versions, client id, time, record counts per
  kind, and the SHA-256 and size of every other member (backups written
  before sizes were recorded are still read, under hard ceilings).

Reading treats an archive as untrusted (see "reading and verifying" below):
bounded memory, every value checked against its column, names never paths.

The file is written under a temporary name in the target folder, fsynced,
hard-linked to its final name (which never replaces an existing file) and the
folder fsynced, so a crash leaves either no backup or a complete one. It is
then read back and checked before anyone relies on it.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import lzma
import os
import re
import secrets
import struct
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Engine,
    Integer,
    LargeBinary,
    String,
    Table,
    TypeDecorator,
    func,
    literal,
    select,
    union_all,
)
from sqlmodel import Session, SQLModel

from pbclients import __version__, audit, clock, faults
from pbclients.db import is_sqlite, reading, writing
from pbclients.errors import BackupFailed, BadInput, UnknownClient
from pbclients.lifecycle import Change
from pbclients.models import RECORD_MODELS, AuditEvent, Client, Enrolment, Program, UTCDateTime
from pbclients.results import Batch, ChangeResult, Outcome
from pbclients.selection import Selection, resolve

FORMAT = "pbclients-backup"
FORMAT_VERSION = 1
SUFFIX = ".pbbackup.zip"
MANIFEST = "manifest.json"
PROFILE = "client.json"
PROGRAMS = "programs.json"
AUDIT = "audit_events.jsonl"
AUDIT_KIND = "audit_events"

_CHUNK = 1 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_NAME = re.compile(r"^client-(\d+)-(\d{8}T\d{6}Z)(?:-(\d+))?\.pbbackup\.zip$")
# What `write_backup` names a file while it writes it (see `remove_stale_temporaries`).
_TEMPORARY = re.compile(r"^\.client-\d+-\d{8}T\d{6}Z\.pbbackup\.zip\.[0-9a-f]{8}\.tmp$")


class BackupInvalid(BadInput):
    """A backup file that cannot be read or does not match its own checksums (exit 3).

    `detail` is the problem alone, for callers that say themselves what it means
    (`delete` reports it as a failed backup, exit 4).
    """

    def __init__(self, detail: str, advice: str = "nothing was written, use another backup"):
        super().__init__(f"{detail}; {advice}.")
        self.detail = detail


@dataclass(frozen=True)
class BackupFile:
    """A backup just written: where, the SHA-256 of the whole file, records per kind, and
    `content`, the digest of what it holds (compare with `content_digest` before deleting)."""

    path: Path
    sha256: str
    counts: dict[str, int]
    client_id: int
    content: str


@dataclass(frozen=True)
class Manifest:
    """What a verified backup holds, as its manifest states it (checked member by member)."""

    path: Path
    sha256: str
    format_version: int
    pbclients_version: str
    schema_version: str | None
    client_id: int
    created_at: str
    counts: dict[str, int]
    members: dict[str, str]

    def as_record(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "format_version": self.format_version,
            "pbclients_version": self.pbclients_version,
            "schema_version": self.schema_version,
            "client_id": self.client_id,
            "created_at": self.created_at,
            "counts": self.counts,
            "members": len(self.members) + 1,
        }


# --- serialising rows -----------------------------------------------------------------


def table_of(model: type[SQLModel]) -> Table:
    return model.__table__  # type: ignore[attr-defined]


def _encode(table: Table, row: Any) -> dict[str, Any]:
    """A row as JSON-ready values (bytes columns are left out: they become members)."""
    out: dict[str, Any] = {}
    for column in table.columns:
        if column.name not in row:
            continue
        value = row[column.name]
        if isinstance(value, bytes | bytearray | memoryview):
            continue
        out[column.name] = clock.iso(value) if isinstance(value, datetime) else value
    return out


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, sort_keys=True, indent=1).encode()


def _line(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, sort_keys=True).encode() + b"\n"


def member_for_document(document_id: int, filename: str) -> str:
    base = _UNSAFE.sub("_", Path(filename.replace("\\", "/")).name).strip("._") or "file"
    return f"documents/{document_id}-{base[:100]}"


# --- counting what the database holds ---------------------------------------------------


def record_counts(session: Session, client_id: int) -> dict[str, int]:
    """Records per kind (and audit events) the database holds for one client.

    One UNION ALL statement: export and delete call this once per client.
    """
    tables = {kind: table_of(model) for kind, model in RECORD_MODELS.items()}
    tables[AUDIT_KIND] = table_of(AuditEvent)
    statement = union_all(
        *(
            select(literal(kind).label("kind"), func.count().label("n"))
            .select_from(table)
            .where(table.c.client_id == client_id)
            for kind, table in tables.items()
        )
    )
    return {kind: int(number) for kind, number in session.execute(statement)}


def content_digest(session: Session, client_id: int) -> str:
    """One SHA-256 over what a backup of the client written now would hold, writing nothing.

    Equal to `BackupFile.content` exactly when every row (profile, records, files,
    programs, audit history) is as it was backed up: an edited record changes it
    where a record count would not.
    """
    writer = _DigestWriter()
    _write_members(session, client_id, writer)
    return _digest_of(writer.members)


def _digest_of(members: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(members.items())).encode()).hexdigest()


# --- writing --------------------------------------------------------------------------


class _HashingSink:
    """A write-only stream that hashes what passes through (zipfile streams into it)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.raw.write(data)
        self.digest.update(data)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()


class _ArchiveWriter:
    def __init__(self, archive: zipfile.ZipFile, now: datetime) -> None:
        self.archive = archive
        self.members: dict[str, str] = {}
        self.sizes: dict[str, int] = {}
        # ZIP stores times from 1980 to 2107 only; the manifest keeps the real time.
        moment = clock.as_utc(now)
        inside = 1980 <= moment.year <= 2107
        self.stamp = (
            moment.timetuple()[:6] if inside else (max(min(moment.year, 2107), 1980), 1, 1, 0, 0, 0)
        )

    def info(self, name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=self.stamp)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o100600 << 16  # a private regular file when unpacked
        return info

    def add(self, name: str, data: bytes) -> None:
        with self.archive.open(self.info(name), "w", force_zip64=len(data) > (1 << 30)) as member:
            member.write(data)
        self.members[name] = hashlib.sha256(data).hexdigest()
        self.sizes[name] = len(data)

    @contextmanager
    def stream(self, name: str) -> Iterator[Any]:
        digest = hashlib.sha256()
        size = 0
        with self.archive.open(self.info(name), "w", force_zip64=True) as member:

            def write(data: bytes) -> None:
                nonlocal size
                member.write(data)
                digest.update(data)
                size += len(data)

            yield write
        self.members[name] = digest.hexdigest()
        self.sizes[name] = size


class _DigestWriter:
    """Hashes members exactly as `_ArchiveWriter` would write them, and keeps nothing else."""

    def __init__(self) -> None:
        self.members: dict[str, str] = {}

    def add(self, name: str, data: bytes) -> None:
        self.members[name] = hashlib.sha256(data).hexdigest()

    @contextmanager
    def stream(self, name: str) -> Iterator[Any]:
        digest = hashlib.sha256()
        yield digest.update
        self.members[name] = digest.hexdigest()


def backup_name(client_id: int, now: datetime, attempt: int = 1) -> str:
    stamp = clock.as_utc(now).strftime("%Y%m%dT%H%M%SZ")
    extra = "" if attempt == 1 else f"-{attempt}"
    return f"client-{client_id:06d}-{stamp}{extra}{SUFFIX}"


def _schema_version(session: Session) -> str | None:
    from pbclients.schema import current_revision

    return current_revision(session.connection())


def _os_reason(error: OSError) -> str:
    if error.errno == errno.ENOSPC:
        return "the disk is full"
    if error.errno == errno.EFBIG:
        return "the file grew past the size this process may write (disk quota or file limit)"
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"the folder is not writable ({error.strerror})"
    if error.errno == errno.ENOTDIR:
        return "the backup folder is a file, not a folder"
    return error.strerror or str(error)


def prepare_folder(folder: Path, *, sweep: bool = True) -> Path:
    """The backup folder, created with mode 0700 if missing; BackupFailed if unusable.

    With `sweep` (once per export or delete), temporary files a crashed run left there
    are removed first.
    """
    from pbclients.paths import make_private_dir

    folder = folder.expanduser().absolute()
    try:
        make_private_dir(folder)
    except OSError as error:
        raise BackupFailed(f"Cannot use backup folder {folder}: {_os_reason(error)}.") from None
    if not folder.is_dir():
        raise BackupFailed(f"Cannot use backup folder {folder}: it is a file, not a folder.")
    if sweep:
        remove_stale_temporaries(folder)
    return folder


def remove_stale_temporaries(folder: Path) -> int:
    """Remove the temporary files crashed backups left in `folder`; returns how many.

    Only names this pbclients gives its temporary files, and only files no process holds
    locked: a backup being written right now is locked by its writer, and the kernel
    drops that lock when the writer dies, whatever killed it.
    """
    try:
        entries = [entry for entry in os.scandir(folder) if _TEMPORARY.match(entry.name)]
    except OSError:
        return 0
    removed = 0
    for entry in entries:
        try:
            descriptor = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue  # gone already, or a symlink: not ours
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(entry.path)
            removed += 1
        except OSError:
            pass  # being written now, or removed by another run meanwhile
        finally:
            os.close(descriptor)
    return removed


def _create_temporary(folder: Path, final_name: str) -> tuple[Path, int]:
    """A new private temporary file, locked for as long as this process has it open."""
    for _attempt in range(3):
        temporary = folder / f".{final_name}.{secrets.token_hex(4)}.tmp"
        descriptor = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        try:
            # A sweep may have taken the file between its creation and the lock.
            if os.stat(temporary).st_ino == os.fstat(descriptor).st_ino:
                return temporary, descriptor
        except FileNotFoundError:
            pass
        os.close(descriptor)
    raise OSError(errno.EAGAIN, "its temporary file was removed while it was created")


def write_backup(session: Session, client_id: int, folder: Path, now: datetime) -> BackupFile:
    """Write one client's complete record to a new archive in `folder` (never overwriting).

    Reads inside the caller's session, so what is written is one consistent
    snapshot when that session's transaction is one (see `snapshot`).
    Raises BackupFailed when the file cannot be written.
    """
    client = session.get(Client, client_id)
    if client is None:
        raise UnknownClient(f"There is no client {client_id}; nothing was backed up.")
    folder = prepare_folder(folder, sweep=False)
    final_name = backup_name(client_id, now)
    try:
        faults.checkpoint("backup.open")
        temporary, descriptor = _create_temporary(folder, final_name)
    except OSError as error:
        raise BackupFailed(
            f"Cannot write the backup of client {client_id} in {folder}: {_os_reason(error)}."
        ) from None
    try:
        with os.fdopen(descriptor, "wb") as raw:
            sink = _HashingSink(raw)
            with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:  # type: ignore[call-overload]
                writer = _ArchiveWriter(archive, now)
                counts = _write_members(session, client_id, writer)
                _write_manifest(session, writer, client_id, now, counts)
            raw.flush()
            os.fsync(raw.fileno())
        faults.checkpoint("backup.temp-written")
        path = _link_new(temporary, folder, client_id, now)
        faults.checkpoint("backup.linked")
        os.unlink(temporary)
        _fsync_dir(folder)
    except OSError as error:
        _remove_quietly(temporary)
        raise BackupFailed(
            f"Cannot write the backup of client {client_id} in {folder}: {_os_reason(error)}."
        ) from None
    except BaseException:
        _remove_quietly(temporary)
        raise
    return BackupFile(path, sink.digest.hexdigest(), counts, client_id, _digest_of(writer.members))


def _write_members(
    session: Session, client_id: int, writer: _ArchiveWriter | _DigestWriter
) -> dict[str, int]:
    client_table = table_of(Client)
    profile = session.execute(select(client_table).where(client_table.c.id == client_id)).one()
    writer.add(PROFILE, _json_bytes(_encode(client_table, profile._mapping)))

    counts: dict[str, int] = {}
    for kind, model in RECORD_MODELS.items():
        table = table_of(model)
        plain = [c for c in table.columns if not _is_binary(c)]
        query = (
            select(*plain)
            .where(table.c.client_id == client_id)
            .order_by(table.c.id)
            .execution_options(yield_per=500)
        )
        if kind == "documents":
            # Files first (one member open at a time); their rows are small, kept till then.
            lines = []
            for row in session.execute(query):
                data = _encode(table, row._mapping)
                data.update(_write_document(session, table, writer, data))
                lines.append(_line(data))
            writer.add(f"records/{kind}.jsonl", b"".join(lines))
            counts[kind] = len(lines)
            continue
        number = 0
        with writer.stream(f"records/{kind}.jsonl") as write:
            for row in session.execute(query):
                write(_line(_encode(table, row._mapping)))
                number += 1
        counts[kind] = number

    enrolments = table_of(Enrolment)
    programs = table_of(Program)
    used = select(enrolments.c.program_id).where(enrolments.c.client_id == client_id)
    writer.add(
        PROGRAMS,
        _json_bytes(
            [
                _encode(programs, row._mapping)
                for row in session.execute(
                    select(programs).where(programs.c.id.in_(used)).order_by(programs.c.id)
                )
            ]
        ),
    )

    events = table_of(AuditEvent)
    number = 0
    with writer.stream(AUDIT) as write:
        query = (
            select(events)
            .where(events.c.client_id == client_id)
            .order_by(events.c.id)
            .execution_options(yield_per=500)
        )
        for row in session.execute(query):
            write(_line(_encode(events, row._mapping)))
            number += 1
    counts[AUDIT_KIND] = number
    return counts


def _write_manifest(
    session: Session, writer: _ArchiveWriter, client_id: int, now: datetime, counts: dict[str, int]
) -> None:
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "pbclients_version": __version__,
        "schema_version": _schema_version(session),
        "client_id": client_id,
        "created_at": clock.iso(now),
        "counts": counts,
        "members": dict(sorted(writer.members.items())),
        # What each member decompresses to: a reader's cap, so a crafted archive cannot
        # make it decompress more than the writer wrote.
        "sizes": dict(sorted(writer.sizes.items())),
    }
    with writer.archive.open(writer.info(MANIFEST), "w") as member:
        member.write(_json_bytes(manifest))


def _is_binary(column: Any) -> bool:
    return isinstance(column.type, LargeBinary)


def _write_document(
    session: Session, table: Table, writer: _ArchiveWriter | _DigestWriter, data: dict[str, Any]
) -> dict[str, Any]:
    """Store one document's bytes as its own member (one document in memory at a time)."""
    content = session.execute(select(table.c.content).where(table.c.id == data["id"])).scalar_one()
    content = bytes(content)
    name = member_for_document(int(data["id"]), str(data["filename"]))
    writer.add(name, content)
    return {"content_member": name, "content_sha256": writer.members[name]}


def _link_new(temporary: Path, folder: Path, client_id: int, now: datetime) -> Path:
    """Give the finished file its final name without ever replacing an existing file."""
    for attempt in range(1, 1000):
        path = folder / backup_name(client_id, now, attempt)
        try:
            os.link(temporary, path)
        except FileExistsError:
            continue
        return path
    raise OSError(errno.EEXIST, f"too many backups of client {client_id} at {clock.iso(now)}")


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_quietly(path: Path) -> None:
    with suppress(OSError):
        path.unlink()


@contextmanager
def snapshot(engine: Engine) -> Iterator[Session]:
    """A read session that sees one consistent state of the database throughout."""
    with reading(engine) as session:
        if not is_sqlite(engine):
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        # SQLite: the session's single deferred transaction is already one snapshot (WAL).
        yield session


def write_verified_backup(
    engine: Engine, client_id: int, folder: Path, now: datetime
) -> BackupFile:
    """Write a client's backup, then read it back and check it against the database.

    Every member's checksum, the whole file's SHA-256, and every record count
    equal to what the database holds now. Raises BackupFailed (exit 4) on any
    failure, naming the file when one was written.
    """
    with snapshot(engine) as session:
        written = write_backup(session, client_id, folder, now)
    faults.checkpoint("backup.written")
    with reading(engine) as session:
        counts = record_counts(session, client_id)
    try:
        verify_backup(written.path, expected_counts=counts, expected_sha256=written.sha256)
    except BackupInvalid as error:
        raise BackupFailed(f"{error.detail}.") from None
    faults.checkpoint("backup.verified")
    return written


# --- reading and verifying ------------------------------------------------------------
#
# A backup is untrusted input: it may come from another machine, an older version, or
# someone who crafted it. Memory stays bounded whatever a member claims (members are
# streamed, each with a cap from the manifest and hard ceilings), every value is checked
# against its column before it is used, and member names are only ever keys, never paths.

MAX_MEMBER_BYTES = 512 << 20  # one member decompressed (a document; databases hold < 1 GB)
MAX_ARCHIVE_BYTES = 2 << 30  # every member together, decompressed
MAX_JSON_BYTES = 16 << 20  # manifest.json, client.json, programs.json: parsed whole
MAX_LINE_BYTES = 16 << 20  # one record of a .jsonl member
MAX_MEMBERS = 100_000
MAX_DIRECTORY_BYTES = 32 << 20  # the ZIP's central directory, which zipfile reads whole

_INT32 = (-(1 << 31), (1 << 31) - 1)  # INTEGER on PostgreSQL
_INT64 = (-(1 << 63), (1 << 63) - 1)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_JSON_MEMBERS = frozenset({MANIFEST, PROFILE, PROGRAMS})
_FIXED_MEMBERS = frozenset(
    {PROFILE, PROGRAMS, AUDIT, *(f"records/{kind}.jsonl" for kind in RECORD_MODELS)}
)
_DOCUMENT_MEMBER = re.compile(r"^documents/[0-9]{1,10}-[A-Za-z0-9._-]{1,100}$")
# Everything zipfile and its decompressors raise on a damaged or hostile member.
_UNREADABLE = (
    zipfile.BadZipFile, zlib.error, lzma.LZMAError, OSError, EOFError, NotImplementedError,
    RuntimeError, ValueError,
)  # fmt: skip


def _invalid(path: Path, problem: str) -> BackupInvalid:
    return BackupInvalid(f"Backup {path} {problem}")


def _shown(text: object) -> str:
    """A name or value from the archive as short, printable text (control characters escaped)."""
    shown = str(text)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return ascii(shown)


def _bytes(number: int) -> str:
    return f"{number / (1 << 20):,.0f} MiB" if number >= 1 << 20 else f"{number:,} bytes"


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def known_member(name: str) -> bool:
    """A member name this pbclients writes (any other name is refused, never used)."""
    return name in _FIXED_MEMBERS or _DOCUMENT_MEMBER.match(name) is not None


class _RowProblem(Exception):
    """What is wrong with one value; the caller says where (member and line)."""


def _value(column: Any, value: Any) -> Any:
    """A JSON value checked against its column and converted (a datetime for a timestamp)."""
    name = column.name
    kind = column.type
    if isinstance(kind, TypeDecorator) and not isinstance(kind, UTCDateTime):
        kind = kind.impl_instance  # SQLModel's AutoString is text
    if value is None:
        if column.nullable:
            return None
        raise _RowProblem(f"{name} is null")
    if isinstance(kind, UTCDateTime):
        if not isinstance(value, str) or len(value) > 40:
            raise _RowProblem(f"{name} is {_json_type(value)}, not a date and time")
        try:
            return clock.as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except (ValueError, OverflowError):
            raise _RowProblem(f"{name} {_shown(value)} is not a date and time") from None
    if isinstance(kind, Boolean):
        if not isinstance(value, bool):
            raise _RowProblem(f"{name} is {_json_type(value)}, not true or false")
        return value
    if isinstance(kind, Integer):
        low, high = _INT64 if isinstance(kind, BigInteger) else _INT32
        if isinstance(value, bool) or not isinstance(value, int):
            raise _RowProblem(f"{name} is {_json_type(value)}, not a whole number")
        if not low <= value <= high or ((column.primary_key or column.foreign_keys) and value < 1):
            raise _RowProblem(f"{name} {value} is out of range")
        return value
    if isinstance(kind, String):
        if not isinstance(value, str):
            raise _RowProblem(f"{name} is {_json_type(value)}, not text")
        if "\x00" in value:
            raise _RowProblem(f"{name} holds a NUL character")
        try:
            value.encode()
        except UnicodeEncodeError:
            raise _RowProblem(f"{name} is not valid Unicode text") from None
        return value
    # A binary column travels as its own member, never inside a record; a column type
    # added later must be checked here before a backup may carry it.
    raise _RowProblem(f"{name} cannot be given in a record")


def decode_row(
    table: Table, data: Any, where: str, *, derived: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """A JSON object back into checked column values; BackupInvalid naming `where` otherwise.

    `derived` columns are computed by the caller from other values and never taken from
    the archive; binary columns come from their own members.
    """
    if not isinstance(data, dict):
        raise BackupInvalid(
            f"The backup's {where} holds {_json_type(data)} where a record belongs",
            "nothing was written, use another backup",
        )
    unknown = set(data) - set(table.columns.keys())
    if unknown:
        raise BackupInvalid(
            f"The backup's {where} has columns this pbclients does not know "
            f"({', '.join(_shown(name) for name in sorted(unknown)[:5])})",
            "nothing was written, use a newer pbclients",
        )
    row: dict[str, Any] = {}
    try:
        for column in table.columns:
            if column.name in derived:
                continue
            if isinstance(column.type, LargeBinary):
                if column.name in data:
                    raise _RowProblem(f"{column.name} cannot be given in a record")
                continue
            if column.name not in data:
                if column.primary_key or (not column.nullable and column.default is None):
                    raise _RowProblem(f"{column.name} is missing")
                continue
            row[column.name] = _value(column, data[column.name])
    except _RowProblem as problem:
        raise BackupInvalid(
            f"The backup's {where} is not valid ({problem})",
            "nothing was written, use another backup",
        ) from None
    return row


def _directory(handle: IO[bytes]) -> tuple[int, int]:
    """(members, bytes) of a ZIP's central directory as its end record states them.

    Read before zipfile parses the directory, which it holds in memory whole. (0, 0) when
    no end record is found: zipfile then refuses the file itself.
    """
    size = handle.seek(0, os.SEEK_END)
    start = max(0, size - (22 + 0xFFFF))
    handle.seek(start)
    tail = handle.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return 0, 0
    entries, length = struct.unpack("<HI", tail[at + 10 : at + 16])
    if (entries == 0xFFFF or length == 0xFFFFFFFF) and tail[at - 20 : at - 16] == b"PK\x06\x07":
        (offset,) = struct.unpack("<Q", tail[at - 12 : at - 4])
        handle.seek(offset)
        record = handle.read(56)
        if record[:4] == b"PK\x06\x06":
            entries, length = struct.unpack("<QQ", record[32:48])
    return entries, length


def _check_manifest(path: Path, manifest: Any) -> None:
    """Every manifest value has the type and range it must have, before any is used."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _invalid(path, "is not a pbclients backup")
    version = manifest.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise BackupInvalid(
            f"Backup {path} has format version {version}, newer than this pbclients reads "
            f"({FORMAT_VERSION})",
            "nothing was written, use a newer pbclients",
        )
    members = manifest.get("members")
    counts = manifest.get("counts")
    sizes = manifest.get("sizes", {})
    client_id = manifest.get("client_id")
    created_at = manifest.get("created_at")
    problems = [
        not isinstance(version, int) or isinstance(version, bool) or version < 1,
        not isinstance(client_id, int) or isinstance(client_id, bool),
        not isinstance(client_id, int) or not 1 <= client_id <= _INT32[1],
        not isinstance(members, dict)
        or not isinstance(counts, dict)
        or not isinstance(sizes, dict),
        not isinstance(created_at, str) or len(created_at) > 40,
        not isinstance(manifest.get("pbclients_version", ""), str),
        not isinstance(manifest.get("schema_version"), str | None),
    ]
    if any(problems):
        raise _invalid(path, "has an incomplete manifest")
    assert isinstance(members, dict) and isinstance(counts, dict) and isinstance(sizes, dict)
    try:
        clock.as_utc(datetime.fromisoformat(str(created_at).replace("Z", "+00:00")))
    except (ValueError, OverflowError):
        raise _invalid(path, "has an incomplete manifest (created_at is not a time)") from None
    if len(members) > MAX_MEMBERS:
        raise _invalid(path, f"lists more than {MAX_MEMBERS:,} members")
    for name, digest in members.items():
        if not known_member(name):
            raise _invalid(path, f"lists a member pbclients never writes ({_shown(name)})")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise _invalid(path, f"has an incomplete manifest (no checksum for {name})")
    for kind, number in counts.items():
        if kind not in (*RECORD_MODELS, AUDIT_KIND):
            raise _invalid(path, f"counts records of an unknown kind ({_shown(kind)})")
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise _invalid(path, f"has an incomplete manifest (the count of {kind})")
    for name, size in sizes.items():
        if name not in members or isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise _invalid(path, f"has an incomplete manifest (the size of {_shown(name)})")


class BackupArchive:
    """An open backup whose members are checked against the manifest as they are read."""

    def __init__(
        self, path: Path, handle: IO[bytes], archive: zipfile.ZipFile, manifest: dict[str, Any]
    ) -> None:
        self.path = path
        self.handle = handle
        self.archive = archive
        self.manifest = manifest
        self.members: dict[str, str] = manifest["members"]
        self.sizes: dict[str, int] = manifest.get("sizes", {})
        self.client_id: int = manifest["client_id"]
        # Filled by `verify`: the programs the enrolments refer to (the only ones restored).
        self.programs_used: frozenset[int] = frozenset()

    def cap(self, name: str) -> int:
        """The most a member may decompress to: its manifest size, under a hard ceiling."""
        ceiling = MAX_JSON_BYTES if name in _JSON_MEMBERS else MAX_MEMBER_BYTES
        return min(self.sizes.get(name, ceiling), ceiling)

    def check_sizes(self) -> None:
        """Refuse, before anything is decompressed, members larger than they may be."""
        total = 0
        for info in self.archive.infolist():
            total += info.file_size
            if info.filename not in self.members:
                continue
            declared = self.sizes.get(info.filename)
            if declared is not None and info.file_size != declared:
                raise _invalid(self.path, f"is damaged ({info.filename} does not match its "
                               "checksum: its size differs from the manifest's)")  # fmt: skip
            if info.file_size > self.cap(info.filename):
                raise self._too_large(info.filename)
        if total > MAX_ARCHIVE_BYTES:
            raise _invalid(
                self.path,
                f"would decompress to {_bytes(total)}, more than the {_bytes(MAX_ARCHIVE_BYTES)} "
                "pbclients reads from one backup",
            )

    def _too_large(self, name: str) -> BackupInvalid:
        return _invalid(
            self.path,
            f"is refused: {name} decompresses to more than {_bytes(self.cap(name))} "
            "(its manifest's size or pbclients' limit)",
        )

    def stream(self, name: str) -> Iterator[bytes]:
        """A member's bytes, chunk by chunk; BackupInvalid if it is not what the manifest says.

        Stops as soon as the member passes its cap; the checksum (and size) is compared
        after the last chunk, so a caller acts on the data only inside a transaction it
        can roll back, or after the stream is exhausted.
        """
        expected = self.members.get(name)
        if expected is None:
            raise _invalid(self.path, f"does not list {_shown(name)} in its manifest")
        cap = self.cap(name)
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise _invalid(self.path, f"has an unreadable member {name}") from None
        if info.file_size > cap:
            raise self._too_large(name)
        digest = hashlib.sha256()
        size = 0
        try:
            member = self.archive.open(info)
        except _UNREADABLE:
            raise _invalid(self.path, f"is damaged ({name} cannot be read)") from None
        with member:
            while True:
                try:
                    chunk = member.read(_CHUNK)
                except _UNREADABLE:
                    raise _invalid(self.path, f"is damaged ({name} cannot be read)") from None
                if not chunk:
                    break
                size += len(chunk)
                if size > cap:
                    raise self._too_large(name)
                digest.update(chunk)
                yield chunk
        if digest.hexdigest() != expected or self.sizes.get(name, size) != size:
            raise _invalid(self.path, f"is damaged ({name} does not match its checksum)")

    def read(self, name: str) -> bytes:
        return b"".join(self.stream(name))

    def json(self, name: str) -> Any:
        data = self.read(name)
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            raise _invalid(self.path, f"has a malformed {name}") from None

    def lines(self, name: str) -> Iterator[tuple[int, Any]]:
        """(line number, parsed JSON) of every non-blank line, one line in memory at a time."""
        buffer = bytearray()
        number = 0
        for chunk in self.stream(name):
            buffer += chunk
            start = 0
            while (end := buffer.find(b"\n", start)) >= 0:
                number += 1
                line = bytes(buffer[start:end])
                start = end + 1
                if line.strip():
                    yield number, self._parse(name, number, line)
            del buffer[:start]
            if len(buffer) > MAX_LINE_BYTES:
                raise _invalid(
                    self.path,
                    f"has a record longer than {_bytes(MAX_LINE_BYTES)} on line {number + 1} "
                    f"of {name}",
                )
        if bytes(buffer).strip():
            yield number + 1, self._parse(name, number + 1, bytes(buffer))

    def _parse(self, name: str, number: int, line: bytes) -> Any:
        if len(line) > MAX_LINE_BYTES:
            raise _invalid(
                self.path,
                f"has a record longer than {_bytes(MAX_LINE_BYTES)} on line {number} of {name}",
            )
        try:
            return json.loads(line)
        except (ValueError, RecursionError):
            raise _invalid(self.path, f"has a malformed {name} (line {number})") from None

    def decode(self, table: Table, data: Any, where: str, **options: Any) -> dict[str, Any]:
        try:
            return decode_row(table, data, where, **options)
        except BackupInvalid as error:
            raise _invalid(
                self.path, f"is refused: {error.detail[len('The backup') + 3 :]}"
            ) from None

    def profile(self) -> dict[str, Any]:
        """The client's row, checked; its e-mail key is derived again by the caller."""
        row = self.decode(
            table_of(Client), self.json(PROFILE), PROFILE, derived=frozenset({"email_key"})
        )
        if row["id"] != self.client_id:
            raise _invalid(self.path, "has a profile that does not match its manifest")
        return row

    def programs(self) -> list[dict[str, Any]]:
        """The programs the backup names, checked; each id once."""
        data = self.json(PROGRAMS)
        if not isinstance(data, list):
            raise _invalid(self.path, f"holds {_json_type(data)} where {PROGRAMS} has a list")
        table = table_of(Program)
        rows = [self.decode(table, item, f"{PROGRAMS} item {n}") for n, item in enumerate(data, 1)]
        if len({row["id"] for row in rows}) != len(rows):
            raise _invalid(self.path, f"names a program twice in {PROGRAMS}")
        return rows

    def records(self, kind: str) -> Iterator[tuple[str, dict[str, Any], str | None]]:
        """(where, row, document member) of every record of one kind, each checked.

        A record must belong to the backup's client, and ids must rise line by line (as
        the writer orders them), so none is inserted twice without keeping a set of ids.
        """
        table = table_of(RECORD_MODELS[kind])
        name = f"records/{kind}.jsonl"
        last = 0
        for number, data in self.lines(name):
            where = f"line {number} of {name}"
            member = None
            if kind == "documents" and isinstance(data, dict):
                data = dict(data)
                member = data.pop("content_member", None)
                sha256 = data.pop("content_sha256", None)
                if (
                    not isinstance(member, str)
                    or _DOCUMENT_MEMBER.match(member) is None
                    or self.members.get(member) != sha256
                ):
                    raise _invalid(self.path, f"lacks the file of the document on {where}")
            row = self.decode(table, data, where)
            if row["client_id"] != self.client_id:
                raise _invalid(
                    self.path,
                    f"holds a record of client {row['client_id']} on {where} (it is a backup "
                    f"of client {self.client_id})",
                )
            if row["id"] <= last:
                raise _invalid(self.path, f"repeats or reorders record id {row['id']} on {where}")
            last = row["id"]
            yield where, row, member

    def verify(
        self,
        expected_counts: Mapping[str, int] | None = None,
        *,
        expected_sha256: str | None = None,
    ) -> Manifest:
        """Every member against its checksum, every value against its column, counts."""
        path = self.path
        names = self.archive.namelist()
        if len(names) != len(set(names)) or set(names) != {*self.members, MANIFEST}:
            raise _invalid(path, "holds other members than its manifest lists")
        for name in self.members:
            for _chunk in self.stream(name):
                pass
        self.profile()
        programs = {row["id"] for row in self.programs()}
        counts: dict[str, int] = {str(k): v for k, v in self.manifest["counts"].items()}
        used: set[int] = set()
        methods: set[int] = set()
        for kind in RECORD_MODELS:
            number = 0
            for where, row, _member in self.records(kind):
                number += 1
                if kind == "enrolments":
                    if row["program_id"] not in programs:
                        raise _invalid(path, f"enrols the client in a program it lacks on {where}")
                    if row["program_id"] in used:
                        raise _invalid(path, f"enrols the client in a program twice on {where}")
                    used.add(row["program_id"])
                elif kind == "payment_methods":
                    methods.add(row["id"])
                elif kind == "payment_plans" and row.get("payment_method_id") not in (
                    None,
                    *methods,
                ):
                    raise _invalid(path, f"refers to a payment method it lacks on {where}")
            if counts.get(kind) != number:
                raise _invalid(
                    path, f"holds {number} {kind} where its manifest says {counts.get(kind)}"
                )
        number = 0
        for line, event in self.lines(AUDIT):
            if not isinstance(event, dict):
                raise _invalid(path, f"holds {_json_type(event)} on line {line} of {AUDIT}")
            number += 1
        if counts.get(AUDIT_KIND) != number:
            raise _invalid(
                path,
                f"holds {number} {AUDIT_KIND} where its manifest says {counts.get(AUDIT_KIND)}",
            )
        self.programs_used = frozenset(used)
        try:
            sha256 = _handle_sha256(self.handle)
        except OSError as error:
            raise _invalid(path, f"cannot be read again ({error.strerror or error})") from None
        if expected_sha256 is not None and sha256 != expected_sha256:
            raise _invalid(path, "changed on disk after it was written (its SHA-256 differs)")
        if expected_counts is not None:
            for kind, expected in expected_counts.items():
                if counts.get(kind) != expected:
                    raise BackupInvalid(
                        f"Backup {path} holds {counts.get(kind)} {kind.replace('_', ' ')} of "
                        f"client {self.client_id} but the database has {expected} (the client "
                        "changed while it was written)"
                    )
        manifest = self.manifest
        return Manifest(
            path=path.absolute(),
            sha256=sha256,
            format_version=int(manifest["format_version"]),
            pbclients_version=str(manifest.get("pbclients_version")),
            schema_version=manifest.get("schema_version"),
            client_id=self.client_id,
            created_at=str(manifest["created_at"]),
            counts=counts,
            members=self.members,
        )


@contextmanager
def open_backup(path: Path) -> Iterator[BackupArchive]:
    """Open a backup and check its manifest; BackupInvalid if that is not possible.

    The file is opened once: everything read through the archive (and the SHA-256 of the
    whole file) comes from that one open file, even if the path is replaced meanwhile.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise BackupInvalid(f"There is no backup file {path}", "check the path")
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed below, after the archive)
    except OSError as error:
        raise _invalid(path, f"cannot be read ({error.strerror or error})") from None
    with handle:
        try:
            entries, length = _directory(handle)
        except OSError:
            raise _invalid(path, "is not a readable backup archive") from None
        if entries > MAX_MEMBERS + 1 or length > MAX_DIRECTORY_BYTES:
            raise _invalid(path, f"holds more than {MAX_MEMBERS:,} members")
        try:
            archive = zipfile.ZipFile(handle)
        except _UNREADABLE:
            raise _invalid(path, "is not a readable backup archive") from None
        with archive:
            try:
                info = archive.getinfo(MANIFEST)
            except KeyError:
                raise _invalid(
                    path, "has no manifest.json (it is not a pbclients backup)"
                ) from None
            if info.file_size > MAX_JSON_BYTES:
                raise _invalid(
                    path, f"is refused: its manifest.json is larger than {_bytes(MAX_JSON_BYTES)}"
                )
            try:
                with archive.open(info) as member:
                    raw = member.read(MAX_JSON_BYTES + 1)
                manifest = json.loads(raw)
            except (*_UNREADABLE, RecursionError):
                raise _invalid(path, "has an unreadable manifest.json") from None
            _check_manifest(path, manifest)
            opened = BackupArchive(path, handle, archive, manifest)
            opened.check_sizes()
            yield opened


def _handle_sha256(handle: IO[bytes]) -> str:
    digest = hashlib.sha256()
    handle.seek(0)
    while chunk := handle.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def verify_backup(
    path: Path,
    expected_counts: Mapping[str, int] | None = None,
    *,
    expected_sha256: str | None = None,
) -> Manifest:
    """Re-check a backup: every member against its checksum, every value against its column,
    counts against the records.

    `expected_counts` (records per kind in the database) and `expected_sha256`
    (what the writer hashed) are compared when given. Raises BackupInvalid.
    """
    with open_backup(path) as opened:
        return opened.verify(expected_counts, expected_sha256=expected_sha256)


def audit_name(path: Path, client_id: int | None = None, created_at: str | None = None) -> str:
    """How the audit trail names a backup: the tool's own file name pattern, never a path.

    A path (its folders, or a file renamed by hand) may carry a client's name, and the
    trail outlives the client. A name outside the pattern is replaced by the name the
    tool gives a backup of `client_id` written at `created_at`.
    """
    if _NAME.match(path.name) or client_id is None or created_at is None:
        return path.name if _NAME.match(path.name) else "(renamed backup)"
    moment = clock.as_utc(datetime.fromisoformat(created_at.replace("Z", "+00:00")))
    return backup_name(client_id, moment)


def backup_files(folder: Path) -> list[Path]:
    """Backups in a folder (by name), oldest name first; temporary files are not backups."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


# --- export ---------------------------------------------------------------------------


def kept_note(first: list[Path], count: int) -> str:
    """Which backups a failed command leaves behind: named when few, else counted."""
    if not count:
        return ""
    if count <= 3:
        shown = ", ".join(str(path) for path in first[:count])
        return f" (backups already written were kept: {shown})"
    return f" ({count} backups already written were kept in {first[0].parent})"


def export_clients(engine: Engine, selection: Selection, folder: Path, change: Change) -> Batch:
    """Write a verified backup of every selected client; nothing in the roster changes.

    One client at a time, so memory does not grow with the selection. Each
    export is recorded in the audit trail (action "export", the file and its
    SHA-256). Raises BackupFailed (exit 4) on the first backup that fails.
    """
    with reading(engine) as session:
        resolved = resolve(session, selection)
    folder = prepare_folder(folder)
    results: list[ChangeResult] = []
    written: list[Path] = []
    for client in resolved.clients:
        try:
            backup = write_verified_backup(engine, client.client_id, folder, change.at)
        except BackupFailed as error:
            raise BackupFailed(
                f"{str(error).rstrip('.')}{kept_note(written, len(results))}; "
                "fix that and run export again."
            ) from None
        if len(written) < 4:
            written.append(backup.path)
        results.append(
            ChangeResult(
                client.reference, client.client_id, client.email, client.status.value,
                client.status.value, Outcome.EXPORTED, backup=str(backup.path),
                sha256=backup.sha256,
            )
        )  # fmt: skip
    results.extend(
        ChangeResult(ref.text, None, None, None, None, Outcome.SKIPPED, note="unknown")
        for ref in resolved.skipped
    )
    if not any(r.outcome is Outcome.EXPORTED for r in results):
        return Batch("export", results, extra={"folder": str(folder)})
    batch_id = audit.new_batch_id()
    with writing(engine) as session:
        audit.append(
            session,
            (
                audit.NewEvent(
                    "export", r.client_id, r.before, r.after,
                    {"backup": audit_name(Path(str(r.backup))), "sha256": r.sha256},
                )
                for r in results
                if r.outcome is Outcome.EXPORTED
            ),
            batch_id=batch_id, actor=change.actor, reason=change.reason, at=change.at,
        )  # fmt: skip
    return Batch("export", results, batch_id=batch_id, extra={"folder": str(folder)})
