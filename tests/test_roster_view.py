"""The reads behind list, show, plan and audit, called without Typer, on both engines."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from pbclients import audit, plan, roster_view, trail
from pbclients.clock import iso
from pbclients.errors import BadInput, UnknownClient
from pbclients.operation import Action
from tests.helpers import NOW_TEXT

Cli = Callable[..., Any]  # the `cli` fixture: runs pbclients, returns click's Result
NOW = datetime.fromisoformat(NOW_TEXT.replace("Z", "+00:00")).astimezone(UTC)


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)


class Connections:
    """Connections the engine's pool has lent out and not yet taken back."""

    def __init__(self, engine: Engine) -> None:
        self.open = 0
        event.listen(engine, "checkout", self._out)
        event.listen(engine, "checkin", self._in)

    def _out(self, *_: Any) -> None:
        self.open += 1

    def _in(self, *_: Any) -> None:
        self.open -= 1


def test_listing_streams_in_one_read_that_ends_when_the_reader_stops(
    engine: Engine, practice: object
) -> None:
    connections = Connections(engine)
    clients = roster_view.iter_clients(engine, roster_view.ClientFilter())
    assert connections.open == 0  # nothing is read before the first client is asked for
    with closing(clients):
        first = next(clients)
        assert (first.id, first.email) == (1, "ana@example.org")
        assert connections.open == 1
    assert connections.open == 0


def test_listing_to_the_end_closes_the_read_too(engine: Engine, practice: object) -> None:
    connections = Connections(engine)
    where = roster_view.ClientFilter(limit=3)
    assert [c.id for c in roster_view.iter_clients(engine, where)] == [1, 2, 3]
    assert connections.open == 0
    assert roster_view.count_clients(engine, where) == 5  # the count ignores the limit
    assert connections.open == 0


def test_an_unknown_program_is_reported_when_the_listing_starts(
    engine: Engine, practice: object
) -> None:
    clients = roster_view.iter_clients(engine, roster_view.ClientFilter(program="Nope"))
    with pytest.raises(BadInput):
        next(clients)


def test_client_detail_reads_a_whole_file_and_closes_its_read(
    engine: Engine, practice: object
) -> None:
    connections = Connections(engine)
    detail = roster_view.client_detail(engine, "ANA@example.org", NOW)
    assert connections.open == 0
    assert detail.summary.id == 1
    telehealth = [a for a in detail.appointments if a.telehealth]
    assert telehealth and all(a.client_can_join for a in telehealth)  # active: may join
    first = detail.as_record(NOW)["appointments"][0]
    assert first["starts_at"] == iso(detail.appointments[0].starts_at)
    assert detail.summary.programs == [e.program for e in detail.enrolments]
    with pytest.raises(UnknownClient):
        roster_view.client_detail(engine, "nobody@example.org", NOW)
    assert connections.open == 0


def test_plan_usage_in_a_read_of_its_own(engine: Engine, practice: object) -> None:
    connections = Connections(engine)
    usage = plan.current_usage(engine)
    assert (usage.counted, usage.limit) == (5, None)
    assert connections.open == 0


def test_the_trail_stores_actions_as_plain_text_and_filters_by_any_string(
    engine: Engine, practice: object, cli: Cli
) -> None:
    assert cli("deactivate", "2", "--yes").exit_code == 0
    with engine.connect() as connection:
        stored = connection.execute(
            text("SELECT DISTINCT action FROM audit_event ORDER BY action")
        ).scalars()
        assert list(stored) == ["add", "deactivate"]
    by_text = trail.trail(engine, trail.EventFilter(action="deactivate"))
    by_member = trail.trail(engine, trail.EventFilter(action=Action.DEACTIVATE))
    assert [e.client_id for e in by_text] == [e.client_id for e in by_member] == [2]
    assert trail.trail(engine, trail.EventFilter(action="plan.set_limit")) == []


def test_the_trail_finds_a_client_by_email_or_by_an_id_that_is_gone(
    engine: Engine, practice: object, cli: Cli
) -> None:
    assert cli("deactivate", "2", "--yes").exit_code == 0
    by_email = trail.trail(engine, trail.EventFilter(client="BEN@example.org"))
    assert [e.action for e in by_email] == ["add", "deactivate"]
    assert trail.trail(engine, trail.EventFilter(client="999")) == []
    with pytest.raises(UnknownClient):
        trail.trail(engine, trail.EventFilter(client="zed@example.org"))
    newest = trail.trail(engine, trail.EventFilter(limit=1))
    assert [e.as_record()["action"] for e in newest] == ["deactivate"]
    assert audit.check(engine).intact
