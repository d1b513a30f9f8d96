"""Deleting clients: a verified backup of every one first, then one transaction.

For a batch, every selected client's backup is written and read back (each
checksum, and each record count equal to the database's) before anything
changes. Only then one transaction marks them deleted (`deleted_at`, and
`purge_after` = `deleted_at` + the retention period) with one audit event each
that names the backup and its SHA-256: purge reads that checksum, and undo
returns the client to the event's `before`. Any backup failure stops the
command with exit 4 and no client deleted; backups already written are kept.

If a client changed between its backup and that transaction (a record added,
edited or removed, its status changed), the transaction notices (each client's
record is hashed again under the write lock and compared with what its backup
holds) and the command stops with exit 4 rather than delete a client whose
backup is stale.

Follows the protocol of `pbclients.operation`: `preview` resolves the selection
once and `apply` carries out that plan in named steps (`_write_backups`,
`_check_unchanged`, `_mark_deleted`, `_record`).
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, cast

from sqlalchemy import ColumnElement, CursorResult, Engine, update
from sqlmodel import Session, col, select

from pbclients import audit, clock, faults, settings
from pbclients.backup.keys import Keyring, practice_keyring
from pbclients.backup.writer import (
    content_digests,
    kept_note,
    prepare_folder,
    write_verified_backups,
)
from pbclients.db import load_ids, reading, writing
from pbclients.errors import BackupFailed, TransitionNotAllowed, UsageError
from pbclients.holds import held_ids, held_message
from pbclients.lifecycle import consequences
from pbclients.lookup import CHUNK, chunks
from pbclients.models import Client
from pbclients.operation import Action, Batch, Change, Plan, ProgressCallback, carried_out
from pbclients.policy import Status
from pbclients.results import ChangeResult, Outcome
from pbclients.selection import Selection, resolve


@dataclass(frozen=True)
class Deletion:
    """Delete the selected clients (or, with `deactivated_before` alone, every client
    deactivated before then), their backups written to `folder` first."""

    selection: Selection
    folder: Path
    deactivated_before: datetime | None = None


@dataclass(frozen=True)
class DeleteDetail:
    """What deleting means for the practice: when the data is purged, the seats freed,
    and where the backups go (an absolute path)."""

    retention_days: int
    purge_after: datetime
    seats_freed: int
    backup_dir: Path


def preview(engine: Engine, request: Deletion) -> Plan[DeleteDetail]:
    """Who `apply` would delete, with the consequences to confirm; reads only."""
    now = clock.now()
    with reading(engine) as session:
        results = _decide(session, request.selection, request.deactivated_before)
        changing = [r.client_id for r in results if r.outcome is Outcome.PLANNED and r.client_id]
        _refuse_held(session, changing, now)
        retention_days = _retention(session)
        detail = DeleteDetail(
            retention_days,
            now + timedelta(days=retention_days),
            len(changing),
            request.folder.expanduser().absolute(),
        )
        return Plan(Action.DELETE, results, detail, consequences(session, changing, now))


def apply(
    engine: Engine,
    plan: Plan[DeleteDetail],
    change: Change,
    *,
    on_progress: ProgressCallback | None = None,
) -> Batch[DeleteDetail]:
    """Back up and verify every planned client, then delete them all in one transaction.

    The selection is not resolved again: the transaction re-checks each
    client's status and content against what the plan and its backup saw.
    Raises BackupFailed (exit 4) when any backup cannot be written or verified,
    or a client changed after its backup: then no client is deleted and the
    backups already written are kept. The retention is the one the plan showed.
    """
    faults.checkpoint("delete.selected")
    todo = [r for r in plan.results if r.outcome is Outcome.PLANNED and r.client_id is not None]
    if todo:
        # Before any backup is written: a hold placed since the plan stops it all.
        with reading(engine) as session:
            _refuse_held(session, [int(r.client_id or 0) for r in todo], change.at)
    purge_after = change.at + timedelta(days=plan.detail.retention_days)
    if not todo:
        detail = replace(plan.detail, purge_after=purge_after, seats_freed=0)
        return Batch(plan.action, plan.results, detail)
    # An unusable backup key stops the command here (exit 4), before any backup is written.
    keyring = practice_keyring(engine)
    folder = prepare_folder(plan.detail.backup_dir)
    backups = _write_backups(engine, todo, folder, change.at, on_progress, keyring)
    faults.checkpoint("delete.after-backups")

    batch_id = audit.new_batch_id()
    with writing(engine) as session:
        in_batch = col(Client.id).in_(select(load_ids(session, backups.files).c.id))
        _check_unchanged(session, in_batch, todo, backups)
        # Again under the write lock: a hold placed while the backups were written wins.
        _refuse_held(session, list(backups.files), change.at)
        faults.checkpoint("delete.checked")
        _mark_deleted(session, in_batch, backups, change.at, purge_after)
        faults.checkpoint("delete.state-changed")
        _record(session, todo, backups, batch_id, change)
        faults.checkpoint("delete.audited")
        if change.also:
            change.also(session, batch_id)
    faults.checkpoint("delete.committed")
    results = [
        _with_backup(r, backups.files[r.client_id]) if r.client_id in backups.files else r
        for r in plan.results
    ]
    detail = DeleteDetail(plan.detail.retention_days, purge_after, len(backups.files), folder)
    return Batch(plan.action, results, detail, batch_id)


def delete_clients(
    engine: Engine,
    selection: Selection,
    change: Change,
    backup_dir: Path,
    deactivated_before: datetime | None = None,
    *,
    on_progress: ProgressCallback | None = None,
) -> Batch[DeleteDetail]:
    """Preview and apply at once, for callers that confirm nothing (tests, scripts)."""
    plan = preview(engine, Deletion(selection, backup_dir, deactivated_before))
    return apply(engine, plan, change, on_progress=on_progress)


def _refuse_held(session: Session, client_ids: list[int], now: datetime) -> None:
    """Refuse (exit 3, naming them) to delete clients under legal hold."""
    held = held_ids(session, client_ids, now)
    if held:
        raise TransitionNotAllowed(held_message(held, "deleted"))


def _retention(session: Session) -> int:
    return max(1, settings.retention_days(session))


def _decide(
    session: Session, selection: Selection, deactivated_before: datetime | None
) -> list[ChangeResult]:
    """One result per selected client: to delete (PLANNED), already deleted, or skipped."""
    if selection.is_empty():
        if deactivated_before is None:
            raise UsageError(
                "Name the clients to delete: IDs or e-mails, --csv FILE, --ids-from FILE, "
                "--program NAME or --deactivated-before DATE."
            )
        return [
            ChangeResult(str(client_id), client_id, email, Status.DEACTIVATED.value,
                         Status.DELETED.value, Outcome.PLANNED)
            for client_id, email in session.execute(
                select(col(Client.id), col(Client.email))
                .where(
                    Client.status == Status.DEACTIVATED.value,
                    col(Client.deactivated_at) < deactivated_before,
                )
                .order_by(col(Client.id))
            )
        ]  # fmt: skip
    resolved = resolve(session, selection)
    old_enough: set[int] | None = None
    if deactivated_before is not None:
        old_enough = set()
        ids = [client.client_id for client in resolved.clients]
        for chunk in chunks(ids, CHUNK):
            old_enough.update(
                session.execute(
                    select(col(Client.id)).where(
                        col(Client.id).in_(chunk),
                        Client.status == Status.DEACTIVATED.value,
                        col(Client.deactivated_at) < deactivated_before,
                    )
                ).scalars()
            )
    results = []
    for client in resolved.clients:
        if client.status is Status.DELETED:
            state = Outcome.UNCHANGED
        elif old_enough is not None and client.client_id not in old_enough:
            state = Outcome.SKIPPED
        else:
            state = Outcome.PLANNED
        results.append(
            ChangeResult(
                client.reference,
                client.client_id,
                client.email,
                client.status.value,
                Status.DELETED.value,
                state,
                note=(
                    f"not deactivated before {clock.iso(deactivated_before)}"
                    if state is Outcome.SKIPPED
                    else None
                ),
            )
        )
    results.extend(
        ChangeResult(ref.text, None, None, None, None, Outcome.SKIPPED, note="unknown")
        for ref in resolved.skipped
    )
    return results


class _Kept(NamedTuple):
    """What the transaction needs of one client's backup (little, for large batches)."""

    path: str
    sha256: str
    content: str


@dataclass
class _Backups:
    """The backups written so far, by client id, and the first few paths for messages."""

    files: dict[int, _Kept]
    first: list[Path]

    def failed(self, problem: str, *, again: bool = False) -> BackupFailed:
        advice = "run delete again" if again else "fix that and run delete again"
        kept = kept_note(self.first, len(self.files))
        return BackupFailed(f"{problem.rstrip('.')}; no client was deleted{kept}; {advice}.")


def _write_backups(
    engine: Engine,
    todo: list[ChangeResult],
    folder: Path,
    at: datetime,
    on_progress: ProgressCallback | None,
    keyring: Keyring | None = None,
) -> _Backups:
    """A verified backup of every client, one at a time (their rows read a group at a
    time, so memory does not grow with the selection), encrypted to the practice's key
    when it has one."""
    backups = _Backups({}, [])
    ids = [int(r.client_id or 0) for r in todo]
    with closing(write_verified_backups(engine, ids, folder, at, keyring)) as written:
        for done, client_id in enumerate(ids, start=1):
            try:
                backup = next(written)
            except BackupFailed as error:
                raise backups.failed(str(error)) from None
            backups.files[client_id] = _Kept(str(backup.path), backup.sha256, backup.content)
            if len(backups.first) < 4:
                backups.first.append(backup.path)
            if on_progress:
                on_progress(done, len(todo))
    return backups


def _check_unchanged(
    session: Session, in_batch: ColumnElement[bool], todo: list[ChangeResult], backups: _Backups
) -> None:
    """Each client still has the status the plan saw and the content its backup holds."""
    # PostgreSQL: lock the rows first, so records cannot be added to them unseen
    # between this check and the commit (a new record's foreign key waits for the lock).
    current = dict(
        session.exec(select(Client.id, Client.status).where(in_batch).with_for_update()).all()
    )
    # Only re-reading the rows shows an edit a count would miss (a group of clients at a
    # time, in the order of the plan).
    digests = content_digests(session, [int(r.client_id or 0) for r in todo])
    for result, (client_id, digest) in zip(todo, digests, strict=True):
        now_status = current.get(client_id)
        if now_status != result.before:
            raise backups.failed(
                f"Client {client_id} changed while the backups were written "
                f"(it is now {now_status or 'gone'}).",
                again=True,
            )
        kept = backups.files[client_id]
        if digest != kept.content:
            raise backups.failed(
                f"Client {client_id}'s records changed after its backup {kept.path} was written.",
                again=True,
            )


def _mark_deleted(
    session: Session,
    in_batch: ColumnElement[bool],
    backups: _Backups,
    at: datetime,
    purge_after: datetime,
) -> None:
    changed = cast(
        CursorResult[Any],
        session.execute(
            update(Client)
            .where(
                in_batch,
                col(Client.status).in_([Status.ACTIVE.value, Status.DEACTIVATED.value]),
            )
            .values(status=Status.DELETED.value, deleted_at=at, purge_after=purge_after)
            .execution_options(synchronize_session=False)
        ),
    ).rowcount
    if changed != len(backups.files):
        raise backups.failed("Some clients changed while the backups were written.", again=True)


def _record(
    session: Session,
    todo: list[ChangeResult],
    backups: _Backups,
    batch_id: str,
    change: Change,
) -> None:
    """One audit event per client, naming its backup (file name only) and SHA-256:
    purge reads that checksum, and undo returns the client to the event's `before`."""
    audit.append(
        session,
        (
            audit.NewEvent(
                Action.DELETE,
                r.client_id,
                r.before,
                Status.DELETED.value,
                {
                    "backup": Path(backups.files[int(r.client_id or 0)].path).name,
                    "sha256": backups.files[int(r.client_id or 0)].sha256,
                },
            )
            for r in todo
        ),
        batch_id=batch_id,
        actor=change.actor,
        reason=change.reason,
        at=change.at,
        origin=change.origin,
    )


def _with_backup(result: ChangeResult, kept: _Kept) -> ChangeResult:
    return replace(carried_out(result), backup=kept.path, sha256=kept.sha256)
