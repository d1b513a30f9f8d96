"""`run-due` and `due`: what the practice decided in advance, carried out by one cron entry.

A run takes the purge's lock (an overlapping run is busy, exit 5) and does, in
order: every due schedule, oldest first (see schedules.apply_due); then the
automation policy (see automation); then the purge; then the pruning of the
backups whose retention has ended (see backup_store). A step that fails is
reported and the others still run: a scheduled deletion whose backup cannot be
written stays pending (exit 4), a policy that would exceed its cap changes
nobody (exit 7), and the purge still happens. The run log gets one line with
each step's counts and the exit code, never client data.

`upcoming` answers "what will happen by then?" for `due --within` and for
`run-due --dry-run` (by now): per client, when, what and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from pbclients import automation, backup_store, clock, schedules
from pbclients.activity import last_activity
from pbclients.backup_store import PruneDetail
from pbclients.csvinput import Reference
from pbclients.db import reading
from pbclients.errors import ChangeLimitExceeded, ExitCode, PbClientsError
from pbclients.models import Client
from pbclients.operation import Action, Batch, Change
from pbclients.policy import Status
from pbclients.purge import LogError, PurgeDetail, due_query, exclusive_run, purge_locked
from pbclients.selection import Selection


@dataclass(frozen=True)
class PolicyOutcome:
    """The policy step: its candidates and cap, and what it did (or why not)."""

    policy: automation.AutomationPolicy
    candidates: automation.Candidates
    limit: int
    deleted: Batch[Any] | None = None
    deactivated: Batch[Any] | None = None
    # Why the policy changed nobody: "off", or "over-cap" (its candidates exceed `limit`).
    skipped: str | None = None


@dataclass
class DueRun:
    schedules: list[schedules.DueOutcome] = field(default_factory=list)
    policy: PolicyOutcome | None = None
    purge: Batch[PurgeDetail] | None = None
    prune: Batch[PruneDetail] | None = None
    # (step, error) for each step that failed; the run went on with the next one.
    failures: list[tuple[str, PbClientsError]] = field(default_factory=list)

    @property
    def exit_code(self) -> ExitCode:
        return self.failures[0][1].exit_code if self.failures else ExitCode.OK


class DueRunFailed(PbClientsError):
    """One or more steps of a run failed; the run is kept for the report."""

    def __init__(self, run: DueRun) -> None:
        self.run = run
        self.exit_code = run.exit_code
        steps = "; ".join(f"{step}: {error}" for step, error in run.failures)
        super().__init__(steps)


def run_due(
    engine: Engine,
    actor: str,
    backup_dir: Path,
    *,
    on_log_error: LogError | None = None,
) -> DueRun:
    """One whole run at clock.now(); raises DueRunFailed after the last step if one failed."""
    now = clock.now()
    run = DueRun()
    with exclusive_run(engine, Change(actor, None, now), on_log_error) as (held, log):
        log.notes["command"] = "run-due"
        with reading(engine) as session:
            due = schedules.schedules(session, due_by=now)
        for info in due:
            try:
                run.schedules.append(schedules.apply_due(engine, info, now, backup_dir))
            except PbClientsError as error:
                run.failures.append((f"schedule {info.id}", error))
        log.notes["schedules"] = str(len(run.schedules))
        log.notes["scheduled_changed"] = str(sum(o.changed for o in run.schedules))
        log.notes["schedules_failed"] = str(len(due) - len(run.schedules))
        run.policy = _run_policy(engine, actor, now, backup_dir, run)
        log.notes["policy"] = _policy_note(run.policy)
        try:
            run.purge = purge_locked(engine, Change(actor, None, now), held, log)
        except PbClientsError as error:
            run.failures.append(("purge", error))
        # After the purge: a client purged this run may have reached the end of retention.
        try:
            plan = backup_store.preview(engine, backup_store.Prune(backup_dir))
            run.prune = backup_store.apply(engine, plan, Change(actor, None, now))
            log.notes["pruned"] = str(run.prune.changing)
        except PbClientsError as error:
            run.failures.append(("prune", error))
        if run.failures:
            raise DueRunFailed(run)
    return run


def _policy_note(outcome: PolicyOutcome) -> str:
    if outcome.skipped:
        return outcome.skipped
    deleted = outcome.deleted.changing if outcome.deleted else 0
    deactivated = outcome.deactivated.changing if outcome.deactivated else 0
    return f"deactivated:{deactivated},deleted:{deleted}"


def _run_policy(
    engine: Engine, actor: str, now: datetime, backup_dir: Path, run: DueRun
) -> PolicyOutcome:
    from pbclients import deletion, lifecycle

    with reading(engine) as session:
        policy = automation.read(session)
        found = automation.candidates(session, policy, now)
        limit = automation.cap(session, policy)
    if not policy.enabled:
        return PolicyOutcome(policy, found, limit, skipped="off")
    if found.total > limit:
        run.failures.append(
            (
                "policy",
                ChangeLimitExceeded(
                    f"the automation policy would change {found.total:,} clients, more than "
                    f"its cap of {limit:,}, so it changed nobody this run; review them with "
                    "`pbclients due`, then raise the cap with `pbclients policy set "
                    "--max-changes` or change the clients by hand."
                ),
            )
        )
        return PolicyOutcome(policy, found, limit, skipped="over-cap")
    deleted = deactivated = None
    if found.delete:
        rule = f"delete-after {policy.delete_after}"
        try:
            plan = deletion.preview(engine, deletion.Deletion(_ids(found.delete), backup_dir))
            deleted = deletion.apply(engine, plan, _policy_change(actor, now, rule))
        except PbClientsError as error:
            run.failures.append(("policy deletions", error))
    if found.deactivate:
        rule = f"deactivate-after {policy.deactivate_after}"
        request = lifecycle.StatusChange(_ids(found.deactivate), Status.DEACTIVATED)
        try:
            status_plan = lifecycle.preview(engine, request, with_consequences=False)
            deactivated = lifecycle.apply(engine, status_plan, _policy_change(actor, now, rule))
        except PbClientsError as error:
            run.failures.append(("policy deactivations", error))
    return PolicyOutcome(policy, found, limit, deleted, deactivated)


def _ids(client_ids: list[int]) -> Selection:
    return Selection([Reference(str(i), "policy", None) for i in client_ids])


def _policy_change(actor: str, now: datetime, rule: str) -> Change:
    return Change(actor, f"automation policy: {rule}", now, origin={"policy": rule})


# --- what will happen -------------------------------------------------------------------------


@dataclass(frozen=True)
class Upcoming:
    """One client's change to come: when, what, why (`source`), and who, to warn them."""

    at: datetime
    action: str
    client_id: int
    source: str
    name: str | None = None
    email: str | None = None

    def as_record(self) -> dict[str, Any]:
        return {
            "at": clock.iso(self.at),
            "action": self.action,
            "id": self.client_id,
            "name": self.name,
            "email": self.email,
            "source": self.source,
        }


@dataclass(frozen=True)
class Outlook:
    items: list[Upcoming]
    policy: automation.AutomationPolicy
    policy_total: int
    policy_limit: int

    @property
    def policy_over_cap(self) -> bool:
        return self.policy_total > self.policy_limit


def upcoming(engine: Engine, now: datetime, until: datetime) -> Outlook:
    """Every change due by `until` if nothing happens before then, in time order."""
    items: list[Upcoming] = []
    with reading(engine) as session:
        for info in schedules.schedules(session, due_by=until):
            eligible, _ = schedules.eligible(session, info, max(info.due_at, now))
            items.extend(
                Upcoming(max(info.due_at, now), info.action.value, client_id,
                         f"schedule {info.id}")
                for client_id in eligible
            )  # fmt: skip
        policy = automation.read(session)
        found = automation.candidates(session, policy, now, until)
        last = last_activity(session, [*found.deactivate, *found.delete], now)
        rules = (
            (Action.DEACTIVATE, found.deactivate, policy.deactivate_after),
            (Action.DELETE, found.delete, policy.delete_after),
        )
        for action, ids, age in rules:
            if age is None:  # the rule is off: it selected nobody
                continue
            for client_id in ids:
                when = age.after(last[client_id])
                items.append(
                    Upcoming(max(when, now), action.value, client_id,
                             f"policy: inactive for {age}")
                )  # fmt: skip
        # The purge's own test of what is due (holds included), taken at `until`.
        purging = select(col(Client.id), col(Client.purge_after)).where(
            col(Client.id).in_(due_query(until))
        )
        for client_id, purge_after in session.execute(purging):
            items.append(Upcoming(max(purge_after, now), Action.PURGE.value, int(client_id),
                                  "retention ended"))  # fmt: skip
        items = _named(session, items)
        limit = automation.cap(session, policy)
    items.sort(key=lambda item: (item.at, item.client_id))
    return Outlook(items, policy, found.total, limit)


def _named(session: Session, items: list[Upcoming]) -> list[Upcoming]:
    """The items with each client's name and e-mail, read in chunks of ids."""
    from pbclients.lookup import chunks

    ids = sorted({item.client_id for item in items})
    who: dict[int, tuple[str, str]] = {}
    for chunk in chunks(ids):
        query = select(Client.id, Client.first_name, Client.last_name, Client.email).where(
            col(Client.id).in_(chunk)
        )
        for client_id, first, last, email in session.execute(query):
            who[int(client_id)] = (f"{first} {last}".strip(), email)
    return [
        Upcoming(i.at, i.action, i.client_id, i.source, *who.get(i.client_id, (None, None)))
        for i in items
    ]
