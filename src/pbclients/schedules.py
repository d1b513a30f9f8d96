"""Changes decided now and carried out when they come due: `deactivate|activate|delete --at`.

Scheduling resolves and checks the selection at once, through the command's own
`preview` (an unknown reference is exit 3, as without `--at`), and stores the
clients that change would apply to, with when, who and why; no client changes.
Scheduling and cancelling are audited with client IDs only.

When a schedule comes due, `apply_due` carries it out like the same command typed
then: the command's own preview and apply, the same checks and (for delete) the
same verified backups, in one transaction that also marks the schedule done and
whose audit events carry the schedule's id. Clients that meanwhile left the
state the change applies to are skipped and reported, never an error. If that
transaction fails (a backup that cannot be written), the schedule stays pending.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from pbclients import audit, clock, settings
from pbclients.csvinput import Reference
from pbclients.db import load_ids, reading, writing
from pbclients.errors import BadInput, DatabaseBusy, UsageError
from pbclients.models import Client, Schedule
from pbclients.operation import Action, Batch, Change, Plan, ProgressCallback
from pbclients.policy import Status
from pbclients.results import ChangeResult, Outcome
from pbclients.selection import Selection

# A schedule "now" typed a few seconds late is still meant; older than this is a mistake.
GRACE = timedelta(minutes=1)

# The states each schedulable change applies to; a client in another state when the
# schedule comes due is skipped.
APPLIES_TO: dict[Action, frozenset[Status]] = {
    Action.DEACTIVATE: frozenset({Status.ACTIVE}),
    Action.ACTIVATE: frozenset({Status.DEACTIVATED}),
    Action.DELETE: frozenset({Status.ACTIVE, Status.DEACTIVATED}),
}

PENDING, DONE, CANCELLED = "pending", "done", "cancelled"


def parse_when(text: str, now: datetime, time_zone: str) -> datetime:
    """`--at WHEN`: an ISO date (00:00 in the practice's time zone), an ISO date-time
    (in that zone unless it names its own offset), or `+30d` / `+2w` / `+6m` / `+1y`."""
    from pbclients.activity import parse_age

    value = text.strip()
    if value.startswith("+"):
        return parse_age(value[1:], "--at").after(now)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--at {text[:60]!r} is not a time; give a date (2026-12-31, midnight in the "
            f"practice's time zone, {time_zone}), a date-time (2026-12-31T18:00) or +30d."
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(time_zone))
    # Checked before converting: a time zone's offset can carry year 1 or 9999 off the calendar.
    if moment.year < clock.EARLIEST.year:
        raise BadInput(
            f"--at {text[:60]!r} is in the past; nothing was scheduled. Give a later time, or "
            "run the command without --at to change now."
        )
    due = moment.astimezone(UTC) if moment.year <= clock.LATEST.year else None
    if due is None or due > clock.LATEST:
        raise UsageError(
            f"--at {text[:60]!r} is past {clock.LATEST.year}, the latest time the tool keeps; "
            "give an earlier date."
        )
    return due


def check_future(due_at: datetime, now: datetime) -> None:
    """A schedule in the past is a mistake (exit 3), unless within a minute of now."""
    if due_at < now - GRACE:
        raise BadInput(
            f"--at {clock.iso(due_at)} is in the past (now is {clock.iso(now)}); nothing was "
            "scheduled. Give a later time, or run the command without --at to change now."
        )


@dataclass(frozen=True)
class ScheduleDetail:
    """A change to carry out at `due_at` (UTC), shown in the practice's `time_zone`.

    `command` is the plan of the command itself as resolved now: its question and
    consequences are what the admin confirms. `schedule_id` is set once stored.
    """

    action: Action
    due_at: datetime
    time_zone: str
    command: Plan[Any]
    backup_dir: Path | None = None
    schedule_id: int | None = None


def preview(
    command: Plan[Any], due_at: datetime, time_zone: str, backup_dir: Path | None = None
) -> Plan[ScheduleDetail]:
    """The command's plan as a schedule: its planned clients, to change at `due_at`."""
    detail = ScheduleDetail(command.action, due_at, time_zone, command, backup_dir)
    return Plan(Action.SCHEDULE, command.results, detail, command.consequences)


def apply(
    engine: Engine,
    plan: Plan[ScheduleDetail],
    change: Change,
    *,
    on_progress: ProgressCallback | None = None,
) -> Batch[ScheduleDetail]:
    """Store the schedule and audit it (one `schedule` event per client); change no client."""
    ids = [r.client_id for r in plan.results if r.outcome is Outcome.PLANNED and r.client_id]
    detail = plan.detail
    batch_id = audit.new_batch_id()
    with writing(engine) as session:
        row = Schedule(
            action=detail.action.value,
            client_ids=json.dumps(ids),
            due_at=detail.due_at,
            created_at=change.at,
            actor=change.actor,
            reason=change.reason,
            backup_dir=str(detail.backup_dir) if detail.backup_dir else None,
        )
        session.add(row)
        session.flush()
        schedule_id = int(row.id or 0)
        about = {"schedule": schedule_id, "action": detail.action.value}
        audit.append(
            session,
            (
                audit.NewEvent(Action.SCHEDULE, client_id, None, clock.iso(detail.due_at), about)
                for client_id in ids
            ),
            batch_id=batch_id,
            actor=change.actor,
            reason=change.reason,
            at=change.at,
        )
    if on_progress:
        on_progress(len(ids), len(ids))
    note = f"schedule {schedule_id}"
    results = [
        _as(result, Outcome.SCHEDULED, note) if result.outcome is Outcome.PLANNED else result
        for result in plan.results
    ]
    stored = ScheduleDetail(
        detail.action, detail.due_at, detail.time_zone, detail.command, detail.backup_dir,
        schedule_id,
    )  # fmt: skip
    return Batch(Action.SCHEDULE, results, stored, batch_id)


def _as(result: ChangeResult, outcome: Outcome, note: str | None) -> ChangeResult:
    return ChangeResult(
        result.reference, result.client_id, result.email, result.before, result.after,
        outcome, result.backup, result.sha256, note,
    )  # fmt: skip


# --- reading and cancelling -------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleInfo:
    id: int
    action: Action
    client_ids: tuple[int, ...]
    due_at: datetime
    created_at: datetime
    actor: str
    reason: str | None
    state: str
    backup_dir: str | None
    batch_id: str | None
    finished_at: datetime | None

    def as_record(self, *, with_clients: bool = False) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.id,
            "action": self.action.value,
            "due_at": clock.iso(self.due_at),
            "clients": len(self.client_ids),
            "state": self.state,
            "created_at": clock.iso(self.created_at),
            "actor": self.actor,
            "reason": self.reason,
            "batch": self.batch_id,
            "finished_at": clock.iso(self.finished_at),
        }
        if with_clients:
            record["client_ids"] = list(self.client_ids)
            record["backup_dir"] = self.backup_dir
        return record


def _info(row: Schedule) -> ScheduleInfo:
    try:
        ids = tuple(int(i) for i in json.loads(row.client_ids))
        action = Action(row.action)
        if action not in APPLIES_TO:
            raise ValueError(row.action)
    except (ValueError, TypeError):
        # Another writer's row: reported, never carried out half-understood.
        raise BadInput(
            f"Schedule {row.id} in the database is not one pbclients wrote (its action or "
            "client list cannot be read); cancel it with `pbclients schedule cancel "
            f"{row.id}`."
        ) from None
    return ScheduleInfo(
        int(row.id or 0), action, ids, row.due_at, row.created_at, row.actor, row.reason,
        row.state, row.backup_dir, row.batch_id, row.finished_at,
    )  # fmt: skip


def schedules(
    session: Session, *, due_by: datetime | None = None, everything: bool = False
) -> list[ScheduleInfo]:
    """Pending schedules (or all of them), oldest due first; `due_by` keeps those due by then."""
    query = select(Schedule).order_by(col(Schedule.due_at), col(Schedule.id))
    if not everything:
        query = query.where(Schedule.state == PENDING)
    if due_by is not None:
        query = query.where(col(Schedule.due_at) <= due_by)
    return [_info(row) for row in session.exec(query)]


def pending(engine: Engine, *, everything: bool = False) -> list[ScheduleInfo]:
    with reading(engine) as session:
        return schedules(session, everything=everything)


def find(engine: Engine, schedule_id: int) -> ScheduleInfo:
    with reading(engine) as session:
        return _found(session, schedule_id)


def _found(session: Session, schedule_id: int) -> ScheduleInfo:
    row = session.get(Schedule, schedule_id)
    if row is None:
        raise BadInput(f"There is no schedule {schedule_id}; list them with `pbclients schedule`.")
    return _info(row)


def cancel(engine: Engine, schedule_id: int, change: Change) -> tuple[ScheduleInfo, str]:
    """Cancel a pending schedule (audited per client); returns it and the audit batch id."""
    batch_id = audit.new_batch_id()
    with writing(engine) as session:
        info = _found(session, schedule_id)
        if info.state != PENDING:
            raise BadInput(
                f"Schedule {schedule_id} is {info.state}, not pending; there is nothing to cancel."
            )
        session.execute(
            update(Schedule)
            .where(col(Schedule.id) == schedule_id)
            .values(state=CANCELLED, finished_at=change.at)
        )
        about = {"schedule": schedule_id, "action": info.action.value}
        audit.append(
            session,
            (
                audit.NewEvent(Action.CANCEL_SCHEDULE, client, clock.iso(info.due_at), None, about)
                for client in info.client_ids
            ),
            batch_id=batch_id,
            actor=change.actor,
            reason=change.reason,
            at=change.at,
        )
    return info, batch_id


def erase_reasons(session: Session, purged: Collection[int]) -> None:
    """Purge calls this: a finished schedule's reason may name a purged client.

    The audit events of the schedule's other clients keep the reason, so the row's copy
    goes; a pending schedule keeps it, for the events its run will write.
    """
    finished = session.execute(
        select(col(Schedule.id), col(Schedule.client_ids)).where(
            col(Schedule.state) != PENDING, col(Schedule.reason).is_not(None)
        )
    ).all()
    gone = set(purged)
    named = []
    for schedule_id, client_ids in finished:
        try:
            if gone.intersection(json.loads(client_ids)):
                named.append(schedule_id)
        except (ValueError, TypeError):
            named.append(schedule_id)  # another writer's list: its reason cannot be vouched for
    if named:
        session.execute(update(Schedule).where(col(Schedule.id).in_(named)).values(reason=None))


# --- carrying out -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DueOutcome:
    """What became of one due schedule: its batch (None when no client was left to
    change) and the clients skipped because they left the state it applies to."""

    schedule: ScheduleInfo
    batch: Batch[Any] | None
    skipped: list[ChangeResult]

    @property
    def changed(self) -> int:
        return self.batch.changing if self.batch else 0


def eligible(
    session: Session, info: ScheduleInfo, now: datetime
) -> tuple[list[int], list[ChangeResult]]:
    """The schedule's clients its change still applies to, and the others as skipped:
    those that left the state it applies to, and for a deletion those under legal hold."""
    from pbclients.holds import held_ids

    selected = load_ids(session, list(info.client_ids))
    rows = session.execute(
        select(col(Client.id), col(Client.status)).join(selected, selected.c.id == Client.id)
    ).all()
    status = {int(client_id): value for client_id, value in rows}
    held = set(held_ids(session, status, now)) if info.action is Action.DELETE else set()
    applies = {s.value for s in APPLIES_TO[info.action]}
    eligible: list[int] = []
    skipped: list[ChangeResult] = []
    for client_id in info.client_ids:
        now_status = status.get(client_id)
        if now_status in applies and client_id not in held:
            eligible.append(client_id)
            continue
        if now_status is None:
            note = "no longer exists (purged)"
        elif client_id in held:
            note = "under legal hold"
        else:
            note = f"now {now_status}"
        skipped.append(
            ChangeResult(str(client_id), client_id, None, now_status, None, Outcome.SKIPPED,
                         note=note)
        )  # fmt: skip
    return eligible, skipped


def apply_due(
    engine: Engine, info: ScheduleInfo, now: datetime, default_backup_dir: Path
) -> DueOutcome:
    """Carry out one due schedule like its command typed now (see the module docstring)."""
    from pbclients import deletion, lifecycle

    with reading(engine) as session:
        changing, skipped = eligible(session, info, now)

    def mark_done(session: Session, batch_id: str | None) -> None:
        done = session.execute(
            update(Schedule)
            .where(col(Schedule.id) == info.id, col(Schedule.state) == PENDING)
            .values(state=DONE, batch_id=batch_id, finished_at=now)
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise DatabaseBusy(
                f"Schedule {info.id} was cancelled or carried out while this run worked on "
                "it; nothing of it was changed."
            )

    if not changing:
        with writing(engine) as session:
            mark_done(session, None)
        return DueOutcome(info, None, skipped)
    selection = Selection([Reference(str(i), "schedule", None) for i in changing])
    change = Change(info.actor, info.reason, now, origin={"schedule": info.id}, also=mark_done)
    batch: Batch[Any]
    if info.action is Action.DELETE:
        folder = Path(info.backup_dir) if info.backup_dir else default_backup_dir
        plan = deletion.preview(engine, deletion.Deletion(selection, folder))
        batch = deletion.apply(engine, plan, change)
    else:
        target = Status.DEACTIVATED if info.action is Action.DEACTIVATE else Status.ACTIVE
        request = lifecycle.StatusChange(selection, target)
        status_plan = lifecycle.preview(engine, request, with_consequences=False)
        batch = lifecycle.apply(engine, status_plan, change)
    if batch.batch_id is None:
        # Every client was already as the schedule wants (changed in between): still done.
        with writing(engine) as session:
            mark_done(session, None)
    return DueOutcome(info, batch, skipped)


def practice_time_zone(engine: Engine) -> str:
    with reading(engine) as session:
        return settings.time_zone(session)
