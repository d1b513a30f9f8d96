"""Reading the audit trail (`pbclients audit`): the events that match, through the bare driver.

Writing and verifying the chain is pbclients.audit's; this half imports neither
SQLAlchemy nor the models, so `audit --limit 20` answers as fast as its query.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pbclients.clock import iso
from pbclients.lookup import parse_client_id
from pbclients.readdb import Database, utc
from pbclients.roster_view import database_of, find_client_id

if TYPE_CHECKING:
    from sqlalchemy import Engine


@dataclass(frozen=True)
class EventFilter:
    """Which events `trail` returns; `client` is an ID or an e-mail, as the user typed it."""

    client: str | None = None
    action: str | None = None  # any stored value, an `Action` or older
    batch_id: str | None = None
    since: datetime | None = None
    limit: int | None = None


@dataclass(frozen=True)
class TrailEvent:
    """One event as stored (the chain's hashes aside)."""

    id: int
    at: datetime
    actor: str
    action: str
    client_id: int | None
    before: str | None
    after: str | None
    batch_id: str
    reason: str | None
    detail: str | None
    reason_sha256: str | None

    @property
    def reason_erased(self) -> bool:
        """Purge erased the reason and kept its digest (a reason never given has neither)."""
        return self.reason is None and self.reason_sha256 is not None

    def as_record(self) -> dict[str, Any]:
        """The event as `audit --format json|csv` gives it; an erased reason is null."""
        return {
            "id": self.id, "at": iso(self.at), "actor": self.actor, "action": self.action,
            "client_id": self.client_id, "before": self.before, "after": self.after,
            "batch": self.batch_id, "reason": self.reason, "detail": self.detail,
            "reason_erased": self.reason_erased,
        }  # fmt: skip


_COLUMNS = (
    "audit_event.id, audit_event.at, audit_event.actor, audit_event.action, "
    "audit_event.client_id, audit_event.before, audit_event.after, audit_event.batch_id, "
    "audit_event.reason, audit_event.detail, audit_event.reason_sha256"
)


def trail(source: Database | Engine, where: EventFilter) -> list[TrailEvent]:
    """The events that match, oldest first (the newest `limit` of them when limited)."""
    with database_of(source).read() as reader:
        conditions: list[str] = []
        values: list[Any] = []
        if where.client is not None:
            # A bare ID need not exist any more: a purged client's events stay in the trail.
            text = where.client.strip()
            client_id = parse_client_id(text)
            conditions.append("audit_event.client_id = ?")
            values.append(client_id if client_id is not None else find_client_id(reader, text))
        if where.action is not None:
            conditions.append("audit_event.action = ?")
            values.append(str(where.action))
        if where.batch_id is not None:
            conditions.append("audit_event.batch_id = ?")
            values.append(where.batch_id)
        if where.since is not None:
            conditions.append("audit_event.at >= ?")
            values.append(reader.at(where.since))
        sql = f"SELECT {_COLUMNS} FROM audit_event"
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        # The newest events matter most when a limit cuts the list; show them oldest first.
        sql += " ORDER BY audit_event.id DESC"
        if where.limit is not None:
            sql += " LIMIT ?"
            values.append(where.limit)
        rows = reader.rows(sql, *values)
    return [
        TrailEvent(
            id=int(event_id),
            at=utc(at),
            actor=actor,
            action=action,
            client_id=client_id,
            before=before,
            after=after,
            batch_id=batch_id,
            reason=reason,
            detail=detail,
            reason_sha256=digest,
        )
        for (
            event_id,
            at,
            actor,
            action,
            client_id,
            before,
            after,
            batch_id,
            reason,
            detail,
            digest,
        ) in reversed(rows)
    ]
