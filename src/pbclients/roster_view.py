"""Reading the roster: the clients a filter matches (`list`) and one client's file (`show`).

Each function takes the practice (a `readdb.Database`, or an engine) and opens its own
read (no lock, no audit event), so the CLI never holds a session or builds a query.
They run SQL text through the bare driver (see pbclients.readdb): `list` and `show`
import neither SQLAlchemy nor the models.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pbclients import clock, policy
from pbclients.activity import Inactivity, inactive_where, last_activity
from pbclients.clock import iso
from pbclients.errors import BadInput, UnknownClient
from pbclients.lookup import can_match, chunks, parse_client_id, shorten
from pbclients.policy import Status
from pbclients.readdb import Database, Reader, utc
from pbclients.tables import RECORD_TABLES

if TYPE_CHECKING:
    from sqlalchemy import Engine


PAGE = 2_000

LISTED_BY_DEFAULT = tuple(status for status in Status if policy.listed_by_default(status))


@dataclass(frozen=True)
class Hold:
    """A hold in force: why, since when, by whom, and until when (None: until released)."""

    client_id: int
    reason: str
    held_at: datetime
    until: datetime | None
    actor: str

    def as_record(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "held_at": iso(self.held_at),
            "until": iso(self.until),
            "actor": self.actor,
        }


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
    # The legal hold in force, or None.
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


def database_of(source: Database | Engine) -> Database:
    """The practice to read: a checked `Database`, or an engine a caller already holds."""
    if isinstance(source, Database):
        return source
    return Database(source.dialect.name, engine=source)


_SUMMARY = (
    "client.id, client.email, client.first_name, client.last_name, client.status, "
    "client.created_at, client.deactivated_at, client.deleted_at, client.purge_after"
)
_HOLD_IN_FORCE = "(legal_hold.until IS NULL OR legal_hold.until > ?)"


def _like_literal(term: str) -> str:
    """`term` inside a LIKE pattern, its wildcards escaped with `/` (ESCAPE '/')."""
    return term.replace("/", "//").replace("%", "/%").replace("_", "/_")


def where_sql(reader: Reader, where: ClientFilter) -> tuple[str, list[Any]]:
    """The WHERE condition on `client` of a filter (its limit aside), and its values."""
    values: list[Any] = [status.value for status in where.statuses]
    conditions = [f"client.status IN ({', '.join('?' * len(values))})"]
    if where.search:
        term = where.search.strip().casefold()
        # NUL matches nothing stored, and PostgreSQL refuses to bind it.
        if can_match(term):
            pattern = f"%{_like_literal(term)}%"
            conditions.append(
                "(client.email_key LIKE ? ESCAPE '/' OR "
                "lower(client.first_name || ' ' || client.last_name) LIKE ? ESCAPE '/')"
            )
            values += [pattern, pattern]
        else:
            conditions.append("1 = 0")
    if where.program:
        conditions.append(
            "client.id IN (SELECT enrolment.client_id FROM enrolment "
            "WHERE enrolment.program_id = ?)"
        )
        values.append(find_program_id(reader, where.program))
    if where.inactive is not None:
        inactive, moments = inactive_where(reader, where.inactive.cutoff, where.inactive.now)
        conditions.append(inactive)
        values += moments
    if where.held_at is not None:
        conditions.append(
            "EXISTS (SELECT legal_hold.client_id FROM legal_hold "
            f"WHERE legal_hold.client_id = client.id AND {_HOLD_IN_FORCE})"
        )
        values.append(reader.at(where.held_at))
    return " AND ".join(conditions), values


def iter_clients(
    source: Database | Engine, where: ClientFilter, activity_at: datetime | None = None
) -> Generator[ClientSummary, None, None]:
    """Stream matching clients by id, a page at a time, so a million-row roster fits in memory.

    With `activity_at`, each client's last activity as of then is filled in: one query
    per page for the whole page, never one per client.

    The read stays open while the caller iterates and ends with the iteration; a caller
    that may stop early (output to a closed pipe) wraps it in `contextlib.closing` so the
    read ends then, not whenever the generator is collected.
    """
    with database_of(source).read() as reader:
        condition, values = where_sql(reader, where)
        sql = (
            f"SELECT {_SUMMARY} FROM client WHERE {condition} AND client.id > ? "
            "ORDER BY client.id LIMIT ?"
        )
        remaining = where.limit
        last_id = 0
        while remaining is None or remaining > 0:
            size = PAGE if remaining is None else min(PAGE, remaining)
            page = reader.rows(sql, *values, last_id, size)
            if not page:
                return
            yield from _summaries(reader, page, activity_at)
            last_id = int(page[-1][0])
            if remaining is not None:
                remaining -= len(page)


def count_clients(source: Database | Engine, where: ClientFilter) -> int:
    """How many clients match, ignoring the filter's limit."""
    with database_of(source).read() as reader:
        condition, values = where_sql(reader, where)
        return int(reader.scalar(f"SELECT count(client.id) FROM client WHERE {condition}", *values))


def _summaries(
    reader: Reader, page: Sequence[tuple[Any, ...]], activity_at: datetime | None
) -> list[ClientSummary]:
    """A page of client rows (`_SUMMARY`'s columns) with their programs, holds and (if
    asked) last activity, in a few queries a page, never one a client."""
    if not page:
        return []
    ids = [int(row[0]) for row in page]
    programs = _program_names(reader, ids)
    latest = {} if activity_at is None else last_activity(reader, ids, activity_at)
    held = holds_in_force(reader, ids, activity_at or clock.now())
    return [
        _summary(row, programs.get(int(row[0]), []), latest.get(int(row[0])), held.get(int(row[0])))
        for row in page
    ]


def holds_in_force(reader: Reader, client_ids: Iterable[int], now: datetime) -> dict[int, Hold]:
    """The holds in force at `now` of these clients (those not held are left out)."""
    found: dict[int, Hold] = {}
    moment = reader.at(now)
    for chunk in chunks(sorted(set(client_ids)), 500):
        sql = (
            "SELECT legal_hold.client_id, legal_hold.reason, legal_hold.held_at, "
            "legal_hold.until, legal_hold.actor FROM legal_hold "
            f"WHERE legal_hold.client_id IN ({', '.join('?' * len(chunk))}) AND {_HOLD_IN_FORCE}"
        )
        for client_id, reason, held_at, until, actor in reader.iterate(sql, *chunk, moment):
            found[int(client_id)] = Hold(int(client_id), reason, utc(held_at), utc(until), actor)
    return found


def _program_names(reader: Reader, client_ids: list[int]) -> dict[int, list[str]]:
    names: dict[int, list[str]] = {}
    sql = (
        "SELECT enrolment.client_id, program.name FROM enrolment "
        "JOIN program ON program.id = enrolment.program_id "
        f"WHERE enrolment.client_id IN ({', '.join('?' * len(client_ids))}) "
        "ORDER BY program.name"
    )
    for client_id, name in reader.iterate(sql, *client_ids):
        names.setdefault(int(client_id), []).append(name)
    return names


def _summary(
    row: tuple[Any, ...],
    programs: list[str],
    latest: datetime | None = None,
    hold: Hold | None = None,
) -> ClientSummary:
    client_id, email, first, last, status, created, deactivated, deleted, purge = row[:9]
    return ClientSummary(
        id=int(client_id),
        email=email,
        first_name=first,
        last_name=last,
        status=status,
        programs=programs,
        created_at=utc(created),
        deactivated_at=utc(deactivated),
        deleted_at=utc(deleted),
        purge_after=utc(purge),
        last_activity=latest,
        hold=hold,
    )


def find_program_id(reader: Reader, name: str) -> int:
    """A program by name, case-insensitively; an unknown one is exit 3, naming them all."""
    found = (
        reader.scalar(
            "SELECT program.id FROM program WHERE lower(program.name) = ?", name.strip().casefold()
        )
        if can_match(name)
        else None
    )
    if found is None:
        names = [
            n for (n,) in reader.iterate("SELECT program.name FROM program ORDER BY program.name")
        ]
        raise BadInput(
            f"There is no program named '{name}' (programs: {', '.join(names) or 'none'}); "
            "nothing was changed."
        )
    return int(found)


def find_client_id(reader: Reader, reference: str) -> int:
    """One client by ID or e-mail; a live client wins an e-mail over a deleted one."""
    text = reference.strip()
    client_id = parse_client_id(text)
    found = None
    if client_id is not None:
        found = reader.scalar("SELECT client.id FROM client WHERE client.id = ?", client_id)
    elif can_match(text):
        found = reader.scalar(
            "SELECT client.id FROM client WHERE client.email_key = ? "
            "ORDER BY client.status = ?, client.id DESC LIMIT 1",
            text.casefold(),
            Status.DELETED.value,
        )
    if found is None:
        raise no_such_client(reference)
    return int(found)


def no_such_client(reference: str) -> UnknownClient:
    return UnknownClient(
        f"There is no client '{shorten(reference)}'; find it with `pbclients list --search TEXT`."
    )


def client_detail(source: Database | Engine, reference: str, now: datetime) -> ClientDetail:
    """One client's file as `show` presents it: state, capabilities, what is coming up."""
    with database_of(source).read() as reader:
        client_id = find_client_id(reader, reference)
        row = reader.first(
            f"SELECT {_SUMMARY}, client.phone FROM client WHERE client.id = ?", client_id
        )
        assert row is not None
        status = Status(row[4])
        can_join = policy.allows(status, policy.Capability.JOIN_TELEHEALTH)
        appointments = [
            UpcomingAppointment(
                id=int(appointment_id),
                starts_at=utc(starts_at),
                title=title,
                duration_minutes=int(minutes),
                telehealth=bool(telehealth),
                client_can_join=bool(telehealth) and can_join,
            )
            for appointment_id, starts_at, title, minutes, telehealth in reader.iterate(
                "SELECT appointment.id, appointment.starts_at, appointment.title, "
                "appointment.duration_minutes, appointment.telehealth FROM appointment "
                "WHERE appointment.client_id = ? AND appointment.starts_at >= ? "
                "ORDER BY appointment.starts_at",
                client_id,
                reader.at(now),
            )
        ]
        programs_continue = policy.allows(status, policy.Capability.CONTINUE_PROGRAMS)
        enrolments = [
            EnrolmentState(
                program=name,
                kind=kind,
                progress_percent=int(progress),
                enrolled_at=utc(enrolled_at),
                completed_at=utc(completed_at),
                state="completed"
                if completed_at
                else ("in progress" if programs_continue else "paused"),
            )
            for name, kind, progress, enrolled_at, completed_at in reader.iterate(
                "SELECT program.name, program.kind, enrolment.progress_percent, "
                "enrolment.enrolled_at, enrolment.completed_at FROM enrolment "
                "JOIN program ON program.id = enrolment.program_id "
                "WHERE enrolment.client_id = ? ORDER BY program.name",
                client_id,
            )
        ]
        counted = ", ".join(
            f"(SELECT count(*) FROM {table} WHERE {table}.client_id = ?)"
            for table in RECORD_TABLES.values()
        )
        totals = reader.first(f"SELECT {counted}", *[client_id] * len(RECORD_TABLES)) or ()
        counts = {kind: int(total) for kind, total in zip(RECORD_TABLES, totals, strict=True)}
        latest = last_activity(reader, [client_id], now).get(client_id)
        hold = holds_in_force(reader, [client_id], now).get(client_id)
    return ClientDetail(
        summary=_summary(row, sorted(e.program for e in enrolments), latest, hold),
        phone=row[9],
        capabilities=policy.capabilities(status),
        appointments=appointments,
        enrolments=enrolments,
        counts=counts,
    )


# --- pages for `browse`: a screenful at a time, never the whole roster ------------------------


def client_page(
    source: Database | Engine,
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
    with database_of(source).read() as reader:
        condition, values = where_sql(reader, where)
        if after_id is not None:
            condition += " AND client.id > ?"
            values.append(after_id)
        sql = f"SELECT {_SUMMARY} FROM client WHERE {condition} ORDER BY client.id LIMIT ? OFFSET ?"
        page = reader.rows(sql, *values, limit, 0 if after_id is not None else offset)
        return _summaries(reader, page, activity_at)


def matching_ids(source: Database | Engine, where: ClientFilter) -> list[int]:
    """The ids of every client the filter matches, in id order (ints only, no rows)."""
    return list(iter_ids(source, where))


def iter_ids(source: Database | Engine, where: ClientFilter) -> Generator[int, None, None]:
    """`matching_ids` streamed from one statement (`list --format ids`), up to the limit."""
    with database_of(source).read() as reader:
        condition, values = where_sql(reader, where)
        sql = f"SELECT client.id FROM client WHERE {condition} ORDER BY client.id"
        if where.limit is not None:
            sql += " LIMIT ?"
            values.append(where.limit)
        for (client_id,) in reader.iterate(sql, *values):
            yield int(client_id)


def program_names(source: Database | Engine) -> list[str]:
    """Every program's name, sorted case-insensitively (for a program picker)."""
    with database_of(source).read() as reader:
        return sorted(
            (name for (name,) in reader.iterate("SELECT program.name FROM program")),
            key=str.casefold,
        )


def emails_starting(source: Database | Engine, prefix: str, limit: int = 50) -> list[str]:
    """E-mails of clients (deleted ones too: `show` and `audit` find them) that start with
    `prefix`, case-insensitively, in order: what TAB completes a client reference to.

    One index range on `email_key`: on SQLite a byte range, which is exactly a prefix;
    on PostgreSQL LIKE, which uses the same index under the C collation.
    """
    key = prefix.casefold()
    if not can_match(key):
        return []
    with database_of(source).read() as reader:
        if reader.dialect == "sqlite":
            sql = "client.email_key >= ? AND client.email_key < ?"
            # Every UTF-8 string that starts with `key` sorts below key + U+10FFFF.
            bounds: list[Any] = [key, key + "\U0010ffff"]
        else:
            sql = "client.email_key LIKE ? ESCAPE '/'"
            bounds = [f"{_like_literal(key)}%"]
        rows = reader.iterate(
            f"SELECT DISTINCT client.email_key, client.email FROM client WHERE {sql} "
            "ORDER BY client.email_key LIMIT ?",
            *bounds,
            limit,
        )
        return [email for _, email in rows]
