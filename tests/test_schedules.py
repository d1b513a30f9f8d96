"""Scheduled changes (`--at`, `schedule`) carried out by `run-due`, on both engines.

The practice fixture's clients (1-5) are active; the clock is pinned to NOW
(2026-11-26T09:00Z) and moved forward with PBCLIENTS_NOW across the due time.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.helpers import (
    NOW_TEXT,
    audit_count,
    records,
    run_in_pty,
    snapshot,
    statuses,
    subprocess_env,
)
from tests.test_purge import trail_intact

LATER = "2026-12-02T00:00:00Z"  # after the schedules below come due


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)


def pending(cli) -> list[dict]:
    listed = cli("schedule", "--format", "json")
    assert listed.exit_code == 0, listed.stderr
    return records(listed.stdout)


def events(engine, action: str) -> list[tuple[int | None, Any, str | None]]:
    from sqlalchemy import text

    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT client_id, detail, reason FROM audit_event WHERE action = :a ORDER BY id"),
            {"a": action},
        )
        return [(r[0], json.loads(r[1]) if r[1] else None, r[2]) for r in rows]


def test_deactivate_at_stores_a_schedule_and_changes_no_client(cli, practice, engine):
    run = cli("deactivate", "3", "4", "--at", "2026-12-01", "--reason", "program ends", "--yes")

    assert run.exit_code == 0, run.stderr
    assert "Schedule 1: deactivate 2 clients on 2026-12-01 00:00 UTC." in " ".join(
        run.stdout.split()
    )
    assert set(statuses(engine).values()) == {"active"}
    [stored] = pending(cli)
    assert stored | {"created_at": None} == {
        "id": 1, "action": "deactivate", "due_at": "2026-12-01T00:00:00Z", "clients": 2,
        "state": "pending", "created_at": None, "actor": stored["actor"],
        "reason": "program ends", "batch": None, "finished_at": None,
    }  # fmt: skip
    shown = records(cli("schedule", "show", "1", "--format", "json").stdout)
    assert shown["client_ids"] == [3, 4]
    # Audited with client ids only, the schedule and its due time in the detail.
    assert events(engine, "schedule") == [
        (3, {"action": "deactivate", "schedule": 1}, "program ends"),
        (4, {"action": "deactivate", "schedule": 1}, "program ends"),
    ]


def test_a_due_schedule_is_carried_out_once_by_run_due(cli, practice, engine, monkeypatch):
    assert cli("deactivate", "3", "4", "--at", "+5d", "--yes").exit_code == 0
    early = cli("run-due")
    assert early.exit_code == 0, early.stderr
    assert set(statuses(engine).values()) == {"active"}  # not due yet

    monkeypatch.setenv("PBCLIENTS_NOW", LATER)
    run = cli("run-due", "--format", "json")

    assert run.exit_code == 0, run.stderr
    report = records(run.stdout)
    [done] = report["schedules"]
    assert (done["id"], done["changed"], done["skipped"]) == (1, 2, [])
    assert statuses(engine) == {1: "active", 2: "active", 3: "deactivated", 4: "deactivated",
                                5: "active"}  # fmt: skip
    assert [(c, d) for c, d, _ in events(engine, "deactivate")] == [
        (3, {"schedule": 1}),
        (4, {"schedule": 1}),
    ]
    [stored] = records(cli("schedule", "--all", "--format", "json").stdout)
    assert (stored["state"], stored["batch"]) == ("done", done["batch"])
    assert pending(cli) == []

    # The same command typed then: undo reverts the scheduled batch.
    assert cli("undo", done["batch"], "--yes").exit_code == 0
    assert set(statuses(engine).values()) == {"active"}
    cli("deactivate", "3", "--yes")

    before = snapshot(engine)
    again = cli("run-due", "--format", "json")
    assert again.exit_code == 0, again.stderr
    assert records(again.stdout)["schedules"] == []
    assert snapshot(engine) == before
    assert trail_intact(engine)


def test_clients_that_left_the_state_are_skipped_and_reported(cli, practice, engine, monkeypatch):
    assert cli("deactivate", "3", "4", "5", "--at", "2026-12-01", "--yes").exit_code == 0
    assert cli("deactivate", "4", "--yes").exit_code == 0
    assert cli("delete", "5", "--yes").exit_code == 0

    monkeypatch.setenv("PBCLIENTS_NOW", LATER)
    run = cli("run-due", "--format", "json")

    assert run.exit_code == 0, run.stderr
    [done] = records(run.stdout)["schedules"]
    assert done["changed"] == 1
    assert done["skipped"] == [
        {"id": 4, "note": "now deactivated"},
        {"id": 5, "note": "now deleted"},
    ]
    assert statuses(engine)[3] == "deactivated"
    assert statuses(engine)[5] == "deleted"


def test_a_scheduled_delete_backs_up_first_and_is_undoable(cli, practice, engine, monkeypatch,
                                                          tmp_path):  # fmt: skip
    folder = tmp_path / "backups"
    scheduled = cli("delete", "4", "--at", "2026-12-01T12:00Z", "--backup-dir", str(folder),
                    "--yes")  # fmt: skip
    assert scheduled.exit_code == 0, scheduled.stderr
    assert not folder.exists() or not list(folder.iterdir())  # nothing written yet

    monkeypatch.setenv("PBCLIENTS_NOW", LATER)
    run = cli("run-due", "--format", "json")

    assert run.exit_code == 0, run.stderr
    assert statuses(engine)[4] == "deleted"
    [(client, detail, _)] = events(engine, "delete")
    assert (client, detail["schedule"]) == (4, 1)
    assert (folder / detail["backup"]).is_file()
    assert cli("export", "--verify", str(folder / detail["backup"])).exit_code == 0


def test_a_scheduled_delete_whose_backup_fails_stays_pending_with_exit_4(
    cli, practice, engine, monkeypatch, tmp_path
):
    folder = tmp_path / "backups"
    assert cli("delete", "4", "--at", "+1d", "--backup-dir", str(folder), "--yes").exit_code == 0
    folder.write_text("a file where the backup folder should be")

    monkeypatch.setenv("PBCLIENTS_NOW", LATER)
    run = cli("run-due")

    assert run.exit_code == 4
    assert "Error in schedule 1:" in run.stderr
    assert statuses(engine)[4] == "active"
    assert [s["state"] for s in pending(cli)] == ["pending"]

    folder.unlink()
    retried = cli("run-due")
    assert retried.exit_code == 0, retried.stderr
    assert statuses(engine)[4] == "deleted"
    assert pending(cli) == []


def test_cancel_stops_a_schedule_and_is_audited(cli, practice, engine, monkeypatch):
    assert cli("activate", "3", "--yes").exit_code == 0  # already active: nothing to schedule
    assert cli("deactivate", "3", "--at", "2026-12-01", "--yes").exit_code == 0

    unconfirmed = cli("schedule", "cancel", "1")  # no terminal and no --yes
    assert unconfirmed.exit_code == 2
    assert [s["state"] for s in pending(cli)] == ["pending"]

    cancelled = cli("schedule", "cancel", "1", "--reason", "extended", "--yes")
    assert cancelled.exit_code == 0, cancelled.stderr
    assert "Cancelled schedule 1" in cancelled.stdout
    assert pending(cli) == []
    assert [(c, r) for c, _, r in events(engine, "schedule.cancel")] == [(3, "extended")]

    monkeypatch.setenv("PBCLIENTS_NOW", LATER)
    assert cli("run-due").exit_code == 0
    assert statuses(engine)[3] == "active"

    again = cli("schedule", "cancel", "1", "--yes")
    assert again.exit_code == 3
    assert "Schedule 1 is cancelled, not pending" in again.stderr
    unknown = cli("schedule", "cancel", "99", "--yes")
    assert unknown.exit_code == 3
    assert "There is no schedule 99" in unknown.stderr


@pytest.mark.parametrize(
    ("when", "code", "stored"),
    [
        ("2026-11-26T08:59:30Z", 0, True),  # thirty seconds ago: still meant
        ("2026-11-26T08:58:00Z", 3, False),  # two minutes ago: a mistake
        ("2025-01-01", 3, False),
        ("tomorrow", 2, False),
        ("+0d", 2, False),
        ("+5x", 2, False),
        ("2200-01-01", 2, False),
        ("9999-12-31T23:59-12:00", 2, False),  # off the calendar once in UTC
        ("0001-01-01T00:00+14:00", 3, False),
        ("\x1b[2J", 2, False),
    ],
)
def test_when_is_checked_before_anything_is_stored(cli, practice, engine, when, code, stored):
    before = audit_count(engine)
    run = cli("deactivate", "3", "--at", when, "--yes")

    assert run.exit_code == code, run.stderr
    assert "\x1b" not in run.stderr
    assert (len(pending(cli)) == 1) is stored
    assert (audit_count(engine) > before) is stored


def test_unknown_reference_with_at_is_exit_3_and_stores_nothing(cli, practice, engine):
    run = cli("deactivate", "3", "nobody@example.org", "--at", "+1d", "--yes")
    assert run.exit_code == 3
    assert pending(cli) == []


def test_dry_run_with_at_stores_nothing(cli, practice, engine):
    before = snapshot(engine)
    run = cli("delete", "3", "4", "--at", "+7d", "--dry-run")
    assert run.exit_code == 0, run.stderr
    assert "Dry run: would schedule to delete 2 clients on 2026-12-03 09:00 UTC" in " ".join(
        run.stdout.split()
    )
    assert snapshot(engine) == before


@pytest.mark.parametrize("db_target", ["sqlite"], indirect=True)
def test_a_scheduled_delete_asks_for_the_typed_count_on_a_terminal(cli, practice, db_target):
    args = ["--db", db_target, "delete", "3", "4", "--at", "+7d"]
    env = subprocess_env(PBCLIENTS_NOW=NOW_TEXT, NO_COLOR="1", TERM="dumb")
    code, prompt, _ = run_in_pty(args, "3", env=env, marker=b"Type 2 to confirm")
    assert code == 1
    assert "Schedule for 2026-12-03 09:00 UTC: Delete 2 clients?" in " ".join(prompt.split())
    assert pending(cli) == []
    code, _, rest = run_in_pty(args, "2", env=env, marker=b"Type 2 to confirm")
    assert code == 0, rest
    assert [s["clients"] for s in pending(cli)] == [2]


def test_a_date_means_midnight_in_the_practice_time_zone(cli, practice, engine):
    assert cli("plan", "--set-timezone", "Pacific/Auckland", "--yes").exit_code == 0
    assert cli("deactivate", "3", "--at", "2026-12-01", "--yes").exit_code == 0
    [stored] = pending(cli)
    # Auckland is UTC+13 in December (daylight time): midnight there is 11:00 the day before.
    assert stored["due_at"] == "2026-11-30T11:00:00Z"
    shown = cli("schedule")
    assert "2026-12-01 00:00 Pacific/Auckland" in shown.stdout
    plan = records(cli("plan", "--format", "json").stdout)
    assert plan["time_zone"] == "Pacific/Auckland"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd", "", "\x1b[31m"])
def test_an_unknown_time_zone_is_a_usage_error(cli, practice, engine, zone):
    run = cli("plan", "--set-timezone", zone, "--yes")
    assert run.exit_code == 2
    assert "is not a time zone" in run.stderr
    assert "\x1b" not in run.stderr
    assert records(cli("plan", "--format", "json").stdout)["time_zone"] == "UTC"


def test_a_finished_schedule_loses_its_reason_when_a_client_of_it_is_purged(
    cli, practice, engine, monkeypatch
):
    assert (
        cli("delete", "4", "--at", "+1d", "--reason", "Dev moved to Lisbon", "--yes").exit_code == 0
    )
    assert cli("deactivate", "3", "--at", "+60d", "--reason", "keep me", "--yes").exit_code == 0
    monkeypatch.setenv("PBCLIENTS_NOW", "2026-11-28T00:00:00Z")
    assert cli("run-due").exit_code == 0  # deletes 4
    monkeypatch.setenv("PBCLIENTS_NOW", "2027-01-10T00:00:00Z")
    assert cli("purge", "--yes").exit_code == 0  # purges 4; schedule 2 still pending
    reasons = {s["id"]: s["reason"] for s in records(cli("schedule", "--all", "-f", "json").stdout)}
    assert reasons == {1: None, 2: "keep me"}
    assert trail_intact(engine)
