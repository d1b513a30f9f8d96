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
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, update
from sqlmodel import Session, col, select

from pbclients import audit, clock, faults, settings
from pbclients.backup import content_digest, kept_note, prepare_folder, write_verified_backup
from pbclients.db import load_ids, reading, writing
from pbclients.errors import BackupFailed, UsageError
from pbclients.lifecycle import Change, ProgressCallback, consequences
from pbclients.models import Client
from pbclients.policy import Status
from pbclients.results import Batch, ChangeResult, Outcome
from pbclients.selection import CHUNK, Selection, chunks, resolve

ACTION = "delete"


def _retention(session: Session) -> int:
    return max(1, settings.retention_days(session))


def _plan(
    session: Session, selection: Selection, deactivated_before: datetime | None, outcome: Outcome
) -> list[ChangeResult]:
    """One result per selected client: to delete (`outcome`), already deleted, or skipped."""
    if selection.is_empty():
        if deactivated_before is None:
            raise UsageError(
                "Name the clients to delete: IDs or e-mails, --csv FILE, --ids-from FILE, "
                "--program NAME or --deactivated-before DATE."
            )
        return [
            ChangeResult(str(client_id), client_id, email, Status.DEACTIVATED.value,
                         Status.DELETED.value, outcome)
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
            state = outcome
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


def _extra(retention_days: int, at: datetime, changing: int, folder: Path | None) -> dict[str, Any]:
    return {
        "retention_days": retention_days,
        "purge_after": clock.iso(at + timedelta(days=retention_days)),
        "seats_freed": changing,
        "backup_dir": str(folder) if folder is not None else None,
    }


def preview_delete(
    engine: Engine,
    selection: Selection,
    deactivated_before: datetime | None = None,
    *,
    backup_dir: Path | None = None,
) -> Batch:
    """What `delete_clients` would do, with the consequences to confirm; writes nothing.

    `extra` holds `retention_days`, `purge_after`, `seats_freed` and `backup_dir`.
    """
    now = clock.now()
    with reading(engine) as session:
        results = _plan(session, selection, deactivated_before, Outcome.PLANNED)
        changing = [r.client_id for r in results if r.outcome is Outcome.PLANNED and r.client_id]
        return Batch(
            ACTION,
            results,
            dry_run=True,
            consequences=consequences(session, changing, now),
            extra=_extra(_retention(session), now, len(changing), backup_dir),
        )


def delete_clients(
    engine: Engine,
    selection: Selection,
    change: Change,
    backup_dir: Path,
    deactivated_before: datetime | None = None,
    *,
    on_progress: ProgressCallback | None = None,
) -> Batch:
    """Back up, verify, then delete every selected client; all of them or none.

    Active and deactivated clients can be deleted; one already deleted is
    reported as unchanged. Raises BackupFailed (exit 4) when any backup cannot
    be written or verified, or a client changed after its backup: then no
    client is deleted and the backups already written are kept.
    """
    with reading(engine) as session:
        results = _plan(session, selection, deactivated_before, Outcome.CHANGED)
        retention_days = _retention(session)
    faults.checkpoint("delete.selected")
    todo = [r for r in results if r.outcome is Outcome.CHANGED and r.client_id is not None]
    if not todo:
        return Batch(ACTION, results, extra=_extra(retention_days, change.at, 0, None))
    folder = prepare_folder(backup_dir)

    # Only what the transaction needs is kept per client: memory stays small per client,
    # and each client's records are streamed into its archive one at a time.
    backups: dict[int, tuple[str, str, str]] = {}
    written: list[Path] = []  # the first few, to name them in a message
    for done, result in enumerate(todo, start=1):
        client_id = int(result.client_id or 0)
        try:
            backup = write_verified_backup(engine, client_id, folder, change.at)
        except BackupFailed as error:
            raise BackupFailed(_failed(str(error), written, len(backups))) from None
        backups[client_id] = (str(backup.path), backup.sha256, backup.content)
        if len(written) < 4:
            written.append(backup.path)
        if on_progress:
            on_progress(done, len(todo))
    faults.checkpoint("delete.after-backups")

    batch_id = audit.new_batch_id()
    purge_after = change.at + timedelta(days=retention_days)
    with writing(engine) as session:
        selected = load_ids(session, backups)
        in_batch = col(Client.id).in_(select(selected.c.id))
        # PostgreSQL: lock the rows first, so records cannot be added to them unseen
        # between this check and the commit (a new record's foreign key waits for the lock).
        current = dict(
            session.exec(select(Client.id, Client.status).where(in_batch).with_for_update()).all()
        )
        # One client at a time: only re-reading the rows shows an edit a count would miss.
        for result in todo:
            client_id = int(result.client_id or 0)
            now_status = current.get(client_id)
            if now_status != result.before:
                raise BackupFailed(
                    _failed(
                        f"Client {client_id} changed while the backups were written "
                        f"(it is now {now_status or 'gone'}).",
                        written,
                        len(backups),
                        again=True,
                    )
                )
            path, _sha, backed_up = backups[client_id]
            if content_digest(session, client_id) != backed_up:
                raise BackupFailed(
                    _failed(
                        f"Client {client_id}'s records changed after its backup {path} was "
                        "written.",
                        written,
                        len(backups),
                        again=True,
                    )
                )
        faults.checkpoint("delete.checked")
        changed = cast(
            CursorResult[Any],
            session.execute(
                update(Client)
                .where(
                    in_batch,
                    col(Client.status).in_([Status.ACTIVE.value, Status.DEACTIVATED.value]),
                )
                .values(status=Status.DELETED.value, deleted_at=change.at, purge_after=purge_after)
                .execution_options(synchronize_session=False)
            ),
        ).rowcount
        if changed != len(backups):
            raise BackupFailed(
                _failed(
                    "Some clients changed while the backups were written.",
                    written,
                    len(backups),
                    again=True,
                )
            )
        faults.checkpoint("delete.state-changed")
        audit.append(
            session,
            (
                audit.NewEvent(
                    ACTION,
                    r.client_id,
                    r.before,
                    Status.DELETED.value,
                    {
                        "backup": Path(backups[int(r.client_id or 0)][0]).name,
                        "sha256": backups[int(r.client_id or 0)][1],
                    },
                )
                for r in todo
            ),
            batch_id=batch_id,
            actor=change.actor,
            reason=change.reason,
            at=change.at,
        )
        faults.checkpoint("delete.audited")
    faults.checkpoint("delete.committed")
    final = [
        _with_backup(r, *backups[int(r.client_id or 0)][:2]) if r.client_id in backups else r
        for r in results
    ]
    return Batch(
        ACTION,
        final,
        batch_id=batch_id,
        extra=_extra(retention_days, change.at, len(backups), folder),
    )


def _with_backup(result: ChangeResult, path: str, sha256: str) -> ChangeResult:
    return replace(result, backup=path, sha256=sha256)


def _failed(problem: str, written: list[Path], count: int, *, again: bool = False) -> str:
    advice = "run delete again" if again else "fix that and run delete again"
    return f"{problem.rstrip('.')}; no client was deleted{kept_note(written, count)}; {advice}."
