"""Last activity and inactivity (pbclients.activity) on both engines, and the age parser.

Each record kind alone must make a client active; a client with no records is as
active as its creation; an upcoming appointment makes a client active by definition.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select
from sqlmodel import col

from pbclients import activity, roster_view
from pbclients.activity import Age, AgeUnit, inactive_cutoff, parse_age
from pbclients.db import reading, writing
from pbclients.errors import ExitCode, UsageError
from pbclients.lookup import shorten
from pbclients.models import (
    Appointment,
    Client,
    Document,
    Enrolment,
    FormRequest,
    JournalEntry,
    Message,
    Notification,
    Program,
    Protocol,
    SessionNote,
)

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
PROGRAM_NUMBERS = itertools.count(1)
CUTOFF = NOW - timedelta(days=180)
LONG_AGO = NOW - timedelta(days=400)
RECENT = NOW - timedelta(days=10)
OLD = NOW - timedelta(days=300)


def add_client(
    engine: Engine, client_id: int, *, created: datetime = LONG_AGO, **extra: Any
) -> int:
    email = f"c{client_id}@example.org"
    row = {
        "id": client_id,
        "email": email,
        "email_key": email,
        "first_name": "Ana",
        "last_name": "Silva",
        "status": "active",
        "created_at": created,
        **extra,
    }
    with writing(engine) as session:
        session.execute(insert(Client), [row])
    return client_id


def add(engine: Engine, model: Any, **values: Any) -> None:
    with writing(engine) as session:
        session.execute(insert(model), [values])


def add_program(engine: Engine, name: str) -> int:
    with writing(engine) as session:
        return int(
            session.execute(
                insert(Program).values(name=name).returning(col(Program.id))
            ).scalar_one()
        )


def enrol(
    engine: Engine, client_id: int, when: datetime, completed: datetime | None = None
) -> None:
    program_id = add_program(engine, f"Program {next(PROGRAM_NUMBERS)}")
    add(engine, Enrolment, client_id=client_id, program_id=program_id, enrolled_at=when,
        completed_at=completed)  # fmt: skip


# One way to give client `cid` an activity at `when`, per kind of record that counts.
KINDS: dict[str, Callable[[Engine, int, datetime], None]] = {
    "past appointment": lambda e, cid, when: add(
        e, Appointment, client_id=cid, starts_at=when, title="Session"
    ),
    "journal entry": lambda e, cid, when: add(
        e, JournalEntry, client_id=cid, written_at=when, body="Slept well."
    ),
    "message sent by the client": lambda e, cid, when: add(
        e, Message, client_id=cid, sent_at=when, sender="client", body="Hi"
    ),
    "message received from the practice": lambda e, cid, when: add(
        e, Message, client_id=cid, sent_at=when, sender="practice", body="Hello"
    ),
    "form response": lambda e, cid, when: add(
        e,
        FormRequest,
        client_id=cid,
        form_name="Intake",
        sent_at=when - timedelta(days=5),
        completed_at=when,
    ),
    "enrolment in a program": lambda e, cid, when: enrol(e, cid, when),
    "program completed": lambda e, cid, when: enrol(e, cid, when - timedelta(days=60), when),
}


def last(engine: Engine, *ids: int, now: datetime = NOW) -> dict[int, datetime]:
    with reading(engine) as session:
        return activity.last_activity(session, ids, now)


def inactive(
    engine: Engine, *where: Any, cutoff: datetime = CUTOFF, now: datetime = NOW
) -> list[int]:
    query = (
        select(col(Client.id))
        .where(activity.inactive_since(cutoff, now), *where)
        .order_by(col(Client.id))
    )
    with reading(engine) as session:
        return list(session.execute(query).scalars())


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_record_alone_makes_a_client_active(engine: Engine, kind: str) -> None:
    add_client(engine, 1)  # only its creation, 400 days ago
    add_client(engine, 2)
    KINDS[kind](engine, 2, RECENT)
    add_client(engine, 3)
    KINDS[kind](engine, 3, OLD)

    assert last(engine, 1, 2, 3) == {1: LONG_AGO, 2: RECENT, 3: OLD}
    assert inactive(engine) == [1, 3]


def test_records_that_are_not_activity_leave_a_client_inactive(engine: Engine) -> None:
    """Protocols, session notes, documents and notifications are the practice's doing, and a
    form sent but not answered is not the client's: none of them counts."""
    add_client(engine, 1)
    add(engine, Protocol, client_id=1, assigned_at=RECENT, title="Sleep", body="...")
    add(engine, SessionNote, client_id=1, written_at=RECENT, body="Seen.")
    add(engine, Document, client_id=1, filename="a.pdf", content_type="application/pdf",
        uploaded_at=RECENT, content=b"%PDF")  # fmt: skip
    add(engine, Notification, client_id=1, kind="reminder", created_at=RECENT, sent_at=RECENT)
    add(engine, FormRequest, client_id=1, form_name="Intake", sent_at=RECENT)

    assert last(engine, 1) == {1: LONG_AGO}
    assert inactive(engine) == [1]


def test_creation_is_the_last_activity_of_a_client_without_records(engine: Engine) -> None:
    add_client(engine, 1, created=NOW - timedelta(days=181))
    add_client(engine, 2, created=NOW - timedelta(days=179))

    assert last(engine, 1, 2) == {1: NOW - timedelta(days=181), 2: NOW - timedelta(days=179)}
    assert inactive(engine) == [1]


def test_the_latest_of_all_kinds_wins(engine: Engine) -> None:
    add_client(engine, 1)
    for n, kind in enumerate(KINDS):
        KINDS[kind](engine, 1, OLD + timedelta(days=n))
    newest = OLD + timedelta(days=len(KINDS) - 1)

    assert last(engine, 1) == {1: newest}
    assert inactive(engine, cutoff=newest) == [1]  # active at the cutoff itself is inactive
    assert inactive(engine, cutoff=newest - timedelta(seconds=1)) == []


def test_an_upcoming_appointment_makes_a_client_active_by_definition(engine: Engine) -> None:
    add_client(engine, 1)
    add_client(engine, 2)
    for cid in (1, 2):
        add(engine, JournalEntry, client_id=cid, written_at=OLD, body="Long ago.")
    add(engine, Appointment, client_id=2, starts_at=NOW + timedelta(days=30), title="Check-in")

    assert inactive(engine) == [1]
    # Not an activity yet: the last activity stays the old journal entry.
    assert last(engine, 1, 2) == {1: OLD, 2: OLD}
    with reading(engine) as session:
        upcoming = select(col(Client.id)).where(activity.upcoming_appointment(NOW))
        assert list(session.execute(upcoming).scalars()) == [2]
    # Once the appointment has taken place, it is the last activity.
    later = NOW + timedelta(days=31)
    assert last(engine, 2, now=later) == {2: NOW + timedelta(days=30)}


def test_an_appointment_starting_now_has_happened(engine: Engine) -> None:
    add_client(engine, 1)
    add(engine, Appointment, client_id=1, starts_at=NOW, title="Session")

    assert last(engine, 1) == {1: NOW}
    assert inactive(engine, cutoff=NOW) == [1]
    assert inactive(engine, cutoff=NOW - timedelta(seconds=1)) == []


def test_nullable_times_are_ignored_not_propagated(engine: Engine) -> None:
    """An unanswered form and an unfinished enrolment have NULL times; the latest of the
    others must still come through (SQLite's max() and PostgreSQL's GREATEST differ on NULL)."""
    add_client(engine, 1)
    add(engine, FormRequest, client_id=1, form_name="Intake", sent_at=OLD)
    enrol(engine, 1, OLD)
    add(engine, Message, client_id=1, sent_at=OLD + timedelta(days=1), sender="client", body="x")

    assert last(engine, 1) == {1: OLD + timedelta(days=1)}
    assert inactive(engine) == [1]


def test_unknown_ids_are_left_out(engine: Engine) -> None:
    add_client(engine, 1)

    assert last(engine, 1, 2, 999) == {1: LONG_AGO}
    assert last(engine) == {}


def test_combines_with_status_and_program_filters(engine: Engine) -> None:
    for cid in (1, 2, 3, 4):
        add_client(engine, cid, status="deactivated" if cid == 2 else "active")
    add(engine, Message, client_id=4, sent_at=RECENT, sender="client", body="Still here.")
    program_id = add_program(engine, "Spring Reset")
    for cid in (2, 3, 4):
        add(engine, Enrolment, client_id=cid, program_id=program_id, enrolled_at=OLD)
    in_program = col(Client.id).in_(
        select(col(Enrolment.client_id)).where(col(Enrolment.program_id) == program_id)
    )

    assert inactive(engine) == [1, 2, 3]
    assert inactive(engine, Client.status == "active") == [1, 3]
    assert inactive(engine, in_program) == [2, 3]
    assert inactive(engine, in_program, Client.status == "deactivated") == [2]


def test_last_activity_reads_the_same_in_a_session_and_through_the_bare_driver(
    engine: Engine,
) -> None:
    add_client(engine, 1)
    add_client(engine, 2)
    add(engine, JournalEntry, client_id=2, written_at=RECENT, body="x")
    with writing(engine) as session:
        # Inside a write transaction: the reader shares the session's connection.
        in_session = activity.last_activity(session, [1, 2, 99], NOW)
    with roster_view.database_of(engine).read() as reader:
        bare = activity.last_activity(reader, [2, 1], NOW)
    assert in_session == bare
    assert in_session[2] == RECENT and set(in_session) == {1, 2}


# --- ages --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "now", "cutoff"),
    [
        ("180d", NOW, NOW - timedelta(days=180)),
        (" 30D ", NOW, NOW - timedelta(days=30)),
        ("12w", NOW, NOW - timedelta(weeks=12)),
        ("6m", NOW, datetime(2026, 5, 26, 9, 0, tzinfo=UTC)),
        # Calendar months: a day the month lacks is clamped to its last day.
        ("6m", datetime(2026, 8, 31, 12, tzinfo=UTC), datetime(2026, 2, 28, 12, tzinfo=UTC)),
        ("1M", datetime(2028, 3, 31, tzinfo=UTC), datetime(2028, 2, 29, tzinfo=UTC)),
        ("13m", datetime(2026, 1, 15, tzinfo=UTC), datetime(2024, 12, 15, tzinfo=UTC)),
        ("1y", datetime(2028, 2, 29, tzinfo=UTC), datetime(2027, 2, 28, tzinfo=UTC)),
        ("007d", NOW, NOW - timedelta(days=7)),
        # The longest ages, from the earliest clock the tool accepts.
        ("36500d", datetime(1980, 1, 1, tzinfo=UTC), datetime(1880, 1, 25, tzinfo=UTC)),
        ("5214w", datetime(1980, 1, 1, tzinfo=UTC), datetime(1880, 1, 27, tzinfo=UTC)),
        ("1200m", datetime(1980, 1, 1, tzinfo=UTC), datetime(1880, 1, 1, tzinfo=UTC)),
        ("100y", datetime(2107, 12, 31, 23, 59, 59, tzinfo=UTC),
         datetime(2007, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)  # fmt: skip
def test_ages_count_back_from_now(text: str, now: datetime, cutoff: datetime) -> None:
    assert inactive_cutoff(text, now) == cutoff


def test_an_age_prints_as_typed_and_in_words() -> None:
    assert str(parse_age("6M")) == "6m"
    assert parse_age("6m") == Age(6, AgeUnit.MONTHS)
    assert parse_age("1y").describe() == "1 year"
    assert parse_age("1500d").describe() == "1,500 days"


NOT_AN_AGE = (
    "--inactive-for {!r} is not an age; give a whole number and a unit: d (days), w (weeks), "
    "m (months) or y (years), e.g. 180d, 12w, 6m or 1y."
)
TOO_LONG = (
    "--inactive-for {!r} is too long; give at most 100 years (36,500d, 5,214w, 1,200m or 100y)."
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", NOT_AN_AGE),
        ("d", NOT_AN_AGE),
        ("180", NOT_AN_AGE),
        ("six months", NOT_AN_AGE),
        ("180 d", NOT_AN_AGE),
        ("1.5y", NOT_AN_AGE),
        ("-5d", NOT_AN_AGE),
        ("+5d", NOT_AN_AGE),
        ("1_0d", NOT_AN_AGE),
        ("180h", NOT_AN_AGE),
        ("\u0663d", NOT_AN_AGE),  # Arabic-Indic three
        ("\uff11d", NOT_AN_AGE),  # full-width one
        ("2026-01-01", NOT_AN_AGE),
        ("36501d", TOO_LONG),
        ("5215w", TOO_LONG),
        ("1201m", TOO_LONG),
        ("101y", TOO_LONG),
        ("9" * 5000 + "d", TOO_LONG),
        ("0d", "--inactive-for {!r} is no time at all; give an age of at least 1d."),
        ("000m", "--inactive-for {!r} is no time at all; give an age of at least 1m."),
    ],
)
def test_anything_else_is_a_usage_error(text: str, message: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse_age(text)
    assert str(raised.value) == message.format(shorten(text))
    assert raised.value.exit_code == ExitCode.USAGE


def test_the_option_is_named_in_the_message() -> None:
    with pytest.raises(UsageError, match=r"^--deactivate-after 'soon' is not an age"):
        parse_age("soon", "--deactivate-after")
