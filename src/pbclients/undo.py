"""Undo: revert one earlier batch of status changes recorded in the audit trail.

A batch of `activate`, `deactivate` or `delete` events can be undone. Each of
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
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from pbclients import audit
from pbclients.db import load_ids, reading, writing
from pbclients.errors import BadInput, DatabaseBusy, TransitionNotAllowed
from pbclients.lifecycle import Change
from pbclients.models import AuditEvent, Client
from pbclients.plan import ensure_room
from pbclients.policy import Status
from pbclients.results import Batch, ChangeResult, Outcome
from pbclients.selection import live_email_owners

UNDOABLE = ("activate", "deactivate", "delete")
# The action recorded for reverting each undoable action.
REVERT_ACTION = {"activate": "deactivate", "deactivate": "activate", "delete": "undelete"}

_WHY_NOT = {
    "add": "adding clients is not undone; deactivate or delete them instead",
    "import": "adding clients is not undone; deactivate or delete them instead",
    "purge": "purge is permanent; bring a client back with `pbclients restore BACKUP`",
    "undelete": "delete the clients again with `pbclients delete`, which writes a fresh backup",
    "restore": "delete the restored clients with `pbclients delete` instead",
    "export": "an export only wrote backup files",
}


@dataclass(frozen=True)
class _Plan:
    action: str
    results: list[ChangeResult]
    # (client_id, from status, to status) of every client that changes.
    moves: list[tuple[int, Status, Status]]


def preview_undo(engine: Engine, batch_id: str) -> Batch:
    """What `undo_batch` would do (outcome planned or skipped); writes nothing."""
    with reading(engine) as session:
        plan = _plan(session, batch_id, Outcome.PLANNED)
    return Batch(
        "undo", plan.results, dry_run=True, extra={"undoes": batch_id, "action": plan.action}
    )


def undo_batch(engine: Engine, batch_id: str, change: Change) -> Batch:
    """Revert the batch in one transaction with its audit events (see the module docstring)."""
    new_batch = audit.new_batch_id()
    with writing(engine) as session:
        plan = _plan(session, batch_id, Outcome.CHANGED)
        undeleting = sum(1 for _, before, _ in plan.moves if before is Status.DELETED)
        if undeleting:
            ensure_room(session, undeleting, verb=f"Undoing batch {batch_id} brings back")
        groups: dict[tuple[Status, Status], list[int]] = {}
        for client_id, before, after in plan.moves:
            groups.setdefault((before, after), []).append(client_id)
        for (before, after), ids in groups.items():
            _move(session, ids, before, after, change.at)
        reason = f"undo of batch {batch_id}" + (f": {change.reason}" if change.reason else "")
        audit.append(
            session,
            (
                audit.NewEvent(REVERT_ACTION[plan.action], client_id, before.value, after.value)
                for client_id, before, after in plan.moves
            ),
            batch_id=new_batch,
            actor=change.actor,
            reason=reason,
            at=change.at,
        )
    return Batch(
        "undo",
        plan.results,
        batch_id=new_batch if plan.moves else None,
        extra={"undoes": batch_id, "action": plan.action},
    )


def _plan(session: Session, batch_id: str, outcome: Outcome) -> _Plan:
    events = audit.events(session, batch_id=batch_id.strip())
    if not events:
        raise BadInput(
            f"There is no batch '{batch_id}' in the audit trail; nothing was changed. "
            "Find batch ids with `pbclients audit`."
        )
    actions = sorted({event.action for event in events})
    refused = [action for action in actions if action not in UNDOABLE]
    if refused or len(actions) > 1:
        action = refused[0] if refused else ", ".join(actions)
        why = _WHY_NOT.get(action, "only activate, deactivate and delete batches can be undone")
        raise TransitionNotAllowed(
            f"Batch {batch_id} is a '{action}' batch, which cannot be undone ({why}); "
            "nothing was changed."
        )
    action = actions[0]
    client_ids = [event.client_id for event in events if event.client_id is not None]
    current = _current(session, client_ids)
    changed_since = _changed_since(session, client_ids, after_event=max(e.id or 0 for e in events))
    email_owners = _live_email_owners(session, current, action)

    results: list[ChangeResult] = []
    moves: list[tuple[int, Status, Status]] = []
    for event in events:
        client_id = event.client_id
        if client_id is None:
            continue
        row = current.get(client_id)
        target = str(event.before)
        note = None
        if row is None:
            note = "purged" if action == "delete" else "no longer exists"
        elif row.status != event.after or client_id in changed_since:
            note = "changed since"
        elif action == "delete" and email_owners.get(row.email_key, client_id) != client_id:
            note = f"e-mail now used by client {email_owners[row.email_key]}"
        email = row.email if row else None
        status = row.status if row else None
        if note:
            results.append(
                ChangeResult(str(client_id), client_id, email, status, status, Outcome.SKIPPED,
                             note=note)
            )  # fmt: skip
            continue
        results.append(ChangeResult(str(client_id), client_id, email, status, target, outcome))
        moves.append((client_id, Status(str(status)), Status(target)))
    return _Plan(action, results, moves)


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
    session: Session, current: dict[int, _Current], action: str
) -> dict[str, int]:
    """For undoing a delete: which visible client now holds each deleted client's e-mail."""
    if action != "delete":
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
        raise DatabaseBusy(
            "Some clients changed while undo ran; nothing was changed, run it again."
        )
