"""restore: a client comes back from its backup, as deactivated, with every record."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlmodel import SQLModel

from pbclients.db import reading
from pbclients.models import RECORD_MODELS, Client
from pbclients.operation import Change
from pbclients.purge import purge
from tests.factory import NOW
from tests.helpers import NOW_TEXT, outcomes, records, snapshot, sql, statuses

# The state columns restore sets afresh; everything else must come back as it was.
STATE = {"status", "deactivated_at", "deleted_at", "purge_after"}


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)


def client_rows(engine, client_id: int) -> dict[str, Any]:
    """Every row of every table that belongs to the client (its profile without state)."""
    found: dict[str, Any] = {}
    with reading(engine) as session:
        table = Client.__table__  # type: ignore[attr-defined]
        profile = session.execute(select(table).where(table.c.id == client_id)).one_or_none()
        found["client"] = (
            {k: v for k, v in profile._mapping.items() if k not in STATE} if profile else None
        )
        for kind, model in RECORD_MODELS.items():
            table = model.__table__  # type: ignore[attr-defined]
            found[kind] = [
                tuple(row)
                for row in session.execute(
                    select(table).where(table.c.client_id == client_id).order_by(table.c.id)
                )
            ]
        programs = SQLModel.metadata.tables["program"]
        found["programs"] = [tuple(row) for row in session.execute(select(programs))]
    return found


def delete_one(cli, client: str, folder: Path) -> str:
    result = cli("delete", client, "--backup-dir", str(folder), "--yes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    return str(records(result.stdout)[0]["backup"])


def purge_all(engine) -> None:
    purge(engine, Change("cron", None, NOW + timedelta(days=31)))


def test_round_trip_export_delete_purge_restore_is_identical(cli, practice, engine, tmp_path):
    for client in ("1", "2"):  # records, documents, payment method and plan
        original = client_rows(engine, int(client))
        exported = cli("export", client, "--backup-dir", str(tmp_path / "exports"))
        assert exported.exit_code == 0, exported.stderr
        backup = delete_one(cli, client, tmp_path / "b")
        purge_all(engine)
        assert client_rows(engine, int(client))["client"] is None
        result = cli("restore", backup, "--yes", "--format", "json")
        assert result.exit_code == 0, result.stderr
        assert outcomes(result.stdout) == [
            (backup, int(client), "purged", "deactivated", "changed")
        ]
        assert client_rows(engine, int(client)) == original
    assert statuses(engine) == {1: "deactivated", 2: "deactivated", 3: "active", 4: "active",
                                5: "active"}  # fmt: skip
    [restored] = [c for c in records(cli("list", "--format", "json").stdout) if c["id"] == 1]
    assert (restored["deactivated_at"], restored["deleted_at"], restored["purge_after"]) == (
        "2026-11-26T09:00:00Z", None, None,
    )  # fmt: skip
    # Ids handed out after a restore do not collide with the restored ones (PostgreSQL sequences).
    added = cli(
        "add", "--email", "new@example.org", "--first-name", "N", "--last-name", "C", "--yes"
    )
    assert added.exit_code == 0, added.stderr
    assert cli("audit", "verify").exit_code == 0


def test_restore_while_pending_purge_undeletes_the_client(cli, practice, engine, tmp_path):
    original = client_rows(engine, 1)
    backup = delete_one(cli, "1", tmp_path)
    result = cli("restore", backup, "--yes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert outcomes(result.stdout) == [(backup, 1, "deleted", "deactivated", "changed")]
    assert client_rows(engine, 1) == original
    assert statuses(engine)[1] == "deactivated"
    # and it is counted again
    plan = records(cli("plan", "--format", "json").stdout)
    assert (plan["counted"], plan["deleted"]) == (5, 0)


def test_restoring_twice_is_unchanged(cli, practice, engine, tmp_path):
    backup = delete_one(cli, "1", tmp_path)
    assert cli("restore", backup, "--yes").exit_code == 0
    before = snapshot(engine)
    result = cli("restore", backup, "--yes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert outcomes(result.stdout) == [(backup, 1, "deactivated", "deactivated", "unchanged")]
    assert snapshot(engine) == before


def test_a_corrupted_backup_is_refused_and_nothing_is_written(cli, practice, engine, tmp_path):
    backup = Path(delete_one(cli, "1", tmp_path))
    purge_all(engine)
    data = bytearray(backup.read_bytes())
    data[len(data) // 4] ^= 0x55
    backup.write_bytes(bytes(data))
    before = snapshot(engine)
    result = cli("restore", str(backup), "--yes")
    assert result.exit_code == 3
    assert f"Backup {backup}" in result.stderr
    assert snapshot(engine) == before


def test_an_email_now_used_by_another_client_is_refused(cli, practice, engine, tmp_path):
    backup = delete_one(cli, "1", tmp_path)
    purge_all(engine)
    added = cli(
        "add", "--email", "ANA@example.org", "--first-name", "A", "--last-name", "B", "--yes"
    )
    assert added.exit_code == 0, added.stderr
    before = snapshot(engine)
    result = cli("restore", backup, "--yes")
    assert result.exit_code == 3
    assert "e-mail ana@example.org now belongs to client" in result.stderr
    assert snapshot(engine) == before


def test_restore_past_the_plan_limit_is_refused_with_exit_6(cli, practice, engine, tmp_path):
    backup = delete_one(cli, "1", tmp_path)
    assert cli("plan", "--set-limit", "4", "--yes").exit_code == 0
    before = snapshot(engine)
    result = cli("restore", backup, "--yes")
    assert result.exit_code == 6
    assert "Restoring 1 client would exceed the plan limit of 4" in result.stderr
    assert snapshot(engine) == before


def test_ids_taken_meanwhile_get_new_ones_and_a_missing_program_is_recreated(
    cli, practice, engine, tmp_path
):
    original = client_rows(engine, 3)
    backup = delete_one(cli, "3", tmp_path)  # Sleep Foundations, shared with client 5
    purge_all(engine)
    # Another client now has id 3, and the program is gone.
    sql(engine, "DELETE FROM enrolment WHERE client_id = 5")
    sql(engine, "DELETE FROM program WHERE name = 'Sleep Foundations'")
    sql(engine, "INSERT INTO client (id, email, email_key, first_name, last_name, status, "
                "created_at) VALUES (3, 'z@example.org', 'z@example.org', 'Z', 'Z', 'active', "
                ":at)", at=NOW.replace(tzinfo=None))  # fmt: skip
    result = cli("restore", backup, "--yes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    [row] = records(result.stdout)
    new_id = row["id"]
    assert new_id not in (None, 3)
    assert row["note"] == "id 3 now belongs to another client"
    restored = client_rows(engine, new_id)
    assert {k: v for k, v in restored["client"].items() if k != "id"} == {
        k: v for k, v in original["client"].items() if k != "id"
    }
    with reading(engine) as session:
        programs = session.execute(text("SELECT name, kind FROM program ORDER BY name")).all()
    assert [tuple(p) for p in programs] == [
        ("Sleep Foundations", "program"),
        ("Spring Reset", "program"),
    ]
    show = records(cli("show", str(new_id), "--format", "json").stdout)
    assert [e["program"] for e in show["enrolments"]] == ["Sleep Foundations"]


def test_dry_run_writes_nothing_and_no_terminal_needs_yes(cli, practice, engine, tmp_path):
    backup = delete_one(cli, "1", tmp_path)
    purge_all(engine)
    before = snapshot(engine)
    dry = cli("restore", backup, "--dry-run", "--format", "json")
    assert dry.exit_code == 0, dry.stderr
    assert outcomes(dry.stdout) == [(backup, 1, "purged", "deactivated", "planned")]
    refused = cli("restore", backup)
    assert refused.exit_code == 2
    assert snapshot(engine) == before


def test_a_missing_file_is_bad_input(cli, practice, tmp_path):
    result = cli("restore", str(tmp_path / "nope.zip"), "--yes")
    assert result.exit_code == 3
    assert "There is no backup file" in result.stderr


def test_a_backup_already_restored_is_unchanged_in_a_dry_run_and_needs_no_yes(
    cli, practice, engine, tmp_path
):
    backup = delete_one(cli, "1", tmp_path)
    assert cli("restore", backup, "--yes").exit_code == 0
    before = snapshot(engine)
    dry = cli("restore", backup, "--dry-run", "--format", "json")
    assert dry.exit_code == 0, dry.stderr
    assert outcomes(dry.stdout) == [(backup, 1, "deactivated", "deactivated", "unchanged")]
    # Nothing to do is not a change to confirm: no terminal and no --yes is fine.
    again = cli("restore", backup)
    assert (again.exit_code, again.stderr) == (0, "")
    assert again.stdout.splitlines()[-1] == (
        "Nothing to restore: client 1 is here and deactivated, not deleted."
    )
    assert snapshot(engine) == before


def test_the_reference_is_the_backup_path_as_given(cli, practice, tmp_path, monkeypatch):
    backup = Path(delete_one(cli, "1", tmp_path / "b"))
    monkeypatch.chdir(tmp_path)
    relative = str(backup.relative_to(tmp_path))
    result = cli("restore", relative, "--yes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    [row] = records(result.stdout)
    assert (row["reference"], row["backup"]) == (relative, str(backup))


# --- the plan the admin confirmed is the one applied ----------------------------------------


def test_a_backup_replaced_after_its_preview_is_refused_and_nothing_is_written(
    cli, practice, engine, tmp_path
):
    from pbclients.errors import BadInput
    from pbclients.restore import Restore, apply, preview

    first = Path(delete_one(cli, "1", tmp_path / "one"))
    other = Path(delete_one(cli, "2", tmp_path / "two"))
    purge_all(engine)
    plan = preview(engine, Restore(first))
    first.write_bytes(other.read_bytes())  # a valid backup, but not the one confirmed
    before = snapshot(engine)
    with pytest.raises(BadInput, match="changed on disk after it was checked"):
        apply(engine, plan, Change("t", None, NOW))
    assert snapshot(engine) == before


def test_a_client_restored_after_the_preview_stops_the_restore_with_exit_5(
    cli, practice, engine, tmp_path
):
    from pbclients.errors import DatabaseBusy
    from pbclients.restore import Restore, apply, preview

    backup = Path(delete_one(cli, "1", tmp_path))
    plan = preview(engine, Restore(backup))
    assert cli("restore", str(backup), "--yes").exit_code == 0
    before = snapshot(engine)
    with pytest.raises(DatabaseBusy) as caught:
        apply(engine, plan, Change("t", None, NOW))
    assert caught.value.exit_code == 5
    assert snapshot(engine) == before
