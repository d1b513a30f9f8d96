"""undo BATCH: revert activate/deactivate/delete batches, leave changed clients alone."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlmodel import select

from pbclients import audit
from pbclients.db import reading, writing
from pbclients.errors import BadInput, PlanLimitReached, TransitionNotAllowed
from pbclients.models import Client
from pbclients.operation import Change
from pbclients.plan import usage
from pbclients.purge import purge
from pbclients.undo import preview as preview_undo
from pbclients.undo import undo_batch
from tests.factory import NOW
from tests.test_purge import mark_deleted

LATER = NOW + timedelta(hours=2)


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch):
    monkeypatch.setenv("PBCLIENTS_NOW", "2026-11-26T09:00:00Z")


def states(engine) -> dict[int, tuple[str, object, object, object]]:
    with reading(engine) as session:
        return {
            c.id: (c.status, c.deactivated_at, c.deleted_at, c.purge_after)  # type: ignore[misc]
            for c in session.exec(select(Client))
        }


def batch_of(result) -> str:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)[0]["batch"]


def outcomes(result) -> list[tuple[int, str | None, str | None, str, str | None]]:
    assert result.exit_code == 0, result.stderr
    return [
        (r["id"], r["before"], r["after"], r["outcome"], r["note"])
        for r in json.loads(result.stdout)
    ]


def test_undo_a_deactivation_brings_access_back(cli, engine, practice):
    batch = batch_of(cli("deactivate", "1", "2", "--yes", "--format", "json"))
    result = cli("undo", batch, "--yes", "--reason", "wrong list", "--format", "json")
    assert outcomes(result) == [
        (1, "deactivated", "active", "changed", None),
        (2, "deactivated", "active", "changed", None),
    ]
    assert states(engine)[1] == ("active", None, None, None)
    assert states(engine)[2] == ("active", None, None, None)
    undo_batch_id = json.loads(result.stdout)[0]["batch"]
    with reading(engine) as session:
        events = audit.events(session, batch_id=undo_batch_id)
    assert [(e.action, e.client_id, e.before, e.after, e.reason) for e in events] == [
        ("activate", 1, "deactivated", "active", f"undo of batch {batch}: wrong list"),
        ("activate", 2, "deactivated", "active", f"undo of batch {batch}: wrong list"),
    ]


def test_clients_changed_since_are_reported_and_left_alone(cli, engine, practice):
    batch = batch_of(cli("deactivate", "1", "2", "3", "--yes", "--format", "json"))
    cli("activate", "2", "--yes")
    cli("activate", "3", "--yes")
    cli("deactivate", "3", "--yes")  # back to 'deactivated', but not by this batch
    result = cli("undo", batch, "--yes", "--format", "json")
    assert outcomes(result) == [
        (1, "deactivated", "active", "changed", None),
        (2, "active", "active", "skipped", "changed since"),
        (3, "deactivated", "deactivated", "skipped", "changed since"),
    ]
    assert [states(engine)[i][0] for i in (1, 2, 3)] == ["active", "active", "deactivated"]


def test_undo_an_activation_deactivates_again_at_the_time_of_the_undo(engine, practice, cli):
    cli("deactivate", "4", "--yes")
    batch = batch_of(cli("activate", "4", "--yes", "--format", "json"))
    undo_batch(engine, batch, Change("tester", None, LATER))
    assert states(engine)[4] == ("deactivated", LATER, None, None)


def test_undoing_an_undo_is_allowed(cli, engine, practice):
    batch = batch_of(cli("deactivate", "5", "--yes", "--format", "json"))
    undo_id = batch_of(cli("undo", batch, "--yes", "--format", "json"))
    assert states(engine)[5][0] == "active"
    again = cli("undo", undo_id, "--yes", "--format", "json")
    assert outcomes(again) == [(5, "active", "deactivated", "changed", None)]
    assert states(engine)[5][0] == "deactivated"


def test_undo_a_deletion_returns_each_client_to_its_previous_state(cli, engine, practice):
    cli("deactivate", "4", "--yes")
    deactivated_at = states(engine)[4][1]
    batch = mark_deleted(engine, [3, 4])
    with reading(engine) as session:
        assert (usage(session).counted, usage(session).deleted) == (3, 2)
    result = cli("undo", batch, "--yes", "--format", "json")
    assert outcomes(result) == [
        (3, "deleted", "active", "changed", None),
        (4, "deleted", "deactivated", "changed", None),
    ]
    assert states(engine)[3] == ("active", None, None, None)
    assert states(engine)[4] == ("deactivated", deactivated_at, None, None)
    with reading(engine) as session:
        assert (usage(session).counted, usage(session).deleted) == (5, 0)
        events = audit.events(session, action="undelete")
    assert [(e.client_id, e.before, e.after) for e in events] == [
        (3, "deleted", "active"),
        (4, "deleted", "deactivated"),
    ]


def test_a_purged_client_cannot_come_back_by_undo(cli, engine, practice):
    batch = mark_deleted(engine, [2, 3], at=NOW - timedelta(days=30))
    with writing(engine) as session:  # client 3 is due later than client 2
        session.get(Client, 3).purge_after = NOW + timedelta(days=1)  # type: ignore[union-attr]
    purge(engine, Change("cron", None, NOW))
    result = cli("undo", batch, "--yes", "--format", "json")
    assert outcomes(result) == [
        (2, None, None, "skipped", "purged"),
        (3, "deleted", "active", "changed", None),
    ]
    assert sorted(states(engine)) == [1, 3, 4, 5]


def test_nothing_left_to_undo_exits_0_and_says_why(cli, engine, practice):
    batch = mark_deleted(engine, [2])
    purge(engine, Change("cron", None, NOW + timedelta(days=30)))
    result = cli("undo", batch)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        f"Nothing to undo in batch {batch} (skipped, left alone: 2 purged)."
    )


def test_undo_of_a_deletion_whose_email_was_reused_skips_that_client(cli, engine, practice):
    batch = mark_deleted(engine, [3, 4])
    added = cli("add", "--email", "Chloe@example.org", "--first-name", "C", "--last-name", "N",
                "--yes")  # fmt: skip
    assert added.exit_code == 0, added.stderr
    result = cli("undo", batch, "--yes", "--format", "json")
    assert outcomes(result) == [
        (3, "deleted", "deleted", "skipped", "e-mail now used by client 6"),
        (4, "deleted", "active", "changed", None),
    ]


def test_undo_of_a_deletion_past_the_plan_limit_is_refused(cli, engine, practice):
    batch = mark_deleted(engine, [3, 4])
    assert cli("plan", "--set-limit", "4", "--yes").exit_code == 0
    before = states(engine)
    result = cli("undo", batch, "--yes")
    assert result.exit_code == 6
    assert result.stderr.startswith(
        f"Error: Undoing batch {batch} brings back 2 clients would exceed the plan limit of 4"
    )
    assert states(engine) == before
    with pytest.raises(PlanLimitReached):
        undo_batch(engine, batch, Change("tester"))


def test_dry_run_shows_the_plan_and_writes_nothing(cli, engine, practice):
    batch = batch_of(cli("deactivate", "1", "--yes", "--format", "json"))
    trail = len(_all_events(engine))
    result = cli("undo", batch, "--dry-run", "--format", "json")
    assert outcomes(result) == [(1, "deactivated", "active", "planned", None)]
    assert states(engine)[1][0] == "deactivated"
    assert len(_all_events(engine)) == trail
    table = cli("undo", batch, "--dry-run")
    assert table.stdout.splitlines()[-1] == (
        f"Dry run: would revert 1 client of deactivate batch {batch}; nothing was written."
    )


def test_undo_without_terminal_and_without_yes_refuses(cli, engine, practice):
    batch = batch_of(cli("deactivate", "1", "--yes", "--format", "json"))
    result = cli("undo", batch)
    assert result.exit_code == 2
    assert "pass --yes" in result.stderr
    assert states(engine)[1][0] == "deactivated"


def test_unknown_batch_is_bad_input(cli, engine, practice):
    result = cli("undo", "feedfacecafe", "--yes")
    assert result.exit_code == 3
    assert result.stderr == (
        "Error: There is no batch 'feedfacecafe' in the audit trail; nothing was changed. "
        "Find batch ids with `pbclients audit`.\n"
    )
    with pytest.raises(BadInput):
        preview_undo(engine, "feedfacecafe")


def _all_events(engine):
    with reading(engine) as session:
        return audit.events(session)


@pytest.mark.parametrize("action", ["add", "purge", "plan.set_limit"])
def test_batches_of_other_actions_cannot_be_undone(cli, engine, practice, action):
    if action == "add":
        batch = _all_events(engine)[0].batch_id
    elif action == "purge":
        mark_deleted(engine, [5])
        batch = str(purge(engine, Change("cron", None, NOW + timedelta(days=30))).batch_id)
    else:
        assert cli("plan", "--set-limit", "9", "--yes").exit_code == 0
        batch = _all_events(engine)[-1].batch_id
    before = states(engine)
    result = cli("undo", batch, "--yes")
    assert result.exit_code == 3
    assert result.stderr.startswith(
        f"Error: Batch {batch} is a '{action}' batch, which cannot be undone ("
    )
    assert result.stderr.endswith("; nothing was changed.\n")
    assert states(engine) == before
    with pytest.raises(TransitionNotAllowed):
        undo_batch(engine, batch, Change("tester"))


def test_an_undelete_batch_cannot_be_undone(cli, engine, practice):
    undo_id = batch_of(cli("undo", mark_deleted(engine, [4]), "--yes", "--format", "json"))
    result = cli("undo", undo_id, "--yes")
    assert result.exit_code == 3
    assert "`pbclients delete`" in result.stderr
    assert states(engine)[4][0] == "active"


def test_undo_a_batch_of_the_real_delete_command(cli, engine, practice, tmp_path):
    cli("deactivate", "5", "--yes")
    deleted = cli("delete", "4", "5", "--backup-dir", str(tmp_path), "--yes", "--format", "json")
    batch = batch_of(deleted)
    result = cli("undo", batch, "--yes", "--format", "json")
    assert outcomes(result) == [
        (4, "deleted", "active", "changed", None),
        (5, "deleted", "deactivated", "changed", None),
    ]
    assert [states(engine)[i][0] for i in (4, 5)] == ["active", "deactivated"]


def test_a_client_changed_and_changed_back_after_the_preview_stops_the_undo(cli, engine, practice):
    """Apply re-checks what the preview saw: the same status again is still a change since."""
    from pbclients import undo
    from pbclients.errors import DatabaseBusy

    batch = batch_of(cli("deactivate", "1", "2", "--yes", "--format", "json"))
    plan = undo.preview(engine, batch)
    assert [move.client_id for move in plan.detail.moves] == [1, 2]
    cli("activate", "2", "--yes")
    cli("deactivate", "2", "--yes")
    before, trail = states(engine), len(_all_events(engine))
    with pytest.raises(DatabaseBusy, match="changed while undo ran; nothing was changed"):
        undo.apply(engine, plan, Change("tester"))
    assert states(engine) == before
    assert len(_all_events(engine)) == trail
    # Planned again, client 2 is skipped and client 1 goes back.
    assert [r.outcome.value for r in undo.undo_batch(engine, batch, Change("tester")).results] == [
        "changed",
        "skipped",
    ]
