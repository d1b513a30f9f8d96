"""Adding clients and reading the roster (list, show)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, false, func, insert, or_
from sqlmodel import Session, col, select

from pbclients import audit, policy
from pbclients.clock import iso
from pbclients.csvinput import check_text
from pbclients.db import writing
from pbclients.errors import BadInput, UnknownClient
from pbclients.lifecycle import Change
from pbclients.models import RECORD_MODELS, Appointment, Client, Enrolment, Program
from pbclients.plan import ensure_room
from pbclients.policy import Status
from pbclients.results import Batch, ChangeResult, Outcome
from pbclients.selection import (
    can_match,
    chunks,
    find_program,
    live_email_owners,
    parse_client_id,
    shorten,
)

PAGE = 2_000


@dataclass(frozen=True)
class NewClient:
    email: str
    first_name: str
    last_name: str
    phone: str | None = None
    program: str | None = None
    where: str = ""  # "line 4 of new.csv", for messages


def add_clients(
    engine: Engine,
    new_clients: Sequence[NewClient],
    change: Change,
    *,
    dry_run: bool = False,
) -> Batch:
    """Add every client or none: refused on a duplicate e-mail or past the plan limit.

    A program named in the input that does not exist yet is created (and reported in
    `Batch.extra["new_programs"]`), so an import can start a new group program.
    """
    _refuse_control_characters(new_clients)
    with writing(engine) as session:
        _refuse_duplicates(session, new_clients)
        ensure_room(session, len(new_clients))
        program_ids, new_programs = _programs(session, new_clients, dry_run=dry_run)
        if dry_run:
            session.rollback()
            return Batch(
                "add",
                [
                    ChangeResult(c.email, None, c.email, None, "active", Outcome.PLANNED)
                    for c in new_clients
                ],
                dry_run=True,
                extra={"new_programs": new_programs},
            )
        rows = [
            {
                "email": c.email,
                "email_key": c.email.casefold(),
                "first_name": c.first_name,
                "last_name": c.last_name,
                "phone": c.phone,
                "status": Status.ACTIVE.value,
                "created_at": change.at,
            }
            for c in new_clients
        ]
        ids: list[int] = []
        for chunk in chunks(rows):
            ids.extend(
                session.scalars(
                    insert(Client).returning(col(Client.id), sort_by_parameter_order=True), chunk
                )
            )
        enrolments = [
            {
                "client_id": client_id,
                "program_id": program_ids[c.program.casefold()],
                "enrolled_at": change.at,
            }
            for client_id, c in zip(ids, new_clients, strict=True)
            if c.program
        ]
        if enrolments:
            session.execute(insert(Enrolment), enrolments)
        batch_id = audit.new_batch_id()
        audit.append(
            session,
            (audit.NewEvent("add", client_id, None, Status.ACTIVE.value) for client_id in ids),
            batch_id=batch_id,
            actor=change.actor,
            reason=change.reason,
            at=change.at,
        )
    results = [
        ChangeResult(c.email, client_id, c.email, None, Status.ACTIVE.value, Outcome.CHANGED)
        for client_id, c in zip(ids, new_clients, strict=True)
    ]
    return Batch("add", results, batch_id=batch_id, extra={"new_programs": new_programs})


def _refuse_control_characters(new_clients: Sequence[NewClient]) -> None:
    """The CLI checks each option and CSV cell as it reads them; this keeps any other
    caller from storing a NUL, an escape sequence or a bidi override either."""
    for client in new_clients:
        where = client.where or "The new client"
        for value in (client.email, client.first_name, client.last_name, client.phone,
                      client.program):  # fmt: skip
            if value:
                check_text(value, where)


def _refuse_duplicates(session: Session, new_clients: Sequence[NewClient]) -> None:
    first_seen: dict[str, NewClient] = {}
    for client in new_clients:
        key = client.email.casefold()
        if key in first_seen:
            raise BadInput(
                f"'{client.email}' appears twice ({first_seen[key].where} and {client.where}); "
                "nothing was added. Keep one row per client."
            )
        first_seen[key] = client
    owners = live_email_owners(session, list(first_seen))
    for key, client in first_seen.items():
        if key in owners:
            where = f" ({client.where})" if client.where else ""
            raise BadInput(
                f"'{client.email}'{where} is already client {owners[key]}; nothing was added. "
                "Remove it from the input, or use `pbclients show` to look at the existing client."
            )


def _programs(
    session: Session, new_clients: Sequence[NewClient], *, dry_run: bool
) -> tuple[dict[str, int], list[str]]:
    """Program ids by case-folded name, creating the missing ones unless this is a dry run."""
    known = {
        name.casefold(): int(program_id or 0)
        for program_id, name in session.exec(select(Program.id, Program.name)).all()
    }
    missing: dict[str, str] = {}
    for client in new_clients:
        if client.program and client.program.casefold() not in known:
            missing.setdefault(client.program.casefold(), client.program)
    for key, name in [] if dry_run else missing.items():
        program = Program(name=name)
        session.add(program)
        session.flush()
        known[key] = int(program.id or 0)
    return known, list(missing.values())


LISTED_BY_DEFAULT = tuple(status for status in Status if policy.listed_by_default(status))


@dataclass(frozen=True)
class ClientFilter:
    statuses: tuple[Status, ...] = LISTED_BY_DEFAULT
    search: str | None = None
    program: str | None = None
    limit: int | None = None


@dataclass(frozen=True)
class ClientSummary:
    id: int
    email: str
    first_name: str
    last_name: str
    status: str
    programs: list[str]
    created_at: datetime | None
    deactivated_at: datetime | None
    deleted_at: datetime | None
    purge_after: datetime | None

    def days_until_purge(self, now: datetime) -> int | None:
        if self.purge_after is None:
            return None
        return max(0, (self.purge_after - now).days)

    def as_record(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "status": self.status,
            "programs": self.programs,
            "created_at": iso(self.created_at),
            "deactivated_at": iso(self.deactivated_at),
            "deleted_at": iso(self.deleted_at),
            "purge_after": iso(self.purge_after),
            "days_until_purge": self.days_until_purge(now),
        }


def _filtered(session: Session, query: Any, where: ClientFilter) -> Any:
    query = query.where(col(Client.status).in_([s.value for s in where.statuses]))
    if where.search:
        term = where.search.strip().casefold()
        full_name = func.lower(Client.first_name + " " + Client.last_name)
        query = query.where(
            or_(
                col(Client.email_key).contains(term, autoescape=True),
                full_name.contains(term, autoescape=True),
            )
            # NUL matches nothing stored, and PostgreSQL refuses to bind it.
            if can_match(term)
            else false()
        )
    if where.program:
        program_id = find_program(session, where.program)
        enrolled = select(Enrolment.client_id).where(Enrolment.program_id == program_id)
        query = query.where(col(Client.id).in_(enrolled))
    return query


def count_clients(session: Session, where: ClientFilter) -> int:
    return int(session.exec(_filtered(session, select(func.count(col(Client.id))), where)).one())


def iter_clients(session: Session, where: ClientFilter) -> Iterator[ClientSummary]:
    """Stream matching clients by id, a page at a time, so a million-row roster fits in memory."""
    remaining = where.limit
    last_id = 0
    while remaining is None or remaining > 0:
        size = PAGE if remaining is None else min(PAGE, remaining)
        page_query = _filtered(session, select(Client), where)
        page = session.exec(
            page_query.where(col(Client.id) > last_id).order_by(col(Client.id)).limit(size)
        ).all()
        if not page:
            return
        programs = _program_names(session, [client.id for client in page])
        for client in page:
            yield _summary(client, programs.get(client.id, []))
        last_id = page[-1].id
        if remaining is not None:
            remaining -= len(page)


def _program_names(session: Session, client_ids: list[int]) -> dict[int, list[str]]:
    names: dict[int, list[str]] = {}
    query = (
        select(Enrolment.client_id, Program.name)
        .join(Program, col(Program.id) == Enrolment.program_id)
        .where(col(Enrolment.client_id).in_(client_ids))
        .order_by(col(Program.name))
    )
    for client_id, name in session.exec(query):
        names.setdefault(client_id, []).append(name)
    return names


def _summary(client: Client, programs: list[str]) -> ClientSummary:
    return ClientSummary(
        id=int(client.id or 0),
        email=client.email,
        first_name=client.first_name,
        last_name=client.last_name,
        status=client.status,
        programs=programs,
        created_at=client.created_at,
        deactivated_at=client.deactivated_at,
        deleted_at=client.deleted_at,
        purge_after=client.purge_after,
    )


@dataclass(frozen=True)
class ClientDetail:
    summary: ClientSummary
    phone: str | None
    capabilities: dict[str, bool]
    appointments: list[dict[str, Any]]
    enrolments: list[dict[str, Any]]
    counts: dict[str, int]

    def as_record(self, now: datetime) -> dict[str, Any]:
        return {
            **self.summary.as_record(now),
            "phone": self.phone,
            "capabilities": self.capabilities,
            "appointments": self.appointments,
            "enrolments": self.enrolments,
            "counts": self.counts,
        }


def find_client(session: Session, reference: str) -> Client:
    """One client by ID or e-mail; a live client wins an e-mail over a deleted one."""
    text = reference.strip()
    client_id = parse_client_id(text)
    client: Client | None = None
    if client_id is not None:
        client = session.get(Client, client_id)
    elif can_match(text):
        client = session.exec(
            select(Client)
            .where(Client.email_key == text.casefold())
            .order_by(col(Client.status) == Status.DELETED.value, col(Client.id).desc())
        ).first()
    if client is None:
        raise UnknownClient(
            f"There is no client '{shorten(reference)}'; "
            "find it with `pbclients list --search TEXT`."
        )
    return client


def client_detail(session: Session, reference: str, now: datetime) -> ClientDetail:
    client = find_client(session, reference)
    client_id = int(client.id or 0)
    status = Status(client.status)
    can_join = policy.allows(status, policy.Capability.JOIN_TELEHEALTH)
    appointments = [
        {
            "id": a.id,
            "starts_at": iso(a.starts_at),
            "title": a.title,
            "duration_minutes": a.duration_minutes,
            "telehealth": a.telehealth,
            "client_can_join": a.telehealth and can_join,
        }
        for a in session.exec(
            select(Appointment)
            .where(Appointment.client_id == client_id, col(Appointment.starts_at) >= now)
            .order_by(col(Appointment.starts_at))
        )
    ]
    programs_continue = policy.allows(status, policy.Capability.CONTINUE_PROGRAMS)
    enrolments = [
        {
            "program": program.name,
            "kind": program.kind,
            "progress_percent": enrolment.progress_percent,
            "enrolled_at": iso(enrolment.enrolled_at),
            "completed_at": iso(enrolment.completed_at),
            "state": "completed"
            if enrolment.completed_at
            else ("in progress" if programs_continue else "paused"),
        }
        for enrolment, program in session.exec(
            select(Enrolment, Program)
            .join(Program, col(Program.id) == Enrolment.program_id)
            .where(Enrolment.client_id == client_id)
            .order_by(col(Program.name))
        )
    ]
    counts = {
        kind: int(
            session.exec(
                select(func.count()).select_from(model).where(model.client_id == client_id)  # type: ignore[attr-defined]
            ).one()
        )
        for kind, model in RECORD_MODELS.items()
    }
    programs = sorted(str(e["program"]) for e in enrolments)
    return ClientDetail(
        summary=_summary(client, programs),
        phone=client.phone,
        capabilities=policy.capabilities(status),
        appointments=appointments,
        enrolments=enrolments,
        counts=counts,
    )
