"""Legal hold: clients whose records must be kept whatever else is decided about them.

A held client cannot be deleted (`deletion` refuses it, exit 3), is never purged
(`purge` skips it and counts it) and is never selected by an automatic rule (the
policy's queries add `~held_clause(...)`). Deactivating and activating it stay allowed:
they keep every record. A client already deleted can be held too: it then stays
pending purge, its `purge_after` passing without a purge, until it is released.

A hold is one `legal_hold` row per client. Releasing deletes that row; the audit
trail's `hold` and `release` events (client ids only, the reason in the event's
reason) are the history. A hold given `until` a moment ends by itself then: from that
moment the row holds nothing (`held_clause` ignores it), and holding the client again
replaces it.

Hold and release follow the protocol of `pbclients.operation`: `preview` reads only,
`apply` is one write transaction that re-checks what the plan saw.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, delete, exists, insert, or_, select
from sqlmodel import Session, col

from pbclients import audit, clock
from pbclients.db import load_ids, reading, writing
from pbclients.errors import DatabaseBusy, UsageError
from pbclients.lookup import chunks
from pbclients.models import LegalHold
from pbclients.operation import Action, Batch, Change, Plan, ProgressCallback, carried_out
from pbclients.readdb import Reader
from pbclients.results import ChangeResult, Outcome
from pbclients.roster_view import Hold, holds_in_force
from pbclients.selection import Selection, resolve

HELD = "held"
NOT_HELD = "not held"


@dataclass(frozen=True)
class HoldRequest:
    """Hold the selected clients (`release=False`, with a reason) or release them."""

    selection: Selection
    release: bool = False
    reason: str | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class HoldDetail:
    """What the plan holds to: release or hold, and a hold's reason and end."""

    release: bool
    reason: str | None
    until: datetime | None


def in_force(now: datetime) -> ColumnElement[bool]:
    """The `legal_hold` rows that hold at `now` (no end, or an end still to come)."""
    return or_(col(LegalHold.until).is_(None), col(LegalHold.until) > now)


def held_clause(client_id: Any, now: datetime | None = None) -> ColumnElement[bool]:
    """SQL truth of "the client `client_id` (a column) is under legal hold at `now`".

    For set-based queries: `select(Client.id).where(~held_clause(Client.id))` leaves
    held clients out; it is one index probe per row (the hold's key is the client id).
    """
    moment = now or clock.now()
    return exists().where(col(LegalHold.client_id) == client_id, in_force(moment))


def holds_of(session: Session, client_ids: Iterable[int], now: datetime) -> dict[int, Hold]:
    """The holds in force at `now` of these clients (those not held are left out)."""
    return holds_in_force(Reader.of(session), client_ids, now)


def held_ids(session: Session, client_ids: Iterable[int], now: datetime) -> list[int]:
    """Which of these clients are held at `now`, in id order."""
    held: list[int] = []
    for chunk in chunks(sorted(set(client_ids))):
        query = select(col(LegalHold.client_id)).where(
            col(LegalHold.client_id).in_(chunk), in_force(now)
        )
        held.extend(int(client_id) for client_id in session.execute(query).scalars())
    return sorted(held)


def hold_of(engine: Engine, client_id: int, now: datetime | None = None) -> Hold | None:
    """One client's hold in force, for `show`; None when not held."""
    with reading(engine) as session:
        return holds_of(session, [client_id], now or clock.now()).get(client_id)


def held_message(client_ids: list[int], verb: str) -> str:
    """The sentence that refuses to `verb` held clients, naming them (at most ten)."""
    shown = ", ".join(str(client_id) for client_id in client_ids[:10])
    more = f" and {len(client_ids) - 10} more" if len(client_ids) > 10 else ""
    noun = "Client" if len(client_ids) == 1 else "Clients"
    is_are = "is" if len(client_ids) == 1 else "are"
    return (
        f"{noun} {shown}{more} {is_are} under legal hold and cannot be {verb}; nothing was "
        "changed. Release the hold first with `pbclients hold --release CLIENT`, or leave "
        "them out."
    )


def preview(engine: Engine, request: HoldRequest) -> Plan[HoldDetail]:
    """Who `apply` would hold or release; reads only.

    Holding needs a reason and an end (if any) still to come: both are usage errors
    (exit 2) before anything is read.
    """
    now = clock.now()
    if not request.release:
        if request.reason is None or not request.reason.strip():
            raise UsageError(
                "A legal hold needs a reason: add --reason TEXT (e.g. a case or request number)."
            )
        if request.until is not None and request.until <= now:
            raise UsageError(
                f"--until {clock.iso(request.until)} has already passed; give a later date, "
                "or no --until to hold until released."
            )
    action = Action.RELEASE if request.release else Action.HOLD
    with reading(engine) as session:
        resolved = resolve(session, request.selection)
        held = holds_of(session, [client.client_id for client in resolved.clients], now)
    results = []
    for client in resolved.clients:
        is_held = client.client_id in held
        # Release: changing a held client; hold: changing one that is not held.
        same = is_held is not request.release
        results.append(
            ChangeResult(
                client.reference,
                client.client_id,
                client.email,
                HELD if is_held else NOT_HELD,
                NOT_HELD if request.release else HELD,
                Outcome.UNCHANGED if same else Outcome.PLANNED,
                note=_note(held.get(client.client_id)) if same and is_held else None,
            )
        )
    results.extend(
        ChangeResult(ref.text, None, None, None, None, Outcome.SKIPPED, note="unknown")
        for ref in resolved.skipped
    )
    detail = HoldDetail(request.release, request.reason, request.until)
    return Plan(action, results, detail)


def _note(hold: Hold | None) -> str | None:
    if hold is None:
        return None
    until = f" until {clock.iso(hold.until)}" if hold.until else ""
    return f"held since {clock.iso(hold.held_at)}{until}"


def apply(
    engine: Engine,
    plan: Plan[HoldDetail],
    change: Change,
    *,
    on_progress: ProgressCallback | None = None,
) -> Batch[HoldDetail]:
    """Hold or release the planned clients in one transaction, one audit event each.

    The transaction re-checks that each planned client is still (not) held as the plan
    saw; if another admin held or released one meanwhile, nothing changes (exit 5).
    A hold's reason goes into the events' reason, never into their detail.
    """
    todo = [r.client_id for r in plan.results if r.outcome is Outcome.PLANNED and r.client_id]
    results = [carried_out(result) for result in plan.results]
    if not todo:
        return Batch(plan.action, results, plan.detail)
    detail = plan.detail
    batch_id = audit.new_batch_id()
    with writing(engine) as session:
        now_held = set(held_ids(session, todo, change.at))
        expected = set(todo) if detail.release else set()
        if now_held != expected:
            raise DatabaseBusy(
                "Some clients were held or released while this command ran; nothing was "
                "changed, run it again."
            )
        selected = load_ids(session, todo)
        in_batch = col(LegalHold.client_id).in_(select(selected.c.id))
        # A hold that ended by itself leaves its row behind: holding again replaces it.
        session.execute(delete(LegalHold).where(in_batch))
        if not detail.release:
            session.execute(
                insert(LegalHold),
                [
                    {
                        "client_id": client_id,
                        "reason": detail.reason,
                        "held_at": change.at,
                        "until": detail.until,
                        "actor": change.actor,
                    }
                    for client_id in todo
                ],
            )
        if on_progress:
            on_progress(len(todo), len(todo))
        event_detail = (
            {"until": clock.iso(detail.until)} if not detail.release and detail.until else None
        )
        audit.append(
            session,
            (
                audit.NewEvent(plan.action, r.client_id, r.before, r.after, event_detail)
                for r in results
                if r.outcome is Outcome.CHANGED
            ),
            batch_id=batch_id,
            actor=change.actor,
            reason=change.reason or detail.reason,
            at=change.at,
        )
    return Batch(plan.action, results, detail, batch_id)


def parse_until(text: str) -> datetime:
    """`--until`: a date (the hold lasts through that day, UTC) or an ISO-8601 moment."""
    from datetime import date, timedelta

    value = text.strip()
    try:
        day = date.fromisoformat(value)
    except ValueError:
        day = None
    if day is not None and len(value) == 10:
        try:
            return clock.as_utc(datetime.combine(day, datetime.min.time())) + timedelta(days=1)
        except OverflowError:
            raise UsageError(f"--until {text!r} is past the end of the calendar.") from None
    return clock.parse_moment(value, "--until")
