"""Erasable reasons: the audit chain covers a SHA-256 of each reason, not the text.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

Every event gets `reason_sha256`, and the whole trail is re-chained once, here: each
event's hash is recomputed over the digest instead of the text (hash version 2). After
that, purge may erase a reason (it may name the client) and `audit verify` still
passes. Keeping version-1 hashes for old events instead would have left their reasons
impossible to erase without breaking the chain, and those are exactly the reasons of
clients deleted before this upgrade.

Re-chaining rewrites every hash, so it first checks the old chain as it stands and
records the result in the trail, in a last event (`audit.rechain`) whose detail holds
the old head and whether the old chain was intact (or where it broke): a trail edited
before the upgrade stays on record as such.

The hashing is spelled out here rather than imported from pbclients.audit, so that
this migration keeps doing exactly this whatever later versions change.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from pbclients import clock
from pbclients.models import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_GENESIS = "0" * 64
_PAGE = 5_000
_ENCODE = json.JSONEncoder(separators=(",", ":"), sort_keys=True)

_events = sa.table(
    "audit_event",
    sa.column("id", sa.Integer()),
    sa.column("at", UTCDateTime()),
    sa.column("actor", sa.String()),
    sa.column("action", sa.String()),
    sa.column("client_id", sa.Integer()),
    sa.column("before", sa.String()),
    sa.column("after", sa.String()),
    sa.column("batch_id", sa.String()),
    sa.column("reason", sa.String()),
    sa.column("detail", sa.Text()),
    sa.column("reason_sha256", sa.String()),
    sa.column("prev_hash", sa.String()),
    sa.column("hash", sa.String()),
)
_settings = sa.table("setting", sa.column("key", sa.String()), sa.column("value", sa.String()))


def _hash(prev_hash: str, content: list[Any]) -> str:
    return hashlib.sha256(_ENCODE.encode([prev_hash, *content]).encode()).hexdigest()


def _digest(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


def upgrade() -> None:
    op.add_column("audit_event", sa.Column("reason_sha256", sa.String(), nullable=True))
    connection = op.get_bind()
    head = connection.execute(
        sa.select(_settings.c.value).where(_settings.c.key == "audit_head")
    ).scalar()
    old_prev = new_prev = _GENESIS
    last_id = 0
    broken: str | None = None
    while True:
        page = connection.execute(
            sa.select(_events).where(_events.c.id > last_id).order_by(_events.c.id).limit(_PAGE)
        ).all()
        if not page:
            break
        updates = []
        for row in page:
            stamp = clock.iso(row.at)
            if broken is None:
                if row.id != last_id + 1:
                    broken = f"event {last_id + 1} is missing (next is {row.id})"
                elif row.prev_hash != old_prev:
                    broken = f"event {row.id} does not follow the one before it"
                else:
                    old = [row.id, stamp, row.actor, row.action, row.client_id, row.before,
                           row.after, row.batch_id, row.reason, row.detail]  # fmt: skip
                    if _hash(old_prev, old) != row.hash:
                        broken = f"event {row.id} was altered"
            old_prev = row.hash
            digest = _digest(row.reason)
            new = [row.id, stamp, row.actor, row.action, row.client_id, row.before, row.after,
                   row.batch_id, digest, row.detail]  # fmt: skip
            new_hash = _hash(new_prev, new)
            updates.append({"key": row.id, "digest": digest, "prev": new_prev, "new": new_hash})
            new_prev = new_hash
            last_id = row.id
        connection.execute(
            _events.update()
            .where(_events.c.id == sa.bindparam("key"))
            .values(
                reason_sha256=sa.bindparam("digest"),
                prev_hash=sa.bindparam("prev"),
                hash=sa.bindparam("new"),
            ),
            updates,
        )
    if last_id == 0:
        return  # an empty trail: nothing was chained, nothing to record
    if broken is None and head != f"{last_id}:{old_prev}":
        broken = f"the trail ends at event {last_id} but its head says {head}"
    detail = _ENCODE.encode(
        {"hash_version": 2, "rechained": last_id, "old_head": head, "old_chain": broken or "intact"}
    )
    event_id = last_id + 1
    at = clock.now()
    batch_id = uuid.uuid4().hex[:12]
    actor, action = "pbclients init", "audit.rechain"
    content = [event_id, clock.iso(at), actor, action, None, None, None, batch_id, None, detail]
    event_hash = _hash(new_prev, content)
    connection.execute(
        _events.insert().values(
            id=event_id, at=at, actor=actor, action=action, client_id=None, before=None,
            after=None, batch_id=batch_id, reason=None, detail=detail, reason_sha256=None,
            prev_hash=new_prev, hash=event_hash,
        )
    )  # fmt: skip
    new_head = f"{event_id}:{event_hash}"
    if head is None:
        connection.execute(_settings.insert().values(key="audit_head", value=new_head))
    else:
        connection.execute(
            _settings.update().where(_settings.c.key == "audit_head").values(value=new_head)
        )


def downgrade() -> None:
    # Version-1 hashes cannot be restored once a reason has been erased: going back to
    # 0005 leaves a trail that an older pbclients reports as altered.
    with op.batch_alter_table("audit_event") as batch:
        batch.drop_column("reason_sha256")
