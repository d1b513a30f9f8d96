"""The backup store: the backups in a folder, how long each must be kept, and pruning.

Once a client is purged, their backup *is* the practice's record: the law makes the
practice keep it for years, and privacy law makes it get rid of it afterwards. This
module lists a folder's backups with their client's state, re-verifies them, and
prunes the ones whose retention has ended.

A backup's client is looked up by the id its manifest names, and is the same client
only if its creation time matches the backup's profile (on SQLite an id freed by a
purge can be given to a new client). Its state is `held` (a legal hold is in force),
`deleted` (pending purge), `exists`, or `purged` (no such client any more), and
`unreadable` for a file whose manifest cannot be read (never pruned).

The retention end is the client's last activity (`pbclients.activity`), or their
deletion if later, plus the practice's record retention in years (`plan
--set-record-retention`, default 7). A purged client's last activity comes from the
records in their backups (the latest across every backup of theirs in the folder) and
the audit trail's last deletion of that id: a backup exported before the deletion
does not know it.

`prune` follows the protocol of `pbclients.operation`: `preview` decides which
backups go (retention ended, client purged, not held) and hashes each; `apply`
re-checks every one of them under the database's write lock (still purged, the file
unchanged), moves them aside, records one `prune` audit event per file (client id and
SHA-256 only) and commits, and only then unlinks them. A failure before the commit
moves every file back; a file left aside by a crash is moved back by the next prune.

Encrypted backups (`pbclients.backup.keys`) are opened with the `--identity` files
given, else the practice's key file. One that none of them opens is listed as
`unreadable` with the reason (so it is never pruned), and fails `verify`; an unusable
key file stops the command (exit 4).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from pbclients import audit, clock, settings
from pbclients.activity import SOURCES, last_activity
from pbclients.backup.archive import BackupInvalid, backup_files
from pbclients.backup.keys import CannotOpen, Opener, practice_opener
from pbclients.backup.reader import open_backup, verify_backup
from pbclients.db import reading, writing
from pbclients.errors import DatabaseBusy
from pbclients.holds import holds_of
from pbclients.lookup import chunks
from pbclients.models import RECORD_MODELS, AuditEvent, Client
from pbclients.operation import Action, Batch, Change, Plan, ProgressCallback, carried_out
from pbclients.policy import Status
from pbclients.results import ChangeResult, Outcome

EXISTS = "exists"
DELETED = "deleted"
PURGED = "purged"
HELD = "held"
UNREADABLE = "unreadable"

STORED = "stored"
REMOVED = "removed"
# Beside the backup while a prune commits: not a backup name, and no other sweep's.
_ASIDE = ".pruning"
_CHUNK = 1 << 20

# The record kinds whose times count as activity, and those times' column names.
_KIND_OF = {str(model.__tablename__): kind for kind, model in RECORD_MODELS.items()}
_ACTIVITY: dict[str, tuple[str, ...]] = {_KIND_OF[table]: times for table, times in SOURCES}


@dataclass(frozen=True)
class StoredBackup:
    """One backup file of the folder, its client's state and its retention end."""

    path: Path
    client_id: int | None
    created_at: datetime | None
    size: int
    state: str
    held: bool
    retention_end: datetime | None
    problem: str | None = None
    # When the backup's client was created: tells them from a later client given their id.
    client_created_at: datetime | None = None

    @property
    def file(self) -> str:
        return self.path.name

    def as_record(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "path": str(self.path),
            "client_id": self.client_id,
            "created": clock.iso(self.created_at),
            "size": self.size,
            "state": self.state,
            "held": self.held,
            "retention_end": clock.iso(self.retention_end),
            "problem": self.problem,
        }


@dataclass(frozen=True)
class _Opened:
    """What the manifest and profile of one readable backup say."""

    path: Path
    size: int
    client_id: int
    created_at: datetime
    client_created_at: datetime
    deleted_at: datetime | None


def add_years(moment: datetime, years: int) -> datetime:
    """The same date and time `years` later (29 February becomes 28 February)."""
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, day=28)


def inventory(
    engine: Engine, folder: Path, now: datetime | None = None, *, opener: Opener | None = None
) -> list[StoredBackup]:
    """Every backup in `folder` (by name, oldest first) with its client's state and
    retention end as of `now`; reads only (the database and each manifest and profile,
    and a purged client's activity records). Encrypted ones are opened with `opener`
    (default: the practice's key)."""
    moment = now or clock.now()
    opener = opener or practice_opener(engine)
    entries = [_open(path, opener) for path in backup_files(Path(folder).expanduser())]
    opened = [entry for entry in entries if isinstance(entry, _Opened)]
    with reading(engine) as session:
        years = settings.record_retention_years(session)
        rows = _clients(session, {entry.client_id for entry in opened})
        live = {
            entry.client_id
            for entry in opened
            if entry.client_id in rows and _same(rows[entry.client_id][0], entry)
        }
        held = holds_of(session, live, moment)
        latest = last_activity(session, live, moment)
        purged_ids = {entry.client_id for entry in opened} - live
        deletions = _last_deletions(session, purged_ids)
    # A purged client's last activity: the latest any of their backups shows.
    basis: dict[int, datetime] = dict(deletions)
    for entry in opened:
        if entry.client_id not in live:
            seen = _backup_activity(entry, opener)
            if entry.client_id not in basis or seen > basis[entry.client_id]:
                basis[entry.client_id] = seen
    stored: list[StoredBackup] = []
    for item in entries:
        if isinstance(item, StoredBackup):
            stored.append(item)
            continue
        entry, client_id = item, item.client_id
        if client_id in live:
            created, status, deleted_at = rows[client_id]
            last = max(latest.get(client_id, created), deleted_at or created)
            is_held = client_id in held
            state = HELD if is_held else (DELETED if status == Status.DELETED.value else EXISTS)
        else:
            last, is_held, state = basis[client_id], False, PURGED
        stored.append(
            StoredBackup(
                entry.path, client_id, entry.created_at, entry.size, state, is_held,
                add_years(last, years), client_created_at=entry.client_created_at,
            )
        )  # fmt: skip
    return stored


def _open(path: Path, opener: Opener) -> _Opened | StoredBackup:
    try:
        size = path.stat().st_size
    except OSError as error:
        return StoredBackup(path, None, None, 0, UNREADABLE, False, None, str(error.strerror))
    try:
        with open_backup(path, opener) as archive:
            profile = archive.profile()
            created = clock.as_utc(
                datetime.fromisoformat(str(archive.manifest["created_at"]).replace("Z", "+00:00"))
            )
            return _Opened(
                path, size, archive.client_id, created, profile["created_at"],
                profile.get("deleted_at"),
            )  # fmt: skip
    except (BackupInvalid, CannotOpen) as error:
        return StoredBackup(path, None, None, size, UNREADABLE, False, None, error.detail)


def _same(created_in_database: datetime, entry: _Opened) -> bool:
    return _same_moment(created_in_database, entry.client_created_at)


def _same_moment(one: datetime, other: datetime | None) -> bool:
    """The database's client is the backup's (to the second: engines round differently)."""
    if other is None:
        return False
    return clock.as_utc(one).replace(microsecond=0) == clock.as_utc(other).replace(microsecond=0)


def _clients(
    session: Session, client_ids: Iterable[int]
) -> dict[int, tuple[datetime, str, datetime | None]]:
    found: dict[int, tuple[datetime, str, datetime | None]] = {}
    for chunk in chunks(sorted(client_ids)):
        query = select(Client.id, Client.created_at, Client.status, Client.deleted_at).where(
            col(Client.id).in_(chunk)
        )
        for client_id, created, status, deleted_at in session.exec(query):
            found[int(client_id or 0)] = (created, status, deleted_at)
    return found


def _last_deletions(session: Session, client_ids: Iterable[int]) -> dict[int, datetime]:
    """The time of each client's last `delete` event in the audit trail."""
    found: dict[int, datetime] = {}
    for chunk in chunks(sorted(client_ids)):
        query = (
            select(AuditEvent.client_id, func.max(AuditEvent.at))
            .where(col(AuditEvent.action) == Action.DELETE, col(AuditEvent.client_id).in_(chunk))
            .group_by(col(AuditEvent.client_id))
        )
        for client_id, at in session.exec(query):
            if client_id is not None and at is not None:
                found[int(client_id)] = clock.as_utc(at)
    return found


def _backup_activity(entry: _Opened, opener: Opener) -> datetime:
    """A purged client's last activity as one backup shows it: the latest activity record
    (an appointment only once it had started when the backup was written), their
    creation, and their deletion. An unreadable record member counts as no activity: the
    time of the backup itself is then used, which only ever keeps a backup longer."""
    latest = max(entry.client_created_at, entry.deleted_at or entry.client_created_at)
    try:
        with open_backup(entry.path, opener) as archive:
            for kind, names in _ACTIVITY.items():
                for _where, row, _member in archive.records(kind):
                    for name in names:
                        value = row.get(name)
                        if value is None or value <= latest:
                            continue
                        if kind == "appointments" and value > entry.created_at:
                            continue
                        latest = value
    except (BackupInvalid, CannotOpen):
        return max(latest, entry.created_at)
    return latest


# --- verify -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checked:
    """One backup re-verified: intact (with its SHA-256) or not (with the problem)."""

    path: Path
    client_id: int | None
    sha256: str | None
    problem: str | None

    @property
    def intact(self) -> bool:
        return self.problem is None

    def as_record(self) -> dict[str, Any]:
        return {
            "file": self.path.name,
            "path": str(self.path),
            "client_id": self.client_id,
            "status": "ok" if self.intact else "bad",
            "sha256": self.sha256,
            "problem": self.problem,
        }


def verify(
    paths: list[Path],
    on_progress: ProgressCallback | None = None,
    *,
    opener: Opener | None = None,
) -> list[Checked]:
    """Re-check every backup: each member against its checksum, the manifest, every value
    and count (`pbclients.backup.reader`); an encrypted one decrypted with `opener`'s
    identities first. One bad file never stops the others (an unusable key file does)."""
    checked: list[Checked] = []
    for done, path in enumerate(paths, start=1):
        try:
            manifest = verify_backup(path, opener=opener)
            checked.append(Checked(path, manifest.client_id, manifest.sha256, None))
        except (BackupInvalid, CannotOpen) as error:
            checked.append(Checked(path, None, None, error.detail))
        if on_progress:
            on_progress(done, len(paths))
    return checked


def folder_files(folder: Path) -> list[Path]:
    """The backups of a folder, by name (the tool's own file name pattern)."""
    return backup_files(Path(folder).expanduser())


# --- prune ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prune:
    """Remove the backups of `folder` whose retention has ended and whose client is purged
    (encrypted ones opened with the `identity_files`, else the practice's key)."""

    folder: Path
    identity_files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class PruneDetail:
    """The folder, the record retention applied, and why the other backups are kept."""

    folder: Path
    years: int
    kept: dict[str, int]
    # Client id -> when the backup's client was created, for `apply` to re-check.
    created: dict[int, datetime]


def preview(engine: Engine, request: Prune) -> Plan[PruneDetail]:
    """Which backups `apply` would remove (each hashed now); reads only."""
    now = clock.now()
    folder = Path(request.folder).expanduser().absolute()
    _recover(folder)
    stored = inventory(engine, folder, now, opener=practice_opener(engine, request.identity_files))
    with reading(engine) as session:
        years = settings.record_retention_years(session)
    results: list[ChangeResult] = []
    kept: dict[str, int] = {}
    created: dict[int, datetime] = {}
    for backup in stored:
        why = _kept_because(backup, now)
        if why is not None:
            kept[why] = kept.get(why, 0) + 1
            continue
        try:
            sha256 = _sha256(backup.path)
        except OSError:
            kept["unreadable"] = kept.get("unreadable", 0) + 1
            continue
        if backup.client_id is not None and backup.client_created_at is not None:
            created[backup.client_id] = backup.client_created_at
        results.append(
            ChangeResult(
                backup.file, backup.client_id, None, STORED, REMOVED, Outcome.PLANNED,
                backup=str(backup.path), sha256=sha256,
                note=f"retention ended {clock.iso(backup.retention_end)}",
            )
        )  # fmt: skip
    return Plan(Action.PRUNE, results, PruneDetail(folder, years, kept, created))


def _kept_because(backup: StoredBackup, now: datetime) -> str | None:
    """Why a backup stays, or None when it may go."""
    if backup.state == UNREADABLE:
        return "unreadable"
    if backup.held:
        return "held"
    if backup.state != PURGED:
        return "client not purged"
    if backup.retention_end is None or backup.retention_end > now:
        return "within retention"
    return None


def apply(
    engine: Engine,
    plan: Plan[PruneDetail],
    change: Change,
    *,
    on_progress: ProgressCallback | None = None,
) -> Batch[PruneDetail]:
    """Remove the planned backups, each audited, as one all-or-nothing step.

    Under the write lock, every planned backup is checked again: its client must still
    be absent (a restore brings one back) and the file must still hash to what the plan
    saw; otherwise nothing is removed (exit 5). Files are moved aside before the audit
    events are committed and unlinked after, so a failure leaves every file in place.
    """
    todo = [r for r in plan.results if r.outcome is Outcome.PLANNED and r.backup]
    results = [carried_out(result) for result in plan.results]
    if not todo:
        return Batch(plan.action, results, plan.detail)
    batch_id = audit.new_batch_id()
    moved: list[tuple[Path, Path]] = []
    try:
        with writing(engine) as session:
            present = _clients(session, {int(r.client_id or 0) for r in todo})
            for result in todo:
                path = Path(str(result.backup))
                back = _came_back(present, plan.detail.created, result.client_id)
                if back or _sha256_or_none(path) != result.sha256:
                    raise DatabaseBusy(
                        f"Backup {path.name} or its client changed while this command ran; "
                        "nothing was removed, run prune again."
                    )
            for done, result in enumerate(todo, start=1):
                path = Path(str(result.backup))
                aside = path.with_name(f".{path.name}{_ASIDE}")
                os.replace(path, aside)
                moved.append((path, aside))
                if on_progress:
                    on_progress(done, len(todo))
            audit.append(
                session,
                (
                    audit.NewEvent(Action.PRUNE, r.client_id, STORED, REMOVED, {"sha256": r.sha256})
                    for r in todo
                ),
                batch_id=batch_id,
                actor=change.actor,
                reason=change.reason,
                at=change.at,
            )
    except BaseException:
        for path, aside in reversed(moved):
            os.replace(aside, path)
        raise
    for _path, aside in moved:
        aside.unlink(missing_ok=True)
    _fsync_dir(plan.detail.folder)
    return Batch(plan.action, results, plan.detail, batch_id)


def _came_back(
    present: dict[int, tuple[datetime, str, datetime | None]],
    created: dict[int, datetime],
    client_id: int | None,
) -> bool:
    """Whether the backup's client is in the database again (restored since the plan)."""
    row = present.get(int(client_id or 0))
    return row is not None and _same_moment(row[0], created.get(int(client_id or 0)))


def _recover(folder: Path) -> None:
    """Move back a backup a crashed prune left aside: without its audit event committed,
    it was never pruned."""
    if not folder.is_dir():
        return
    for aside in folder.glob(f".*{_ASIDE}"):
        original = aside.with_name(aside.name[1 : -len(_ASIDE)])
        if not original.exists():
            os.replace(aside, original)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256_or_none(path: Path) -> str | None:
    try:
        return _sha256(path)
    except OSError:
        return None


def _fsync_dir(folder: Path) -> None:
    """Make the removals durable: a directory entry is only gone once its folder is synced."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
