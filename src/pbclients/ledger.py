"""The erasure ledger: which clients were purged, kept outside the database.

A database restored from an older copy brings back clients purged since that copy
was made. The ledger remembers them where such a restore cannot reach: a file in
the user data folder (`ledger/erasures.jsonl`, beside `backups/`; env
`PBCLIENTS_LEDGER` moves it, never into the database file's own folder). Every
purge appends one line per purged client, and every purge (and `run-due`) first
purges again any client the ledger lists who is back in the database.

A line is a JSON object: its number, the time, `purged` or `restored`, the
practice (the hash of the audit trail's first event, the same in every copy of
one practice's database and different in another practice's), the client's id and
creation time (an id can be given to a new client later; the pair names one
client), the backup's SHA-256, and the hash chain (`prev`, `hash`) as in the audit
trail. No name, no e-mail. Lines are appended under an exclusive lock, fsynced,
in a 0600 file.

`restore` of a purged client's backup appends `restored`: the last line about a
client decides, so the ledger leaves them alone until a later purge of theirs.

The file is untrusted input like a backup: lines are bounded in length and every
field is checked. The database keeps the newest line it wrote (`ledger_head`
setting), so `backups ledger verify` also finds lines cut off the end.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine
from sqlmodel import Session, col, select

from pbclients import audit, clock, paths, settings
from pbclients.errors import BackupFailed, BadInput, UsageError
from pbclients.lookup import chunks
from pbclients.models import Client

PURGED = "purged"
RESTORED = "restored"
GENESIS = "0" * 64
# The newest line this database appended, "number:hash".
HEAD_SETTING = "ledger_head"
# A line is about 400 bytes; anything far longer is not one of ours.
MAX_LINE = 4096

_KEYS = frozenset({"line", "at", "event", "practice", "client", "created", "sha256", "prev",
                   "hash"})  # fmt: skip
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HASH_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


class LedgerBroken(BadInput):
    """The ledger does not verify: nothing that relies on it goes ahead."""


class LedgerFailed(BackupFailed):
    """The ledger could not be written: the purge or restore it records was rolled back."""


@dataclass(frozen=True)
class Entry:
    line: int
    at: str
    event: str
    practice: str
    client_id: int
    created: str
    sha256: str | None
    prev: str
    hash: str


@dataclass(frozen=True)
class Erased:
    """A client the ledger says is purged: its id, creation time, backup and line."""

    client_id: int
    created: str
    sha256: str | None
    line: int


@dataclass(frozen=True)
class LedgerCheck:
    path: Path
    checked: int
    broken_at: int | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None


def location(bind: Engine | Connection) -> Path:
    """The ledger file for this database; refused (exit 2) beside a SQLite database file."""
    path = paths.ledger_file()
    url = bind.engine.url
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        folder = Path(url.database).expanduser().resolve().parent
        if path.parent.expanduser().resolve() == folder:
            raise UsageError(
                f"The erasure ledger {path} is in the database file's own folder, which an "
                "old copy may be restored over along with the database; nothing was changed. "
                f"Point {paths.LEDGER_ENV} at a file in another folder."
            )
    return path


def stamp(moment: datetime) -> str:
    """A client's creation time as the ledger keeps it: UTC, to the microsecond."""
    return clock.as_utc(moment).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _line_hash(prev: str, fields: dict[str, Any]) -> str:
    content = [fields[key] for key in ("line", "at", "event", "practice", "client", "created",
                                       "sha256")]  # fmt: skip
    return hashlib.sha256(_HASH_JSON.encode([prev, *content]).encode()).hexdigest()


def _parse(raw: bytes, number: int, prev: str) -> Entry:
    """One line, checked field by field and against the chain; LedgerBroken otherwise."""

    def broken(problem: str) -> LedgerBroken:
        return LedgerBroken(f"line {number} {problem}")

    if len(raw) > MAX_LINE:
        raise broken(f"is longer than {MAX_LINE} bytes")
    if not raw.endswith(b"\n"):
        raise broken("is cut short (no line end)")
    try:
        fields = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError):
        raise broken("is not a JSON object") from None
    if not isinstance(fields, dict) or set(fields) != _KEYS:
        raise broken("does not hold the ledger's fields")
    line, client = fields["line"], fields["client"]
    if not all(type(value) is int for value in (line, client)) or not 0 < client < 2**63:
        raise broken("holds a number that is not one")
    strings = ("at", "event", "practice", "created", "prev", "hash")
    if not all(isinstance(fields[key], str) and len(fields[key]) <= 64 for key in strings):
        raise broken("holds a value that is not a short text")
    if fields["event"] not in (PURGED, RESTORED):
        raise broken(f"records {fields['event']!r}, neither {PURGED} nor {RESTORED}")
    sha256 = fields["sha256"]
    hashes = (fields["practice"], fields["prev"], fields["hash"], sha256 or GENESIS)
    if not (sha256 is None or isinstance(sha256, str)) or not all(
        _HEX64.fullmatch(value) for value in hashes
    ):
        raise broken("holds a checksum that is not one")
    if line != number:
        raise broken(f"is numbered {line}: a line before it was removed or moved")
    if fields["prev"] != prev:
        raise broken("does not follow the one before it")
    if _line_hash(prev, fields) != fields["hash"]:
        raise broken("was altered")
    return Entry(line, fields["at"], fields["event"], fields["practice"], client,
                 fields["created"], sha256, prev, fields["hash"])  # fmt: skip


def entries(path: Path) -> Iterator[Entry]:
    """Every line, oldest first, each checked; LedgerBroken at the first that does not fit.

    A ledger that does not exist yet is empty. Memory stays bounded by one line.
    """
    try:
        handle = path.open("rb")
    except (FileNotFoundError, NotADirectoryError):
        return  # nothing purged yet; a path that cannot be written is reported by `append`
    except OSError as error:
        raise LedgerBroken(f"cannot be read ({error.strerror})") from None
    prev = GENESIS
    with handle:
        number = 0
        while raw := handle.readline(MAX_LINE + 1):
            number += 1
            entry = _parse(raw, number, prev)
            prev = entry.hash
            yield entry


def check(path: Path) -> LedgerCheck:
    """Recompute the chain; name the first line that does not fit."""
    checked = 0
    try:
        for entry in entries(path):
            checked = entry.line
    except LedgerBroken as error:
        return LedgerCheck(path, checked, checked + 1, str(error))
    return LedgerCheck(path, checked)


def check_database(session: Session, path: Path) -> LedgerCheck:
    """`check`, plus: the newest line this database wrote is still there, unchanged."""
    found = check(path)
    head = settings.get(session, HEAD_SETTING)
    if not found.intact or head is None:
        return found
    number, _, digest = head.partition(":")
    if not number.isdigit() or int(number) > found.checked:
        return LedgerCheck(
            path,
            found.checked,
            found.checked + 1,
            f"the ledger ends at line {found.checked} but this database wrote line {number}: "
            "lines were removed",
        )
    line = next(entry for entry in entries(path) if entry.line == int(number))
    if line.hash != digest:
        return LedgerCheck(
            path, found.checked, line.line, f"line {line.line} is not the one this database wrote"
        )
    return found


def _broken_message(path: Path, error: LedgerBroken) -> str:
    return (
        f"The erasure ledger {path} is damaged: {error}; nothing was changed. Put back a good "
        "copy of it (check it with `pbclients backups ledger verify`), or move it aside to "
        "start a new one, which no longer remembers the clients purged before"
    )


def purged_clients(path: Path, practice: str) -> dict[int, Erased]:
    """The practice's clients whose last ledger line is `purged`, by id."""
    listed: dict[int, Erased] = {}
    try:
        for entry in entries(path):
            if entry.practice != practice:
                continue
            if entry.event == PURGED:
                listed[entry.client_id] = Erased(
                    entry.client_id, entry.created, entry.sha256, entry.line
                )
            else:
                listed.pop(entry.client_id, None)
    except LedgerBroken as error:
        raise LedgerBroken(_broken_message(path, error)) from None
    return listed


def returning(session: Session, path: Path) -> list[tuple[Erased, str]]:
    """Clients the ledger says are purged who are in the database again, with their status.

    The same id and creation time: a new client who was given a purged client's id is
    someone else. Oldest id first.
    """
    practice = audit.practice_id(session)
    if practice is None:
        return []
    listed = purged_clients(path, practice)
    back: list[tuple[Erased, str]] = []
    for chunk in chunks(sorted(listed)):
        query = select(Client.id, Client.status, Client.created_at).where(col(Client.id).in_(chunk))
        for client_id, status, created in session.execute(query):
            entry = listed[int(client_id)]
            if stamp(created) == entry.created:
                back.append((entry, str(status)))
    back.sort(key=lambda item: item[0].client_id)
    return back


@dataclass(frozen=True)
class NewEntry:
    event: str
    client_id: int
    created: datetime
    sha256: str | None


def append(session: Session, path: Path, new: Sequence[NewEntry], at: datetime) -> None:
    """Append lines (fsynced) in the caller's transaction, and keep the newest as its head.

    Called just before the transaction commits: a ledger that cannot be written
    raises LedgerFailed, and the purge or restore rolls back with it.
    """
    if not new:
        return
    practice = audit.practice_id(session) or GENESIS
    try:
        with _locked(path) as descriptor:
            number, prev = _tail(descriptor, path)
            # Once per purged client: the time is formatted once, and the hash is taken of
            # the same list `_line_hash` builds, without building the fields twice.
            when = clock.iso(at)
            encode = _HASH_JSON.encode
            lines = []
            for item in new:
                number += 1
                created = stamp(item.created)
                digest = hashlib.sha256(
                    encode([prev, number, when, item.event, practice, item.client_id, created,
                            item.sha256]).encode()
                ).hexdigest()  # fmt: skip
                fields: dict[str, Any] = {
                    "line": number,
                    "at": when,
                    "event": item.event,
                    "practice": practice,
                    "client": item.client_id,
                    "created": created,
                    "sha256": item.sha256,
                    "prev": prev,
                    "hash": digest,
                }
                prev = digest
                lines.append(encode(fields) + "\n")
            data = "".join(lines).encode()
            written = 0
            while written < len(data):
                written += os.write(descriptor, data[written:])
            os.fsync(descriptor)
    except OSError as error:
        raise LedgerFailed(
            f"Could not write the erasure ledger {path} ({error.strerror or error}); nothing "
            f"was changed. Make its folder writable, or point {paths.LEDGER_ENV} elsewhere"
        ) from None
    settings.put(session, HEAD_SETTING, f"{number}:{prev}")


def note_restored(
    session: Session, path: Path, client_id: int, created: datetime, sha256: str, at: datetime
) -> bool:
    """Append `restored` if the ledger lists this client as purged; True when it did."""
    practice = audit.practice_id(session)
    if practice is None:
        return False
    entry = purged_clients(path, practice).get(client_id)
    if entry is None or entry.created != stamp(created):
        return False
    append(session, path, [NewEntry(RESTORED, client_id, created, sha256)], at)
    return True


@contextmanager
def _locked(path: Path) -> Iterator[int]:
    """The ledger open for appending (created 0600 in a 0700 folder), under an exclusive lock."""
    paths.make_private_dir(path.parent)
    existed = path.exists()
    descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        # Purges of other databases and restores share the file: one writer at a time.
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        if not existed:
            _sync_folder(path.parent)
        yield descriptor
    finally:
        os.close(descriptor)


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so a file just created in it survives a crash."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _tail(descriptor: int, path: Path) -> tuple[int, str]:
    """The last line's number and hash (the whole chain was checked when the run began)."""
    size = os.fstat(descriptor).st_size
    if size == 0:
        return 0, GENESIS
    start = max(0, size - MAX_LINE - 1)
    data = os.pread(descriptor, size - start, start)
    if not data.endswith(b"\n"):
        raise LedgerBroken(_broken_message(path, LedgerBroken("its last line is cut short")))
    lines = data[:-1].rsplit(b"\n", 1)
    last = lines[-1] + b"\n"
    try:
        fields = json.loads(last.decode())
        number, prev, digest = int(fields["line"]), str(fields["prev"]), str(fields["hash"])
    except (UnicodeDecodeError, ValueError, TypeError, KeyError):
        raise LedgerBroken(
            _broken_message(path, LedgerBroken("its last line is not a ledger line"))
        ) from None
    try:
        return _parse(last, number, prev).line, digest
    except LedgerBroken as error:
        raise LedgerBroken(_broken_message(path, error)) from None


def verify(engine: Engine) -> LedgerCheck:
    """`check_database` on this database's ledger, in a read of its own."""
    from pbclients.db import reading

    path = location(engine)
    with reading(engine) as session:
        return check_database(session, path)
