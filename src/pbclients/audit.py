"""The append-only, hash-chained audit trail.

Each event's hash covers its own content and the previous event's hash, and
the newest (id, hash) is kept as the chain's head in settings: an edited,
removed, reordered or truncated event breaks the chain where it happened.
Events hold client IDs only, so the trail can outlive a purge.

The one free-text field, `reason`, is covered through its SHA-256
(`reason_sha256`) rather than the text: an admin's reason may name the client
("Ana moved to Lisbon"), so purge erases the reason of the purged client's
events (`erase_reasons`) and keeps the digest, and the chain still verifies.
`verify` accepts an erased reason only on an event of a client purged after it.
Migration 0006 re-chained older trails this way once (see its docstring).

Operations append events in their own write transaction (`append`); the `audit`
command reads through `trail` and `check`, which open their own read.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, func, insert, text, update
from sqlmodel import Session, col, select

from pbclients import settings
from pbclients.clock import iso
from pbclients.db import reading
from pbclients.models import AuditEvent
from pbclients.operation import Action
from pbclients.roster_view import find_client
from pbclients.selection import parse_client_id

GENESIS = "0" * 64


@dataclass(frozen=True)
class NewEvent:
    action: Action
    client_id: int | None
    before: str | None
    after: str | None
    detail: dict[str, Any] | None = field(default=None)


@dataclass(frozen=True)
class ChainCheck:
    checked: int
    broken_at: int | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None


def new_batch_id() -> str:
    return uuid.uuid4().hex[:12]


# Same output as json.dumps(..., separators=(",", ":"), sort_keys=True), built once: bulk
# batches hash one event per client.
_HASH_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True)

# Events per INSERT statement: bounds memory on 100,000-client batches.
INSERT_CHUNK = 10_000


def event_hash(prev_hash: str, content: Sequence[Any]) -> str:
    """The chain's hash; `content` holds the reason's digest (`reason_digest`), not its text."""
    payload = _HASH_JSON.encode([prev_hash, *content])
    return hashlib.sha256(payload.encode()).hexdigest()


def reason_digest(reason: str | None) -> str | None:
    return None if reason is None else hashlib.sha256(reason.encode()).hexdigest()


def _content(
    event_id: int,
    at: datetime,
    actor: str,
    action: str,
    client_id: int | None,
    before: str | None,
    after: str | None,
    batch_id: str,
    reason_sha256: str | None,
    detail: str | None,
) -> list[Any]:
    return [
        event_id, iso(at), actor, action, client_id, before, after, batch_id, reason_sha256,
        detail,
    ]  # fmt: skip


def _head(session: Session) -> tuple[int, str]:
    head = settings.get(session, settings.AUDIT_HEAD)
    if head is None:
        return 0, GENESIS
    last_id, last_hash = head.split(":", 1)
    return int(last_id), last_hash


def append(
    session: Session,
    events: Iterable[NewEvent],
    *,
    batch_id: str,
    actor: str,
    reason: str | None,
    at: datetime,
    origin: Mapping[str, Any] | None = None,
) -> int:
    """Append events in the caller's transaction (chunked multi-row inserts); returns the count.

    `origin` (a schedule, the automation policy) is added to every event's detail.
    """
    if session.get_bind().dialect.name == "postgresql":
        # Two writers must not both extend the chain from the same head.
        session.execute(text("SELECT pg_advisory_xact_lock(7310001)"))
    last_id, prev_hash = _head(session)
    write = _bulk_insert(session, at)
    stamp = iso(at)
    # One reason per batch: its digest is computed once, not once per event.
    digest_of_reason = reason_digest(reason)
    rows: list[dict[str, Any]] = []
    event_id = last_id
    for event in events:
        event_id += 1
        fields = {**(event.detail or {}), **origin} if origin else event.detail
        detail = json.dumps(fields, sort_keys=True) if fields is not None else None
        content = [
            event_id, stamp, actor, event.action, event.client_id, event.before, event.after,
            batch_id, digest_of_reason, detail,
        ]  # fmt: skip
        digest = event_hash(prev_hash, content)
        rows.append(
            {
                "id": event_id,
                "at": None,  # filled in by _bulk_insert
                "actor": actor,
                "action": event.action,
                "client_id": event.client_id,
                "before": event.before,
                "after": event.after,
                "batch_id": batch_id,
                "reason": reason,
                "detail": detail,
                "reason_sha256": digest_of_reason,
                "prev_hash": prev_hash,
                "hash": digest,
            }
        )
        prev_hash = digest
        if len(rows) == INSERT_CHUNK:
            write(rows)
            rows = []
    if rows:
        write(rows)
    if event_id > last_id:
        settings.put(session, settings.AUDIT_HEAD, f"{event_id}:{prev_hash}")
    return event_id - last_id


_KEYS = ("id", "at", "actor", "action", "client_id", "before", "after", "batch_id", "reason",
         "detail", "reason_sha256", "prev_hash", "hash")  # fmt: skip


def _bulk_insert(session: Session, at: datetime) -> Callable[[list[dict[str, Any]]], None]:
    """A writer of audit rows straight to the driver's executemany.

    Every row of a batch shares its time, so it is converted for the database once
    (as SQLAlchemy would) instead of once per row; SQLAlchemy's per-row parameter
    handling otherwise costs more than the insert itself on 100,000-client batches.
    """
    connection = session.connection()
    dialect = connection.dialect
    table = AuditEvent.__table__  # type: ignore[attr-defined]
    convert = table.c.at.type.dialect_impl(dialect).bind_processor(dialect)
    stored_at = convert(at) if convert else at
    compiled = insert(table).compile(dialect=dialect, column_keys=list(_KEYS))
    sql = str(compiled)
    order = compiled.positiontup if compiled.positional else None

    def write(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            row["at"] = stored_at
        if order is not None:
            connection.exec_driver_sql(sql, [tuple(row[key] for key in order) for row in rows])
        else:
            connection.exec_driver_sql(sql, rows)

    return write


def verify(session: Session) -> ChainCheck:
    """Recompute the chain from the first event; name the first event that does not fit.

    A reason must match its digest; an erased one (NULL, digest kept) must belong to a
    client purged later in the trail, since only purge erases reasons.
    """
    prev_hash = GENESIS
    expected_id = 1
    # Client id -> its first event with an erased reason, until a purge of that client.
    erased: dict[int, int] = {}
    query = select(AuditEvent).order_by(col(AuditEvent.id)).execution_options(yield_per=5000)
    # Close the (server-side, on PostgreSQL) cursor when a broken event ends the loop early.
    with session.exec(query) as rows:
        for event in rows:
            if event.id != expected_id:
                return ChainCheck(
                    expected_id - 1,
                    expected_id,
                    f"event {expected_id} is missing (next is {event.id})",
                )
            content = _content(
                event.id, event.at, event.actor, event.action, event.client_id, event.before,
                event.after, event.batch_id, event.reason_sha256, event.detail,
            )  # fmt: skip
            if event.prev_hash != prev_hash:
                return ChainCheck(
                    expected_id - 1, event.id, f"event {event.id} does not follow the one before it"
                )
            if event_hash(prev_hash, content) != event.hash or (
                event.reason is not None and reason_digest(event.reason) != event.reason_sha256
            ):
                return ChainCheck(expected_id - 1, event.id, f"event {event.id} was altered")
            if event.reason is None and event.reason_sha256 is not None:
                if event.client_id is None:
                    return ChainCheck(
                        expected_id - 1, event.id, f"event {event.id}'s reason was erased"
                    )
                erased.setdefault(event.client_id, event.id)
            elif event.action == Action.PURGE and event.client_id is not None:
                erased.pop(event.client_id, None)
            prev_hash = event.hash
            expected_id += 1
    checked = expected_id - 1
    if erased:
        client_id, event_id = min(erased.items(), key=lambda item: item[1])
        return ChainCheck(
            checked,
            event_id,
            f"event {event_id}'s reason was erased but client {client_id} was never purged",
        )
    head_id, head_hash = _head(session)
    if (head_id, head_hash) != (checked, prev_hash if checked else GENESIS):
        return ChainCheck(
            checked,
            checked + 1,
            f"the trail ends at event {checked} but its head says {head_id}: events were removed",
        )
    return ChainCheck(checked)


@dataclass(frozen=True)
class EventFilter:
    """Which events `trail` returns; `client` is an ID or an e-mail, as the user typed it."""

    client: str | None = None
    action: str | None = None  # any stored value, an `Action` or older
    batch_id: str | None = None
    since: datetime | None = None
    limit: int | None = None


def trail(engine: Engine, where: EventFilter) -> list[AuditEvent]:
    """The events that match, oldest first (the newest `limit` of them when limited)."""
    with reading(engine) as session:
        client_id = None
        if where.client is not None:
            # A bare ID need not exist any more: a purged client's events stay in the trail.
            text = where.client.strip()
            client_id = parse_client_id(text)
            if client_id is None:
                client_id = find_client(session, text).id
        return events(
            session,
            client_id=client_id,
            action=where.action,
            batch_id=where.batch_id,
            since=where.since,
            limit=where.limit,
        )


def as_record(event: AuditEvent) -> dict[str, Any]:
    """One event as `audit --format json|csv` gives it.

    An erased reason is null with `reason_erased` true (a reason never given is null too).
    """
    return {
        "id": event.id, "at": iso(event.at), "actor": event.actor, "action": event.action,
        "client_id": event.client_id, "before": event.before, "after": event.after,
        "batch": event.batch_id, "reason": event.reason, "detail": event.detail,
        "reason_erased": is_erased(event),
    }  # fmt: skip


def is_erased(event: AuditEvent) -> bool:
    return event.reason is None and event.reason_sha256 is not None


def erase_reasons(session: Session, clients: Select[tuple[int]]) -> None:
    """Erase the reason text of these clients' events, keeping its digest (purge calls this).

    Only their own events: a batch's reason is shared by every client of the batch, and
    the other clients' events keep it.
    """
    session.execute(
        update(AuditEvent)
        .where(col(AuditEvent.client_id).in_(clients), col(AuditEvent.reason).is_not(None))
        .values(reason=None)
        .execution_options(synchronize_session=False)
    )


def practice_id(session: Session) -> str | None:
    """The hash of the trail's first event: the same in every copy of one practice's database.

    Re-chaining (0006) and reason erasure keep it; the erasure ledger tells practices
    apart by it. None while the trail is empty.
    """
    query = select(AuditEvent.hash).order_by(col(AuditEvent.id)).limit(1)
    return session.exec(query).first()


def check(engine: Engine) -> ChainCheck:
    """`verify` in a read of its own."""
    with reading(engine) as session:
        return verify(session)


def events(
    session: Session,
    *,
    client_id: int | None = None,
    action: str | None = None,
    batch_id: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
) -> list[AuditEvent]:
    query = select(AuditEvent)
    if client_id is not None:
        query = query.where(AuditEvent.client_id == client_id)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    if batch_id is not None:
        query = query.where(AuditEvent.batch_id == batch_id)
    if since is not None:
        query = query.where(col(AuditEvent.at) >= since)
    # The newest events matter most when a limit cuts the list; show them oldest first.
    query = query.order_by(col(AuditEvent.id).desc())
    if limit is not None:
        query = query.limit(limit)
    return list(reversed(session.exec(query).all()))


def count(session: Session) -> int:
    return session.exec(select(func.count()).select_from(AuditEvent)).one()
