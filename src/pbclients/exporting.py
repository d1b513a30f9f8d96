"""Export: a verified backup of each selected client, and nothing in the roster changes.

Follows the protocol of `pbclients.operation`. The plan's results are the
clients to back up; the batch's are `Outcome.EXPORTED`, each with its file
and SHA-256, and one audit event per backup names them (the tool's own file
name, never a path).
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from pbclients import audit
from pbclients.backup.archive import audit_name
from pbclients.backup.keys import practice_keyring
from pbclients.backup.writer import kept_note, prepare_folder, write_verified_backups
from pbclients.db import reading, writing
from pbclients.errors import BackupFailed
from pbclients.operation import Action, Batch, Change, Plan, ProgressCallback
from pbclients.results import ChangeResult, Outcome
from pbclients.selection import Resolved, Selection, resolve


@dataclass(frozen=True)
class Export:
    """Back up the selected clients into `folder`."""

    selection: Selection
    folder: Path


@dataclass(frozen=True)
class ExportDetail:
    """Where the backups go: the folder as an absolute path."""

    folder: Path


def to_export(resolved: Resolved) -> list[ChangeResult]:
    """Every resolved client as planned for export (their state stays), unknown ones skipped."""
    results = [
        ChangeResult(
            client.reference, client.client_id, client.email, client.status.value,
            client.status.value, Outcome.PLANNED,
        )
        for client in resolved.clients
    ]  # fmt: skip
    return results + [
        ChangeResult(ref.text, None, None, None, None, Outcome.SKIPPED, note="unknown")
        for ref in resolved.skipped
    ]


def preview(engine: Engine, request: Export) -> Plan[ExportDetail]:
    """The clients `apply` would back up; reads only (the folder is not created yet)."""
    with reading(engine) as session:
        results = to_export(resolve(session, request.selection))
    folder = request.folder.expanduser().absolute()
    return Plan(Action.EXPORT, results, ExportDetail(folder))


def apply(
    engine: Engine,
    plan: Plan[ExportDetail],
    change: Change,
    *,
    on_progress: ProgressCallback | None = None,
) -> Batch[ExportDetail]:
    """Write and verify a backup of every planned client, then record them in one transaction.

    One client at a time (their rows read a group at a time), so memory does not grow
    with the selection; each backup is checked against the database as it is then.
    Raises BackupFailed (exit 4) on the first backup that fails; those already written
    are kept. With a backup key (`pbclients.backup.keys`) each is encrypted; an unusable
    key is exit 4 before any backup is written.
    """
    keyring = practice_keyring(engine)
    folder = prepare_folder(plan.detail.folder)
    detail = ExportDetail(folder)
    todo = plan.changing
    results: list[ChangeResult] = []
    written: list[Path] = []  # the first few, to name them in a message
    exported = 0
    with closing(
        write_verified_backups(
            engine,
            [r.client_id for r in plan.results if r.outcome is Outcome.PLANNED and r.client_id],
            folder,
            change.at,
            keyring,
        )
    ) as backups:
        for result in plan.results:
            if result.outcome is not Outcome.PLANNED or result.client_id is None:
                results.append(result)
                continue
            try:
                backup = next(backups)
            except BackupFailed as error:
                raise BackupFailed(
                    f"{str(error).rstrip('.')}{kept_note(written, exported)}; "
                    "fix that and run export again."
                ) from None
            exported += 1
            if len(written) < 4:
                written.append(backup.path)
            results.append(
                ChangeResult(
                    result.reference, result.client_id, result.email, result.before, result.after,
                    Outcome.EXPORTED, backup=str(backup.path), sha256=backup.sha256,
                )
            )  # fmt: skip
            if on_progress:
                on_progress(exported, todo)
    if not exported:
        return Batch(plan.action, results, detail)
    batch_id = audit.new_batch_id()
    with writing(engine) as session:
        audit.append(
            session,
            (
                audit.NewEvent(
                    Action.EXPORT, r.client_id, r.before, r.after,
                    {"backup": audit_name(Path(str(r.backup))), "sha256": r.sha256},
                )
                for r in results
                if r.outcome is Outcome.EXPORTED
            ),
            batch_id=batch_id, actor=change.actor, reason=change.reason, at=change.at,
        )  # fmt: skip
    return Batch(plan.action, results, detail, batch_id)
