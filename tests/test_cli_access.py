"""activate / deactivate through the real CLI: selection, exit codes, dry run, prompt, crashes.

Tests use the `practice` fixture (clients 1-5: ana, ben, chloe, dev, elif@example.org; client 1
has an upcoming telehealth session) on SQLite and, when configured, PostgreSQL. Tests marked
"SQLite only" check things that only exist for a database file (bytes, integrity_check).
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from pbclients.db import reading
from tests.helpers import (
    NOW_TEXT,
    audit_count,
    count,
    outcomes,
    pbclients,
    records,
    run_in_pty,
    snapshot,
    sql,
    statuses,
    subprocess_env,
    write,
)

ALL_ACTIVE = {1: "active", 2: "active", 3: "active", 4: "active", 5: "active"}
SETUP_EVENTS = 5  # the practice fixture adds five clients: five audit events


@pytest.fixture
def sqlite_only(db_target: str) -> None:
    """Marks a test as inherently SQLite (file bytes, integrity_check); skipped on PostgreSQL."""
    if "://" in db_target:
        pytest.skip("SQLite only: checks the database file itself")


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)


def result(reference, client_id, email, before, after, outcome, batch, note=None):
    return {
        "reference": reference,
        "id": client_id,
        "email": email,
        "before": before,
        "after": after,
        "outcome": outcome,
        "backup": None,
        "sha256": None,
        "note": note,
        "batch": batch,
    }


# --- deactivate / activate: the happy paths ------------------------------------------------


def test_deactivate_by_id_and_email_reports_exact_json_and_audits(cli, practice, engine):
    run = cli(
        "deactivate", "1", "BEN@Example.org", "--yes", "--format", "json", "--reason", "ended"
    )
    assert run.exit_code == 0, run.stderr
    got = records(run.stdout)
    batch = got[0]["batch"]
    assert isinstance(batch, str) and len(batch) == 12
    assert got == [
        result("1", 1, "ana@example.org", "active", "deactivated", "changed", batch),
        result("BEN@Example.org", 2, "ben@example.org", "active", "deactivated", "changed", batch),
    ]
    assert run.stderr == ""
    assert statuses(engine) == {**ALL_ACTIVE, 1: "deactivated", 2: "deactivated"}
    with reading(engine) as session:
        events = session.execute(
            text(
                "SELECT id, actor, action, client_id, before, after, batch_id, reason "
                "FROM audit_event WHERE id > 5 ORDER BY id"
            )
        ).all()
        stamps = session.execute(text("SELECT deactivated_at FROM client WHERE id IN (1, 2)")).all()
    assert [tuple(e) for e in events] == [
        (6, "tester", "deactivate", 1, "active", "deactivated", batch, "ended"),
        (7, "tester", "deactivate", 2, "active", "deactivated", batch, "ended"),
    ]
    assert {str(s[0])[:19] for s in stamps} == {"2026-11-26 09:00:00"}


def test_deactivate_table_output_names_the_batch_and_says_clients_were_not_notified(cli, practice):
    run = cli("deactivate", "4", "--yes")
    assert run.exit_code == 0, run.stderr
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith("Deactivated 1 client. Batch ")
    assert last.endswith("Clients were not notified.")
    assert "dev@example.org" in run.stdout


def test_activate_restores_access_with_the_same_credentials(cli, practice, engine):
    sql(engine, "UPDATE client SET portal_password_hash = 'argon2$kept' WHERE id = 3")
    assert cli("deactivate", "3", "--yes").exit_code == 0
    run = cli("activate", "chloe@example.org", "--yes", "--format", "json")
    assert run.exit_code == 0, run.stderr
    got = records(run.stdout)
    assert outcomes(run.stdout) == [
        ("chloe@example.org", 3, "deactivated", "active", "changed"),
    ]
    assert got[0]["batch"]
    with reading(engine) as session:
        row = session.execute(
            text("SELECT status, deactivated_at, portal_password_hash FROM client WHERE id = 3")
        ).one()
    assert tuple(row) == ("active", None, "argon2$kept")


def test_program_selects_every_enrolled_client(cli, practice, engine):
    run = cli("deactivate", "--program", "spring reset", "--yes", "--format", "json")
    assert run.exit_code == 0, run.stderr
    assert outcomes(run.stdout) == [
        ("1", 1, "active", "deactivated", "changed"),
        ("2", 2, "active", "deactivated", "changed"),
    ]
    assert statuses(engine) == {**ALL_ACTIVE, 1: "deactivated", 2: "deactivated"}


def test_unknown_program_is_bad_input_and_changes_nothing(cli, practice, engine):
    before = snapshot(engine)
    run = cli("deactivate", "--program", "Yoga", "--yes")
    assert run.exit_code == 3
    assert run.stderr == (
        "Error: There is no program named 'Yoga' (programs: Sleep Foundations, Spring Reset); "
        "nothing was changed.\n"
    )
    assert snapshot(engine) == before


def test_results_as_csv(cli, practice):
    run = cli("deactivate", "2", "--yes", "--format", "csv")
    assert run.exit_code == 0, run.stderr
    header, row = run.stdout.splitlines()
    assert header == "reference,id,email,before,after,outcome,batch"
    assert row.startswith("2,2,ben@example.org,active,deactivated,changed,")
    assert len(row.rsplit(",", 1)[1]) == 12


# --- selection: CSV, stdin, ids files ------------------------------------------------------


@pytest.mark.parametrize("via", ["file", "stdin"])
def test_csv_file_or_stdin_selects_by_the_id_column(cli, practice, engine, tmp_path, via):
    data = "name,id,email\nAna,1,ana@example.org\nChloe,3,chloe@example.org\n"
    if via == "file":
        run = cli("deactivate", "--csv", write(tmp_path / "ended.csv", data), "--yes", "-f", "json")
    else:
        run = cli("deactivate", "--csv", "-", "--yes", "-f", "json", input=data)
    assert run.exit_code == 0, run.stderr
    assert outcomes(run.stdout) == [
        ("1", 1, "active", "deactivated", "changed"),
        ("3", 3, "active", "deactivated", "changed"),
    ]
    assert statuses(engine) == {**ALL_ACTIVE, 1: "deactivated", 3: "deactivated"}


def test_csv_column_option_picks_the_named_column(cli, practice, engine, tmp_path):
    path = write(tmp_path / "x.csv", "note,Who\nfirst,dev@example.org\nsecond,5\n")
    run = cli("deactivate", "--csv", path, "--column", "who", "--yes", "-f", "json")
    assert run.exit_code == 0, run.stderr
    assert outcomes(run.stdout) == [
        ("dev@example.org", 4, "active", "deactivated", "changed"),
        ("5", 5, "active", "deactivated", "changed"),
    ]


def test_csv_column_that_does_not_exist_is_bad_input(cli, practice, engine, tmp_path):
    path = write(tmp_path / "x.csv", "id\n1\n")
    run = cli("deactivate", "--csv", path, "--column", "client", "--yes")
    assert run.exit_code == 3
    assert run.stderr == (
        f"Error: {path} has no column named 'client' (found: \"id\"); pass one of those to "
        "--column. Nothing was changed.\n"
    )
    assert statuses(engine) == ALL_ACTIVE


@pytest.mark.parametrize("via", ["file", "stdin"])
def test_ids_from_file_or_stdin_skips_blank_lines_and_comments(
    cli, practice, engine, tmp_path, via
):
    data = "# ended in November\n2\n\n  elif@example.org  \n# 3\n"
    if via == "file":
        run = cli(
            "deactivate", "--ids-from", write(tmp_path / "ids.txt", data), "--yes", "-f", "json"
        )
    else:
        run = cli("deactivate", "--ids-from", "-", "--yes", "-f", "json", input=data)
    assert run.exit_code == 0, run.stderr
    assert outcomes(run.stdout) == [
        ("2", 2, "active", "deactivated", "changed"),
        ("elif@example.org", 5, "active", "deactivated", "changed"),
    ]
    assert statuses(engine) == {**ALL_ACTIVE, 2: "deactivated", 5: "deactivated"}


def test_list_ids_piped_into_deactivate_ids_from_stdin(cli, practice, engine):
    ids = cli("list", "--program", "Sleep Foundations", "--format", "ids")
    assert ids.stdout == "3\n5\n"
    run = cli("deactivate", "--ids-from", "-", "--yes", input=ids.stdout)
    assert run.exit_code == 0, run.stderr
    assert statuses(engine) == {**ALL_ACTIVE, 3: "deactivated", 5: "deactivated"}


def test_encoding_cp1252_reads_a_windows_export(cli, practice, engine, tmp_path):
    data = "Prénom;Email\nAnaïs;ana@example.org\nBéa;ben@example.org\n".encode("cp1252")
    path = write(tmp_path / "excel.csv", data)
    refused = cli("deactivate", "--csv", path, "--yes")
    assert refused.exit_code == 3
    assert refused.stderr == (
        f"Error: {path} is not valid UTF-8 at line 1; save it as UTF-8 or pass --encoding "
        "(e.g. --encoding cp1252). Nothing was changed.\n"
    )
    assert statuses(engine) == ALL_ACTIVE
    run = cli("deactivate", "--csv", path, "--encoding", "cp1252", "--yes", "-f", "json")
    assert run.exit_code == 0, run.stderr
    assert outcomes(run.stdout) == [
        ("ana@example.org", 1, "active", "deactivated", "changed"),
        ("ben@example.org", 2, "active", "deactivated", "changed"),
    ]


def test_unknown_encoding_name_is_bad_input(cli, practice, tmp_path):
    path = write(tmp_path / "x.csv", "id\n1\n")
    run = cli("deactivate", "--csv", path, "--encoding", "klingon", "--yes")
    assert run.exit_code == 3
    assert "'klingon' is not an encoding Python knows" in run.stderr


def test_bom_crlf_and_semicolons_through_the_cli(cli, practice, engine, tmp_path):
    data = b"\xef\xbb\xbfE-mail;Name\r\nchloe@example.org;Chloe\r\n\r\nDEV@example.org;Dev\r\n"
    run = cli("deactivate", "--csv", write(tmp_path / "bom.csv", data), "--yes", "-f", "json")
    assert run.exit_code == 0, run.stderr
    assert outcomes(run.stdout) == [
        ("chloe@example.org", 3, "active", "deactivated", "changed"),
        ("DEV@example.org", 4, "active", "deactivated", "changed"),
    ]


def test_a_client_named_several_ways_is_applied_once_and_reported_once(
    cli, practice, engine, tmp_path
):
    csv_path = write(tmp_path / "dups.csv", "id\n1\n2\n1\n")
    ids_path = write(tmp_path / "dups.txt", "ANA@example.org\n002\n")
    run = cli(
        "deactivate", "1", "ana@example.org", "01",
        "--csv", csv_path, "--ids-from", ids_path, "--yes", "-f", "json",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert outcomes(run.stdout) == [
        ("1", 1, "active", "deactivated", "changed"),
        ("2", 2, "active", "deactivated", "changed"),
    ]
    assert audit_count(engine) == SETUP_EVENTS + 2


def test_empty_reference_cell_is_bad_input_naming_the_line(cli, practice, engine, tmp_path):
    path = write(tmp_path / "ended.csv", "email,name\nana@example.org,Ana\n,Ben\n")
    before = snapshot(engine)
    run = cli("deactivate", "--csv", path, "--yes")
    assert run.exit_code == 3
    assert run.stderr == (
        f"Error: {path} line 3 has an empty email cell; fill it in or remove the row. "
        "Nothing was changed.\n"
    )
    assert run.stdout == ""
    assert snapshot(engine) == before


def test_unknown_references_stop_everything_and_are_each_named(cli, practice, engine, tmp_path):
    path = write(tmp_path / "ended.csv", "id\n1\n99\nzed@example.org\n")
    before = snapshot(engine)
    run = cli("deactivate", "2", "nobody@example.org", "--csv", path, "--yes")
    assert run.exit_code == 3
    assert run.stderr == (
        f"Error: Unknown clients 'nobody@example.org', '99' (line 3 of {path}), "
        f"'zed@example.org' (line 4 of {path}); nothing was changed. Check the references, "
        "or use --skip-unknown to change the others.\n"
    )
    assert snapshot(engine) == before


def test_skip_unknown_changes_the_others_and_reports_unknown_as_skipped(cli, practice, engine):
    run = cli("deactivate", "2", "99", "zed@example.org", "--skip-unknown", "--yes", "-f", "json")
    assert run.exit_code == 0, run.stderr
    got = records(run.stdout)
    batch = got[0]["batch"]
    assert got == [
        result("2", 2, "ben@example.org", "active", "deactivated", "changed", batch),
        result("99", None, None, None, None, "skipped", batch, note="unknown"),
        result("zed@example.org", None, None, None, None, "skipped", batch, note="unknown"),
    ]
    assert statuses(engine) == {**ALL_ACTIVE, 2: "deactivated"}
    assert audit_count(engine) == SETUP_EVENTS + 1


def test_skip_unknown_table_summary_counts_the_skipped(cli, practice):
    run = cli("deactivate", "2", "99", "--skip-unknown", "--yes")
    assert run.exit_code == 0, run.stderr
    assert "Deactivated 1 client (1 unknown skipped). Batch " in run.stdout


# --- unchanged, not allowed -----------------------------------------------------------------


def test_client_already_in_the_target_state_is_reported_unchanged(cli, practice, engine):
    assert cli("deactivate", "1", "--yes").exit_code == 0
    events = audit_count(engine)
    run = cli("deactivate", "1", "--yes", "-f", "json")
    assert run.exit_code == 0, run.stderr
    assert records(run.stdout) == [
        result("1", 1, "ana@example.org", "deactivated", "deactivated", "unchanged", None)
    ]
    again = cli("deactivate", "1")  # nothing to change: no prompt, no --yes needed
    assert again.exit_code == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == "Nothing to deactivate (1 already deactivated)."
    assert audit_count(engine) == events


def test_mixed_changed_and_unchanged(cli, practice, engine):
    assert cli("activate", "1", "--yes", "-f", "json").exit_code == 0
    run = cli("activate", "1", "--yes", "-f", "json")
    assert outcomes(run.stdout) == [("1", 1, "active", "active", "unchanged")]
    assert cli("deactivate", "2", "--yes").exit_code == 0
    run = cli("deactivate", "1", "2", "--yes", "-f", "json")
    assert run.exit_code == 0, run.stderr
    assert outcomes(run.stdout) == [
        ("1", 1, "active", "deactivated", "changed"),
        ("2", 2, "deactivated", "deactivated", "unchanged"),
    ]
    assert run.stdout.count('"changed"') == 1
    table = cli("activate", "1", "2", "3", "--yes")
    assert "Activated 2 clients (1 already activated). Batch " in table.stdout


@pytest.mark.parametrize("command", ["activate", "deactivate"])
def test_a_deleted_client_cannot_be_activated_or_deactivated(cli, practice, engine, command):
    sql(engine, "UPDATE client SET status = 'deleted' WHERE id = 4")
    before = snapshot(engine)
    run = cli(command, "1", "dev@example.org", "--yes")
    assert run.exit_code == 3
    assert run.stderr.startswith(
        f"Error: Client 4 ('dev@example.org') is deleted and cannot be {command}d; "
        "nothing was changed."
    )
    assert snapshot(engine) == before


def test_activate_and_deactivate_never_notify_or_message_the_client(cli, practice, engine):
    notifications, messages = count(engine, "notification"), count(engine, "message")
    assert cli("deactivate", "1", "2", "3", "--yes").exit_code == 0
    assert cli("activate", "1", "2", "3", "--yes").exit_code == 0
    assert cli("deactivate", "--program", "Spring Reset", "--yes").exit_code == 0
    assert (count(engine, "notification"), count(engine, "message")) == (notifications, messages)


# --- dry run, --yes and the prompt -----------------------------------------------------------


@pytest.mark.parametrize("command", ["deactivate", "activate"])
def test_dry_run_writes_nothing_and_never_needs_yes(cli, practice, engine, command):
    if command == "activate":
        assert cli("deactivate", "1", "2", "--yes").exit_code == 0
    before = snapshot(engine)
    run = cli(command, "1", "2", "--dry-run", "-f", "json")
    assert run.exit_code == 0, run.stderr
    after = "deactivated" if command == "deactivate" else "active"
    start = "active" if command == "deactivate" else "deactivated"
    assert records(run.stdout) == [
        result("1", 1, "ana@example.org", start, after, "planned", None),
        result("2", 2, "ben@example.org", start, after, "planned", None),
    ]
    table = cli(command, "1", "2", "--dry-run")
    assert table.exit_code == 0
    assert table.stdout.strip().splitlines()[-1] == (
        f"Dry run: would {command} 2 clients; nothing was written."
    )
    assert snapshot(engine) == before


def test_dry_run_leaves_the_database_file_bytes_alone(
    sqlite_only, cli, practice, engine, db_target
):
    """SQLite only: the file and its WAL are byte-for-byte the same after a dry run."""
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    files = [Path(db_target), Path(db_target + "-wal")]
    before = [f.read_bytes() if f.exists() else None for f in files]
    run = cli("deactivate", "--program", "Spring Reset", "3", "--dry-run")
    assert run.exit_code == 0, run.stderr
    assert [f.read_bytes() if f.exists() else None for f in files] == before


@pytest.mark.parametrize(
    ("args", "input"),
    [
        (["deactivate", "1"], None),
        (["deactivate", "--ids-from", "-"], "1\n"),
        (["deactivate", "--csv", "-"], "id\n1\n"),
        (["activate", "5"], None),
    ],
    ids=["args", "ids-from-stdin", "csv-stdin", "activate"],
)
def test_without_a_terminal_and_without_yes_it_refuses_with_exit_2(
    cli, practice, engine, args, input
):
    sql(engine, "UPDATE client SET status = 'deactivated' WHERE id = 5")
    before = snapshot(engine)
    run = cli(*args, input=input)
    assert run.exit_code == 2
    assert run.stderr == (
        "Error: This command changes data and there is no terminal to confirm on; pass --yes "
        "to go ahead, or --dry-run to see what would change.\n"
    )
    assert snapshot(engine) == before


def _pty_env(db_target: str) -> dict[str, str]:
    return subprocess_env(NO_COLOR="1", TERM="dumb", PBCLIENTS_DB=db_target)


def test_prompt_on_a_terminal_warns_of_telehealth_and_no_declines(practice, engine, db_target):
    before = snapshot(engine)
    code, prompt, rest = run_in_pty(["deactivate", "1", "2"], "n", env=_pty_env(db_target))
    assert code == 1
    assert "Deactivate 2 clients?" in prompt
    assert (
        "1 upcoming telehealth session (1 client) stay on the calendar but cannot be joined."
        in prompt
    )
    assert "1 payment plan will still charge" in prompt
    assert "2 program enrolments pause (progress is kept)." in prompt
    assert "Clients are not notified of this change." in prompt
    assert "Not confirmed; nothing was changed." in rest
    assert snapshot(engine) == before


def test_prompt_on_a_terminal_yes_applies(practice, engine, db_target):
    code, prompt, rest = run_in_pty(["deactivate", "ana@example.org"], "y", env=_pty_env(db_target))
    assert code == 0, rest
    assert "Deactivate 1 client?" in prompt
    assert "Deactivated 1 client. Batch " in rest
    assert statuses(engine) == {**ALL_ACTIVE, 1: "deactivated"}


def test_show_warns_of_telehealth_a_deactivated_client_cannot_join(cli, practice):
    active = cli("show", "1")
    assert "Warning" not in active.stdout
    assert cli("deactivate", "1", "--yes").exit_code == 0
    run = cli("show", "1")
    assert run.exit_code == 0
    assert (
        "Warning: 1 upcoming telehealth session on the calendar that this client cannot join "
        "while deactivated." in run.stdout
    )


# --- usage errors ----------------------------------------------------------------------------


NO_SELECTION = (
    "Error: Name the clients to change: IDs or e-mails, --csv FILE, --ids-from FILE or "
    "--program NAME.\n"
)
USAGE_ERRORS = {
    "no-selection": (["deactivate", "--yes"], NO_SELECTION),
    "no-selection-dry-run": (["activate", "--dry-run"], NO_SELECTION),
    "column-without-csv": (
        ["deactivate", "1", "--column", "id", "--yes"],
        "Error: --column only applies to --csv FILE; add --csv or drop --column.\n",
    ),
    "two-stdins": (
        ["deactivate", "--csv", "-", "--ids-from", "-", "--yes"],
        "Error: Only one of --csv and --ids-from can read standard input; give the other a file.\n",
    ),
    "missing-file": (
        ["deactivate", "--csv", "/nonexistent/ended.csv", "--yes"],
        "Error: /nonexistent/ended.csv: no such file; check the path.\n",
    ),
    # Click's wording differs between versions ("No such option: --x", "No such option '--x'").
    "unknown-option": (["deactivate", "1", "--frobnicate"], "No such option"),
    "bad-format": (["deactivate", "1", "--format", "xml"], "Invalid value for '--format'"),
}


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS.values(), ids=USAGE_ERRORS.keys())
def test_usage_errors_exit_2_and_change_nothing(cli, practice, engine, args, message):
    before = snapshot(engine)
    run = cli(*args, input="")
    assert run.exit_code == 2
    if message.startswith("Error: "):
        assert run.stderr == message
    else:  # Typer's own usage errors: a usage line, then the problem
        assert run.stderr.startswith("Usage: pbclients deactivate [OPTIONS] ")
        assert message in run.stderr
        assert args[-1] in run.stderr  # what was wrong, named
    assert "Traceback" not in run.stderr
    assert run.stdout == ""
    assert snapshot(engine) == before


# --- a bulk change killed mid-way --------------------------------------------------------------

BIG = 3_000


@pytest.fixture
def big_practice(engine, tmp_path):
    """A few thousand clients, and a file naming every one of them."""
    from pbclients.operation import Change
    from pbclients.roster import NewClient, add_clients
    from tests.factory import NOW

    people = [NewClient(f"c{n}@example.org", "Client", f"No{n}") for n in range(1, BIG + 1)]
    add_clients(engine, people, Change("setup", None, NOW))
    return write(tmp_path / "all.txt", "".join(f"{n}\n" for n in range(1, BIG + 1)))


def _integrity(db_target: str) -> str:
    connection = sqlite3.connect(db_target)
    try:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        connection.close()


def test_sigkill_after_the_update_leaves_nothing_changed(big_practice, engine, db_target):
    """SIGKILL between the status update and the audit insert (test hook) on both engines."""
    before = snapshot(engine)
    env = subprocess_env(PBCLIENTS_FAULT="kill-after:status-updated")
    killed = pbclients(
        "--db", db_target, "deactivate", "--ids-from", big_practice, "--yes", env=env
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if "://" not in db_target:
        assert _integrity(db_target) == "ok"
    assert snapshot(engine) == before
    assert count(engine, "client", "WHERE status = 'deactivated'") == 0
    assert audit_count(engine) == BIG
    verify = pbclients("--db", db_target, "audit", "verify")
    assert verify.returncode == 0, verify.stderr
    # The same command without the fault applies completely.
    done = pbclients("--db", db_target, "deactivate", "--ids-from", big_practice, "--yes")
    assert done.returncode == 0, done.stderr
    assert count(engine, "client", "WHERE status = 'deactivated'") == BIG
    assert audit_count(engine) == 2 * BIG


@pytest.mark.parametrize("delay", [0.6, 0.9, 1.2])
def test_sigkill_at_any_moment_is_all_or_nothing(
    sqlite_only, big_practice, engine, db_target, delay
):
    """SQLite only: kill -9 a running bulk change at a few moments; never half-done."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pbclients", "--db", db_target, "deactivate",
         "--ids-from", big_practice, "--yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env(),
    )  # fmt: skip
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert _integrity(db_target) == "ok"
    changed = count(engine, "client", "WHERE status = 'deactivated'")
    events = audit_count(engine)
    assert (changed, events) in ((0, BIG), (BIG, 2 * BIG))
    assert pbclients("--db", db_target, "audit", "verify").returncode == 0


def test_a_busy_database_exits_5_and_changes_nothing(sqlite_only, cli, practice, engine, db_target):
    """SQLite only: another writer holds the lock longer than PBCLIENTS_LOCK_TIMEOUT (1 s)."""
    holder = sqlite3.connect(db_target, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        run = cli("deactivate", "1", "--yes")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert run.exit_code == 5
    assert run.stderr == (
        "Error: The database is busy (another pbclients run or the portal holds it); nothing "
        "was changed, try again in a moment.\n"
    )
    assert statuses(engine) == ALL_ACTIVE
