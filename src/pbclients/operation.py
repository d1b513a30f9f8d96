"""The one shape of every changing operation: preview, then apply.

Each operation (add, activate, deactivate, delete, export, restore, undo,
purge, edit, enrol, unenrol) is two functions of its module and two typed values:

    plan = preview(engine, request)           # reads only; takes no lock
    batch = apply(engine, plan, change)       # one write transaction

`preview` resolves what the request names, decides for each client what would
happen (`Outcome.PLANNED`, `UNCHANGED` or `SKIPPED`) and gathers what the admin
must hear before confirming: `Plan.consequences` and the operation's `Detail`,
a frozen dataclass of its own (the programs `add` creates, the retention
`delete` applies), never a dict read by string keys.

`apply` carries out exactly that plan, without resolving anything again, in one
write transaction that first re-checks what the plan saw: a client changed in
between stops the whole operation with nothing changed (exit 5), never a
silent overwrite. It records one audit event per changed client, holding
client IDs only, and returns the `Batch`. `Change` says who acts, why and when.

The CLI runs every operation through one helper (`pbclients.cli.run.carry_out`):
dry run, confirmation with the operation's consequence lines, progress,
rendering and the undo hint are written once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pbclients import clock
from pbclients.results import ChangeResult, Consequences, Outcome

if TYPE_CHECKING:
    from sqlmodel import Session

ProgressCallback = Callable[[int, int], None]


class Action(StrEnum):
    """What an audit event records, and what a batch did."""

    ADD = "add"
    ACTIVATE = "activate"
    DEACTIVATE = "deactivate"
    DELETE = "delete"
    UNDELETE = "undelete"
    EXPORT = "export"
    RESTORE = "restore"
    PURGE = "purge"
    EDIT = "edit"
    ENROL = "enrol"
    UNENROL = "unenrol"
    UNDO = "undo"
    SET_LIMIT = "plan.set_limit"
    SET_RETENTION = "plan.set_retention"
    HOLD = "hold"
    RELEASE = "release"
    PRUNE = "prune"
    SET_RECORD_RETENTION = "plan.set_record_retention"
    SET_TIMEZONE = "plan.set_timezone"
    SET_BACKUP_KEY = "plan.set_backup_key_file"
    SCHEDULE = "schedule"
    CANCEL_SCHEDULE = "schedule.cancel"
    SET_POLICY = "policy.set"


@dataclass(frozen=True)
class Change:
    """Who makes a change, why, and when (the audit trail's columns)."""

    actor: str
    reason: str | None = None
    at: datetime = field(default_factory=clock.now)
    # Where a change comes from when nobody typed it just now (a schedule, the
    # automation policy); merged into the detail of each of its audit events.
    origin: Mapping[str, Any] | None = None
    # Work that must commit or roll back with the change itself, given the session and
    # the batch id: `run-due` marks a schedule done in the same transaction.
    also: Callable[[Session, str], None] | None = None


@dataclass(frozen=True)
class NoDetail:
    """For operations whose plan says nothing beyond its results."""


Detail = TypeVar("Detail")


@dataclass(frozen=True)
class Plan(Generic[Detail]):
    """What an operation would do; made by `preview`, carried out by `apply`."""

    action: Action
    results: list[ChangeResult]
    detail: Detail
    consequences: Consequences | None = None

    def count(self, outcome: Outcome) -> int:
        return sum(1 for result in self.results if result.outcome is outcome)

    @property
    def changing(self) -> int:
        """Clients the plan would change."""
        return self.count(Outcome.PLANNED)


@dataclass(frozen=True)
class Batch(Generic[Detail]):
    """What an operation did; `batch_id` is None when it changed nothing."""

    action: Action
    results: list[ChangeResult]
    detail: Detail
    batch_id: str | None = None

    def count(self, outcome: Outcome) -> int:
        return sum(1 for result in self.results if result.outcome is outcome)

    @property
    def changing(self) -> int:
        """Clients the batch changed."""
        return self.count(Outcome.CHANGED)


def carried_out(result: ChangeResult) -> ChangeResult:
    """A planned result as `apply` reports it once done."""
    if result.outcome is not Outcome.PLANNED:
        return result
    # Built directly: dataclasses.replace costs seconds over 100,000 results.
    return ChangeResult(
        result.reference,
        result.client_id,
        result.email,
        result.before,
        result.after,
        Outcome.CHANGED,
        result.backup,
        result.sha256,
        result.note,
    )
