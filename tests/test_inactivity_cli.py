"""`--inactive-for` and `last_activity` through the CLI, on both engines.

The practice fixture's clients were created 90 days before NOW and enrolled then;
Ana (1) wrote a message a day ago and has an upcoming appointment, Ben (2) has an
upcoming appointment only, Chloe (3), Dev (4) and Elif (5) have done nothing since.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.factory import NOW
from tests.helpers import NOW_TEXT, audit_count, records, statuses
from tests.test_activity import KINDS

SETUP = "2026-08-28T09:00:00Z"


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)


def test_list_inactive_for_selects_the_idle_and_exempts_an_upcoming_appointment(cli, practice):
    run = cli("list", "--inactive-for", "30d", "--format", "ids")

    assert run.exit_code == 0, run.stderr
    # Ben has no activity since joining, but his appointment in 5 days exempts him.
    assert run.stdout == "3\n4\n5\n"


def test_list_inactive_for_combines_with_program_and_status(cli, practice):
    program = cli("list", "--inactive-for", "6m", "--format", "ids")
    assert (program.exit_code, program.stdout) == (0, "")  # joined 90 days ago: not 6 months
    sleep = cli(
        "list", "--inactive-for", "30d", "--program", "Sleep Foundations", "--format", "ids"
    )
    assert (sleep.exit_code, sleep.stdout) == (0, "3\n5\n")
    cli("deactivate", "3", "--yes")
    assert cli("list", "--inactive-for", "30d", "--status", "deactivated", "-f", "ids").stdout == (
        "3\n"
    )


def test_list_json_and_show_carry_last_activity(cli, practice):
    listed = records(cli("list", "--inactive-for", "12w", "--format", "json").stdout)
    assert [(c["id"], c["last_activity"]) for c in listed] == [(3, SETUP), (4, SETUP), (5, SETUP)]

    shown = cli("show", "1", "--format", "json")
    assert records(shown.stdout)["last_activity"] == "2026-11-25T09:00:00Z"
    table = cli("show", "1")
    assert "last activity: 2026-11-25" in table.stdout.splitlines()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_of_record_makes_a_client_active(cli, practice, engine, kind):
    KINDS[kind](engine, 3, NOW - timedelta(days=5))

    assert cli("list", "--inactive-for", "30d", "--format", "ids").stdout == "4\n5\n"
    listed = records(cli("list", "--format", "json").stdout)
    assert {c["id"]: c["last_activity"] for c in listed}[3] == "2026-11-21T09:00:00Z"


def test_creation_alone_is_activity(cli, practice):
    added = cli("add", "--email", "new@example.org", "--first-name", "N", "--last-name", "W", "-y")
    assert added.exit_code == 0, added.stderr

    # Created now: not inactive for even a day.
    assert cli("list", "--inactive-for", "1d", "--format", "ids").stdout == "3\n4\n5\n"
    assert records(cli("show", "6", "--format", "json").stdout)["last_activity"] == NOW_TEXT


def test_deactivate_inactive_for_changes_only_the_idle(cli, practice, engine):
    run = cli("deactivate", "--inactive-for", "30d", "--yes", "--format", "json")

    assert run.exit_code == 0, run.stderr
    assert [(r["id"], r["outcome"]) for r in records(run.stdout)] == [
        (3, "changed"), (4, "changed"), (5, "changed"),
    ]  # fmt: skip
    assert statuses(engine) == {1: "active", 2: "active", 3: "deactivated",
                                4: "deactivated", 5: "deactivated"}  # fmt: skip


def test_delete_inactive_for_with_a_program(cli, practice, engine, tmp_path):
    run = cli(
        "delete", "--inactive-for", "30d", "--program", "Sleep Foundations",
        "--backup-dir", str(tmp_path / "backups"), "--yes", "--format", "json",
    )  # fmt: skip

    assert run.exit_code == 0, run.stderr
    assert [r["id"] for r in records(run.stdout)] == [3, 5]
    assert statuses(engine) == {1: "active", 2: "active", 3: "deleted",
                                4: "active", 5: "deleted"}  # fmt: skip


def test_inactive_for_with_named_clients_is_a_usage_error(cli, practice, engine):
    before = audit_count(engine)
    run = cli("deactivate", "3", "--inactive-for", "30d", "--yes")

    assert run.exit_code == 2
    assert "--inactive-for selects clients itself" in run.stderr
    assert audit_count(engine) == before


@pytest.mark.parametrize("age", ["30", "0d", "-5d", "lots", "101y"])
def test_a_bad_age_is_a_usage_error(cli, practice, engine, age):
    for args in (["list"], ["deactivate", "--yes"], ["delete", "--yes"]):
        run = cli(*args, "--inactive-for", age)
        assert run.exit_code == 2, (args, run.stdout, run.stderr)
        assert "--inactive-for" in run.stderr
    assert statuses(engine) == dict.fromkeys(range(1, 6), "active")
