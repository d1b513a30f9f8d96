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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any

from pbclients.clock import MAX_AGE_DAYS
from pbclients.errors import UsageError
from pbclients.lookup import chunks, shorten
from pbclients.settings import whole_number

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement
    from sqlmodel import Session

    from pbclients.readdb import Reader

# --- what counts as activity ------------------------------------------------------------------

# Every (table, time columns) whose rows mark a client as active, in one place. Appointments
# are here with their start; only past ones count as activity, and a future one exempts the
# client instead. Each table's times share one (client_id, ...) index (migration 0003).
#
# The statements below are SQL text over these names, not SQLAlchemy expressions: `list`,
# `show` and `due` read them through the bare driver (pbclients.readdb), and the write
# paths wrap the same text for their Core queries (`inactive_since`), so one statement
# answers both.
APPOINTMENT = "appointment"
SOURCES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (APPOINTMENT, ("starts_at",)),
    ("journal_entry", ("written_at",)),
    ("message", ("sent_at",)),
    ("form_request", ("completed_at",)),
    ("enrolment", ("enrolled_at", "completed_at")),
)


@dataclass(frozen=True)
class Inactivity:
    """`--inactive-for`: clients with no activity after `cutoff`, as of `now`."""

    cutoff: datetime
    now: datetime


def _inactive_sql(mark: Callable[[str], str]) -> str:
    """The WHERE condition on `client` of `inactive_since`; `mark(name)` writes each
    parameter, in the order they appear: `cutoff`, and `since` for appointments (the
    earlier of cutoff and now).

    Selecting the indexed client_id (not EXISTS' usual `*`) lets SQLite answer each
    NOT EXISTS from the index alone instead of visiting each table row.
    """
    conditions = [f"client.created_at <= {mark('cutoff')}"]
    for table, times in SOURCES:
        bound = "since" if table == APPOINTMENT else "cutoff"
        recent = " OR ".join(f"{table}.{time} > {mark(bound)}" for time in times)
        conditions.append(
            f"NOT EXISTS (SELECT {table}.client_id FROM {table} "
            f"WHERE {table}.client_id = client.id AND ({recent}))"
        )
    return " AND ".join(conditions)


def _upcoming_sql(mark: str) -> str:
    return (
        f"EXISTS (SELECT {APPOINTMENT}.client_id FROM {APPOINTMENT} "
        f"WHERE {APPOINTMENT}.client_id = client.id AND {APPOINTMENT}.starts_at > {mark})"
    )


def inactive_where(reader: Reader, cutoff: datetime, now: datetime) -> tuple[str, list[Any]]:
    """`inactive_since` for a bare-driver query on `client`: (condition, its values)."""
    moments = {"cutoff": reader.at(cutoff), "since": reader.at(min(cutoff, now))}
    values: list[Any] = []

    def mark(name: str) -> str:
        values.append(moments[name])
        return "?"

    return _inactive_sql(mark), values


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
    from pbclients.db import SqlCondition
    from pbclients.models import UTCDateTime

    moments = {"cutoff": cutoff, "since": min(cutoff, now)}
    values: list[tuple[datetime, UTCDateTime]] = []

    def mark(name: str) -> str:
        values.append((moments[name], UTCDateTime()))
        return "?"

    return SqlCondition(_inactive_sql(mark), values)


def upcoming_appointment(now: datetime) -> ColumnElement[bool]:
    """A WHERE clause on `Client`: it has an appointment starting after `now`."""
    from pbclients.db import SqlCondition
    from pbclients.models import UTCDateTime

    return SqlCondition(_upcoming_sql("?"), [(now, UTCDateTime())])


def _last_activity_sql(dialect: str, count: int) -> str:
    """Each listed client's last activity as of a bound `now`: one index seek per kind.

    The latest of non-NULL times: GREATEST on PostgreSQL, scalar max() on SQLite (which
    returns NULL as soon as one argument is NULL, hence each COALESCEd with creation).
    """
    latest = ["client.created_at"]
    for table, times in SOURCES:
        happened = f" AND {table}.starts_at <= ?" if table == APPOINTMENT else ""
        for time in times:
            latest.append(
                f"COALESCE((SELECT max({table}.{time}) FROM {table} "
                f"WHERE {table}.client_id = client.id{happened}), client.created_at)"
            )
    function = "max" if dialect == "sqlite" else "greatest"
    marks = ", ".join("?" * count)
    return (
        f"SELECT client.id, {function}({', '.join(latest)}) "
        f"FROM client WHERE client.id IN ({marks})"
    )


def last_activity(
    source: Reader | Session, client_ids: Iterable[int], now: datetime
) -> dict[int, datetime]:
    """Each known client's last activity as of `now`; unknown ids are left out."""
    from pbclients.readdb import Reader, utc

    reader = source if isinstance(source, Reader) else Reader.of(source)
    found: dict[int, datetime] = {}
    moment = reader.at(now)
    for chunk in chunks(sorted(set(client_ids)), 500):
        sql = _last_activity_sql(reader.dialect, len(chunk))
        # The one parameter before the ids: the appointments' `now`.
        for client_id, latest in reader.iterate(sql, moment, *chunk):
            found[int(client_id)] = utc(latest) or now
    return found


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
