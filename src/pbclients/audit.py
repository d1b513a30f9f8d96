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
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring_ascii
from typing import Any, NamedTuple

from sqlalchemy import Engine, Select, func, text, update
from sqlmodel import Session, col, select

from pbclients import settings
from pbclients.clock import iso
from pbclients.db import reading
from pbclients.models import AuditEvent
from pbclients.operation import Action

GENESIS = "0" * 64


class NewEvent(NamedTuple):
    action: Action
    client_id: int | None
    before: str | None
    after: str | None
    detail: dict[str, Any] | None = None


# What `append` takes: a `NewEvent`, or a plain tuple of the same fields, which a bulk
# batch builds with `zip` for a million clients without a `NewEvent.__new__` call each.
EventFields = tuple[Action, int | None, str | None, str | None, dict[str, Any] | None]


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
    events: Iterable[EventFields],
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
    write, stored_at = _bulk_insert(session, at)
    stamp = iso(at)
    # One reason per batch: its digest is computed once, not once per event.
    digest_of_reason = reason_digest(reason)
    # The loop below runs once per client of a bulk batch: it builds each row as the
    # tuple the driver takes and hashes the same values as `event_hash` (`_content`),
    # without the intermediate lists and dicts. The hashed text is `_HASH_JSON`'s
    # encoding written out, the batch's own values encoded once: the encoder's
    # Python-level `iterencode` cost more than the SHA-256 itself. `verify` hashes with
    # the encoder; a property test appends events of any text and verifies them.
    quote = encode_basestring_ascii
    when_who = f"{quote(stamp)},{quote(actor)}"
    why = f"{quote(batch_id)},{'null' if digest_of_reason is None else quote(digest_of_reason)}"
    sha256 = hashlib.sha256
    rows: list[tuple[Any, ...]] = []
    event_id = last_id
    for action, client_id, before, after, event_detail in events:
        event_id += 1
        fields = {**(event_detail or {}), **origin} if origin else event_detail
        detail = _DETAIL_JSON.encode(fields) if fields is not None else None
        digest = sha256(
            f"[{quote(prev_hash)},{event_id},{when_who},{quote(action)},"
            f"{'null' if client_id is None else int(client_id)},"
            f"{'null' if before is None else quote(before)},"
            f"{'null' if after is None else quote(after)},{why},"
            f"{'null' if detail is None else quote(detail)}]".encode()
        ).hexdigest()
        rows.append(
            (event_id, stored_at, actor, action, client_id, before, after, batch_id, reason,
             detail, digest_of_reason, prev_hash, digest)
        )  # fmt: skip
        prev_hash = digest
        if len(rows) == INSERT_CHUNK:
            write(rows)
            rows = []
    if rows:
        write(rows)
    if event_id > last_id:
        settings.put(session, settings.AUDIT_HEAD, f"{event_id}:{prev_hash}")
    return event_id - last_id


# What json.dumps(detail, sort_keys=True) writes, with the encoder built once.
_DETAIL_JSON = json.JSONEncoder(sort_keys=True)

# The order of the values in each row `append` builds.
_KEYS = ("id", "at", "actor", "action", "client_id", "before", "after", "batch_id", "reason",
         "detail", "reason_sha256", "prev_hash", "hash")  # fmt: skip


def _bulk_insert(
    session: Session, at: datetime
) -> tuple[Callable[[list[tuple[Any, ...]]], None], Any]:
    """A writer of audit rows (tuples in `_KEYS` order) straight to the driver (SQLite:
    executemany; PostgreSQL: COPY), and `at` as that driver stores it.

    Every row of a batch shares its time, so it is converted for the database once
    (as SQLAlchemy would) instead of once per row; SQLAlchemy's per-row parameter
    handling otherwise costs more than the insert itself on 100,000-client batches.
    """
    connection = session.connection()
    dialect = connection.dialect
    table = AuditEvent.__table__  # type: ignore[attr-defined]
    convert = table.c.at.type.dialect_impl(dialect).bind_processor(dialect)
    stored_at = convert(at) if convert else at
    quote = dialect.identifier_preparer.quote
    into = f"{quote(table.name)} ({', '.join(quote(key) for key in _KEYS)})"
    if dialect.name == "postgresql":
        # COPY, in the same transaction: psycopg's executemany sends every row as a
        # statement of its own, which costs six times the client CPU and several times
        # the wall time of streaming the rows.
        driver: Any = connection.connection.driver_connection  # a psycopg Connection

        def copy(rows: list[tuple[Any, ...]]) -> None:
            with driver.cursor() as cursor, cursor.copy(f"COPY {into} FROM STDIN") as stream:
                for row in rows:
                    stream.write_row(row)

        return copy, stored_at
    sql = f"INSERT INTO {into} VALUES ({', '.join(['?'] * len(_KEYS))})"

    def insert(rows: list[tuple[Any, ...]]) -> None:
        connection.exec_driver_sql(sql, rows)

    return insert, stored_at


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
