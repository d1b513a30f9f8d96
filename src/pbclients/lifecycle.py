"""Pausing and resuming portal access (deactivate / activate), in bulk.

Nothing here notifies a client or touches their records: deactivation is
archiving, and reactivation restores exactly what was there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine, distinct, func, update
from sqlmodel import Session, col, select

from pbclients import audit, clock, faults
from pbclients.db import load_ids, reading, writing
from pbclients.errors import DatabaseBusy, TransitionNotAllowed
from pbclients.models import Appointment, Client, Enrolment, PaymentPlan
from pbclients.policy import Status
from pbclients.results import Batch, ChangeResult, Consequences, Outcome
from pbclients.selection import Resolved, Selection, resolve

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Change:
    """Who makes a change, why, and when (the audit trail's columns)."""

    actor: str
    reason: str | None = None
    at: datetime = field(default_factory=clock.now)


_ACTION = {Status.ACTIVE: "activate", Status.DEACTIVATED: "deactivate"}
_TARGET = {action: status for status, action in _ACTION.items()}


def preview_status(
    engine: Engine, selection: Selection, target: Status, *, with_consequences: bool = True
) -> Batch:
    """What `set_status` would do, with the consequences to confirm; writes nothing.

    `with_consequences=False` skips counting them when nobody will be asked.
    """
    with reading(engine) as session:
        resolved = resolve(session, selection)
        results = _plan(resolved, target)
        if not with_consequences:
            return Batch(_ACTION[target], results, dry_run=True)
        changing = [r.client_id for r in results if r.outcome is Outcome.PLANNED and r.client_id]
        return Batch(
            _ACTION[target],
            results,
            dry_run=True,
            consequences=consequences(session, changing, clock.now()),
        )


def set_status(
    engine: Engine,
    selection: Selection,
    target: Status,
    change: Change,
    *,
    on_progress: ProgressCallback | None = None,
) -> Batch:
    """Activate or deactivate every selected client in one transaction with its audit events."""
    planned = preview_status(engine, selection, target, with_consequences=False)
    return apply_status(engine, planned, change, on_progress=on_progress)


def apply_status(
    engine: Engine,
    planned: Batch,
    change: Change,
    *,
    on_progress: ProgressCallback | None = None,
) -> Batch:
    """Carry out a preview the admin confirmed, without resolving the references again.

    Each UPDATE is guarded by the status the preview saw, so a client changed in
    between (by another admin, undo or purge) stops the whole batch (exit 5)
    rather than being overwritten.
    """
    target = _TARGET[planned.action]
    by_status: dict[str, list[int]] = {}
    for result in planned.results:
        if result.outcome is Outcome.PLANNED and result.client_id is not None:
            by_status.setdefault(str(result.before), []).append(result.client_id)
    # Built directly: dataclasses.replace costs seconds over 100,000 results.
    results = [
        ChangeResult(r.reference, r.client_id, r.email, r.before, r.after, Outcome.CHANGED)
        if r.outcome is Outcome.PLANNED
        else r
        for r in planned.results
    ]
    if not by_status:
        return Batch(planned.action, results)
    batch_id = audit.new_batch_id()
    with writing(engine) as session:
        done = 0
        for before, ids in by_status.items():
            _update_status(session, ids, Status(before), target, change.at)
            done += len(ids)
            if on_progress:
                on_progress(done, len(results))
        faults.checkpoint("status-updated")
        audit.append(
            session,
            (
                audit.NewEvent(planned.action, r.client_id, r.before, r.after)
                for r in results
                if r.outcome is Outcome.CHANGED
            ),
            batch_id=batch_id,
            actor=change.actor,
            reason=change.reason,
            at=change.at,
        )
    return Batch(planned.action, results, batch_id=batch_id)


# Enum .value is a descriptor call; at 100,000 clients a dict lookup is measurably cheaper.
_VALUES = {status: status.value for status in Status}


def _plan(resolved: Resolved, target: Status) -> list[ChangeResult]:
    results = []
    for client in resolved.clients:
        if client.status is Status.DELETED:
            raise TransitionNotAllowed(
                f"Client {client.client_id} ('{client.reference}') is deleted and cannot be "
                f"{_ACTION[target]}d; nothing was changed. "
                "Bring it back with `pbclients undo BATCH` or `pbclients restore BACKUP` first."
            )
        same = client.status is target
        results.append(
            ChangeResult(
                client.reference,
                client.client_id,
                client.email,
                _VALUES[client.status],
                _VALUES[target],
                Outcome.UNCHANGED if same else Outcome.PLANNED,
            )
        )
    results.extend(
        ChangeResult(ref.text, None, None, None, None, Outcome.SKIPPED, note="unknown")
        for ref in resolved.skipped
    )
    return results


def _update_status(
    session: Session, ids: list[int], before: Status, target: Status, at: datetime
) -> None:
    selected = load_ids(session, ids)
    statement = (
        update(Client)
        .where(col(Client.id).in_(select(selected.c.id)), col(Client.status) == before.value)
        .values(
            status=target.value,
            deactivated_at=at if target is Status.DEACTIVATED else None,
        )
        # Nothing loaded needs refreshing; the default would fetch every changed id back.
        .execution_options(synchronize_session=False)
    )
    # The status guard makes a concurrent change visible instead of silently overwriting it.
    if session.execute(statement).rowcount != len(ids):  # type: ignore[attr-defined]
        raise DatabaseBusy(
            "Some clients changed while this command ran; nothing was changed, run it again."
        )


def consequences(session: Session, client_ids: list[int], now: datetime) -> Consequences:
    """Counts the admin should hear before confirming: calendar, programs, payments."""
    if not client_ids:
        return Consequences(0)
    selected = load_ids(session, client_ids)
    in_selection = col(Appointment.client_id).in_(select(selected.c.id))
    telehealth = session.exec(
        select(func.count(), func.count(distinct(col(Appointment.client_id)))).where(
            in_selection, col(Appointment.telehealth), col(Appointment.starts_at) >= now
        )
    ).one()
    enrolments = session.exec(
        select(func.count()).where(
            col(Enrolment.client_id).in_(select(selected.c.id)),
            col(Enrolment.completed_at).is_(None),
        )
    ).one()
    plans = session.exec(
        select(func.count()).where(
            col(PaymentPlan.client_id).in_(select(selected.c.id)), col(PaymentPlan.active)
        )
    ).one()
    return Consequences(len(client_ids), telehealth[0], telehealth[1], enrolments, plans)
