"""Writing a backup: streamed into a private file with no name yet, linked, then checked.

The file is written in the target folder as an unnamed file (Linux `O_TMPFILE`; else
under a hidden temporary name), fsynced, linked to its final name (which never
replaces an existing file) and the folder fsynced, so a crash leaves either no
backup or a complete one. It is
then read back and checked before anyone relies on it (`write_verified_backup`).
`content_digest` hashes the rows a backup is made from (and each document's file),
writing nothing, so deletion can tell a client changed after its backup. The
`fhir/` members, the manifest and the backup's time are not in it: they follow
from those rows and the time the backup is made.

An encrypted backup (`pbclients.backup.keys`) is the same archive, written first into
a private temporary file (in memory while small, else an unnamed file of mode 0600 in
the backup folder, gone once closed), then encrypted with age into the temporary file
that becomes the backup. It is checked by decrypting it back.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import itertools
import os
import re
import secrets
import tempfile
import zipfile
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import IO, Any

from sqlalchemy import (
    Connection,
    Engine,
    LargeBinary,
    Select,
    Table,
    bindparam,
    func,
    literal,
    select,
    union_all,
)
from sqlmodel import Session

from pbclients import __version__, clock, faults
from pbclients.backup.archive import (
    AUDIT,
    AUDIT_KIND,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    PROFILE,
    PROGRAMS,
    BackupInvalid,
    backup_name,
    document_url,
    encode_row,
    fhir_member,
    json_bytes,
    json_line,
    member_for_document,
    table_of,
)
from pbclients.backup.keys import Keyring, Opener
from pbclients.backup.reader import verify_backup
from pbclients.db import is_sqlite, reading, translate_busy
from pbclients.errors import BackupFailed, UnknownClient
from pbclients.fhir import FHIR_VERSION, bulk, mapping
from pbclients.lookup import chunks
from pbclients.models import RECORD_MODELS, AuditEvent, Client, Enrolment, Program

# What `write_backup` names a file while it writes it (see `remove_stale_temporaries`).
_TEMPORARY = re.compile(r"^\.client-\d+-\d{8}T\d{6}Z\.pbbackup\.zip(?:\.age)?\.[0-9a-f]{8}\.tmp$")
# The archive of an encrypted backup stays in memory up to this size before it is encrypted.
_SPOOL_BYTES = 8 << 20
# Clients whose rows are read together: one statement per table for each group instead of
# one per table for each client (round trips dominated), while memory holds one group.
_CLIENTS_PER_READ = 100
# What `_HashingSink` gathers before it writes.
_SINK_BYTES = 1 << 20
# Document files read with one statement, at most (or one file, when larger).
_FILE_BATCH_BYTES = 8 << 20
_FILE_BYTES = "pb_file_bytes"


@dataclass(frozen=True)
class BackupFile:
    """A backup just written: where, the SHA-256 of the whole file, records per kind, and
    `content`, the digest of what it holds (compare with `content_digest` before deleting)."""

    path: Path
    sha256: str
    counts: dict[str, int]
    client_id: int
    content: str


# --- what the database holds --------------------------------------------------------------


def record_counts(connection: Connection, client_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Records per kind (and audit events) the database holds for each of these clients.

    One statement for the group: export and delete count every client they back up.
    """
    kinds = (*RECORD_MODELS, AUDIT_KIND)
    counts = {client_id: dict.fromkeys(kinds, 0) for client_id in client_ids}
    for kind, client_id, number in connection.execute(
        _counts_statement(), {"ids": list(client_ids)}
    ):
        counts[client_id][kind] = int(number)
    return counts


@cache
def _counts_statement() -> Any:
    tables = {kind: table_of(model) for kind, model in RECORD_MODELS.items()}
    tables[AUDIT_KIND] = table_of(AuditEvent)
    return union_all(
        *(
            select(literal(kind).label("kind"), table.c.client_id, func.count().label("n"))
            .where(table.c.client_id.in_(bindparam("ids", expanding=True)))
            .group_by(table.c.client_id)
            for kind, table in tables.items()
        )
    )


def content_digest(session: Session, client_id: int) -> str:
    """One SHA-256 over the rows a backup of the client written now would be made from.

    Equal to `BackupFile.content` exactly when every row (profile, records, files,
    programs, audit history) is as it was backed up: an edited record changes it
    where a record count would not.
    """
    return dict(content_digests(session, [client_id]))[client_id]


def content_digests(session: Session, client_ids: Sequence[int]) -> Iterator[tuple[int, str]]:
    """(client id, `content_digest`) of each client in turn, read a group at a time."""
    for group in chunks(client_ids, _CLIENTS_PER_READ):
        rows = _Rows(session.connection(), group)
        for client_id in group:
            yield client_id, _content(rows.clients[client_id], rows.file_sha256)


def _content(client: _ClientRows, file_sha256: Callable[[dict[str, Any]], str]) -> str:
    """The digest of a client's rows exactly as read, and of each document's file.

    Hashing the rows themselves, not the members made from them, keeps deletion's
    check under the write lock a fraction of the cost of writing the backup again.
    """
    digest = hashlib.sha256()
    for part in (client.profile, client.records, client.programs, client.events):
        digest.update(repr(part).encode())
    for row in client.records["documents"]:
        digest.update(file_sha256(row).encode())
    return digest.hexdigest()


# --- the folder ----------------------------------------------------------------------------


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


def kept_note(first: list[Path], count: int) -> str:
    """Which backups a failed command leaves behind: named when few, else counted."""
    if not count:
        return ""
    if count <= 3:
        shown = ", ".join(str(path) for path in first[:count])
        return f" (backups already written were kept: {shown})"
    return f" ({count} backups already written were kept in {first[0].parent})"


# --- writing -------------------------------------------------------------------------------


class _HashingSink:
    """A write-only stream that hashes what passes through (zipfile streams into it).

    zipfile writes each header, each piece of compressed data and each directory entry
    on its own (about ten writes per member): they are gathered and hashed in large
    blocks; `flush` passes on the rest (zipfile calls it as it closes the archive).
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self._pending = bytearray()

    def write(self, data: bytes) -> int:
        self._pending += data
        if len(self._pending) >= _SINK_BYTES:
            self._pass_on()
        return len(data)

    def flush(self) -> None:
        self._pass_on()
        self.raw.flush()

    def _pass_on(self) -> None:
        self.raw.write(self._pending)
        self.digest.update(self._pending)
        self._pending.clear()


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


def _schema_version(connection: Connection) -> str | None:
    from pbclients.schema import current_revision

    return current_revision(connection)


@dataclass
class _ClientRows:
    """One client's rows as its backup holds them; `profile` is None for no such client."""

    profile: dict[str, Any] | None
    records: dict[str, list[dict[str, Any]]]
    programs: list[dict[str, Any]]
    events: list[dict[str, Any]]


class _Rows:
    """The rows of a group of clients, read with one statement per table (ordered by client,
    then id, as the members list them). Document files are read as they are written, a
    few megabytes at a time (`_FILE_BATCH_BYTES`, or one larger file alone)."""

    def __init__(self, connection: Connection, client_ids: Sequence[int]) -> None:
        self._connection = connection
        ids = {"ids": list(client_ids)}
        self.clients = {
            client_id: _ClientRows(None, {kind: [] for kind in RECORD_MODELS}, [], [])
            for client_id in client_ids
        }
        clients = table_of(Client)
        for row in self._dicts(_group_query(clients, clients.c.id), ids):
            self.clients[row["id"]].profile = row
        sizes: dict[int, int] = {}
        for kind, model in RECORD_MODELS.items():
            table = table_of(model)
            for row in self._dicts(_group_query(table, table.c.client_id), ids):
                if kind == "documents":
                    sizes[row["id"]] = int(row.pop(_FILE_BYTES) or 0)
                self.clients[row["client_id"]].records[kind].append(row)
        events = table_of(AuditEvent)
        for row in self._dicts(_group_query(events, events.c.client_id), ids):
            self.clients[row["client_id"]].events.append(row)
        enrolments = table_of(Enrolment)
        programs = table_of(Program)
        used = select(enrolments.c.program_id).where(
            enrolments.c.client_id.in_(bindparam("ids", expanding=True))
        )
        known = {
            int(row["id"]): row
            for row in self._dicts(select(programs).where(programs.c.id.in_(used)), ids)
        }
        for rows in self.clients.values():
            chosen = sorted({int(row["program_id"]) for row in rows.records["enrolments"]})
            rows.programs = [known[program_id] for program_id in chosen]
        # Files are read a few megabytes at a time, in the order they are written.
        self._files: dict[int, bytes] = {}
        self._file_batch: dict[int, list[int]] = {}
        batch: list[int] = []
        batch_bytes = 0
        for client_id in client_ids:
            for row in self.clients[client_id].records["documents"]:
                if batch and batch_bytes + sizes[row["id"]] > _FILE_BATCH_BYTES:
                    batch, batch_bytes = [], 0
                batch.append(row["id"])
                batch_bytes += sizes[row["id"]]
                self._file_batch[row["id"]] = batch

    def _dicts(self, statement: Any, parameters: dict[str, Any]) -> Iterator[dict[str, Any]]:
        # Plain dicts, built with zip: several times cheaper than a RowMapping per row.
        result = self._connection.execute(statement, parameters)
        keys = list(result.keys())
        return (dict(zip(keys, row, strict=False)) for row in result)

    def content(self, document_id: int) -> bytes:
        """A document's file (each is handed out once)."""
        if document_id not in self._files:
            batch = self._file_batch[document_id]
            self._files = {
                int(row[0]): bytes(row[1])
                for row in self._connection.execute(_files_query(), {"ids": batch})
            }
        return self._files.pop(document_id)

    def file_sha256(self, document: dict[str, Any]) -> str:
        return hashlib.sha256(self.content(int(document["id"]))).hexdigest()


@cache
def _files_query() -> Any:
    table = table_of(RECORD_MODELS["documents"])
    return select(table.c.id, table.c.content).where(
        table.c.id.in_(bindparam("ids", expanding=True))
    )


def _group_query(table: Table, client_column: Any) -> Select[Any]:
    """A table's rows of the clients bound as `ids`, in member order; file bytes are left
    out, their size is given instead (as `_FILE_BYTES`)."""
    columns: list[Any] = [c for c in table.columns if not _is_binary(c)]
    columns += [func.length(c).label(_FILE_BYTES) for c in table.columns if _is_binary(c)]
    return (
        select(*columns)
        .where(client_column.in_(bindparam("ids", expanding=True)))
        .order_by(client_column, table.c.id)
    )


def _open_unnamed(folder: Path) -> int | None:
    """A new private file in `folder` that has no name yet (Linux `O_TMPFILE`), or None
    where the system or the filesystem offers none.

    It is named only once complete (`_link_new`), and a crash leaves nothing behind: no
    temporary name is created, unlinked or swept. ext4, for one, slows down each file it
    creates after many were unlinked: named temporaries cost a delete of 10,000 clients
    about as much again as writing their archives.
    """
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not os.path.isdir(_OWN_DESCRIPTORS):
        return None
    try:
        return os.open(folder, flag | os.O_WRONLY, 0o600)
    except OSError as error:
        # No O_TMPFILE on this filesystem (EOPNOTSUPP) or kernel (EISDIR, EINVAL).
        if error.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None
        raise


# Where Linux shows this process's open files: linking /proc/self/fd/N names the unnamed one.
_OWN_DESCRIPTORS = "/proc/self/fd"


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


def write_backup(
    session: Session,
    client_id: int,
    folder: Path,
    now: datetime,
    *,
    recipients: list[Any] | None = None,
) -> BackupFile:
    """Write one client's complete record to a new archive in `folder` (never overwriting),
    encrypted to `recipients` (age recipients) when they are given.

    Reads inside the caller's session, so what is written is one consistent
    snapshot when that session's transaction is one (see `snapshot`).
    Raises BackupFailed when the file cannot be written.
    """
    connection = session.connection()
    rows = _Rows(connection, [client_id])
    if rows.clients[client_id].profile is None:
        raise UnknownClient(f"There is no client {client_id}; nothing was backed up.")
    folder = prepare_folder(folder, sweep=False)
    return _write_file(rows, client_id, folder, now, _schema_version(connection), recipients)


def _write_file(
    rows: _Rows,
    client_id: int,
    folder: Path,
    now: datetime,
    schema_version: str | None,
    recipients: list[Any] | None,
) -> BackupFile:
    """One backup into `folder` (prepared already) from the rows read with its group."""
    if rows.clients[client_id].profile is None:
        raise UnknownClient(f"There is no client {client_id}; nothing was backed up.")
    encrypted = recipients is not None
    final_name = backup_name(client_id, now, encrypted=encrypted)
    temporary: Path | None = None
    try:
        faults.checkpoint("backup.open")
        descriptor = _open_unnamed(folder)
        if descriptor is None:
            temporary, descriptor = _create_temporary(folder, final_name)
    except OSError as error:
        raise BackupFailed(
            f"Cannot write the backup of client {client_id} in {folder}: {_os_reason(error)}."
        ) from None
    source = str(temporary or f"{_OWN_DESCRIPTORS}/{descriptor}")
    try:
        with os.fdopen(descriptor, "wb") as raw:
            sink = _HashingSink(raw)
            if recipients is None:
                counts, content = _write_archive(rows, client_id, sink, now, schema_version)
            else:
                with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES, dir=str(folder)) as plain:
                    # Through the same non-seekable sink: the archive's bytes are laid out
                    # exactly as a plain backup's.
                    counts, content = _write_archive(
                        rows, client_id, _HashingSink(plain), now, schema_version
                    )
                    plain.seek(0)
                    _encrypt(plain, sink, recipients, client_id, folder)
            sink.flush()
            os.fsync(raw.fileno())
            faults.checkpoint("backup.temp-written")
            # While the file is open: an unnamed one exists only as long as it is.
            path = _link_new(source, folder, client_id, now, encrypted=encrypted)
            faults.checkpoint("backup.linked")
        if temporary is not None:
            os.unlink(temporary)
        _fsync_dir(folder)
    except OSError as error:
        if temporary is not None:
            _remove_quietly(temporary)
        raise BackupFailed(
            f"Cannot write the backup of client {client_id} in {folder}: {_os_reason(error)}."
        ) from None
    except BaseException:
        if temporary is not None:
            _remove_quietly(temporary)
        raise
    return BackupFile(path, sink.digest.hexdigest(), counts, client_id, content)


def _write_archive(
    rows: _Rows, client_id: int, sink: _HashingSink, now: datetime, schema_version: str | None
) -> tuple[dict[str, int], str]:
    """The archive streamed into `sink`: (records per kind, the content digest)."""
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:  # type: ignore[call-overload]
        writer = _ArchiveWriter(archive, now)
        files: dict[int, mapping.FileReference] = {}
        counts = _write_members(rows, client_id, writer, files)
        content = _content(
            rows.clients[client_id],
            lambda row: writer.members[member_for_document(int(row["id"]), str(row["filename"]))],
        )
        fhir = _write_fhir(rows.clients[client_id], writer, now, files)
        _write_manifest(writer, schema_version, client_id, now, counts, fhir)
    sink.flush()
    return counts, content


def _encrypt(
    plain: IO[bytes], sink: _HashingSink, recipients: list[Any], client_id: int, folder: Path
) -> None:
    """age-encrypt the archive into the backup file, streamed (memory stays bounded)."""
    import pyrage

    try:
        pyrage.encrypt_io(plain, sink, recipients)
    except pyrage.EncryptError as error:
        raise BackupFailed(
            f"Cannot encrypt the backup of client {client_id} in {folder}: {error}."
        ) from None


def _write_members(
    rows: _Rows,
    client_id: int,
    writer: _ArchiveWriter,
    files: dict[int, mapping.FileReference],
) -> dict[str, int]:
    """Every member but the FHIR ones and the manifest; records per kind.

    `files` receives, per document id, where its file went with its size and SHA-1, for
    the FHIR members written after these.
    """
    client = rows.clients[client_id]
    assert client.profile is not None
    writer.add(PROFILE, json_bytes(encode_row(table_of(Client), client.profile)))

    counts: dict[str, int] = {}
    for kind, model in RECORD_MODELS.items():
        table = table_of(model)
        records = client.records[kind]
        if kind == "documents":
            # Files first (one member open at a time), then the rows that name them.
            lines = []
            for row in records:
                data = encode_row(table, row)
                data.update(_write_document(rows, writer, data, files))
                lines.append(json_line(data))
            writer.add(f"records/{kind}.jsonl", b"".join(lines))
        else:
            with writer.stream(f"records/{kind}.jsonl") as write:
                write(b"".join(json_line(encode_row(table, row)) for row in records))
        counts[kind] = len(records)

    programs = table_of(Program)
    writer.add(PROGRAMS, json_bytes([encode_row(programs, row) for row in client.programs]))

    events = table_of(AuditEvent)
    with writer.stream(AUDIT) as write:
        write(b"".join(json_line(encode_row(events, row)) for row in client.events))
    counts[AUDIT_KIND] = len(client.events)
    return counts


def _write_fhir(
    client: _ClientRows,
    writer: _ArchiveWriter,
    now: datetime,
    files: Mapping[int, mapping.FileReference],
) -> dict[str, int]:
    """The client's FHIR resources, one `fhir/<Type>.ndjson` member per type it has, as
    `export --format fhir` maps them; resources per type.

    Mapped as of the backup's own time `now` (an appointment is booked or fulfilled
    relative to it), so the members follow from the rest of the archive alone. A
    document's resource refers to the member its file was just written to (`files`)
    instead of reading the file again.
    """
    assert client.profile is not None
    context = mapping.ClientContext(
        client.profile["status"], now, {int(row["id"]): row for row in client.programs}
    )
    resources = mapping.client_resources(
        client.profile, client.records, context, lambda row: files[int(row["id"])]
    )
    written: dict[str, int] = {}
    # client_resources yields type after type, so each type is one run: one member.
    for resource_type, run in itertools.groupby(resources, key=lambda r: r["resourceType"]):
        lines = [bulk.ndjson_line(resource) for resource in run]
        with writer.stream(fhir_member(resource_type)) as write:
            write(b"".join(lines))
        written[resource_type] = len(lines)
    return written


def _write_manifest(
    writer: _ArchiveWriter,
    schema_version: str | None,
    client_id: int,
    now: datetime,
    counts: dict[str, int],
    fhir: dict[str, int],
) -> None:
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "pbclients_version": __version__,
        "schema_version": schema_version,
        "client_id": client_id,
        "created_at": clock.iso(now),
        "counts": counts,
        # What the fhir/ members hold, per type (a reader checks these against the
        # record counts and the members' lines).
        "fhir": {"version": FHIR_VERSION, "counts": fhir},
        "members": dict(sorted(writer.members.items())),
        # What each member decompresses to: a reader's cap, so a crafted archive cannot
        # make it decompress more than the writer wrote.
        "sizes": dict(sorted(writer.sizes.items())),
    }
    with writer.archive.open(writer.info(MANIFEST), "w") as member:
        member.write(json_bytes(manifest))


def _is_binary(column: Any) -> bool:
    return isinstance(column.type, LargeBinary)


def _write_document(
    rows: _Rows,
    writer: _ArchiveWriter,
    data: dict[str, Any],
    files: dict[int, mapping.FileReference],
) -> dict[str, Any]:
    """Store one document's bytes as its own member."""
    content = rows.content(int(data["id"]))
    name = member_for_document(int(data["id"]), str(data["filename"]))
    writer.add(name, content)
    files[int(data["id"])] = mapping.FileReference(
        document_url(name), len(content), hashlib.sha1(content).digest()
    )
    return {"content_member": name, "content_sha256": writer.members[name]}


def _link_new(
    source: str, folder: Path, client_id: int, now: datetime, *, encrypted: bool = False
) -> Path:
    """Give the finished file (a temporary's path, or an unnamed file's /proc/self/fd entry)
    its final name without ever replacing an existing file."""
    directory = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        for attempt in range(1, 1000):
            name = backup_name(client_id, now, attempt, encrypted=encrypted)
            try:
                # With a directory descriptor, os.link calls linkat(2) with
                # AT_SYMLINK_FOLLOW, which an unnamed file's /proc entry needs.
                os.link(source, name, dst_dir_fd=directory, follow_symlinks=True)
            except FileExistsError:
                continue
            return folder / name
    finally:
        os.close(directory)
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
    engine: Engine,
    client_id: int,
    folder: Path,
    now: datetime,
    keyring: Keyring | None = None,
) -> BackupFile:
    """`write_verified_backups` of one client."""
    with closing(write_verified_backups(engine, [client_id], folder, now, keyring)) as backups:
        return next(backups)


def write_verified_backups(
    engine: Engine,
    client_ids: Sequence[int],
    folder: Path,
    now: datetime,
    keyring: Keyring | None = None,
) -> Generator[BackupFile, None, None]:
    """Write each client's backup, then read it back and check it against the database,
    a group of clients at a time; yields each backup once it is verified.

    Every member's checksum, the whole file's SHA-256, and every record count
    equal to what the database holds now (counted afresh after the group's backups were
    written). The rows of a group are read from one snapshot (`snapshot`). With a
    `keyring` the backup is encrypted to its recipients and decrypted back to be checked
    (`Keyring.sealing`). Raises BackupFailed (exit 4) on the first failure, naming the
    file when one was written; the backups yielded before it are complete and verified,
    and the group's backups not yet yielded are removed. Close it when done
    (`contextlib.closing`): that too removes what it wrote but did not yield.
    """
    recipients: list[Any] | None = None
    opener: Opener | None = None
    if keyring is not None:
        recipients, identities = keyring.sealing()
        opener = Opener.holding(identities, keyring.source)
    folder = prepare_folder(folder, sweep=False)
    with translate_busy(), engine.connect() as fresh:
        for group in chunks(client_ids, _CLIENTS_PER_READ):
            unreported: list[Path] = []
            written: list[BackupFile] = []
            # A backup that cannot be written ends the run once those before it are
            # verified: they are kept, as when each was verified right after it was written.
            failure: BackupFailed | None = None
            try:
                with snapshot(engine) as session:
                    connection = session.connection()
                    rows = _Rows(connection, group)
                    schema_version = _schema_version(connection)
                    for client_id in group:
                        try:
                            backup = _write_file(
                                rows, client_id, folder, now, schema_version, recipients
                            )
                        except BackupFailed as error:
                            failure = error
                            break
                        written.append(backup)
                        unreported.append(backup.path)
                        faults.checkpoint("backup.written")
                # Counted in a new transaction once the group is written: a record committed
                # since the snapshot shows as a count its backup does not hold.
                counts = record_counts(fresh, [backup.client_id for backup in written])
                fresh.rollback()
                for backup in written:
                    try:
                        verify_backup(
                            backup.path,
                            expected_counts=counts[backup.client_id],
                            expected_sha256=backup.sha256,
                            opener=opener,
                        )
                    except BackupInvalid as error:
                        unreported.remove(backup.path)  # named in the error: kept
                        raise BackupFailed(f"{error.detail}.") from None
                    faults.checkpoint("backup.verified")
                    unreported.remove(backup.path)
                    yield backup
                if failure is not None:
                    raise failure
            finally:
                # Backups written but never handed out (a later one failed, or the caller
                # stopped): nobody was told of them, so none is left behind.
                for path in unreported:
                    _remove_quietly(path)
