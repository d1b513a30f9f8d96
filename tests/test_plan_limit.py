"""The plan limit: active and deactivated hold a seat, deleted ones free it; add and import
stop past the limit with exit 6 and say how many seats deleting would free."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import func, select

from pbclients.db import reading
from pbclients.models import Client
from tests.test_purge import mark_deleted


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch):
    monkeypatch.setenv("PBCLIENTS_NOW", "2026-11-26T09:00:00Z")


def client_count(engine) -> int:
    with reading(engine) as session:
        return session.exec(select(func.count()).select_from(Client)).one()


def plan_json(cli) -> dict[str, object]:
    result = cli("plan", "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_plan_counts_active_and_deactivated_but_not_deleted(cli, engine, practice):
    cli("deactivate", "2", "3", "--yes")
    mark_deleted(engine, [5])
    assert cli("plan", "--set-limit", "10", "--yes").exit_code == 0
    assert plan_json(cli) == {
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
    table = cli("plan")
    assert table.stdout.splitlines() == [
        "plan limit: 10",
        "counted:    4 (active 2 + deactivated 2)",
        "available:  6",
        "deleted, pending purge: 1 (hold no seat)",
        "retention before purge: 30 days",
        "record retention: 7 years after last activity",
        "time zone:  UTC",
    ]


def test_unlimited_plan(cli, engine, practice):
    assert cli("plan", "--set-limit", "3", "--yes").exit_code == 0
    assert cli("plan", "--set-limit", "none", "--yes").exit_code == 0
    usage = plan_json(cli)
    assert (usage["limit"], usage["available"]) == (None, None)
    added = cli("add", "--email", "fay@example.org", "--first-name", "Fay", "--last-name", "Ro",
                "--yes")  # fmt: skip
    assert added.exit_code == 0, added.stderr


def test_add_past_the_limit_exits_6_and_names_the_seats_deleting_would_free(cli, engine, practice):
    cli("deactivate", "2", "3", "--yes")
    assert cli("plan", "--set-limit", "5", "--yes").exit_code == 0
    result = cli("add", "--email", "fay@example.org", "--first-name", "Fay", "--last-name", "Ro",
                 "--yes")  # fmt: skip
    assert result.exit_code == 6
    assert result.stdout == ""
    assert result.stderr == (
        "Error: Adding 1 client would exceed the plan limit of 5 (5 counted: 3 active, 2 "
        "deactivated); nothing was added. Deleting clients frees their seats (deleting the 2 "
        "deactivated would free 2), or raise the limit with `pbclients plan --set-limit N`.\n"
    )
    assert client_count(engine) == 5


def test_deactivating_frees_no_seat_but_deleting_does(cli, engine, practice):
    assert cli("plan", "--set-limit", "5", "--yes").exit_code == 0
    new = ("add", "--email", "fay@example.org", "--first-name", "Fay", "--last-name", "Ro", "--yes")
    cli("deactivate", "4", "--yes")
    assert cli(*new).exit_code == 6
    mark_deleted(engine, [4])
    assert cli(*new).exit_code == 0
    assert plan_json(cli)["available"] == 0


def test_import_past_the_limit_adds_nobody(cli, engine, practice, tmp_path: Path):
    assert cli("plan", "--set-limit", "6", "--yes").exit_code == 0
    csv_file = tmp_path / "new.csv"
    csv_file.write_text(
        "email,first_name,last_name\nfay@example.org,Fay,Ro\ngus@example.org,Gus,Lee\n"
    )
    result = cli("import", str(csv_file), "--yes")
    assert result.exit_code == 6
    assert result.stderr.startswith(
        "Error: Adding 2 clients would exceed the plan limit of 6 (5 counted: 5 active, "
        "0 deactivated); nothing was added."
    )
    assert client_count(engine) == 5
    # Exactly at the limit is fine.
    csv_file.write_text("email,first_name,last_name\nfay@example.org,Fay,Ro\n")
    assert cli("import", str(csv_file), "--yes").exit_code == 0
    assert plan_json(cli)["counted"] == 6


def test_import_from_stdin_past_the_limit_exits_6(cli, engine, practice):
    assert cli("plan", "--set-limit", "5", "--yes").exit_code == 0
    result = cli("import", "-", "--yes", input="email,first_name,last_name\nfay@example.org,F,R\n")
    assert result.exit_code == 6
    assert client_count(engine) == 5
