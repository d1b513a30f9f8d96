"""Undo: revert one earlier batch of changes recorded in the audit trail.

A batch of `activate`, `deactivate` or `delete` events can be undone, and so can
an `edit`, `enrol` or `unenrol` batch (see the end of this docstring). Each of
its clients goes back to the event's `before` state only if nothing has
happened to it since: its status is still the event's `after` and no later
audit event changed it. Anyone else is reported as skipped with a note
("changed since", "purged", "e-mail now used by client N") and left alone.

- undo of deactivate: active again (`deactivated_at` cleared);
- undo of activate: deactivated again (`deactivated_at` = the undo's time);
- undo of delete: back to active or deactivated, `deleted_at` and
  `purge_after` cleared; possible only while the client is pending purge, and
  refused (exit 6) if the clients it brings back do not fit the plan limit.

The reverting changes are recorded as a new batch whose events are ordinary
`activate` / `deactivate` events, or `undelete` for a reverted deletion, with
the reason "undo of batch X" (and the admin's `--reason` after it). So undoing
an activate/deactivate undo is itself allowed (it is just another such
batch); an `undelete` batch is not undoable, because deleting needs a fresh
verified backup: use `pbclients delete` again.

An edit batch is undone by putting back the values kept in `undo_record` (only
for clients whose fields still hold what the edit wrote, and who are not
deleted), recorded as a new `edit` batch. An enrol batch is undone by an
unenrolment, an unenrol batch by re-enrolling with the progress kept at the
time; each is recorded as the opposite action, so it can be undone in turn.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Engine, func, update
from sqlmodel import Session, col, select

from pbclients import audit, editing, enrolment
from pbclients.db import load_ids, reading, writing
from pbclients.errors import BadInput, DatabaseBusy, TransitionNotAllowed
from pbclients.models import AuditEvent, Client, Enrolment, UndoRecord
from pbclients.operation import Action, Batch, Change, Plan, ProgressCallback, carried_out
from pbclients.plan import ensure_room
from pbclients.policy import Status
from pbclients.results import ChangeResult, Outcome
from pbclients.selection import live_email_owners

# The action recorded for reverting each undoable action.
REVERT_ACTION = {
    Action.ACTIVATE: Action.DEACTIVATE,
    Action.DEACTIVATE: Action.ACTIVATE,
    Action.DELETE: Action.UNDELETE,
}

_WHY_NOT: dict[str, str] = {
    Action.ADD: "adding clients is not undone; deactivate or delete them instead",
    Action.PURGE: "purge is permanent; bring a client back with `pbclients restore BACKUP`",
    Action.UNDELETE: (
        "delete the clients again with `pbclients delete`, which writes a fresh backup"
    ),
    Action.RESTORE: "delete the restored clients with `pbclients delete` instead",
    Action.EXPORT: "an export only wrote backup files",
}

_BUSY = "Some clients changed while undo ran; nothing was changed, run it again."


class Move(NamedTuple):
    """One client going back: from its status now to the one it had before the batch."""

    client_id: int
    before: Status
    after: Status


@dataclass(frozen=True)
class UndoDetail:
    """Which batch is undone, what it did, and every client's way back.

    `seen_event` is the newest audit event when the plan was made: a moved client
    with a later state change stops `apply` (exit 5), even one that came back to
    the same status in between.
    """

    undoes: str
    action: Action
    moves: tuple[Move, ...]
    seen_event: int
    program_id: int | None = None  # the program of an enrol or unenrol batch


def preview(engine: Engine, batch_id: str) -> Plan[UndoDetail]:
    """Undo, as an operation (see pbclients.operation); clients left alone are skipped."""
    with reading(engine) as session:
        seen_event = session.exec(select(func.max(AuditEvent.id))).one() or 0
        action, results, moves, program_id = _decide(session, batch_id)
    detail = UndoDetail(batch_id, action, tuple(moves), seen_event, program_id)
    return Plan(Action.UNDO, results, detail)


def apply(
    engine: Engine,
    plan: Plan[UndoDetail],
    change: Change,
    *,
    on_progress: ProgressCallback | None = None,
) -> Batch[UndoDetail]:
    """Revert the planned moves in one transaction, recorded as a new batch.

    Its events carry the reason "undo of batch X" (and the admin's reason after it).
    """
    detail = plan.detail
    results = [carried_out(result) for result in plan.results]
    if not detail.moves:
        return Batch(plan.action, results, detail)
    new_batch = audit.new_batch_id()
    with writing(engine) as session:
        moved = [move.client_id for move in detail.moves]
        if _changed_since(session, moved, after_event=detail.seen_event):
            raise DatabaseBusy(_BUSY)
        events = _REVERT[detail.action](session, detail, change, new_batch)
        if on_progress:
            on_progress(len(events), len(events))
        reason = f"undo of batch {detail.undoes}" + (f": {change.reason}" if change.reason else "")
        audit.append(
            session, events, batch_id=new_batch, actor=change.actor, reason=reason, at=change.at
        )
    return Batch(plan.action, results, detail, new_batch)


def undo_batch(engine: Engine, batch_id: str, change: Change) -> Batch[UndoDetail]:
    """Preview and apply at once, for callers with nobody to confirm (tests, scripts)."""
    return apply(engine, preview(engine, batch_id), change)


# Reverts the moves of a plan in the caller's transaction; returns the events to record.
Revert = Callable[[Session, UndoDetail, Change, str], list[audit.NewEvent]]


def _revert_status(
    session: Session, detail: UndoDetail, change: Change, batch_id: str
) -> list[audit.NewEvent]:
    """Move each client back, guarded by the status the plan saw; their audit events."""
    groups: dict[tuple[Status, Status], list[int]] = {}
    for client_id, before, after in detail.moves:
        groups.setdefault((before, after), []).append(client_id)
    for (before, after), ids in groups.items():
        _move(session, ids, before, after, change.at)
    recorded = REVERT_ACTION[detail.action]
    return [
        audit.NewEvent(recorded, client_id, before.value, after.value)
        for client_id, before, after in detail.moves
    ]


def _revert_deletion(
    session: Session, detail: UndoDetail, change: Change, batch_id: str
) -> list[audit.NewEvent]:
    """Bring deleted clients back: they take plan seats, and their e-mails must still be free."""
    ensure_room(session, len(detail.moves), verb=f"Undoing batch {detail.undoes} brings back")
    current = _current(session, [move.client_id for move in detail.moves])
    owners = live_email_owners(session, [row.email_key for row in current.values()])
    if any(owners.get(row.email_key, row.id) != row.id for row in current.values()):
        raise DatabaseBusy(_BUSY)
    return _revert_status(session, detail, change, batch_id)


def _revert_edit(
    session: Session, detail: UndoDetail, change: Change, batch_id: str
) -> list[audit.NewEvent]:
    """Put the old values back, as an edit of its own (so it can be undone in turn)."""
    kept = _kept(session, detail.undoes, [move.client_id for move in detail.moves])
    edits = [
        editing.FieldChanges(
            client_id,
            tuple(name for name in editing.EDITABLE if data["before"][name] != data["after"][name]),
            data["after"],
            data["before"],
        )
        for client_id, data in kept.items()
    ]
    return editing.write_edits(session, edits, batch_id)


def _revert_enrol(
    session: Session, detail: UndoDetail, change: Change, batch_id: str
) -> list[audit.NewEvent]:
    program_id = int(detail.program_id or 0)
    ids = [move.client_id for move in detail.moves]
    if _enrolled(session, ids, program_id) != set(ids):
        raise DatabaseBusy(_BUSY)
    enrolment.unenrol(session, ids, program_id, batch_id)
    return [
        audit.NewEvent(Action.UNENROL, client_id, None, None, {"program_id": program_id})
        for client_id in ids
    ]


def _revert_unenrol(
    session: Session, detail: UndoDetail, change: Change, batch_id: str
) -> list[audit.NewEvent]:
    program_id = int(detail.program_id or 0)
    ids = [move.client_id for move in detail.moves]
    if _enrolled(session, ids, program_id):
        raise DatabaseBusy(_BUSY)
    kept = _kept(session, detail.undoes, ids)
    enrolment.reenrol(session, {client_id: data["enrolment"] for client_id, data in kept.items()})
    return [
        audit.NewEvent(Action.ENROL, client_id, None, None, {"program_id": program_id})
        for client_id in ids
    ]


# How each undoable action is reverted; another undoable action is one more entry.
_REVERT: dict[Action, Revert] = {
    Action.ACTIVATE: _revert_status,
    Action.DEACTIVATE: _revert_status,
    Action.DELETE: _revert_deletion,
    Action.EDIT: _revert_edit,
    Action.ENROL: _revert_enrol,
    Action.UNENROL: _revert_unenrol,
}
# Batches whose undo changes records, not the clients' status.
_RECORD_ACTIONS = (Action.EDIT, Action.ENROL, Action.UNENROL)
UNDOABLE = tuple(_REVERT)


def _decide(
    session: Session, batch_id: str
) -> tuple[Action, list[ChangeResult], list[Move], int | None]:
    """Who goes back (planned) and who is left alone (skipped, with the reason)."""
    events = audit.events(session, batch_id=batch_id.strip())
    if not events:
        raise BadInput(
            f"There is no batch '{batch_id}' in the audit trail; nothing was changed. "
            "Find batch ids with `pbclients audit`."
        )
    actions = sorted({event.action for event in events})
    refused = [action for action in actions if action not in UNDOABLE]
    if refused or len(actions) > 1:
        shown = refused[0] if refused else ", ".join(actions)
        why = _WHY_NOT.get(
            shown,
            "only activate, deactivate, delete, edit, enrol and unenrol batches can be undone",
        )
        raise TransitionNotAllowed(
            f"Batch {batch_id} is a '{shown}' batch, which cannot be undone ({why}); "
            "nothing was changed."
        )
    action = Action(actions[0])
    if action in _RECORD_ACTIONS:
        return action, *_decide_records(session, batch_id.strip(), action, events)
    client_ids = [event.client_id for event in events if event.client_id is not None]
    current = _current(session, client_ids)
    changed_since = _changed_since(session, client_ids, after_event=max(e.id or 0 for e in events))
    email_owners = _live_email_owners(session, current, action)

    results: list[ChangeResult] = []
    moves: list[Move] = []
    for event in events:
        client_id = event.client_id
        if client_id is None:
            continue
        row = current.get(client_id)
        target = str(event.before)
        note = None
        if row is None:
            note = "purged" if action is Action.DELETE else "no longer exists"
        elif row.status != event.after or client_id in changed_since:
            note = "changed since"
        elif action is Action.DELETE and email_owners.get(row.email_key, client_id) != client_id:
            note = f"e-mail now used by client {email_owners[row.email_key]}"
        email = row.email if row else None
        status = row.status if row else None
        if note:
            results.append(
                ChangeResult(str(client_id), client_id, email, status, status, Outcome.SKIPPED,
                             note=note)
            )  # fmt: skip
            continue
        results.append(
            ChangeResult(str(client_id), client_id, email, status, target, Outcome.PLANNED)
        )
        moves.append(Move(client_id, Status(str(status)), Status(target)))
    return action, results, moves, None


class _Current(NamedTuple):
    id: int
    email: str
    email_key: str
    status: str


def _current(session: Session, client_ids: list[int]) -> dict[int, _Current]:
    selected = load_ids(session, client_ids)
    query = select(Client.id, Client.email, Client.email_key, Client.status).where(
        col(Client.id).in_(select(selected.c.id))
    )
    return {row.id: row for row in (_Current(*values) for values in session.execute(query))}


def _decide_records(
    session: Session, batch_id: str, action: Action, events: list[AuditEvent]
) -> tuple[list[ChangeResult], list[Move], int | None]:
    """For an edit, enrol or unenrol batch: who goes back, and who is left alone and why."""
    client_ids = [event.client_id for event in events if event.client_id is not None]
    program_ids = {json.loads(event.detail or "{}").get("program_id") for event in events}
    program_id = next(iter(program_ids), None)
    current = editing.current_values(session, client_ids)
    kept = _kept(session, batch_id, client_ids)
    enrolled = _enrolled(session, client_ids, int(program_id or 0))
    owners = live_email_owners(
        session,
        [str(data["before"]["email"]).casefold() for data in kept.values() if "before" in data],
    )
    results: list[ChangeResult] = []
    moves: list[Move] = []
    for client_id in client_ids:
        status, values = current.get(client_id, (None, {}))
        data = kept.get(client_id)
        note = None
        if status is None:
            note = "no longer exists"
        elif status == Status.DELETED:
            note = "deleted since"
        elif action is Action.EDIT:
            key = str((data or {"before": {"email": ""}})["before"]["email"]).casefold()
            if data is None or values != data["after"]:
                note = "changed since"
            elif owners.get(key, client_id) != client_id:
                note = f"e-mail now used by client {owners[key]}"
        elif action is Action.ENROL and client_id not in enrolled:
            note = "not enrolled any more"
        elif action is Action.UNENROL and (data is None or client_id in enrolled):
            note = "enrolled again"
        email = values.get("email")
        outcome = Outcome.SKIPPED if note else Outcome.PLANNED
        results.append(
            ChangeResult(str(client_id), client_id, email, status, status, outcome, note=note)
        )
        if not note:
            moves.append(Move(client_id, Status(str(status)), Status(str(status))))
    return results, moves, program_id


def _kept(session: Session, batch_id: str, client_ids: list[int]) -> dict[int, dict[str, Any]]:
    """What a batch kept in `undo_record` for these clients (purge removes it)."""
    query = select(UndoRecord.client_id, UndoRecord.data).where(
        UndoRecord.batch_id == batch_id, col(UndoRecord.client_id).in_(client_ids)
    )
    return {client_id: json.loads(data) for client_id, data in session.exec(query)}


def _enrolled(session: Session, client_ids: list[int], program_id: int) -> set[int]:
    query = select(Enrolment.client_id).where(
        Enrolment.program_id == program_id, col(Enrolment.client_id).in_(client_ids)
    )
    return set(session.exec(query))


def _changed_since(session: Session, client_ids: list[int], *, after_event: int) -> set[int]:
    """Clients whose state a later event changed (exports and the like do not count)."""
    selected = load_ids(session, client_ids)
    query = select(AuditEvent.client_id).where(
        col(AuditEvent.client_id).in_(select(selected.c.id)),
        col(AuditEvent.id) > after_event,
        col(AuditEvent.before).is_distinct_from(col(AuditEvent.after)),
    )
    return {client_id for client_id in session.exec(query) if client_id is not None}


def _live_email_owners(
    session: Session, current: dict[int, _Current], action: Action
) -> dict[str, int]:
    """For undoing a delete: which visible client now holds each deleted client's e-mail."""
    if action is not Action.DELETE:
        return {}
    keys = [row.email_key for row in current.values() if row.status == Status.DELETED]
    return live_email_owners(session, keys)


def _move(session: Session, ids: list[int], before: Status, after: Status, at: datetime) -> None:
    values: dict[str, object] = {"status": after.value}
    if before is Status.DELETED:
        values |= {"deleted_at": None, "purge_after": None}
    elif after is Status.ACTIVE:
        values["deactivated_at"] = None
    elif after is Status.DEACTIVATED:
        values["deactivated_at"] = at
    selected = load_ids(session, ids)
    statement = (
        update(Client)
        .where(col(Client.id).in_(select(selected.c.id)), col(Client.status) == before.value)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    # The status guard makes a concurrent change visible instead of silently overwriting it.
    if session.execute(statement).rowcount != len(ids):  # type: ignore[attr-defined]
        raise DatabaseBusy(_BUSY)
