"""The practice's automation policy: which inactive clients `run-due` changes by itself.

Two rules, both off until the practice turns them on:

- `deactivate_after`: an active client inactive for that long is deactivated;
- `delete_after`: a deactivated client inactive for that long is deleted (with the
  same verified backup as `delete`). Only deactivated clients: a rule never deletes
  someone who still has portal access, so every automatic deletion was preceded by
  a deactivation the admin could see and undo.

A run never does more than `max_changes` (default 5% of the counted clients) in
total: over it, the policy changes nobody that run (exit 7). Clients in
`EXEMPTIONS` are never selected by a rule; it is the one list of why a client is
left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Engine, or_
from sqlmodel import Session, col, select

from pbclients import audit, settings
from pbclients.activity import Age, inactive_since, parse_age, upcoming_appointment
from pbclients.db import reading, writing
from pbclients.holds import held_clause
from pbclients.limits import MaxChanges, parse_max_changes
from pbclients.models import Client, PaymentPlan
from pbclients.operation import Action, Change
from pbclients.policy import Status

DEACTIVATE_AFTER = "policy_deactivate_after"
DELETE_AFTER = "policy_delete_after"
MAX_CHANGES = "policy_max_changes"
DEFAULT_MAX_CHANGES = MaxChanges(percent=5)
OFF = "off"


def _active_payment_plan(now: datetime) -> ColumnElement[bool]:
    found = select(col(PaymentPlan.client_id)).where(
        col(PaymentPlan.client_id) == Client.id, col(PaymentPlan.active)
    )
    return found.exists()


# Why a client is never selected by an automatic rule: (name, WHERE clause on Client
# given now). An upcoming appointment already makes a client active by definition
# (activity.inactive_since); it is listed too, so this list is the whole answer.
EXEMPTIONS: list[tuple[str, Callable[[datetime], ColumnElement[bool]]]] = [
    ("upcoming appointment", upcoming_appointment),
    ("active payment plan", _active_payment_plan),
    ("legal hold", lambda now: held_clause(Client.id, now)),
]


def exempt(now: datetime) -> ColumnElement[bool]:
    return or_(*(clause(now) for _, clause in EXEMPTIONS))


@dataclass(frozen=True)
class AutomationPolicy:
    deactivate_after: Age | None = None
    delete_after: Age | None = None
    max_changes: MaxChanges = DEFAULT_MAX_CHANGES

    @property
    def enabled(self) -> bool:
        return self.deactivate_after is not None or self.delete_after is not None

    def describe(self) -> str:
        """One line for the audit trail and the run log (no client data)."""
        return (
            f"deactivate-after={self.deactivate_after or OFF} "
            f"delete-after={self.delete_after or OFF} max-changes={self.max_changes}"
        )

    def as_record(self) -> dict[str, Any]:
        return {
            "deactivate_after": str(self.deactivate_after) if self.deactivate_after else None,
            "delete_after": str(self.delete_after) if self.delete_after else None,
            "max_changes": str(self.max_changes),
            "exemptions": [name for name, _ in EXEMPTIONS],
        }


def _age(session: Session, key: str, option: str) -> Age | None:
    stored = settings.get(session, key)
    if stored is None or stored == OFF:
        return None
    return parse_age(stored, f"The stored {option}")


def read(session: Session) -> AutomationPolicy:
    stored_cap = settings.get(session, MAX_CHANGES)
    return AutomationPolicy(
        _age(session, DEACTIVATE_AFTER, "--deactivate-after"),
        _age(session, DELETE_AFTER, "--delete-after"),
        parse_max_changes(stored_cap, "The stored --max-changes")
        if stored_cap is not None
        else DEFAULT_MAX_CHANGES,
    )


def current(engine: Engine) -> AutomationPolicy:
    with reading(engine) as session:
        return read(session)


Setting = Age | Literal["off"] | None


def configure(
    engine: Engine,
    change: Change,
    *,
    deactivate_after: Setting = None,
    delete_after: Setting = None,
    max_changes: MaxChanges | None = None,
) -> AutomationPolicy:
    """Change the rules given (None keeps one as it is) in one audited transaction."""
    with writing(engine) as session:
        before = read(session)
        for key, value in ((DEACTIVATE_AFTER, deactivate_after), (DELETE_AFTER, delete_after)):
            if value is not None:
                settings.put(session, key, str(value))
        if max_changes is not None:
            settings.put(session, MAX_CHANGES, str(max_changes))
        after = read(session)
        audit.append(
            session,
            [audit.NewEvent(Action.SET_POLICY, None, before.describe(), after.describe())],
            batch_id=audit.new_batch_id(),
            actor=change.actor,
            reason=change.reason,
            at=change.at,
        )
        return after


@dataclass(frozen=True)
class Candidates:
    """The clients the policy's rules select at one moment, by rule."""

    deactivate: list[int]
    delete: list[int]

    @property
    def total(self) -> int:
        return len(self.deactivate) + len(self.delete)


def _selected(
    session: Session, status: Status, age: Age | None, at: datetime, now: datetime
) -> list[int]:
    if age is None:
        return []
    query = (
        select(col(Client.id))
        .where(
            Client.status == status.value,
            inactive_since(age.before(at), now),
            ~exempt(now),
        )
        .order_by(col(Client.id))
    )
    return [int(client_id or 0) for client_id in session.exec(query)]


def candidates(
    session: Session, policy: AutomationPolicy, now: datetime, at: datetime | None = None
) -> Candidates:
    """Who the rules select at `at` (default now) if nothing happens before then.

    Set-based: one statement per rule (see activity.inactive_since).
    """
    moment = at or now
    return Candidates(
        _selected(session, Status.ACTIVE, policy.deactivate_after, moment, now),
        _selected(session, Status.DEACTIVATED, policy.delete_after, moment, now),
    )


def cap(session: Session, policy: AutomationPolicy) -> int:
    """The policy's cap in clients, today."""
    counted = 0
    if policy.max_changes.needs_counted:
        from pbclients.plan import usage

        counted = usage(session).counted
    return policy.max_changes.limit(counted)
