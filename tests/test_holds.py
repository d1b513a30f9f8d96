"""Legal hold: held clients cannot be deleted or purged; release lets the next purge happen."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from pbclients import clock
from pbclients.errors import TransitionNotAllowed
from pbclients.paths import purge_log
from tests.factory import NOW
from tests.helpers import NOW_TEXT, outcomes, records, snapshot, statuses


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)


def later(days: int) -> dict[str, str]:
    return {"PBCLIENTS_NOW": str(clock.iso(NOW + timedelta(days=days)))}


def audit_events(cli, action: str) -> list[dict]:
    result = cli("audit", "--action", action, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return records(result.stdout)


def test_hold_is_audited_with_client_ids_and_the_reason(cli, practice, engine):
    result = cli(
        "hold", "1", "ben@example.org", "--reason", "case 2026-114", "--yes", "--format", "json"
    )
    assert result.exit_code == 0, result.stderr
    assert outcomes(result.stdout) == [
        ("1", 1, "not held", "held", "changed"),
        ("ben@example.org", 2, "not held", "held", "changed"),
    ]
    events = audit_events(cli, "hold")
    assert [(e["client_id"], e["reason"], e["detail"]) for e in events] == [
        (1, "case 2026-114", None),
        (2, "case 2026-114", None),
    ]
    assert "example.org" not in json.dumps(events)
    again = cli("hold", "2", "--reason", "x", "--yes", "--format", "json")
    assert outcomes(again.stdout) == [("2", 2, "held", "held", "unchanged")]


def test_hold_needs_a_reason_and_a_future_end(cli, practice, engine):
    before = snapshot(engine)
    missing = cli("hold", "1", "--yes")
    assert missing.exit_code == 2
    assert "needs a reason" in missing.stderr
    past = cli("hold", "1", "--reason", "r", "--until", "2026-01-01", "--yes")
    assert past.exit_code == 2
    assert "has already passed" in past.stderr
    assert cli("hold", "1", "--reason", "r").exit_code == 2  # no terminal, no --yes
    dry = cli("hold", "1", "--reason", "r", "--dry-run")
    assert dry.exit_code == 0 and "Dry run: would hold 1 client" in dry.stdout
    assert snapshot(engine) == before


def test_a_held_client_cannot_be_deleted_and_nothing_happens(cli, practice, engine, tmp_path):
    assert cli("hold", "2", "4", "--reason", "subpoena", "--yes").exit_code == 0
    before = snapshot(engine)
    folder = tmp_path / "backups"
    result = cli("delete", "1", "2", "4", "--backup-dir", str(folder), "--yes")
    assert result.exit_code == 3
    assert result.stderr.startswith(
        "Error: Clients 2, 4 are under legal hold and cannot be deleted; nothing was changed."
    )
    assert snapshot(engine) == before
    assert not folder.exists() or not list(folder.iterdir())  # not even a backup was written
    # Deactivating and activating a held client stay allowed: they keep every record.
    assert cli("deactivate", "2", "--yes").exit_code == 0
    assert cli("activate", "2", "--yes").exit_code == 0
    assert cli("delete", "1", "--backup-dir", str(folder), "--yes").exit_code == 0


def test_delete_rechecks_the_hold_after_its_plan(engine, practice, tmp_path):
    from pbclients import deletion, holds
    from pbclients.csvinput import Reference
    from pbclients.operation import Change
    from pbclients.selection import Selection

    three = Selection([Reference("3", "argument", None)])
    plan = deletion.preview(engine, deletion.Deletion(three, tmp_path))
    hold_plan = holds.preview(engine, holds.HoldRequest(three, reason="late subpoena"))
    holds.apply(engine, hold_plan, Change("admin", "late subpoena", NOW))
    before = snapshot(engine)
    with pytest.raises(TransitionNotAllowed, match="Client 3 is under legal hold"):
        deletion.apply(engine, plan, Change("admin", None, NOW))
    assert snapshot(engine) == before


def test_show_and_list_say_who_is_held(cli, practice, engine):
    until = "2027-06-30"
    assert (
        cli("hold", "3", "--reason", "[bold]case\x1b 9", "--until", until, "--yes").exit_code == 0
    )
    shown = records(cli("show", "3", "--format", "json").stdout)
    assert shown["held"] is True
    assert shown["hold"] == {
        "reason": "[bold]case\x1b 9",
        "held_at": NOW_TEXT,
        "until": "2027-07-01T00:00:00Z",  # through the last day, UTC
        "actor": "tester",
    }
    assert records(cli("show", "1", "--format", "json").stdout)["held"] is False
    table = cli("show", "3").stdout
    assert "legal hold: held since 2026-11-26T09:00:00Z until 2027-07-01T00:00:00Z" in table
    assert "[bold]case\\x1b 9" in table  # literal, control character made visible
    assert cli("list", "--held", "--format", "ids").stdout == "3\n"
    listed = records(cli("list", "--format", "json").stdout)
    assert [c["id"] for c in listed if c["held"]] == [3]
    # After its end the hold holds nothing.
    assert cli("list", "--held", "--format", "ids", env=later(300)).stdout == ""


def test_purge_skips_held_clients_and_release_lets_the_next_purge_happen(
    cli, practice, engine, tmp_path
):
    folder = tmp_path / "backups"
    assert cli("delete", "3", "4", "--backup-dir", str(folder), "--yes").exit_code == 0
    # Holding a deleted client keeps them pending past their purge date.
    assert cli("hold", "3", "--reason", "litigation", "--yes").exit_code == 0
    purge = cli("purge", "--yes", "--format", "json", env=later(31))
    assert purge.exit_code == 0, purge.stderr
    assert [(r["id"], r["outcome"], r["note"]) for r in records(purge.stdout)] == [
        (4, "changed", None),
        (3, "skipped", "legal hold"),
    ]
    assert statuses(engine)[3] == "deleted" and 4 not in statuses(engine)
    line = purge_log().read_text().splitlines()[-1]
    assert " purged=1 chunks=1 held=1 " in line and " exit=0 " in line
    table = cli("purge", "--yes", "--format", "table", env=later(32))
    assert "Nothing to purge. 1 client past retention kept under legal hold" in " ".join(
        table.stdout.split()
    )

    assert cli("hold", "--release", "3", "--reason", "case closed", "--yes").exit_code == 0
    assert [(e["client_id"], e["reason"]) for e in audit_events(cli, "release")] == [
        (3, "case closed")
    ]
    purge = cli("purge", "--yes", "--format", "json", env=later(33))
    assert [(r["id"], r["outcome"]) for r in records(purge.stdout)] == [(3, "changed")]
    assert 3 not in statuses(engine)
    assert "held=" not in purge_log().read_text().splitlines()[-1]
    assert cli("audit", "verify").exit_code == 0


def test_a_hold_that_ended_lets_purge_remove_the_client(cli, practice, engine, tmp_path):
    folder = tmp_path / "backups"
    assert cli("plan", "--set-retention", "1", "--yes").exit_code == 0
    assert cli("delete", "5", "--backup-dir", str(folder), "--yes").exit_code == 0
    assert cli("hold", "5", "--reason", "r", "--until", "2026-12-10", "--yes").exit_code == 0
    # 2026-12-08: past its retention (2026-11-27) but still held.
    held = cli("purge", "--dry-run", "--format", "json", env=later(12))
    assert [r["outcome"] for r in records(held.stdout)] == ["skipped"]
    # 2026-12-11 09:00: the hold ended at the start of the day.
    done = cli("purge", "--yes", "--format", "json", env=later(15))
    assert [(r["id"], r["outcome"]) for r in records(done.stdout)] == [(5, "changed")]
    assert 5 not in statuses(engine)


def test_release_of_a_client_not_held_is_unchanged(cli, practice, engine):
    result = cli("hold", "--release", "1", "--yes", "--format", "json")
    assert result.exit_code == 0
    assert outcomes(result.stdout) == [("1", 1, "not held", "not held", "unchanged")]
    assert cli("hold", "--release", "1", "--until", "2027-01-01", "--yes").exit_code == 2


def test_hold_takes_the_selection_options(cli, practice, engine, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("# subpoena\n1\n\n2\n")
    result = cli("hold", "--ids-from", str(ids), "--reason", "r", "--yes", "--format", "json")
    assert [row[1] for row in outcomes(result.stdout)] == [1, 2]
    program = cli("hold", "--program", "Sleep Foundations", "--reason", "r", "--yes", "-f", "json")
    assert [row[1] for row in outcomes(program.stdout)] == [3, 5]
    unknown = cli("hold", "99", "--reason", "r", "--yes")
    assert unknown.exit_code == 3
    capped = cli("hold", "4", "1", "--reason", "r", "--yes", "--max-changes", "0")
    assert capped.exit_code == 7


def test_the_hold_clause_is_usable_in_set_based_queries(cli, practice, engine):
    from sqlmodel import col, select

    from pbclients.db import reading
    from pbclients.holds import held_clause
    from pbclients.models import Client

    assert cli("hold", "2", "5", "--reason", "r", "--yes").exit_code == 0
    with reading(engine) as session:
        free = session.exec(
            select(col(Client.id)).where(~held_clause(Client.id, NOW)).order_by(col(Client.id))
        ).all()
    assert free == [1, 3, 4]
