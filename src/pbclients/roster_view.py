"""Reading the roster: the clients a filter matches (`list`) and one client's file (`show`).

Each function takes the engine and opens its own read (no lock, no audit event), so
the CLI never holds a session or builds a query.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, false, func, or_
from sqlmodel import Session, col, select

from pbclients import policy
from pbclients.activity import inactive_since, last_activity
from pbclients.clock import iso
from pbclients.db import reading
from pbclients.errors import UnknownClient
from pbclients.models import RECORD_MODELS, Appointment, Client, Enrolment, Program
from pbclients.policy import Status
from pbclients.selection import Inactivity, can_match, find_program, parse_client_id, shorten

if TYPE_CHECKING:
    # Imported lazily at run time: holds builds on audit, which reads clients through here.
    from pbclients.holds import Hold

PAGE = 2_000

LISTED_BY_DEFAULT = tuple(status for status in Status if policy.listed_by_default(status))


@dataclass(frozen=True)
class ClientFilter:
    statuses: tuple[Status, ...] = LISTED_BY_DEFAULT
    search: str | None = None
    program: str | None = None
    limit: int | None = None
    # --inactive-for: only clients inactive since the cutoff (an upcoming appointment exempts).
    inactive: Inactivity | None = None
    # --held: only clients under legal hold at this moment.
    held_at: datetime | None = None


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
    # Filled in when asked for (`show`, `list --format json|csv`), a page at a time.
    last_activity: datetime | None = None
    # The legal hold in force (pbclients.holds.Hold), or None.
    hold: Hold | None = None

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
            "last_activity": iso(self.last_activity),
            "held": self.hold is not None,
            "hold": None if self.hold is None else self.hold.as_record(),
        }


@dataclass(frozen=True)
class UpcomingAppointment:
    id: int
    starts_at: datetime
    title: str
    duration_minutes: int
    telehealth: bool
    client_can_join: bool

    def as_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "starts_at": iso(self.starts_at),
            "title": self.title,
            "duration_minutes": self.duration_minutes,
            "telehealth": self.telehealth,
            "client_can_join": self.client_can_join,
        }


@dataclass(frozen=True)
class EnrolmentState:
    program: str
    kind: str
    progress_percent: int
    enrolled_at: datetime
    completed_at: datetime | None
    state: str  # "completed", "in progress" or "paused"

    def as_record(self) -> dict[str, Any]:
        return {
            "program": self.program,
            "kind": self.kind,
            "progress_percent": self.progress_percent,
            "enrolled_at": iso(self.enrolled_at),
            "completed_at": iso(self.completed_at),
            "state": self.state,
        }


@dataclass(frozen=True)
class ClientDetail:
    summary: ClientSummary
    phone: str | None
    capabilities: dict[str, bool]
    appointments: list[UpcomingAppointment]
    enrolments: list[EnrolmentState]
    counts: dict[str, int]

    def as_record(self, now: datetime) -> dict[str, Any]:
        return {
            **self.summary.as_record(now),
            "phone": self.phone,
            "capabilities": self.capabilities,
            "appointments": [a.as_record() for a in self.appointments],
            "enrolments": [e.as_record() for e in self.enrolments],
            "counts": self.counts,
        }


def iter_clients(
    engine: Engine, where: ClientFilter, activity_at: datetime | None = None
) -> Generator[ClientSummary, None, None]:
    """Stream matching clients by id, a page at a time, so a million-row roster fits in memory.

    With `activity_at`, each client's last activity as of then is filled in: one query
    per page for the whole page, never one per client.

    The read stays open while the caller iterates and ends with the iteration; a caller
    that may stop early (output to a closed pipe) wraps it in `contextlib.closing` so the
    read ends then, not whenever the generator is collected.
    """
    with reading(engine) as session:
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
            yield from _summaries(session, page, activity_at)
            last_id = int(page[-1].id or 0)
            if remaining is not None:
                remaining -= len(page)


def count_clients(engine: Engine, where: ClientFilter) -> int:
    """How many clients match, ignoring the filter's limit."""
    with reading(engine) as session:
        query = _filtered(session, select(func.count(col(Client.id))), where)
        return int(session.exec(query).one())


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
    if where.inactive is not None:
        query = query.where(inactive_since(where.inactive.cutoff, where.inactive.now))
    if where.held_at is not None:
        from pbclients.holds import held_clause

        query = query.where(held_clause(Client.id, where.held_at))
    return query


def _summaries(
    session: Session, page: Sequence[Client], activity_at: datetime | None
) -> list[ClientSummary]:
    """A page of clients with their programs, holds and (if asked) last activity, in a
    few queries a page, never one a client."""
    if not page:
        return []
    ids = [int(client.id or 0) for client in page]
    programs = _program_names(session, ids)
    latest = {} if activity_at is None else last_activity(session, ids, activity_at)
    held = _holds(session, ids, activity_at)
    summaries = []
    for client in page:
        client_id = int(client.id or 0)
        summary = _summary(client, programs.get(client_id, []), latest.get(client_id))
        summaries.append(replace(summary, hold=held.get(client_id)) if held else summary)
    return summaries


def _holds(session: Session, ids: list[int], now: datetime | None) -> dict[int, Hold]:
    """The holds in force among a page of clients: one query a page, never one a client."""
    from pbclients import clock
    from pbclients.holds import holds_of

    return holds_of(session, ids, now or clock.now()) if ids else {}


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


def _summary(client: Client, programs: list[str], latest: datetime | None = None) -> ClientSummary:
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
        last_activity=latest,
    )


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


def client_detail(engine: Engine, reference: str, now: datetime) -> ClientDetail:
    """One client's file as `show` presents it: state, capabilities, what is coming up."""
    with reading(engine) as session:
        client = find_client(session, reference)
        client_id = int(client.id or 0)
        status = Status(client.status)
        can_join = policy.allows(status, policy.Capability.JOIN_TELEHEALTH)
        appointments = [
            UpcomingAppointment(
                id=int(a.id or 0),
                starts_at=a.starts_at,
                title=a.title,
                duration_minutes=a.duration_minutes,
                telehealth=a.telehealth,
                client_can_join=a.telehealth and can_join,
            )
            for a in session.exec(
                select(Appointment)
                .where(Appointment.client_id == client_id, col(Appointment.starts_at) >= now)
                .order_by(col(Appointment.starts_at))
            )
        ]
        programs_continue = policy.allows(status, policy.Capability.CONTINUE_PROGRAMS)
        enrolments = [
            EnrolmentState(
                program=program.name,
                kind=program.kind,
                progress_percent=enrolment.progress_percent,
                enrolled_at=enrolment.enrolled_at,
                completed_at=enrolment.completed_at,
                state="completed"
                if enrolment.completed_at
                else ("in progress" if programs_continue else "paused"),
            )
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
        latest = last_activity(session, [client_id], now).get(client_id)
        hold = _holds(session, [client_id], now).get(client_id)
    return ClientDetail(
        summary=replace(_summary(client, sorted(e.program for e in enrolments), latest), hold=hold),
        phone=client.phone,
        capabilities=policy.capabilities(status),
        appointments=appointments,
        enrolments=enrolments,
        counts=counts,
    )


# --- pages for `browse`: a screenful at a time, never the whole roster ------------------------


def client_page(
    engine: Engine,
    where: ClientFilter,
    *,
    offset: int = 0,
    after_id: int | None = None,
    limit: int = 100,
    activity_at: datetime | None = None,
) -> list[ClientSummary]:
    """One page of matching clients in id order, with programs (and last activity).

    `after_id` continues from the client before the page (an index seek, as fast at the
    millionth row as at the first); without it the page starts `offset` matches in, which
    a jump to the end of the list needs and which costs a scan of the rows skipped.
    """
    with reading(engine) as session:
        query = _filtered(session, select(Client), where).order_by(col(Client.id))
        if after_id is not None:
            query = query.where(col(Client.id) > after_id)
        elif offset:
            query = query.offset(offset)
        return _summaries(session, session.exec(query.limit(limit)).all(), activity_at)


def matching_ids(engine: Engine, where: ClientFilter) -> list[int]:
    """The ids of every client the filter matches, in id order (ints only, no rows)."""
    with reading(engine) as session:
        query = _filtered(session, select(col(Client.id)), where).order_by(col(Client.id))
        return [int(client_id) for client_id in session.exec(query)]


def program_names(engine: Engine) -> list[str]:
    """Every program's name, sorted case-insensitively (for a program picker)."""
    with reading(engine) as session:
        return sorted(session.exec(select(Program.name)).all(), key=str.casefold)
