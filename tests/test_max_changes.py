"""`--max-changes N|P%`: a run over its cap changes nothing and exits 7; both engines."""

from __future__ import annotations

import pytest

from tests.helpers import NOW_TEXT, audit_count, count, records, statuses, write

ALL_ACTIVE = dict.fromkeys(range(1, 6), "active")


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)


def message(changing: int, limit: int) -> str:
    return (
        f"Error: would change {changing} clients, more than the limit of {limit}; "
        "review with --dry-run, then raise --max-changes.\n"
    )


def test_deactivate_over_the_cap_changes_nothing_and_exits_7(cli, practice, engine):
    before = audit_count(engine)
    run = cli("deactivate", "1", "2", "3", "--max-changes", "2", "--yes")

    assert run.exit_code == 7
    assert run.stdout == ""
    assert run.stderr == message(3, 2)
    assert statuses(engine) == ALL_ACTIVE
    assert audit_count(engine) == before


def test_deactivate_within_the_cap_changes(cli, practice, engine):
    run = cli("deactivate", "1", "2", "--max-changes", "2", "--yes")

    assert run.exit_code == 0, run.stderr
    assert statuses(engine) == {**ALL_ACTIVE, 1: "deactivated", 2: "deactivated"}


def test_unchanged_clients_do_not_count_toward_the_cap(cli, practice, engine):
    cli("deactivate", "1", "2", "--yes")
    run = cli("deactivate", "1", "2", "3", "--max-changes", "1", "--yes")

    assert run.exit_code == 0, run.stderr
    assert statuses(engine)[3] == "deactivated"


def test_a_percentage_is_of_the_counted_clients_rounded_down(cli, practice, engine):
    # Five counted clients: 59% is 2.95 clients, so at most 2.
    over = cli("deactivate", "1", "2", "3", "--max-changes", "59%", "--yes")
    assert (over.exit_code, over.stderr) == (7, message(3, 2))
    assert statuses(engine) == ALL_ACTIVE

    within = cli("deactivate", "1", "2", "3", "--max-changes", "60%", "--yes")
    assert within.exit_code == 0, within.stderr


def test_dry_run_over_the_cap_shows_the_plan_and_says_so(cli, practice, engine):
    run = cli("deactivate", "1", "2", "3", "--max-changes", "1", "--dry-run", "--format", "json")

    assert run.exit_code == 0
    assert [(r["id"], r["outcome"]) for r in records(run.stdout)] == [
        (1, "planned"), (2, "planned"), (3, "planned"),
    ]  # fmt: skip
    assert run.stderr == (
        "Note: a real run would change 3 clients, more than the limit of 1; review with "
        "--dry-run, then raise --max-changes. It would exit 7.\n"
    )
    assert statuses(engine) == ALL_ACTIVE


def test_delete_over_the_cap_writes_no_backup(cli, practice, engine, tmp_path):
    folder = tmp_path / "backups"
    run = cli("delete", "1", "2", "--backup-dir", str(folder), "--max-changes", "1", "--yes")

    assert (run.exit_code, run.stderr) == (7, message(2, 1))
    assert not folder.exists() or not any(folder.iterdir())
    assert statuses(engine) == ALL_ACTIVE


def test_import_over_the_cap_adds_nobody(cli, practice, engine, tmp_path):
    rows = "".join(f"new{i}@example.org,New,Client{i}\n" for i in range(3))
    path = write(tmp_path / "new.csv", "email,first_name,last_name\n" + rows)
    before = audit_count(engine)

    run = cli("import", path, "--max-changes", "2", "--yes")

    assert (run.exit_code, run.stderr) == (7, message(3, 2))
    assert count(engine, "client") == 5
    assert audit_count(engine) == before
    assert cli("import", path, "--max-changes", "3", "--yes").exit_code == 0
    assert count(engine, "client") == 8


def test_zero_refuses_any_change_but_not_nothing_to_do(cli, practice, engine):
    assert cli("activate", "1", "--max-changes", "0", "--yes").exit_code == 0  # already active
    run = cli("deactivate", "1", "--max-changes", "0", "--yes")
    assert run.exit_code == 7
    assert "would change 1 client, more than the limit of 0" in run.stderr


@pytest.mark.parametrize("value", ["abc", "0%", "101%", "-1", "1.5", "1000000001", "5 %%"])
def test_a_bad_cap_is_a_usage_error(cli, practice, engine, value):
    run = cli("deactivate", "1", "--max-changes", value, "--yes")

    assert run.exit_code == 2, run.stderr
    assert "--max-changes" in run.stderr
    assert statuses(engine) == ALL_ACTIVE


@pytest.mark.parametrize(
    "command",
    ["add", "import", "activate", "deactivate", "delete", "restore", "undo", "purge",
     "edit", "enrol", "unenrol"],
)  # fmt: skip
def test_every_changing_command_takes_the_cap(cli, command):
    run = cli(command, "--help")
    assert run.exit_code == 0
    assert "--max-changes" in run.stdout


def test_help_documents_exit_7(cli):
    assert "7 more changes than --max-changes" in " ".join(cli("--help").stdout.split())
