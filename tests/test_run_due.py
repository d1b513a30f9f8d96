"""The automation policy, `run-due` and `due`, through the CLI on both engines.

The practice fixture (clients 1-5, created 90 days before NOW): Ana (1) was active
a day ago; Ben (2) has an upcoming appointment and an active payment plan; Chloe
(3), Dev (4) and Elif (5) have done nothing since they joined.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.factory import NOW
from tests.helpers import NOW_TEXT, audit_count, records, snapshot, statuses, subprocess_env
from tests.test_purge import log_lines, mark_deleted, purge_events, trail_intact
from tests.test_schedules import events


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)


def set_policy(cli, *args: str) -> None:
    run = cli("policy", "set", *args, "--yes")
    assert run.exit_code == 0, run.stderr


def test_the_policy_is_off_by_default_and_changes_are_audited(cli, practice, engine):
    shown = records(cli("policy", "--format", "json").stdout)
    assert shown == {
        "deactivate_after": None, "delete_after": None, "max_changes": "5%",
        "exemptions": ["upcoming appointment", "active payment plan", "legal hold"],
    }  # fmt: skip
    before = snapshot(engine)
    assert cli("run-due").exit_code == 0
    assert snapshot(engine) == before

    set_policy(cli, "--deactivate-after", "60d", "--max-changes", "10")
    assert records(cli("policy", "-f", "json").stdout)["deactivate_after"] == "60d"
    [event] = [e for e in events(engine, "policy.set")]
    assert event[0] is None  # no client
    set_policy(cli, "--deactivate-after", "off")
    assert records(cli("policy", "-f", "json").stdout)["deactivate_after"] is None


@pytest.mark.parametrize(
    "args",
    [
        ("--deactivate-after", "soon"),
        ("--delete-after", "0d"),
        ("--max-changes", "-1"),
        ("--max-changes", "101%"),
        (),
    ],
)
def test_bad_policy_settings_are_usage_errors(cli, practice, engine, args):
    before = audit_count(engine)
    run = cli("policy", "set", *args, "--yes")
    assert run.exit_code == 2
    assert audit_count(engine) == before


def test_the_policy_deactivates_the_inactive_and_exempts_appointments_and_payment_plans(
    cli, practice, engine
):
    set_policy(cli, "--deactivate-after", "60d", "--max-changes", "10")
    run = cli("run-due", "--format", "json")

    assert run.exit_code == 0, run.stderr
    report = records(run.stdout)["policy"]
    assert (report["deactivated"], report["deleted"], report["skipped"]) == (3, 0, None)
    # Ben (2) has been inactive as long, but has an appointment and a payment plan.
    assert statuses(engine) == {1: "active", 2: "active", 3: "deactivated", 4: "deactivated",
                                5: "deactivated"}  # fmt: skip
    assert {detail["policy"] for _, detail, _ in events(engine, "deactivate")} == {
        "deactivate-after 60d"
    }
    assert trail_intact(engine)


def test_an_active_payment_plan_alone_exempts_a_client(cli, practice, engine):
    from tests.helpers import sql

    sql(engine, "DELETE FROM appointment WHERE client_id = 2")
    set_policy(cli, "--deactivate-after", "60d", "--max-changes", "10")
    assert cli("run-due").exit_code == 0
    assert statuses(engine)[2] == "active"
    sql(engine, "UPDATE payment_plan SET active = false WHERE client_id = 2")
    assert cli("run-due").exit_code == 0
    assert statuses(engine)[2] == "deactivated"


def test_a_legal_hold_exempts_from_the_rules_and_skips_a_scheduled_delete(
    cli, practice, engine, monkeypatch, tmp_path
):
    assert cli("deactivate", "4", "--yes").exit_code == 0
    assert cli("delete", "4", "--at", "+1d", "--backup-dir", str(tmp_path), "--yes").exit_code == 0
    held = cli("hold", "3", "4", "--reason", "litigation", "--yes")
    assert held.exit_code == 0, held.stderr
    set_policy(cli, "--deactivate-after", "60d", "--delete-after", "60d", "--max-changes", "10")

    monkeypatch.setenv("PBCLIENTS_NOW", "2026-11-28T00:00:00Z")
    run = cli("run-due", "--format", "json")

    assert run.exit_code == 0, run.stderr
    report = records(run.stdout)
    assert report["schedules"][0]["skipped"] == [{"id": 4, "note": "under legal hold"}]
    assert (report["policy"]["deactivated"], report["policy"]["deleted"]) == (1, 0)
    assert statuses(engine) == {1: "active", 2: "active", 3: "active", 4: "deactivated",
                                5: "deactivated"}  # fmt: skip


def test_the_delete_rule_deletes_only_deactivated_clients_with_a_backup(
    cli, practice, engine, tmp_path
):
    assert cli("deactivate", "4", "--yes").exit_code == 0
    set_policy(cli, "--delete-after", "60d", "--max-changes", "10")
    folder = tmp_path / "b"
    run = cli("run-due", "--backup-dir", str(folder), "--format", "json")

    assert run.exit_code == 0, run.stderr
    assert records(run.stdout)["policy"]["deleted"] == 1
    assert statuses(engine)[4] == "deleted"
    assert statuses(engine)[3] == "active"  # inactive but never deactivated: not deleted
    [(client, detail, reason)] = events(engine, "delete")
    assert (client, detail["policy"], reason) == (
        4, "delete-after 60d", "automation policy: delete-after 60d"
    )  # fmt: skip
    assert (folder / detail["backup"]).is_file()


def test_a_policy_over_its_cap_changes_nobody_but_schedules_and_purge_still_run(
    cli, practice, engine, monkeypatch, isolated_home
):
    # 5 counted clients: 5% rounds down to 0, so any policy change exceeds the default cap.
    set_policy(cli, "--deactivate-after", "60d")
    assert cli("deactivate", "1", "--at", "2026-11-26T10:00Z", "--yes").exit_code == 0
    mark_deleted(engine, [5], at=NOW.replace(year=2025))

    monkeypatch.setenv("PBCLIENTS_NOW", "2026-11-26T12:00:00Z")
    run = cli("run-due")

    assert run.exit_code == 7
    assert (
        "Error in policy: the automation policy would change 2 clients, more than its cap "
        "of 0, so it changed nobody this run" in " ".join(run.stderr.split())
    )
    assert statuses(engine) == {1: "deactivated", 2: "active", 3: "active", 4: "active"}
    assert [e.client_id for e in purge_events(engine)] == [5]
    [line] = log_lines(isolated_home)
    assert " exit=7 " in line and " policy=over-cap " in line and " schedules=1 " in line
    assert "example.org" not in line.split(" db=")[0]  # no e-mail, no client data


def test_the_cap_on_a_plain_command_is_exit_7_with_nothing_changed(cli, practice, engine):
    before = snapshot(engine)
    run = cli("deactivate", "--inactive-for", "60d", "--max-changes", "2", "--yes")
    assert run.exit_code == 7
    assert snapshot(engine) == before


def test_run_due_twice_changes_nothing_the_second_time(cli, practice, engine, monkeypatch):
    set_policy(cli, "--deactivate-after", "60d", "--max-changes", "10")
    assert cli("delete", "4", "--at", "+1d", "--yes").exit_code == 0
    monkeypatch.setenv("PBCLIENTS_NOW", "2026-11-28T00:00:00Z")
    assert cli("run-due").exit_code == 0
    first = snapshot(engine)
    again = cli("run-due", "--format", "json")
    assert again.exit_code == 0, again.stderr
    report = records(again.stdout)
    assert (report["schedules"], report["policy"]["deactivated"], report["purged"]) == ([], 0, 0)
    assert snapshot(engine) == first
    assert trail_intact(engine)


def test_run_due_prunes_the_backups_of_purged_clients_after_the_record_retention(
    cli, practice, engine, monkeypatch, tmp_path
):
    folder = tmp_path / "b"
    assert cli("delete", "4", "--backup-dir", str(folder), "--yes").exit_code == 0
    [backup] = list(folder.iterdir())
    monkeypatch.setenv("PBCLIENTS_NOW", "2030-01-01T00:00:00Z")  # purged, retention not over
    first = records(cli("run-due", "--backup-dir", str(folder), "--format", "json").stdout)
    assert (first["purged"], first["pruned"]) == (1, 0)
    assert backup.exists()

    monkeypatch.setenv("PBCLIENTS_NOW", "2034-01-01T00:00:00Z")  # 7 years after the deletion
    run = cli("run-due", "--backup-dir", str(folder), "--format", "json")

    assert run.exit_code == 0, run.stderr
    assert records(run.stdout)["pruned"] == 1
    assert not backup.exists()
    [(client, detail, _)] = events(engine, "prune")
    assert client == 4 and set(detail) == {"sha256"}
    assert trail_intact(engine)


def test_cron_run_due_is_silent_and_logs_one_line(db_target, practice, engine, isolated_home):
    mark_deleted(engine, [2, 4], at=NOW.replace(year=2025))
    result = subprocess.run(
        [sys.executable, "-m", "pbclients", "--db", db_target, "run-due"],
        env=subprocess_env(PBCLIENTS_NOW=NOW_TEXT),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    [line] = log_lines(isolated_home)
    assert " purged=2 " in line and " command=run-due " in line and " exit=0 " in line
    assert " schedules=0 " in line and " policy=off " in line and " pruned=0 " in line
    assert sorted(statuses(engine)) == [1, 3, 5]


def _started_at_once(db_target: str, release, commands: list[str]) -> list[subprocess.Popen]:
    """Each command in its own process, all told to wait once they hold the purge lock."""
    env = {
        **os.environ,
        "PBCLIENTS_NOW": NOW_TEXT,
        "PBCLIENTS_FAULT": f"wait-after:purge.locked:{release}",
    }
    return [
        subprocess.Popen(
            [sys.executable, "-m", "pbclients", "--db", db_target, command, "--yes"]
            if command == "purge"
            else [sys.executable, "-m", "pbclients", "--db", db_target, command],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]


@pytest.mark.parametrize("commands", [["run-due", "run-due"], ["purge", "run-due"]])
def test_overlapping_runs_exit_5_and_change_nothing(
    db_target, practice, engine, tmp_path, commands
):
    mark_deleted(engine, [2], at=NOW.replace(year=2025))
    release = tmp_path / "release"
    procs = _started_at_once(db_target, release, commands)
    try:
        deadline = time.monotonic() + 30
        while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.02)
        [loser] = [p for p in procs if p.poll() is not None]
        out, err = loser.communicate()
        assert (loser.returncode, out) == (5, "")
        assert err.startswith("Error: Another purge or run-due is running on this database")
        # The winner waits holding the lock: nothing is purged yet.
        assert sorted(statuses(engine)) == [1, 2, 3, 4, 5]
    finally:
        release.touch()
        for proc in procs:
            if proc.returncode is None:
                proc.communicate(timeout=60)
    [winner] = [p for p in procs if p is not loser]
    assert winner.returncode == 0
    assert sorted(statuses(engine)) == [1, 3, 4, 5]


def test_due_lists_what_will_happen_with_names_to_warn_clients(cli, practice, engine):
    set_policy(cli, "--deactivate-after", "100d", "--max-changes", "10")
    assert cli("activate", "1", "--yes").exit_code == 0
    assert cli("deactivate", "1", "--at", "2026-12-05", "--yes").exit_code == 0
    mark_deleted(engine, [5], at=NOW.replace(month=11, day=1))  # purge after 30 days

    run = cli("due", "--within", "14d", "--format", "json")

    assert run.exit_code == 0, run.stderr
    rows = [(r["at"], r["action"], r["id"], r["source"]) for r in records(run.stdout)]
    assert rows == [
        ("2026-12-01T09:00:00Z", "purge", 5, "retention ended"),
        ("2026-12-05T00:00:00Z", "deactivate", 1, "schedule 1"),
        # Joined 90 days ago: 100 days of inactivity come in 10 days.
        ("2026-12-06T09:00:00Z", "deactivate", 3, "policy: inactive for 100d"),
        ("2026-12-06T09:00:00Z", "deactivate", 4, "policy: inactive for 100d"),
    ]
    assert records(run.stdout)[1]["email"] == "ana@example.org"
    soon = cli("due", "--within", "3d", "--format", "json")
    assert records(soon.stdout) == []
    table = cli("due")
    assert "4 client changes due within 14d." in table.stdout


def test_run_due_dry_run_shows_what_is_due_now_and_writes_nothing(
    cli, practice, engine, monkeypatch
):
    set_policy(cli, "--deactivate-after", "60d", "--max-changes", "10")
    before = snapshot(engine)
    run = cli("run-due", "--dry-run", "--format", "json")
    assert run.exit_code == 0, run.stderr
    assert [(r["action"], r["id"]) for r in records(run.stdout)] == [
        ("deactivate", 3), ("deactivate", 4), ("deactivate", 5)
    ]  # fmt: skip
    assert snapshot(engine) == before
