"""Enrolling clients in a program, and taking them out of one.

A deactivated client can be enrolled: the enrolment starts paused, like their
other programs, and continues when they are reactivated. A deleted client is
neither enrolled nor unenrolled (bring it back first). Enrolling someone
already enrolled, or unenrolling someone who is not, is reported unchanged.

Unenrolling removes the enrolment with its progress; the values it held are
kept in `undo_record` so `undo` can put the enrolment back, until the client is
purged. The audit trail records the program's id, never a name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, delete, insert
from sqlmodel import Session, col, func, select

from pbclients import audit, clock
from pbclients.db import load_ids, reading, writing
from pbclients.errors import DatabaseBusy, TransitionNotAllowed
from pbclients.models import Client, Enrolment, Program, UndoRecord
from pbclients.operation import Action, Batch, Change, Plan, ProgressCallback, carried_out
from pbclients.policy import Status
from pbclients.results import ChangeResult, Outcome
from pbclients.selection import Resolved, Selected, Selection, find_program, resolve

NOT_ENROLLED = "not enrolled"
ENROLLED = "enrolled"
PAUSED = "paused"


@dataclass(frozen=True)
class EnrolmentDetail:
    program: str
    # None while the program does not exist yet: `enrol` creates it, as `add` does.
    program_id: int | None


def preview_enrol(engine: Engine, selection: Selection, program: str) -> Plan[EnrolmentDetail]:
    """Who would be enrolled in `program` (created on first use); reads only."""
    with reading(engine) as session:
        program_id = _program_id(session, program)
        results = _decide(session, selection, program_id, enrolling=True)
    return Plan(Action.ENROL, results, EnrolmentDetail(program.strip(), program_id))


def preview_unenrol(engine: Engine, selection: Selection, program: str) -> Plan[EnrolmentDetail]:
    """Who would leave `program`; reads only. An unknown program is bad input (exit 3)."""
    with reading(engine) as session:
        program_id = find_program(session, program)
        results = _decide(session, selection, program_id, enrolling=False)
    return Plan(Action.UNENROL, results, EnrolmentDetail(program.strip(), program_id))


def _decide(
    session: Session, selection: Selection, program_id: int | None, *, enrolling: bool
) -> list[ChangeResult]:
    """Each selected client's enrolment now and after; planned where it changes."""
    resolved = resolve(session, selection)
    enrolled = _enrolled(session, resolved, program_id)
    results = []
    for client in resolved.clients:
        _refuse_deleted(client, "enrolled" if enrolling else "unenrolled")
        # A deactivated client's programs are paused, a new enrolment too.
        state = PAUSED if client.status is Status.DEACTIVATED else ENROLLED
        now = state if client.client_id in enrolled else NOT_ENROLLED
        after = state if enrolling else NOT_ENROLLED
        outcome = Outcome.UNCHANGED if now == after else Outcome.PLANNED
        results.append(
            ChangeResult(client.reference, client.client_id, client.email, now, after, outcome)
        )
    return results + _skipped(resolved)


def apply(
    engine: Engine,
    plan: Plan[EnrolmentDetail],
    change: Change,
    *,
    on_progress: ProgressCallback | None = None,
) -> Batch[EnrolmentDetail]:
    """Carry out an enrol or unenrol plan in one transaction, audited per client."""
    ids = [r.client_id for r in plan.results if r.outcome is Outcome.PLANNED and r.client_id]
    results = [carried_out(result) for result in plan.results]
    if not ids:
        return Batch(plan.action, plan.results, plan.detail)
    batch_id = audit.new_batch_id()
    with writing(engine) as session:
        program_id = plan.detail.program_id
        if program_id is None:
            program_id = _create_program(session, plan.detail.program)
        _check_unchanged(session, ids, program_id, enrolled=plan.action is Action.UNENROL)
        if plan.action is Action.ENROL:
            enrol(session, ids, program_id, change.at)
        else:
            unenrol(session, ids, program_id, batch_id)
        if on_progress:
            on_progress(len(ids), len(ids))
        audit.append(
            session,
            (audit.NewEvent(plan.action, client_id, None, None, {"program_id": program_id})
             for client_id in ids),
            batch_id=batch_id,
            actor=change.actor,
            reason=change.reason,
            at=change.at,
        )  # fmt: skip
    return Batch(plan.action, results, plan.detail, batch_id)


def _program_id(session: Session, name: str) -> int | None:
    if not name.strip():
        from pbclients.errors import UsageError

        raise UsageError("--program cannot be empty; name the program.")
    return session.exec(
        select(Program.id).where(func.lower(Program.name) == name.strip().casefold())
    ).first()


def _create_program(session: Session, name: str) -> int:
    existing = _program_id(session, name)
    if existing is not None:
        return existing
    program = Program(name=name)
    session.add(program)
    session.flush()
    return int(program.id or 0)


def _enrolled(session: Session, resolved: Resolved, program_id: int | None) -> set[int]:
    if program_id is None or not resolved.clients:
        return set()
    selected = load_ids(session, [client.client_id for client in resolved.clients])
    return set(
        session.exec(
            select(Enrolment.client_id).where(
                Enrolment.program_id == program_id,
                col(Enrolment.client_id).in_(select(selected.c.id)),
            )
        )
    )


def _check_unchanged(session: Session, ids: list[int], program_id: int, *, enrolled: bool) -> None:
    selected = load_ids(session, ids)
    in_selection = col(Client.id).in_(select(selected.c.id))
    live = session.exec(
        select(func.count()).where(in_selection, Client.status != Status.DELETED.value)
    ).one()
    there = session.exec(
        select(func.count()).where(
            Enrolment.program_id == program_id,
            col(Enrolment.client_id).in_(select(selected.c.id)),
        )
    ).one()
    if live != len(ids) or there != (len(ids) if enrolled else 0):
        raise DatabaseBusy(
            "Some clients changed while this command ran; nothing was changed, run it again."
        )


def enrol(session: Session, ids: list[int], program_id: int, at: datetime) -> None:
    session.execute(
        insert(Enrolment),
        [
            {"client_id": client_id, "program_id": program_id, "enrolled_at": at}
            for client_id in ids
        ],
    )


def unenrol(session: Session, ids: list[int], program_id: int, batch_id: str) -> None:
    """Remove these enrolments, keeping what they held in `undo_record` for undo."""
    selected = load_ids(session, ids)
    in_batch = and_(
        col(Enrolment.program_id) == program_id,
        col(Enrolment.client_id).in_(select(selected.c.id)),
    )
    kept = [
        {
            "batch_id": batch_id,
            "client_id": enrolment.client_id,
            "data": json.dumps(
                {
                    "enrolment": {
                        "program_id": program_id,
                        "enrolled_at": clock.iso(enrolment.enrolled_at),
                        "progress_percent": enrolment.progress_percent,
                        "completed_at": clock.iso(enrolment.completed_at),
                    }
                }
            ),
        }
        for enrolment in session.exec(select(Enrolment).where(in_batch))
    ]
    session.execute(insert(UndoRecord), kept)
    session.execute(delete(Enrolment).where(in_batch).execution_options(synchronize_session=False))


def reenrol(session: Session, kept: dict[int, dict[str, Any]]) -> None:
    """Put back enrolments that `unenrol` removed, with their progress (undo)."""
    session.execute(
        insert(Enrolment),
        [
            {
                "client_id": client_id,
                "program_id": held["program_id"],
                "enrolled_at": _moment(held["enrolled_at"]),
                "progress_percent": held["progress_percent"],
                "completed_at": _moment(held["completed_at"]),
            }
            for client_id, held in kept.items()
        ],
    )


def _moment(text: str | None) -> datetime | None:
    """A time this module wrote with `clock.iso`."""
    return (
        None if text is None else clock.as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    )


def _refuse_deleted(client: Selected, verb: str) -> None:
    if client.status is Status.DELETED:
        raise TransitionNotAllowed(
            f"Client {client.client_id} ('{client.reference}') is deleted and cannot be "
            f"{verb}; nothing was changed. Bring it back with `pbclients undo BATCH` or "
            "`pbclients restore BACKUP` first."
        )


def _skipped(resolved: Resolved) -> list[ChangeResult]:
    return [
        ChangeResult(ref.text, None, None, None, None, Outcome.SKIPPED, note="unknown")
        for ref in resolved.skipped
    ]
