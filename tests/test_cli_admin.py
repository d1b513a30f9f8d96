"""plan, audit (listing and filters) and paths through the real CLI, on both engines."""

from __future__ import annotations

import csv
import io

import pytest

from tests.helpers import NOW_TEXT, audit_count, records, snapshot, sql

SETUP = "2026-08-28T09:00:00Z"


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)


# --- plan ------------------------------------------------------------------------------------


def test_plan_json_unlimited(cli, practice):
    run = cli("plan", "--format", "json")
    assert run.exit_code == 0, run.stderr
    assert records(run.stdout) == {
        "limit": None,
        "counted": 5,
        "active": 5,
        "deactivated": 0,
        "deleted": 0,
        "available": None,
        "retention_days": 30,
        "record_retention_years": 7,
        "time_zone": "UTC",
        "backup_key_file": None,
    }


def test_plan_counts_deactivated_but_not_deleted(cli, practice, engine):
    assert cli("deactivate", "1", "2", "--yes").exit_code == 0
    sql(engine, "UPDATE client SET status = 'deleted' WHERE id = 5")
    run = cli("plan", "--set-limit", "10", "--yes", "--format", "json")
    assert run.exit_code == 0, run.stderr
    assert records(run.stdout) == {
        "limit": 10,
        "counted": 4,
        "active": 2,
        "deactivated": 2,
        "deleted": 1,
        "available": 6,
        "retention_days": 30,
        "record_retention_years": 7,
        "time_zone": "UTC",
        "backup_key_file": None,
    }
    assert records(cli("plan", "--format", "json").stdout)["limit"] == 10


def test_plan_table(cli, practice, engine):
    assert cli("deactivate", "1", "--yes").exit_code == 0
    assert cli("plan", "--set-limit", "8", "--yes").exit_code == 0
    run = cli("plan")
    assert run.exit_code == 0
    assert run.stdout == (
        "plan limit: 8\n"
        "counted:    5 (active 4 + deactivated 1)\n"
        "available:  3\n"
        "deleted, pending purge: 0 (hold no seat)\n"
        "retention before purge: 30 days\n"
        "record retention: 7 years after last activity\n"
        "time zone:  UTC\n"
    )


def test_plan_set_limit_none_makes_it_unlimited_and_is_audited(cli, practice, engine):
    assert cli("plan", "--set-limit", "7", "--yes", "--reason", "upgrade").exit_code == 0
    run = cli("plan", "--set-limit", "none", "--yes", "--format", "json")
    assert run.exit_code == 0, run.stderr
    got = records(run.stdout)
    assert (got["limit"], got["available"]) == (None, None)
    events = records(cli("audit", "--action", "plan.set_limit", "--format", "json").stdout)
    assert [(e["client_id"], e["before"], e["after"], e["reason"]) for e in events] == [
        (None, "none", "7", "upgrade"),
        (None, "7", "none", None),
    ]


def test_plan_set_limit_without_a_terminal_or_yes_exits_2(cli, practice, engine):
    before = snapshot(engine)
    run = cli("plan", "--set-limit", "3")
    assert run.exit_code == 2
    assert run.stderr.startswith("Error: This command changes data and there is no terminal")
    assert snapshot(engine) == before


@pytest.mark.parametrize("value", ["many", "-1", "2.5"])
def test_plan_set_limit_must_be_a_number_or_none(cli, practice, engine, value):
    before = snapshot(engine)
    run = cli("plan", "--set-limit", value, "--yes")
    assert run.exit_code == 2
    assert run.stderr == (
        f"Error: --set-limit {value!r} is not a number; give a whole number or none.\n"
    )
    assert snapshot(engine) == before


# --- audit listing and filters ----------------------------------------------------------------


@pytest.fixture
def history(cli, practice, monkeypatch):
    """Events 1-5: add (setup); 6-7: deactivate 1, 2 on 11-20; 8: activate 1 on 11-26."""
    monkeypatch.setenv("PBCLIENTS_NOW", "2026-11-20T10:00:00Z")
    first = cli("deactivate", "1", "ben@example.org", "--yes", "--reason", "ended", "-f", "json")
    assert first.exit_code == 0
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)
    second = cli("--actor", "alice", "activate", "1", "--yes", "-f", "json")
    assert second.exit_code == 0
    return records(first.stdout)[0]["batch"], records(second.stdout)[0]["batch"]


def event(event_id, at, actor, action, client, before, after, batch, reason=None):
    return {
        "id": event_id,
        "at": at,
        "actor": actor,
        "action": action,
        "client_id": client,
        "before": before,
        "after": after,
        "batch": batch,
        "reason": reason,
        "detail": None,
        "reason_erased": False,
    }


def test_audit_json_filters(cli, history):
    ended, back = history
    off = ("active", "deactivated", ended, "ended")
    deact1 = event(6, "2026-11-20T10:00:00Z", "tester", "deactivate", 1, *off)
    deact2 = event(7, "2026-11-20T10:00:00Z", "tester", "deactivate", 2, *off)
    act1 = event(8, NOW_TEXT, "alice", "activate", 1, "deactivated", "active", back)

    def audit(*args: str):
        run = cli("audit", *args, "--format", "json")
        assert run.exit_code == 0, run.stderr
        return records(run.stdout)

    everything = audit()
    assert [e["id"] for e in everything] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert everything[5:] == [deact1, deact2, act1]
    assert audit("--client", "1")[1:] == [deact1, act1]
    assert audit("--client", "ANA@example.org")[1:] == [deact1, act1]
    assert audit("--action", "deactivate") == [deact1, deact2]
    assert audit("--batch", back) == [act1]
    assert audit("--since", "2026-11-21") == [act1]
    assert audit("--since", "2026-11-20T10:00:00Z") == [deact1, deact2, act1]
    assert audit("--since", "3d") == [act1]
    assert audit("--limit", "2") == [deact2, act1]
    assert audit("--client", "2", "--action", "deactivate") == [deact2]
    assert audit("--client", "99") == []


def test_audit_csv(cli, history):
    run = cli("audit", "--action", "activate", "--format", "csv")
    assert run.exit_code == 0
    rows = list(csv.reader(io.StringIO(run.stdout)))
    assert rows == [
        [
            "id",
            "at",
            "actor",
            "action",
            "client_id",
            "before",
            "after",
            "batch",
            "reason",
            "detail",
        ],
        ["8", NOW_TEXT, "alice", "activate", "1", "deactivated", "active", history[1], "", ""],
    ]


def test_audit_table(cli, history):
    run = cli("audit", "--client", "2")
    assert run.exit_code == 0
    lines = run.stdout.splitlines()
    assert lines[0].split() == [
        "id",
        "at",
        "actor",
        "action",
        "client",
        "change",
        "batch",
        "reason",
    ]
    assert lines[2].split() == [
        "7", "2026-11-20T10:00:00Z", "tester", "deactivate", "2",
        "active", "->", "deactivated", history[0], "ended",
    ]  # fmt: skip
    assert cli("audit", "--action", "purge").stdout == "No audit events match.\n"


def test_audit_unknown_email_and_bad_since(cli, history):
    unknown = cli("audit", "--client", "zed@example.org")
    assert unknown.exit_code == 3
    assert unknown.stderr.startswith("Error: There is no client 'zed@example.org'")
    since = cli("audit", "--since", "last week")
    assert since.exit_code == 2
    assert since.stderr == (
        "Error: --since 'last week' is not a date; use e.g. 2026-01-31, 2026-01-31T09:00Z or 30d.\n"
    )


def test_actor_option_and_environment_are_recorded(cli, practice, monkeypatch):
    assert cli("--actor", "dr.lee", "deactivate", "1", "--yes").exit_code == 0
    monkeypatch.setenv("PBCLIENTS_ACTOR", "cron-job")
    assert cli("deactivate", "2", "--yes").exit_code == 0
    assert cli("--actor", "dr.lee", "activate", "2", "--yes").exit_code == 0
    monkeypatch.delenv("PBCLIENTS_ACTOR")
    assert cli("activate", "1", "--yes").exit_code == 0
    events = records(cli("audit", "--format", "json").stdout)[5:]
    import getpass

    assert [e["actor"] for e in events] == ["dr.lee", "cron-job", "dr.lee", getpass.getuser()]


def test_reading_commands_write_no_audit_events(cli, history, engine):
    events = audit_count(engine)
    for args in (["list"], ["show", "1"], ["plan"], ["audit"], ["audit", "verify"], ["paths"]):
        assert cli(*args).exit_code == 0
    assert cli("deactivate", "3", "--dry-run").exit_code == 0
    assert audit_count(engine) == events


# --- paths -----------------------------------------------------------------------------------


def test_paths_shows_what_was_resolved(cli, db_target, isolated_home):
    run = cli("paths")
    assert run.exit_code == 0
    data = isolated_home / "xdg_data_home" / "pbclients"
    state = isolated_home / "xdg_state_home" / "pbclients"
    assert run.stdout.splitlines()[:4] == [
        f"database: {db_target}",
        f"demo database: {data / 'demo.db'}",
        f"backups: {data / 'backups'}",
        f"purge log: {state / 'log' / 'purge.log'}",
    ]


def test_paths_follows_pbclients_db(isolated_home, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from pbclients.cli.app import app

    monkeypatch.setenv("PBCLIENTS_DB", str(tmp_path / "elsewhere.db"))
    run = CliRunner().invoke(app, ["paths"])
    assert run.stdout.splitlines()[0] == f"database: {tmp_path / 'elsewhere.db'}"
    monkeypatch.delenv("PBCLIENTS_DB")
    run = CliRunner().invoke(app, ["paths"])
    default = isolated_home / "xdg_data_home" / "pbclients" / "practice.db"
    assert run.stdout.splitlines()[0] == f"database: {default}"
    assert not default.exists()
