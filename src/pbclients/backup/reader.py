"""Opening a backup and verifying it: an archive is untrusted input.

It may come from another machine, an older version, or someone who crafted it.
Memory stays bounded whatever a member claims (members are streamed, each with a
cap from the manifest and the hard ceilings in `archive`), every value is checked
against its column before it is used, and member names are only ever keys, never
paths.

An encrypted backup (`pbclients.backup.keys`) is decrypted first, whole, into a private
temporary file (in memory while small; on disk an unnamed file, mode 0600, that is gone
once closed): age authenticates every chunk, so a changed byte anywhere stops it there,
before any member is read. Then it is read exactly as a plain one.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import re
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Table

from pbclients import clock
from pbclients.backup.archive import (
    AUDIT,
    AUDIT_KIND,
    DOCUMENT_MEMBER,
    FHIR_FOLDER,
    FHIR_FORMAT_VERSION,
    FORMAT,
    FORMAT_VERSION,
    INT32,
    MANIFEST,
    MAX_ARCHIVE_BYTES,
    MAX_DIRECTORY_BYTES,
    MAX_JSON_BYTES,
    MAX_LINE_BYTES,
    MAX_MEMBER_BYTES,
    MAX_MEMBERS,
    PROFILE,
    PROGRAMS,
    BackupInvalid,
    Manifest,
    decode_row,
    fhir_counts,
    fhir_member,
    fhir_type,
    json_type,
    known_member,
    shown,
    table_of,
)
from pbclients.backup.keys import MAGIC, NO_KEYS, Opener
from pbclients.models import RECORD_MODELS, Client, Program

_CHUNK = 1 << 20
# A member's local header (PKZIP APPNOTE 4.3.7) and its optional data descriptor (4.3.9).
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_DESCRIPTOR_SIGNATURE = b"PK\x07\x08"
_USES_DESCRIPTOR = 0x08
_ZIP64_EXTRA = 0x0001
_ZIP64_LIMIT = 0xFFFFFFFF
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_JSON_MEMBERS = frozenset({MANIFEST, PROFILE, PROGRAMS})
# What `verify` reads whole to check every value, and so checksums on the way.
_PARSED_MEMBERS = frozenset(
    {PROFILE, PROGRAMS, AUDIT, *(f"records/{kind}.jsonl" for kind in RECORD_MODELS)}
)
# An encrypted backup decrypts in memory up to this size, and into a private temporary
# file beyond it; never to more than an archive this reader accepts could take.
_SPOOL_BYTES = 8 << 20
_MAX_PLAIN_BYTES = MAX_ARCHIVE_BYTES + 2 * MAX_DIRECTORY_BYTES
# Everything zipfile and its decompressors raise on a damaged or hostile member. zipfile
# raises NotImplementedError for a compression method it does not support, which a
# crafted archive can name: that is a bad backup (exit 3), not a gap in this code.
_UNREADABLE = (
    zipfile.BadZipFile, zlib.error, lzma.LZMAError, OSError, EOFError, NotImplementedError,
    RuntimeError, ValueError,
)  # fmt: skip


def _invalid(path: Path, problem: str) -> BackupInvalid:
    return BackupInvalid(f"Backup {path} {problem}")


def _bytes(number: int) -> str:
    return f"{number / (1 << 20):,.0f} MiB" if number >= 1 << 20 else f"{number:,} bytes"


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
        not isinstance(client_id, int) or not 1 <= client_id <= INT32[1],
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
    assert isinstance(version, int)
    for name, digest in members.items():
        if not known_member(name, version):
            raise _invalid(path, f"lists a member pbclients never writes ({shown(name)})")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise _invalid(path, f"has an incomplete manifest (no checksum for {name})")
    for kind, number in counts.items():
        if kind not in (*RECORD_MODELS, AUDIT_KIND):
            raise _invalid(path, f"counts records of an unknown kind ({shown(kind)})")
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise _invalid(path, f"has an incomplete manifest (the count of {kind})")
    for name, size in sizes.items():
        if name not in members or isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise _invalid(path, f"has an incomplete manifest (the size of {shown(name)})")
    _check_fhir(path, manifest, version, members, counts)


def _check_fhir(
    path: Path,
    manifest: dict[str, Any],
    version: int,
    members: dict[str, Any],
    counts: dict[str, Any],
) -> None:
    """The manifest's FHIR resources per type: present exactly from format 2 on, one member
    per type listed, and as many resources as the records counted by kind map to.

    The last check catches a FHIR member dropped together with its checksum and count:
    the records still say it should be there.
    """
    fhir = manifest.get("fhir")
    if version < FHIR_FORMAT_VERSION:
        if fhir is not None:
            raise _invalid(path, f"has an incomplete manifest (fhir in a format {version} backup)")
        return
    if (
        not isinstance(fhir, dict)
        or not isinstance(fhir.get("version"), str)
        or len(fhir["version"]) > 20
        or not isinstance(fhir.get("counts"), dict)
    ):
        raise _invalid(path, "has an incomplete manifest (its FHIR resources)")
    resources: dict[str, Any] = fhir["counts"]
    for kind, number in resources.items():
        if not isinstance(kind, str) or fhir_type(fhir_member(kind)) != kind:
            raise _invalid(path, f"counts FHIR resources of an unknown type ({shown(kind)})")
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise _invalid(path, f"has an incomplete manifest (the count of {kind} resources)")
    listed = {name for name in members if name.startswith(FHIR_FOLDER)}
    if listed != {fhir_member(kind) for kind in resources}:
        missing = sorted({fhir_member(kind) for kind in resources} ^ listed)
        raise _invalid(
            path, f"does not list the FHIR member of every type it counts ({shown(missing[0])})"
        )
    expected = fhir_counts(counts)
    if resources != expected:
        kind = next(k for k in (*expected, *resources) if expected.get(k) != resources.get(k))
        raise _invalid(
            path,
            f"has {resources.get(kind, 0)} FHIR {kind} resources where its records give "
            f"{expected.get(kind, 0)}",
        )


class BackupArchive:
    """An open backup whose members are checked against the manifest as they are read."""

    def __init__(
        self,
        path: Path,
        handle: IO[bytes],
        archive: zipfile.ZipFile,
        manifest: dict[str, Any],
        sha256: str | None = None,
    ) -> None:
        self.path = path
        self.handle = handle
        # The file's SHA-256 when it was taken already: an encrypted backup's, of the
        # encrypted bytes on disk, hashed as they were decrypted (`handle` is the archive).
        self.file_sha256 = sha256
        self.encrypted = sha256 is not None
        self.archive = archive
        self.manifest = manifest
        self.members: dict[str, str] = manifest["members"]
        self.sizes: dict[str, int] = manifest.get("sizes", {})
        self.client_id: int = manifest["client_id"]
        # FHIR resources per type, as the manifest counts them (checked by `_check_fhir`).
        fhir = manifest.get("fhir")
        self.fhir: dict[str, int] = dict(fhir["counts"]) if isinstance(fhir, dict) else {}
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
            raise _invalid(self.path, f"does not list {shown(name)} in its manifest")
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

    def _check_layout(self) -> None:
        """Every byte around the members' data agrees with the central directory.

        zipfile reads sizes and CRCs from the central directory alone, so a changed byte
        in a local header or a data descriptor (which the writer emits for every member)
        would pass every checksum. Here each member's local record must state what the
        directory states, and the members must follow each other with nothing between
        them, from the first byte of the file to the directory.
        """
        at = 0
        for info in sorted(self.archive.infolist(), key=lambda i: i.header_offset):
            if info.header_offset != at:
                raise self._layout(info.filename)
            at = self._local_end(info)
        if at != self.archive.start_dir:
            raise _invalid(
                self.path, "is damaged (bytes between its last member and its directory)"
            )

    def _layout(self, name: str) -> BackupInvalid:
        return _invalid(
            self.path, f"is damaged ({name}: its local header does not match the directory)"
        )

    def _local_end(self, info: zipfile.ZipInfo) -> int:
        """Where a member's local record (header, data, descriptor) ends; BackupInvalid if
        any of it disagrees with the directory's entry."""
        handle = self.handle
        try:
            handle.seek(info.header_offset)
            header = handle.read(_LOCAL_HEADER.size)
            if len(header) < _LOCAL_HEADER.size:
                raise self._layout(info.filename)
            (signature, version, flags, method, time, date, crc, compressed, size, name_length,
             extra_length) = _LOCAL_HEADER.unpack(header)  # fmt: skip
            handle.read(name_length)  # zipfile compares the name itself when it opens a member
            extra = handle.read(extra_length)
            year, month, day, hour, minute, second = info.date_time
            if (
                signature != _LOCAL_SIGNATURE
                or version != info.extract_version
                or flags != info.flag_bits
                or method != info.compress_type
                or date != ((year - 1980) << 9 | month << 5 | day)
                or time != (hour << 11 | minute << 5 | second // 2)
                or len(extra) != extra_length
            ):
                raise self._layout(info.filename)
            zip64 = _zip64_sizes(extra)
            if zip64 is not None:
                size = zip64[0] if size == _ZIP64_LIMIT else size
                compressed = zip64[1] if compressed == _ZIP64_LIMIT else compressed
            end: int = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
            end += info.compress_size
            if flags & _USES_DESCRIPTOR:
                # The header's CRC and sizes are zero (APPNOTE 4.4.4); the descriptor after
                # the data holds them, 8-byte sizes when the header has a ZIP64 field.
                if (crc, compressed, size) != (0, 0, 0):
                    raise self._layout(info.filename)
                shape = struct.Struct("<IQQ" if zip64 is not None else "<III")
                handle.seek(end)
                record = handle.read(4 + shape.size)
                if record[:4] == _DESCRIPTOR_SIGNATURE:
                    record = record[4:]
                    end += 4
                if len(record) < shape.size:
                    raise self._layout(info.filename)
                crc, compressed, size = shape.unpack(record[: shape.size])
                end += shape.size
            if (crc, compressed, size) != (info.CRC, info.compress_size, info.file_size):
                raise self._layout(info.filename)
        except (OSError, struct.error):
            raise self._layout(info.filename) from None
        return end

    def _check_fhir_member(self, name: str, resource_type: str) -> None:
        """A `fhir/<Type>.ndjson` member: its checksum, and as many lines as the manifest
        counts, each one resource of its type.

        pbclients never reads these for data, so a line is not parsed: a document's or a
        long note's resource may be far longer than a record line may be. Each line must
        start as the writer starts every resource (`{"resourceType":"<Type>"`), checked
        chunk by chunk, so memory stays bounded however long a line is.
        """
        start = b'{"resourceType":"' + resource_type.encode() + b'"'
        head = bytearray()  # the first bytes of the current line, up to len(start)
        lines = 0
        for chunk in self.stream(name):
            at = 0
            while at < len(chunk):
                end = chunk.find(b"\n", at)
                stop = len(chunk) if end < 0 else end
                if len(head) < len(start):
                    head += chunk[at : min(stop, at + len(start) - len(head))]
                if end < 0:
                    break
                lines += 1
                if head != start:
                    raise _invalid(
                        self.path,
                        f"has a malformed {name} (line {lines} is not a resource of type "
                        f"{resource_type})",
                    )
                head.clear()
                at = end + 1
        if head:
            raise _invalid(self.path, f"has a malformed {name} (its last line is cut off)")
        expected = self.fhir.get(resource_type)
        if lines != expected:
            raise _invalid(
                self.path,
                f"holds {lines} {resource_type} resources in {name} where its manifest says "
                f"{expected}",
            )

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
            raise _invalid(self.path, f"holds {json_type(data)} where {PROGRAMS} has a list")
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
                    or DOCUMENT_MEMBER.match(member) is None
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
        self._check_layout()
        try:
            return self._verify(path, expected_counts, expected_sha256)
        except BackupInvalid:
            # The members parsed below were checksummed only as they were read: a damaged
            # one is reported as damaged (the first in the manifest's order, as a check of
            # every member before any parsing reports it), not as the value it garbled.
            self._check_members(everything=True)
            raise

    def _check_members(self, *, everything: bool) -> None:
        """Every member's checksum (and each FHIR member's lines), in the manifest's order;
        without `everything`, the members `_verify` parses (and so checksums) are left out."""
        for name in self.members:
            resource_type = fhir_type(name)
            if resource_type is not None:
                self._check_fhir_member(name, resource_type)
            elif everything or name not in _PARSED_MEMBERS:
                for _chunk in self.stream(name):
                    pass

    def _verify(
        self,
        path: Path,
        expected_counts: Mapping[str, int] | None,
        expected_sha256: str | None,
    ) -> Manifest:
        self._check_members(everything=False)
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
                raise _invalid(path, f"holds {json_type(event)} on line {line} of {AUDIT}")
            number += 1
        if counts.get(AUDIT_KIND) != number:
            raise _invalid(
                path,
                f"holds {number} {AUDIT_KIND} where its manifest says {counts.get(AUDIT_KIND)}",
            )
        self.programs_used = frozenset(used)
        try:
            sha256 = self.file_sha256 or _handle_sha256(self.handle)
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
            fhir=dict(self.fhir),
        )


@contextmanager
def open_backup(path: Path, opener: Opener | None = None) -> Iterator[BackupArchive]:
    """Open a backup and check its manifest; BackupInvalid if that is not possible.

    The file is opened once: everything read through the archive (and the SHA-256 of the
    whole file) comes from that one open file, even if the path is replaced meanwhile.
    An encrypted backup is decrypted with `opener`'s identities first (CannotOpen when
    none opens it, KeyUnavailable when a key file is unusable: exit 4).
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
            encrypted = handle.read(len(MAGIC)) == MAGIC
            handle.seek(0)
        except OSError as error:
            raise _invalid(path, f"cannot be read ({error.strerror or error})") from None
        if not encrypted:
            with _open_archive(path, handle) as opened:
                yield opened
            return
        with (
            _decrypted(path, handle, opener or NO_KEYS) as (plain, sha256),
            _open_archive(path, plain, sha256) as opened,
        ):
            yield opened


class _TooLarge(Exception):
    """Raised from inside pyrage's writes: the plaintext passed the reader's ceiling."""


class _HashingReader:
    """The encrypted file as pyrage reads it, hashed on the way (the file is read once)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.error: OSError | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            data = self.raw.read(size)
        except OSError as error:
            self.error = error
            raise
        self.digest.update(data)
        return data


class _CappedSink:
    """Where pyrage writes the plaintext; stops it past the ceiling."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > _MAX_PLAIN_BYTES:
            raise _TooLarge
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


@contextmanager
def _decrypted(path: Path, handle: IO[bytes], opener: Opener) -> Iterator[tuple[IO[bytes], str]]:
    """(the archive decrypted into a private temporary file, the encrypted file's SHA-256).

    Nothing is yielded unless the whole file decrypted and authenticated: age checks
    each 64 KiB chunk and that the last one is last, so a flipped, cut or appended byte
    stops it here, and no caller ever reads part of a damaged backup.
    """
    import pyrage

    identities, _sources = opener.identities()
    if not identities:
        raise opener.cannot_open(path)
    source = _HashingReader(handle)
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as plain:
        try:
            pyrage.decrypt_io(source, _CappedSink(plain), identities)
            # Whatever follows the stream's last chunk (age refuses trailing bytes, but
            # the checksum is of the whole file either way).
            while source.read(_CHUNK):
                pass
        except _TooLarge:
            raise _invalid(
                path, f"is refused: it decrypts to more than {_bytes(_MAX_PLAIN_BYTES)}"
            ) from None
        except pyrage.DecryptError as error:
            problem = str(error).lower()
            if "no matching keys" in problem:
                raise opener.cannot_open(path) from None
            # A header that does not parse, or whose MAC fails once a key opened it,
            # is damage to the file, not a question of which key to give.
            if "header" in problem or "unknown age format" in problem:
                raise _invalid(path, "is damaged (its age header is not valid)") from None
            raise _invalid(
                path, "is damaged (its encrypted contents do not authenticate)"
            ) from None
        except OSError as error:
            if source.error is not None:
                raise _invalid(
                    path, f"cannot be read ({source.error.strerror or source.error})"
                ) from None
            # pyrage reports a failed chunk as an OSError without an errno; an errno is
            # the temporary file's own trouble (a full disk).
            if error.errno is None:
                raise _invalid(
                    path, "is damaged (its encrypted contents do not authenticate)"
                ) from None
            raise _invalid(path, f"cannot be decrypted here ({error.strerror or error})") from None
        plain.seek(0)
        yield plain, source.digest.hexdigest()


@contextmanager
def _open_archive(
    path: Path, handle: IO[bytes], sha256: str | None = None
) -> Iterator[BackupArchive]:
    """The archive in `handle` (the file, or an encrypted file's plaintext), its manifest
    checked; BackupInvalid if that is not possible."""
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
            raise _invalid(path, "has no manifest.json (it is not a pbclients backup)") from None
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
        opened = BackupArchive(path, handle, archive, manifest, sha256)
        opened.check_sizes()
        yield opened


def _zip64_sizes(extra: bytes) -> tuple[int, int] | None:
    """(size, compressed size) from a local header's ZIP64 extra field, if it has one.

    A local header's ZIP64 field holds both sizes (APPNOTE 4.5.3); zipfile writes it with
    zeros when a data descriptor follows."""
    at = 0
    while at + 4 <= len(extra):
        kind, length = struct.unpack("<HH", extra[at : at + 4])
        if kind == _ZIP64_EXTRA:
            if length < 16:
                return None
            size, compressed = struct.unpack("<QQ", extra[at + 4 : at + 20])
            return size, compressed
        at += 4 + length
    return None


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
    opener: Opener | None = None,
) -> Manifest:
    """Re-check a backup: every member against its checksum, every value against its column,
    counts against the records.

    `expected_counts` (records per kind in the database) and `expected_sha256`
    (what the writer hashed) are compared when given. Raises BackupInvalid, or for an
    encrypted backup CannotOpen / KeyUnavailable (see `open_backup`).
    """
    with open_backup(path, opener) as opened:
        return opened.verify(expected_counts, expected_sha256=expected_sha256)
