"""The capability table of the brief, cell by cell, and what `show` reports from it."""

from __future__ import annotations

import json

import pytest

from pbclients.policy import (
    Capability,
    Status,
    allows,
    capabilities,
    counts_toward_plan,
    listed_by_default,
)

C = Capability
# The brief's table: capability -> (active, deactivated). Deleted clients can do nothing.
TABLE: dict[Capability, tuple[bool, bool]] = {
    C.PORTAL_LOGIN: (True, False),
    C.VIEW_CONTENT: (True, False),
    C.JOURNAL_AND_MESSAGES: (True, False),
    C.JOIN_TELEHEALTH: (True, False),
    C.CONTINUE_PROGRAMS: (True, False),
    C.EMAIL_NOTIFICATIONS: (True, False),
    C.COMPLETE_FORMS: (True, True),
    C.BE_CHARGED: (True, True),
}
CELLS = [
    (status, capability, expected)
    for capability, (active, deactivated) in TABLE.items()
    for status, expected in (
        (Status.ACTIVE, active),
        (Status.DEACTIVATED, deactivated),
        (Status.DELETED, False),
    )
]


def test_the_table_covers_every_capability() -> None:
    assert set(TABLE) == set(Capability)
    assert [c.value for c in Capability] == [
        "portal_login", "view_content", "journal_and_messages", "join_telehealth",
        "continue_programs", "email_notifications", "complete_forms", "be_charged",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "capability", "expected"), CELLS, ids=[f"{s}-{c}" for s, c, _ in CELLS]
)
def test_every_cell(status: Status, capability: Capability, expected: bool) -> None:
    assert allows(status, capability) is expected
    assert capabilities(status)[capability.value] is expected


@pytest.mark.parametrize("status", list(Status))
def test_capabilities_names_every_capability_once(status: Status) -> None:
    assert list(capabilities(status)) == [c.value for c in Capability]


@pytest.mark.parametrize(
    ("status", "counts", "listed"),
    [(Status.ACTIVE, True, True), (Status.DEACTIVATED, True, True), (Status.DELETED, False, False)],
)
def test_plan_seats_and_default_listing(status: Status, counts: bool, listed: bool) -> None:
    assert counts_toward_plan(status) is counts
    assert listed_by_default(status) is listed


@pytest.mark.parametrize("status", list(Status))
def test_show_json_reports_the_policy(cli, practice, engine, status):
    from tests.helpers import sql

    sql(engine, "UPDATE client SET status = :status WHERE id = 3", status=status.value)
    run = cli("show", "3", "--format", "json")
    assert run.exit_code == 0, run.stderr
    shown = json.loads(run.stdout)
    assert shown["status"] == status.value
    assert shown["capabilities"] == {
        c.value: {Status.ACTIVE: a, Status.DEACTIVATED: d, Status.DELETED: False}[status]
        for c, (a, d) in TABLE.items()
    }
