"""When a client was last active, and which clients have been inactive for a while.

A client's last activity is the latest of: a past appointment's start, a journal
entry, a message sent or received, a form response, a change of program progress,
and the client's creation. The schema keeps no history of progress changes, so an
enrolment counts by its `enrolled_at` and its `completed_at`: a client who joins or
finishes a program was active then (moving from 40% to 60% leaves no timestamp).

An upcoming appointment makes a client active by definition: such a client is never
selected as inactive, however old its records are.

Everything here is set-based and read-only: one statement for any number of clients,
answered from the (client_id, time) indexes of migration 0003.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import GenericFunction
from sqlmodel import Session, col

from pbclients.clock import MAX_AGE_DAYS
from pbclients.errors import UsageError
from pbclients.models import (
    Appointment,
    Client,
    Enrolment,
    FormRequest,
    JournalEntry,
    Message,
    UTCDateTime,
)
from pbclients.selection import chunks, shorten
from pbclients.settings import whole_number

# --- what counts as activity ------------------------------------------------------------------

# Every (table, times) whose rows mark a client as active, in one place. Appointments are
# here with their start; only past ones count as activity (see `_happened`), and a future
# one exempts the client instead. Each table's times share one (client_id, ...) index.
SOURCES: tuple[tuple[Any, tuple[Any, ...]], ...] = (
    (Appointment, (col(Appointment.starts_at),)),
    (JournalEntry, (col(JournalEntry.written_at),)),
    (Message, (col(Message.sent_at),)),
    (FormRequest, (col(FormRequest.completed_at),)),
    (Enrolment, (col(Enrolment.enrolled_at), col(Enrolment.completed_at))),
)


def _happened(model: Any, now: datetime) -> list[ColumnElement[bool]]:
    """What keeps only the records that happened by `now`: an appointment yet to start has not."""
    return [col(Appointment.starts_at) <= now] if model is Appointment else []


class _Latest(GenericFunction[datetime]):
    """The latest of non-NULL timestamps: GREATEST on PostgreSQL, scalar max() on SQLite.

    Both return NULL as soon as one argument is NULL on SQLite, so callers pass only
    values that cannot be NULL (each one COALESCEd with the client's creation).
    """

    type = UTCDateTime()
    name = "pb_latest"
    inherit_cache = True


@compiles(_Latest)
def _latest_default(element: _Latest, compiler: SQLCompiler, **kw: Any) -> str:
    return f"greatest({compiler.process(element.clauses, **kw)})"


@compiles(_Latest, "sqlite")
def _latest_sqlite(element: _Latest, compiler: SQLCompiler, **kw: Any) -> str:
    return f"max({compiler.process(element.clauses, **kw)})"


def last_activity_expr(now: datetime) -> ColumnElement[datetime]:
    """The last activity of the `Client` row it is selected with, as of `now`.

    A correlated expression for a SELECT over `Client`: each kind's latest time is one
    seek into its (client_id, time) index. Meant for a page of clients (`show`, a page
    of `list`); to select among all clients use `inactive_since`, which stops at the
    first recent record.
    """
    created = col(Client.created_at)
    latest: list[Any] = [created]
    for model, times in SOURCES:
        for time in times:
            newest = (
                select(func.max(time))
                .where(model.client_id == Client.id, *_happened(model, now))
                .scalar_subquery()
            )
            latest.append(func.coalesce(newest, created))
    return _Latest(*latest)


def last_activity(
    session: Session, client_ids: Iterable[int], now: datetime
) -> dict[int, datetime]:
    """Each known client's last activity as of `now`; unknown ids are left out."""
    found: dict[int, datetime] = {}
    expression = last_activity_expr(now).label("last_activity")
    for chunk in chunks(sorted(set(client_ids))):
        query = select(col(Client.id), expression).where(col(Client.id).in_(chunk))
        for client_id, moment in session.execute(query):
            found[int(client_id)] = moment
    return found


def inactive_since(cutoff: datetime, now: datetime) -> ColumnElement[bool]:
    """A WHERE clause on `Client`: no activity after `cutoff`, and no upcoming appointment.

    Combine it with any other condition on `Client` (status, program):
    `select(Client.id).where(inactive_since(cutoff, now), Client.status == "active")`.

    A client is inactive when it was created at or before the cutoff and has no record
    of activity after it. Each kind is a NOT EXISTS on its (client_id, time) index:
    PostgreSQL runs them as anti-joins that read each table once, SQLite as one index
    seek per client in id order; both beat computing every client's latest time and
    comparing it (measured in tests/perf/bench_inactivity.py). Appointments are taken
    after the earlier of cutoff and now, which also catches every upcoming appointment.
    """
    conditions: list[ColumnElement[bool]] = [col(Client.created_at) <= cutoff]
    for model, times in SOURCES:
        since = min(cutoff, now) if model is Appointment else cutoff
        recent = or_(*(time > since for time in times))
        # Selecting the indexed client_id (not EXISTS' default `*`) lets SQLite answer
        # from the index alone instead of visiting each table row.
        found = select(model.client_id).where(model.client_id == Client.id, recent)
        conditions.append(~found.exists())
    return and_(*conditions)


def upcoming_appointment(now: datetime) -> ColumnElement[bool]:
    """A WHERE clause on `Client`: it has an appointment starting after `now`."""
    found = select(col(Appointment.client_id)).where(
        col(Appointment.client_id) == Client.id, col(Appointment.starts_at) > now
    )
    return found.exists()


# --- ages: --inactive-for 180d ----------------------------------------------------------------


class AgeUnit(Enum):
    DAYS = "d"
    WEEKS = "w"
    MONTHS = "m"
    YEARS = "y"


# A century at most, as for every other age the tool takes (clock.MAX_AGE_DAYS): the
# cutoff stays far inside the calendar from any clock the tool accepts.
MAX_AGE: dict[AgeUnit, int] = {
    AgeUnit.DAYS: MAX_AGE_DAYS,
    AgeUnit.WEEKS: MAX_AGE_DAYS // 7,
    AgeUnit.MONTHS: MAX_AGE_DAYS // 365 * 12,
    AgeUnit.YEARS: MAX_AGE_DAYS // 365,
}

_UNIT_NAMES = {
    AgeUnit.DAYS: "day",
    AgeUnit.WEEKS: "week",
    AgeUnit.MONTHS: "month",
    AgeUnit.YEARS: "year",
}


@dataclass(frozen=True)
class Age:
    """A span of time typed as `180d`, `12w`, `6m` or `1y`."""

    count: int
    unit: AgeUnit

    def __str__(self) -> str:
        return f"{self.count}{self.unit.value}"

    def describe(self) -> str:
        name = _UNIT_NAMES[self.unit]
        return f"{self.count:,} {name}{'' if self.count == 1 else 's'}"

    def before(self, moment: datetime) -> datetime:
        """The moment this age before `moment`; months and years are calendar ones.

        A day that does not exist in the target month is clamped to its last day: 6m
        before 31 August is 28 (or 29) February, 1y before 29 February is 28 February.
        """
        return self._shifted(moment, -1)

    def after(self, moment: datetime) -> datetime:
        """The moment this age after `moment` (`--at +30d`), clamped as `before` is."""
        return self._shifted(moment, 1)

    def _shifted(self, moment: datetime, sign: int) -> datetime:
        if self.unit is AgeUnit.DAYS:
            return moment + sign * timedelta(days=self.count)
        if self.unit is AgeUnit.WEEKS:
            return moment + sign * timedelta(weeks=self.count)
        months = self.count * (12 if self.unit is AgeUnit.YEARS else 1)
        index = moment.year * 12 + (moment.month - 1) + sign * months
        year, month = divmod(index, 12)
        day = min(moment.day, calendar.monthrange(year, month + 1)[1])
        return moment.replace(year=year, month=month + 1, day=day)


def parse_age(text: str, option: str = "--inactive-for") -> Age:
    """`180d`, `12w`, `6m` or `1y` as an Age; anything else is a usage error (exit 2)."""
    value = text.strip()
    shown = shorten(text)
    unit = next((u for u in AgeUnit if value[-1:].lower() == u.value), None)
    number = value[:-1]
    # ASCII digits only (int() would also read "٣" or "1_0"), and no sign: an age is positive.
    if unit is None or not (number.isascii() and number.isdigit()):
        raise UsageError(
            f"{option} {shown!r} is not an age; give a whole number and a unit: "
            "d (days), w (weeks), m (months) or y (years), e.g. 180d, 12w, 6m or 1y."
        )
    high = MAX_AGE[unit]
    count = whole_number(number, 1, high)
    if count is None:
        if whole_number(number, 0, 0) == 0:
            raise UsageError(
                f"{option} {shown!r} is no time at all; give an age of at least 1{unit.value}."
            )
        raise UsageError(
            f"{option} {shown!r} is too long; give at most 100 years "
            f"({MAX_AGE[AgeUnit.DAYS]:,}d, {MAX_AGE[AgeUnit.WEEKS]:,}w, "
            f"{MAX_AGE[AgeUnit.MONTHS]:,}m or {MAX_AGE[AgeUnit.YEARS]}y)."
        )
    return Age(count, unit)


def inactive_cutoff(text: str, now: datetime, option: str = "--inactive-for") -> datetime:
    """The cutoff `--inactive-for TEXT` means at `now`: clients with no activity after it."""
    return parse_age(text, option).before(now)
