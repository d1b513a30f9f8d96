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
  kind, and the SHA-256 of every other member.

The file is written under a temporary name in the target folder, fsynced,
hard-linked to its final name (which never replaces an existing file) and the
folder fsynced, so a crash leaves either no backup or a complete one. It is
then read back and checked before anyone relies on it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine, LargeBinary, Table, func, literal, select, union_all
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


def decode_row(table: Table, data: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A JSON object back into column values; an unknown column means a newer format."""
    unknown = set(data) - set(table.columns.keys())
    if unknown:
        raise BackupInvalid(
            f"The backup's {name} has columns this pbclients does not know "
            f"({', '.join(sorted(unknown))})",
            "nothing was restored, use a newer pbclients",
        )
    row = dict(data)
    for column in table.columns:
        value = row.get(column.name)
        if isinstance(column.type, UTCDateTime) and isinstance(value, str):
            row[column.name] = clock.as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    return row


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
        self.stamp = clock.as_utc(now).timetuple()[:6]

    def info(self, name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=self.stamp)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o100600 << 16  # a private regular file when unpacked
        return info

    def add(self, name: str, data: bytes) -> None:
        with self.archive.open(self.info(name), "w", force_zip64=len(data) > (1 << 30)) as member:
            member.write(data)
        self.members[name] = hashlib.sha256(data).hexdigest()

    @contextmanager
    def stream(self, name: str) -> Iterator[Any]:
        digest = hashlib.sha256()
        with self.archive.open(self.info(name), "w", force_zip64=True) as member:

            def write(data: bytes) -> None:
                member.write(data)
                digest.update(data)

            yield write
        self.members[name] = digest.hexdigest()


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


def prepare_folder(folder: Path) -> Path:
    """The backup folder, created with mode 0700 if missing; BackupFailed if unusable."""
    from pbclients.paths import make_private_dir

    folder = folder.expanduser().absolute()
    try:
        make_private_dir(folder)
    except OSError as error:
        raise BackupFailed(f"Cannot use backup folder {folder}: {_os_reason(error)}.") from None
    if not folder.is_dir():
        raise BackupFailed(f"Cannot use backup folder {folder}: it is a file, not a folder.")
    return folder


def write_backup(session: Session, client_id: int, folder: Path, now: datetime) -> BackupFile:
    """Write one client's complete record to a new archive in `folder` (never overwriting).

    Reads inside the caller's session, so what is written is one consistent
    snapshot when that session's transaction is one (see `snapshot`).
    Raises BackupFailed when the file cannot be written.
    """
    client = session.get(Client, client_id)
    if client is None:
        raise UnknownClient(f"There is no client {client_id}; nothing was backed up.")
    folder = prepare_folder(folder)
    final_name = backup_name(client_id, now)
    temporary = folder / f".{final_name}.{secrets.token_hex(4)}.tmp"
    try:
        faults.checkpoint("backup.open")
        descriptor = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
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


def _invalid(path: Path, problem: str) -> BackupInvalid:
    return BackupInvalid(f"Backup {path} {problem}")


class BackupArchive:
    """An open backup whose members are checked against the manifest as they are read."""

    def __init__(self, path: Path, archive: zipfile.ZipFile, manifest: dict[str, Any]) -> None:
        self.path = path
        self.archive = archive
        self.manifest = manifest
        self.members: dict[str, str] = manifest["members"]

    def read(self, name: str) -> bytes:
        expected = self.members.get(name)
        if expected is None:
            raise _invalid(self.path, f"does not list {name} in its manifest")
        try:
            data = self.archive.read(name)
        except (KeyError, zipfile.BadZipFile, zlib.error, OSError, EOFError):
            raise _invalid(self.path, f"has an unreadable member {name}") from None
        if hashlib.sha256(data).hexdigest() != expected:
            raise _invalid(self.path, f"is damaged ({name} does not match its checksum)")
        return data

    def json(self, name: str) -> Any:
        try:
            return json.loads(self.read(name))
        except ValueError:
            raise _invalid(self.path, f"has a malformed {name}") from None

    def lines(self, name: str) -> list[dict[str, Any]]:
        try:
            return [json.loads(line) for line in self.read(name).splitlines() if line.strip()]
        except ValueError:
            raise _invalid(self.path, f"has a malformed {name}") from None


@contextmanager
def open_backup(path: Path) -> Iterator[BackupArchive]:
    """Open a backup and parse its manifest; BackupInvalid if that is not possible."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BackupInvalid(f"There is no backup file {path}", "check the path")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError):
        raise _invalid(path, "is not a readable backup archive") from None
    with archive:
        try:
            manifest = json.loads(archive.read(MANIFEST))
        except KeyError:
            raise _invalid(path, "has no manifest.json (it is not a pbclients backup)") from None
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError):
            raise _invalid(path, "has an unreadable manifest.json") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise _invalid(path, "is not a pbclients backup")
        version = manifest.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise BackupInvalid(
                f"Backup {path} has format version {version}, newer than this pbclients reads "
                f"({FORMAT_VERSION})",
                "nothing was written, use a newer pbclients",
            )
        if not isinstance(manifest.get("members"), dict) or not isinstance(
            manifest.get("counts"), dict
        ):
            raise _invalid(path, "has an incomplete manifest")
        yield BackupArchive(path, archive, manifest)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_backup(
    path: Path,
    expected_counts: Mapping[str, int] | None = None,
    *,
    expected_sha256: str | None = None,
) -> Manifest:
    """Re-check a backup: every member against its checksum, counts against the records.

    `expected_counts` (records per kind in the database) and `expected_sha256`
    (what the writer hashed) are compared when given. Raises BackupInvalid.
    """
    path = Path(path).expanduser()
    with open_backup(path) as opened:
        archive = opened.archive
        manifest = opened.manifest
        members: dict[str, str] = manifest["members"]
        names = archive.namelist()
        if len(names) != len(set(names)) or set(names) != {*members, MANIFEST}:
            raise _invalid(path, "holds other members than its manifest lists")
        for name, expected in members.items():
            digest = hashlib.sha256()
            try:
                with archive.open(name) as member:
                    while chunk := member.read(_CHUNK):
                        digest.update(chunk)
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError):
                raise _invalid(path, f"is damaged ({name} cannot be read)") from None
            if digest.hexdigest() != expected:
                raise _invalid(path, f"is damaged ({name} does not match its checksum)")
        profile = opened.json(PROFILE)
        client_id = manifest.get("client_id")
        if not isinstance(profile, dict) or profile.get("id") != client_id:
            raise _invalid(path, "has a profile that does not match its manifest")
        counts = {str(k): v for k, v in manifest["counts"].items()}
        for kind in (*RECORD_MODELS, AUDIT_KIND):
            name = AUDIT if kind == AUDIT_KIND else f"records/{kind}.jsonl"
            rows = opened.lines(name)
            if counts.get(kind) != len(rows):
                raise _invalid(
                    path, f"holds {len(rows)} {kind} where its manifest says {counts.get(kind)}"
                )
            if kind == "documents":
                for row in rows:
                    if members.get(str(row.get("content_member"))) != row.get("content_sha256"):
                        raise _invalid(path, f"lacks the file of document {row.get('id')}")
    try:
        sha256 = _file_sha256(path)
    except OSError as error:
        raise _invalid(path, f"cannot be read again ({error.strerror or error})") from None
    if expected_sha256 is not None and sha256 != expected_sha256:
        raise _invalid(path, "changed on disk after it was written (its SHA-256 differs)")
    if expected_counts is not None:
        for kind, number in expected_counts.items():
            if counts.get(kind) != number:
                raise BackupInvalid(
                    f"Backup {path} holds {counts.get(kind)} {kind.replace('_', ' ')} of client "
                    f"{client_id} but the database has {number} (the client changed while it "
                    "was written)"
                )
    return Manifest(
        path=path.absolute(),
        sha256=sha256,
        format_version=int(manifest["format_version"]),
        pbclients_version=str(manifest.get("pbclients_version")),
        schema_version=manifest.get("schema_version"),
        client_id=int(str(client_id)),
        created_at=str(manifest.get("created_at")),
        counts=counts,
        members=members,
    )


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
                    {"backup": r.backup, "sha256": r.sha256},
                )
                for r in results
                if r.outcome is Outcome.EXPORTED
            ),
            batch_id=batch_id, actor=change.actor, reason=change.reason, at=change.at,
        )  # fmt: skip
    return Batch("export", results, batch_id=batch_id, extra={"folder": str(folder)})
