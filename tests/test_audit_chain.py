"""The audit trail is tamper-evident and never holds names or e-mails.

Tampering is done with raw SQL on the audit_event table, as someone with database access
would; `pbclients audit verify` must then exit 1 naming the first broken event.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from pbclients.db import reading
from pbclients.operation import Action
from tests.factory import NOW
from tests.helpers import NOW_TEXT, audit_count, sql, write

COLUMNS = ["at", "actor", "action", "client_id", "before", "after", "batch_id", "reason",
           "detail", "prev_hash", "hash"]  # fmt: skip
CONTENT = COLUMNS[:-2]


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)


@pytest.fixture
def trail(cli, practice):
    """Ten events: 1-5 add, 6-7 deactivate, 8 activate, 9-10 deactivate."""
    assert cli("deactivate", "1", "2", "--yes", "--reason", "ended").exit_code == 0
    assert cli("activate", "2", "--yes").exit_code == 0
    assert cli("deactivate", "3", "4", "--yes").exit_code == 0


def verify(cli):
    run = cli("audit", "verify")
    return run.exit_code, run.stdout, run.stderr


def broken(event_id: int, problem: str) -> tuple[int, str, str]:
    return 1, "", f"Audit trail broken at event {event_id}: {problem}.\n"


def row(engine, event_id: int) -> dict[str, Any]:
    with reading(engine) as session:
        found = session.execute(
            text(f"SELECT {', '.join(COLUMNS)} FROM audit_event WHERE id = :id"), {"id": event_id}
        ).one()
    return dict(zip(COLUMNS, found, strict=True))


def overwrite(engine, event_id: int, values: dict[str, Any]) -> None:
    assignments = ", ".join(f'"{name}" = :{name}' for name in values)
    sql(
        engine,
        f"UPDATE audit_event SET {assignments} WHERE id = :event_id",
        event_id=event_id,
        **values,
    )


def test_a_clean_chain_verifies(cli, trail):
    assert verify(cli) == (0, "Audit trail intact: 10 events verified.\n", "")


def test_an_empty_trail_verifies(cli):
    assert verify(cli) == (0, "Audit trail intact: 0 events verified.\n", "")


def test_no_false_alarm_after_many_commands(cli, practice, engine, tmp_path):
    new = "".join(f"n{i}@example.org,N,{i}\n" for i in range(20))
    steps = [
        ["import", write(tmp_path / "new.csv", "email,first_name,last_name\n" + new), "--yes"],
        ["plan", "--set-limit", "100", "--yes"],
        ["plan", "--set-retention", "45", "--yes"],
        ["add", "--email", "x@example.org", "--first-name", "X", "--last-name", "Y", "--yes"],
        ["deactivate", "--program", "Spring Reset", "--yes"],
        ["deactivate", "1", "--yes"],  # unchanged: no event
        ["deactivate", "--ids-from", "-", "--yes"],
        ["activate", "--ids-from", "-", "--skip-unknown", "--yes"],
        ["plan", "--set-limit", "none", "--yes"],
    ]
    for round_ in range(3):
        for step in steps:
            ids = "".join(f"{n}\n" for n in range(6, 26)) + ("999\n" if "activate" in step else "")
            run = cli(*step, input=ids)
            if step[0] in ("import", "add") and round_ > 0:
                assert run.exit_code == 3  # already clients: refused, no event
            else:
                assert run.exit_code == 0, (step, run.stderr)
    total = audit_count(engine)
    # setup 5; first round: import 20, 3 plan settings, add 1, program 2, 20 + 20 ids;
    # later rounds: 3 plan settings and 20 + 20 ids (the rest is refused or unchanged).
    assert total == 5 + (20 + 3 + 1 + 2 + 40) + 2 * (3 + 40)
    assert verify(cli) == (0, f"Audit trail intact: {total} events verified.\n", "")


# Any text a client, an admin or a file can put in an event (PostgreSQL stores no NUL),
# with the characters JSON escapes drawn often.
_TEXT = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")
    | st.sampled_from('"\\/\x01\x1f\x7f\x80\u2028\u00e9\U0001f600'),
    max_size=12,
)
_EVENT = st.tuples(
    st.sampled_from(Action),
    st.none() | st.integers(1, 2**31 - 1),
    st.none() | _TEXT,
    st.none() | _TEXT,
    st.none() | st.dictionaries(_TEXT, _TEXT, max_size=2),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    actor=_TEXT.filter(bool),
    reason=st.none() | _TEXT,
    origin=st.none() | st.dictionaries(_TEXT, _TEXT, min_size=1, max_size=2),
    events=st.lists(st.tuples(_EVENT, st.booleans()), min_size=1, max_size=4),
)
def test_events_of_any_text_verify(engine, actor, reason, origin, events):
    """`append` hashes each event's content written out by hand, `verify` through the JSON
    encoder: any text on which the two differ shows as a broken chain.

    Each example appends and verifies in a transaction it rolls back, so that it fails
    only on its own events. Events go in as `NewEvent`s and as plain tuples (as `import`
    gives them)."""
    from sqlmodel import Session

    from pbclients import audit

    with Session(engine) as session:
        appended = audit.append(
            session,
            [audit.NewEvent(*event) if named else event for event, named in events],
            batch_id=audit.new_batch_id(),
            actor=actor,
            reason=reason,
            at=NOW,
            origin=origin,
        )
        checked = audit.verify(session)
        session.rollback()
    assert (checked.problem, checked.broken_at, checked.checked) == (None, None, appended)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("after", "active"),
        ("before", "deleted"),
        ("actor", "someone-else"),
        ("action", "activate"),
        ("client_id", 5),
        ("reason", "nothing to see"),
        ("batch_id", "000000000000"),
        ("at", "2026-11-27 09:00:00"),
        ("detail", '{"backup": "x"}'),
    ],
)
def test_editing_any_field_is_detected(cli, trail, engine, column, value):
    overwrite(engine, 7, {column: value})
    assert verify(cli) == broken(7, "event 7 was altered")


def test_editing_a_field_and_its_hash_breaks_the_next_link(cli, trail, engine):
    from pbclients.audit import event_hash, reason_digest
    from pbclients.clock import iso
    from pbclients.models import AuditEvent

    with reading(engine) as session:
        e = session.get(AuditEvent, 7)
    assert e is not None
    content = [7, iso(e.at), e.actor, e.action, e.client_id, e.before, "active", e.batch_id,
               reason_digest(e.reason), e.detail]  # fmt: skip
    overwrite(engine, 7, {"after": "active", "hash": event_hash(e.prev_hash, content)})
    assert verify(cli) == broken(8, "event 8 does not follow the one before it")


@pytest.mark.parametrize("event_id", [1, 5, 9])
def test_deleting_an_event_is_detected(cli, trail, engine, event_id):
    sql(engine, "DELETE FROM audit_event WHERE id = :id", id=event_id)
    assert verify(cli) == broken(event_id, f"event {event_id} is missing (next is {event_id + 1})")


def test_reordering_two_events_is_detected(cli, trail, engine):
    six, seven = row(engine, 6), row(engine, 7)
    overwrite(engine, 6, seven)
    overwrite(engine, 7, six)
    assert verify(cli) == broken(6, "event 6 does not follow the one before it")


def test_swapping_only_the_content_of_two_events_is_detected(cli, trail, engine):
    six, seven = row(engine, 6), row(engine, 7)
    overwrite(engine, 6, {name: seven[name] for name in CONTENT})
    overwrite(engine, 7, {name: six[name] for name in CONTENT})
    assert verify(cli) == broken(6, "event 6 was altered")


@pytest.mark.parametrize("keep", [8, 0])
def test_truncating_the_newest_events_is_detected(cli, trail, engine, keep):
    sql(engine, "DELETE FROM audit_event WHERE id > :keep", keep=keep)
    assert verify(cli) == broken(
        keep + 1, f"the trail ends at event {keep} but its head says 10: events were removed"
    )


def test_the_trail_never_holds_names_or_emails(cli, practice, engine, tmp_path):
    refs = write(tmp_path / "refs.csv", "email\nCHLOE@example.org\ndev@example.org\n")
    steps = [
        ["deactivate", "ana@example.org", "BEN@EXAMPLE.ORG", "--yes", "--reason", "ended"],
        ["activate", "Ana@Example.org", "--yes"],
        ["deactivate", "--csv", refs, "--yes"],
        ["deactivate", "elif@example.org", "nobody@example.org", "--skip-unknown", "--yes"],
        ["add", "--email", "zoe@example.org", "--first-name", "Zoe", "--last-name", "Park",
         "--yes"],
        ["deactivate", "zoe@example.org", "--yes"],
    ]  # fmt: skip
    for step in steps:
        assert cli(*step).exit_code == 0, step
    with reading(engine) as session:
        rows = session.execute(text("SELECT * FROM audit_event")).all()
        people = session.execute(text("SELECT email, first_name, last_name FROM client")).all()
    assert len(rows) == 5 + 2 + 1 + 2 + 1 + 1 + 1
    cells = [str(cell).casefold() for event in rows for cell in event if cell is not None]
    assert not [cell for cell in cells if "@" in cell or "example" in cell]
    for person in people:
        for value in person:
            assert not [cell for cell in cells if value.casefold() in cell], value
    listed = cli("audit", "--format", "csv").stdout.casefold()
    assert "@" not in listed
    assert "nobody" not in listed
