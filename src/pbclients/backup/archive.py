"""The backup archive format: member names, manifest, rows as JSON, and the limits.

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
- `fhir/<Type>.ndjson` (format 2): the same record as HL7 FHIR R4B resources, one a
  line, mapped as `export --format fhir` maps them, so the backup a deletion depends
  on can be read without pbclients. A type the client has no resource of has no
  member. A document's resource refers to its `documents/` member by a relative
  `url` (with the file's size and SHA-1) instead of holding it again in base64.
  Restore never reads them for data: the records above are the source of truth;
- `manifest.json`: format and versions, client id, time, record counts per
  kind, the FHIR resources per type (format 2), and the SHA-256 and size of
  every other member (backups written before sizes were recorded are still
  read, under hard ceilings).

Format 1 (no `fhir/` members, no `fhir` in the manifest) is still read, verified
and restored.

A practice with a backup key writes each archive encrypted with age instead, as
`<name>.pbbackup.zip.age` (see `pbclients.backup.keys`); inside is the same archive.

Rows travel as JSON objects (`encode_row`) and come back only through
`decode_row`, which checks every value against its column: an archive is
untrusted input (see `pbclients.backup.reader`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Boolean, Integer, LargeBinary, String, Table, TypeDecorator
from sqlmodel import SQLModel

from pbclients import clock
from pbclients.errors import BadInput
from pbclients.fhir.mapping import PATIENT, RESOURCE_OF_KIND, RESOURCE_TYPES
from pbclients.models import RECORD_MODELS, UTCDateTime

FORMAT = "pbclients-backup"
FORMAT_VERSION = 2
# The first format with `fhir/<Type>.ndjson` members; older backups have none.
FHIR_FORMAT_VERSION = 2
SUFFIX = ".pbbackup.zip"
# An encrypted backup: the same archive, encrypted with age (see `pbclients.backup.keys`).
ENCRYPTED_SUFFIX = ".age"
MANIFEST = "manifest.json"
PROFILE = "client.json"
PROGRAMS = "programs.json"
AUDIT = "audit_events.jsonl"
AUDIT_KIND = "audit_events"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_NAME = re.compile(r"^client-(\d+)-(\d{8}T\d{6}Z)(?:-(\d+))?\.pbbackup\.zip(?:\.age)?$")

# A reader's limits: memory stays bounded whatever a member claims.
MAX_MEMBER_BYTES = 512 << 20  # one member decompressed (a document; databases hold < 1 GB)
MAX_ARCHIVE_BYTES = 2 << 30  # every member together, decompressed
MAX_JSON_BYTES = 16 << 20  # manifest.json, client.json, programs.json: parsed whole
MAX_LINE_BYTES = 16 << 20  # one record of a .jsonl member
MAX_MEMBERS = 100_000
MAX_DIRECTORY_BYTES = 32 << 20  # the ZIP's central directory, which zipfile reads whole

INT32 = (-(1 << 31), (1 << 31) - 1)  # INTEGER on PostgreSQL
_INT64 = (-(1 << 63), (1 << 63) - 1)
_FIXED_MEMBERS = frozenset(
    {PROFILE, PROGRAMS, AUDIT, *(f"records/{kind}.jsonl" for kind in RECORD_MODELS)}
)
DOCUMENT_MEMBER = re.compile(r"^documents/[0-9]{1,10}-[A-Za-z0-9._-]{1,100}$")
FHIR_FOLDER = "fhir/"
_FHIR_TYPE_OF = {f"{FHIR_FOLDER}{kind}.ndjson": kind for kind in RESOURCE_TYPES}
_FHIR_MEMBERS = frozenset(_FHIR_TYPE_OF)


class BackupInvalid(BadInput):
    """A backup file that cannot be read or does not match its own checksums (exit 3).

    `detail` is the problem alone, for callers that say themselves what it means
    (`delete` reports it as a failed backup, exit 4).
    """

    def __init__(self, detail: str, advice: str = "nothing was written, use another backup"):
        super().__init__(f"{detail}; {advice}.")
        self.detail = detail


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
    # FHIR resources per type in its `fhir/` members; empty for a format 1 backup.
    fhir: dict[str, int] = field(default_factory=dict)

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
            "fhir": self.fhir,
        }


# --- rows as JSON ----------------------------------------------------------------------


def table_of(model: type[SQLModel]) -> Table:
    """The table behind a model (SQLModel declares `__table__` only on table models)."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table


def encode_row(table: Table, row: Any) -> dict[str, Any]:
    """A row as JSON-ready values (bytes columns are left out: they become members)."""
    out: dict[str, Any] = {}
    for name in _column_names(table):
        if name not in row:
            continue
        value = row[name]
        if isinstance(value, bytes | bytearray | memoryview):
            continue
        out[name] = clock.iso(value) if isinstance(value, datetime) else value
    return out


@cache
def _column_names(table: Table) -> tuple[str, ...]:
    # Once per table: export encodes every row of every client with it.
    return tuple(column.name for column in table.columns)


def json_bytes(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, sort_keys=True, indent=1).encode()


# What json.dumps(data, ensure_ascii=False, sort_keys=True) writes, with the encoder built
# once: export encodes every record of every client with it.
_LINE_JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True)


def json_line(data: Any) -> bytes:
    return _LINE_JSON.encode(data).encode() + b"\n"


# --- names -----------------------------------------------------------------------------


def member_for_document(document_id: int, filename: str) -> str:
    base = _UNSAFE.sub("_", Path(filename.replace("\\", "/")).name).strip("._") or "file"
    return f"documents/{document_id}-{base[:100]}"


def backup_name(client_id: int, now: datetime, attempt: int = 1, *, encrypted: bool = False) -> str:
    stamp = clock.as_utc(now).strftime("%Y%m%dT%H%M%SZ")
    extra = "" if attempt == 1 else f"-{attempt}"
    tail = ENCRYPTED_SUFFIX if encrypted else ""
    return f"client-{client_id:06d}-{stamp}{extra}{SUFFIX}{tail}"


def audit_name(path: Path, client_id: int | None = None, created_at: str | None = None) -> str:
    """How the audit trail names a backup: the tool's own file name pattern, never a path.

    A path (its folders, or a file renamed by hand) may carry a client's name, and the
    trail outlives the client. A name outside the pattern is replaced by the name the
    tool gives a backup of `client_id` written at `created_at`.
    """
    if _NAME.match(path.name) or client_id is None or created_at is None:
        return path.name if _NAME.match(path.name) else "(renamed backup)"
    moment = clock.as_utc(datetime.fromisoformat(created_at.replace("Z", "+00:00")))
    return backup_name(client_id, moment, encrypted=path.name.endswith(ENCRYPTED_SUFFIX))


def backup_files(folder: Path) -> list[Path]:
    """Backups in a folder (by name), oldest name first; temporary files are not backups."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def known_member(name: str, format_version: int = FORMAT_VERSION) -> bool:
    """A member name this pbclients writes in that format (any other name is refused,
    never used)."""
    if name in _FIXED_MEMBERS or DOCUMENT_MEMBER.match(name) is not None:
        return True
    return format_version >= FHIR_FORMAT_VERSION and name in _FHIR_MEMBERS


def fhir_member(resource_type: str) -> str:
    """`fhir/Patient.ndjson`: the Bulk Data file name, in the archive's `fhir/` folder."""
    return f"{FHIR_FOLDER}{resource_type}.ndjson"


def fhir_type(name: str) -> str | None:
    """The resource type a `fhir/` member holds, or None for any other member."""
    return _FHIR_TYPE_OF.get(name)


def fhir_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """The FHIR resources per type that records counted by kind map to (types with none
    are left out): one Patient, and one resource per record of every exported kind."""
    resources = {PATIENT: 1}
    for kind, number in counts.items():
        if kind in RESOURCE_OF_KIND and number:
            resource_type = RESOURCE_OF_KIND[kind]
            resources[resource_type] = resources.get(resource_type, 0) + number
    return {kind: resources[kind] for kind in RESOURCE_TYPES if kind in resources}


def document_url(member: str) -> str:
    """A document member as a FHIR attachment `url`, relative to the `fhir/` member that
    refers to it (RFC 3986 resolves `../documents/...` against `fhir/<Type>.ndjson`)."""
    return f"../{member}"


# --- rows back from JSON, checked --------------------------------------------------------


def shown(text: object) -> str:
    """A name or value from the archive as short, printable text (control characters escaped)."""
    shown = str(text)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return ascii(shown)


def json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


class _RowProblem(Exception):
    """What is wrong with one value; the caller says where (member and line)."""


class _Kind(Enum):
    """What a column holds, as `_value` checks it (worked out once per column)."""

    TIME = "time"
    BOOLEAN = "boolean"
    INT32 = "int32"
    INT64 = "int64"
    TEXT = "text"
    OTHER = "other"


@dataclass(frozen=True)
class _Column:
    name: str
    kind: _Kind
    nullable: bool
    key: bool  # a primary or foreign key: at least 1
    required: bool  # must be given (a primary key, or not null without a default)
    binary: bool


@cache
def _columns(table: Table) -> tuple[tuple[_Column, ...], frozenset[str]]:
    """Each column as `decode_row` checks it, and the names; once per table."""
    columns = []
    for column in table.columns:
        kind = column.type
        if isinstance(kind, TypeDecorator) and not isinstance(kind, UTCDateTime):
            kind = kind.impl_instance  # SQLModel's AutoString is text
        if isinstance(kind, UTCDateTime):
            what = _Kind.TIME
        elif isinstance(kind, Boolean):
            what = _Kind.BOOLEAN
        elif isinstance(kind, Integer):
            what = _Kind.INT64 if isinstance(kind, BigInteger) else _Kind.INT32
        elif isinstance(kind, String):
            what = _Kind.TEXT
        else:
            what = _Kind.OTHER
        columns.append(
            _Column(
                column.name,
                what,
                bool(column.nullable),
                bool(column.primary_key or column.foreign_keys),
                bool(column.primary_key or (not column.nullable and column.default is None)),
                isinstance(column.type, LargeBinary),
            )
        )
    return tuple(columns), frozenset(table.columns.keys())


def _value(column: _Column, value: Any) -> Any:
    """A JSON value checked against its column and converted (a datetime for a timestamp)."""
    name = column.name
    kind = column.kind
    if value is None:
        if column.nullable:
            return None
        raise _RowProblem(f"{name} is null")
    if kind is _Kind.TIME:
        if not isinstance(value, str) or len(value) > 40:
            raise _RowProblem(f"{name} is {json_type(value)}, not a date and time")
        try:
            return clock.as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except (ValueError, OverflowError):
            raise _RowProblem(f"{name} {shown(value)} is not a date and time") from None
    if kind is _Kind.BOOLEAN:
        if not isinstance(value, bool):
            raise _RowProblem(f"{name} is {json_type(value)}, not true or false")
        return value
    if kind is _Kind.INT32 or kind is _Kind.INT64:
        low, high = _INT64 if kind is _Kind.INT64 else INT32
        if isinstance(value, bool) or not isinstance(value, int):
            raise _RowProblem(f"{name} is {json_type(value)}, not a whole number")
        if not low <= value <= high or (column.key and value < 1):
            raise _RowProblem(f"{name} {value} is out of range")
        return value
    if kind is _Kind.TEXT:
        if not isinstance(value, str):
            raise _RowProblem(f"{name} is {json_type(value)}, not text")
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
            f"The backup's {where} holds {json_type(data)} where a record belongs",
            "nothing was written, use another backup",
        )
    columns, names = _columns(table)
    unknown = data.keys() - names
    if unknown:
        raise BackupInvalid(
            f"The backup's {where} has columns this pbclients does not know "
            f"({', '.join(shown(name) for name in sorted(unknown)[:5])})",
            "nothing was written, use a newer pbclients",
        )
    row: dict[str, Any] = {}
    try:
        for column in columns:
            if column.name in derived:
                continue
            if column.binary:
                if column.name in data:
                    raise _RowProblem(f"{column.name} cannot be given in a record")
                continue
            if column.name not in data:
                if column.required:
                    raise _RowProblem(f"{column.name} is missing")
                continue
            row[column.name] = _value(column, data[column.name])
    except _RowProblem as problem:
        raise BackupInvalid(
            f"The backup's {where} is not valid ({problem})",
            "nothing was written, use another backup",
        ) from None
    return row
