"""Restore: bring a client back from a verified backup, as deactivated, with every record.

Whether the client was purged already (its rows are recreated, with the same
ids where they are free, the programs it was enrolled in recreated if they are
gone) or is still pending purge (it is undeleted, and any record missing from
the database is put back; records still there are kept as they are). The
archive is verified before anything is written, and every member is checked
against its checksum again as it is read. Restoring never notifies the client.

Follows the protocol of `pbclients.operation`: `preview` verifies the archive
and decides where the client comes back; `apply` verifies it again, refuses a
file that changed since, and re-decides under the write lock, stopping if the
database no longer agrees with the plan.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, func, insert, select
from sqlmodel import Session

from pbclients import audit, clock, faults, ledger
from pbclients.backup.archive import BackupInvalid, Manifest, audit_name, table_of
from pbclients.backup.keys import practice_opener
from pbclients.backup.reader import BackupArchive, open_backup
from pbclients.db import is_sqlite, reading, writing
from pbclients.errors import BadInput, DatabaseBusy
from pbclients.models import RECORD_MODELS, Client, Program
from pbclients.operation import Action, Batch, Change, Plan, ProgressCallback
from pbclients.plan import ensure_room
from pbclients.policy import Status
from pbclients.purge import PURGED
from pbclients.results import ChangeResult, Outcome
from pbclients.selection import live_email_owners


@dataclass(frozen=True)
class Restore:
    """Bring back the client held in the backup file at `path` (an encrypted one opened
    with the `identity_files`, else the practice's backup key)."""

    path: Path
    identity_files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class _Decision:
    client_id: int  # the id the client gets back (0: a new one)
    backup_client_id: int
    email: str
    before: str  # "deleted" (pending purge) or "purged"
    present: bool  # the client's row is still in the database (pending purge)
    unchanged_status: str | None = None  # the same client is here and not deleted


@dataclass(frozen=True)
class RestoreDetail:
    """What the verified backup holds (records per kind, when it was written) and the
    decision `apply` re-checks: the file's SHA-256 and where the client comes back."""

    path: Path
    sha256: str
    created_at: str
    counts: dict[str, int]
    decision: _Decision
    identity_files: tuple[Path, ...] = ()


def preview(engine: Engine, request: Restore) -> Plan[RestoreDetail]:
    """Verify the backup and decide where the client comes back; writes nothing.

    The archive is untrusted: every checksum, every value against its column,
    sizes capped; a damaged or crafted one is refused (exit 3). So is an e-mail
    that now belongs to another client (exit 3) and a restore past the plan
    limit (exit 6). A client that is here and not deleted is `unchanged`.
    """
    opener = practice_opener(engine, request.identity_files)
    with open_backup(Path(request.path), opener) as archive:
        manifest = archive.verify()
        profile = archive.profile()
    with reading(engine) as session:
        decision = _decide(session, manifest, profile)
    outcome = Outcome.PLANNED if decision.unchanged_status is None else Outcome.UNCHANGED
    detail = RestoreDetail(
        request.path, manifest.sha256, manifest.created_at, manifest.counts, decision,
        request.identity_files,
    )  # fmt: skip
    return Plan(Action.RESTORE, [_result(request.path, manifest, decision, outcome)], detail)


def apply(
    engine: Engine,
    plan: Plan[RestoreDetail],
    change: Change,
    *,
    on_progress: ProgressCallback | None = None,
) -> Batch[RestoreDetail]:
    """Restore the client as the plan decided, with every record, in one transaction.

    The file is verified again and must be the one the plan verified (exit 3
    otherwise); the decision is made again under the write lock and must be the
    plan's (exit 5 otherwise). Every member is checked against its checksum
    again as it is read, so a file changed meanwhile rolls everything back.
    """
    detail = plan.detail
    if plan.changing == 0:
        return Batch(plan.action, plan.results, detail)
    with open_backup(Path(detail.path), practice_opener(engine, detail.identity_files)) as archive:
        manifest = archive.verify()
        if manifest.sha256 != detail.sha256:
            raise BackupInvalid(
                f"Backup {manifest.path} changed on disk after it was checked",
                "nothing was written, run restore again",
            )
        profile = archive.profile()
        batch_id = audit.new_batch_id()
        with writing(engine) as session:
            decision = _decide(session, manifest, profile)
            if decision != detail.decision:
                raise DatabaseBusy(
                    f"Client {decision.backup_client_id} changed while this command ran; "
                    "nothing was restored, run restore again."
                )
            client_id = _restore_rows(session, archive, profile, decision, change.at)
            faults.checkpoint("restore.rows-written")
            # The file's checksum and the tool's own name for it: the path it was given
            # may carry a client's name, and the trail outlives the client.
            event: dict[str, Any] = {
                "backup": audit_name(manifest.path, manifest.client_id, manifest.created_at),
                "sha256": manifest.sha256,
            }
            if client_id != decision.backup_client_id:
                event["backup_client_id"] = decision.backup_client_id
            audit.append(
                session,
                [
                    audit.NewEvent(
                        Action.RESTORE, client_id, decision.before, Status.DEACTIVATED.value, event
                    )
                ],
                batch_id=batch_id,
                actor=change.actor,
                reason=change.reason,
                at=change.at,
            )
            # Restoring the backup is the deliberate way back: the erasure ledger stops
            # purging this client again (written last; if it cannot be, nothing is restored).
            ledger.note_restored(
                session, ledger.location(engine), decision.backup_client_id,
                profile["created_at"], manifest.sha256, change.at,
            )  # fmt: skip
    if on_progress:
        on_progress(1, 1)
    done = replace(decision, client_id=client_id)
    result = _result(detail.path, manifest, done, Outcome.CHANGED)
    return Batch(plan.action, [result], detail, batch_id)


def restore_backup(engine: Engine, path: Path, change: Change) -> Batch[RestoreDetail]:
    """Preview and apply at once, for callers that confirm nothing (tests, scripts)."""
    return apply(engine, preview(engine, Restore(path)), change)


def _result(path: Path, manifest: Manifest, decision: _Decision, outcome: Outcome) -> ChangeResult:
    """The one result of a restore; its reference is the backup's path as given."""
    note = None
    if decision.unchanged_status is not None:
        note = f"client {decision.client_id} is here and {decision.unchanged_status}, not deleted"
    elif decision.client_id != decision.backup_client_id:
        note = f"id {decision.backup_client_id} now belongs to another client"
    return ChangeResult(
        str(path),
        decision.client_id or None,
        decision.email,
        decision.unchanged_status or decision.before,
        decision.unchanged_status or Status.DEACTIVATED.value,
        outcome,
        backup=str(manifest.path),
        sha256=manifest.sha256,
        note=note,
    )


def email_key(email: str) -> str:
    """The key an e-mail is unique by, as `add` derives it: never taken from a backup."""
    return email.casefold()


def _decide(session: Session, manifest: Manifest, profile: dict[str, Any]) -> _Decision:
    backup_id = manifest.client_id
    email = str(profile["email"])
    key = email_key(email)
    existing = session.get(Client, backup_id)
    same = (
        existing is not None
        and existing.email_key == key
        and clock.as_utc(existing.created_at) == profile["created_at"]
    )
    if existing is not None and same and existing.status != Status.DELETED.value:
        return _Decision(backup_id, backup_id, email, PURGED, True, existing.status)
    owner = live_email_owners(session, [key]).get(key)
    if owner is not None:
        raise BadInput(
            f"The backup's e-mail {email} now belongs to client {owner}; nothing was "
            "restored. Change or delete that client first, or keep both by hand."
        )
    ensure_room(session, 1, verb="Restoring")
    if same:
        return _Decision(backup_id, backup_id, email, Status.DELETED.value, True)
    # The id is free (purged), or a newer client was given it: then the client gets a new id.
    new_id = backup_id if existing is None else 0
    return _Decision(new_id, backup_id, email, PURGED, False)


def _restore_rows(
    session: Session,
    archive: BackupArchive,
    profile: dict[str, Any],
    decision: _Decision,
    at: datetime,
) -> int:
    client_table = table_of(Client)
    restored_state = {
        "status": Status.DEACTIVATED.value,
        # Restored now: a sweep by deactivation date must not delete it again at once.
        "deactivated_at": at,
        "deleted_at": None,
        "purge_after": None,
    }
    if decision.present:
        session.execute(
            client_table.update()
            .where(client_table.c.id == decision.client_id)
            .values(restored_state)
        )
        client_id = decision.client_id
    else:
        row = {**profile, "email_key": email_key(profile["email"]), **restored_state}
        if not decision.client_id:
            row.pop("id")
            client_id = int(
                session.execute(insert(client_table).returning(client_table.c.id), row).scalar_one()
            )
        else:
            session.execute(insert(client_table), [row])
            client_id = decision.client_id
    touched = [client_table]
    id_maps: dict[str, dict[int, int]] = {"programs": _restore_programs(session, archive)}
    touched.append(table_of(Program))
    for kind, model in RECORD_MODELS.items():
        table = table_of(model)
        mapping: dict[int, int] = {}
        # A bounded number of rows in memory; a document (its file included) one at a time.
        size = 1 if kind == "documents" else _CHUNK_ROWS
        for rows in _batched(archive.records(kind), size):
            records = [_record(archive, row, member) for _where, row, member in rows]
            mapping.update(_insert_records(session, table, kind, records, client_id, id_maps))
        if kind == "payment_methods":  # the only ids another kind refers to
            id_maps[kind] = mapping
        touched.append(table)
    _advance_sequences(session, touched)
    return client_id


_CHUNK_ROWS = 500


def _batched(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _record(archive: BackupArchive, row: dict[str, Any], member: str | None) -> dict[str, Any]:
    """One checked record; a document gets its file back (checked against its checksum)."""
    if member is not None:
        row = {**row, "content": archive.read(member)}
    return row


def _restore_programs(session: Session, archive: BackupArchive) -> dict[int, int]:
    """Map the backup's program ids to this database's, recreating a missing program.

    Only the programs the backup's enrolments refer to: a crafted list cannot add others.
    """
    table = table_of(Program)
    mapping: dict[int, int] = {}
    for row in archive.programs():
        old_id = int(row["id"])
        if old_id not in archive.programs_used:
            continue
        name = str(row["name"])
        by_id = session.execute(
            select(table.c.id, table.c.name).where(table.c.id == old_id)
        ).first()
        if by_id is not None and str(by_id.name).casefold() == name.casefold():
            mapping[old_id] = old_id
            continue
        by_name = session.execute(
            select(table.c.id).where(func.lower(table.c.name) == name.casefold())
        ).first()
        if by_name is not None:
            mapping[old_id] = int(by_name[0])
            continue
        if by_id is None:
            session.execute(insert(table), [row])
            mapping[old_id] = old_id
        else:
            row.pop("id")
            mapping[old_id] = int(
                session.execute(insert(table).returning(table.c.id), row).scalar_one()
            )
    return mapping


def _insert_records(
    session: Session,
    table: Table,
    kind: str,
    rows: list[dict[str, Any]],
    client_id: int,
    id_maps: dict[str, dict[int, int]],
) -> dict[int, int]:
    """Insert checked records of one kind: same ids where free, new ids otherwise;
    old id -> new id."""
    mapping: dict[int, int] = {}
    if not rows:
        return mapping
    taken = {
        int(row_id): int(owner)
        for row_id, owner in session.execute(
            select(table.c.id, table.c.client_id).where(table.c.id.in_([r["id"] for r in rows]))
        )
    }
    same_ids: list[dict[str, Any]] = []
    for row in rows:
        old_id = int(row["id"])
        if taken.get(old_id) == client_id:
            mapping[old_id] = old_id  # still here (the client is pending purge)
            continue
        row["client_id"] = client_id
        if kind == "enrolments":
            row["program_id"] = id_maps["programs"][int(row["program_id"])]
            if session.execute(
                select(table.c.id).where(
                    table.c.client_id == client_id, table.c.program_id == row["program_id"]
                )
            ).first():
                continue
        if kind == "payment_plans" and row.get("payment_method_id") is not None:
            # Verified: the method is in the backup, so it was restored (or kept) first.
            row["payment_method_id"] = id_maps["payment_methods"][int(row["payment_method_id"])]
        if old_id in taken:
            row.pop("id")
            mapping[old_id] = int(
                session.execute(insert(table).returning(table.c.id), row).scalar_one()
            )
        else:
            same_ids.append(row)
            mapping[old_id] = old_id
    if same_ids:
        session.execute(insert(table), same_ids)
    return mapping


def _advance_sequences(session: Session, tables: list[Table]) -> None:
    """PostgreSQL: rows inserted with their own ids do not move the id sequences on."""
    if is_sqlite(session):
        return
    from sqlalchemy import text

    for table in tables:
        sequence = session.execute(
            text("SELECT pg_get_serial_sequence(:table, 'id')"), {"table": table.name}
        ).scalar_one()
        if sequence is None:
            continue
        session.execute(
            text(
                f"SELECT setval(:sequence, GREATEST((SELECT COALESCE(MAX(id), 1) FROM "
                f'"{table.name}"), (SELECT last_value FROM {sequence})))'
            ),
            {"sequence": sequence},
        )
