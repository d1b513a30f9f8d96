"""init, demo, add, import, list and show through the real CLI, on SQLite and PostgreSQL.

Tests marked "SQLite only" check what only a database file has (modes, default paths).
"""

from __future__ import annotations

import csv
import io
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pbclients.cli.app import app
from tests.helpers import (
    NOW_TEXT,
    audit_count,
    count,
    outcomes,
    pbclients,
    records,
    snapshot,
    sql,
    subprocess_env,
    write,
)

LIST_KEYS = [
    "id", "email", "first_name", "last_name", "status", "programs",
    "created_at", "deactivated_at", "deleted_at", "purge_after", "days_until_purge",
    "last_activity", "held", "hold",
]  # fmt: skip
CONTRACT_KEYS = {
    "id", "email", "first_name", "last_name", "status", "programs",
    "deactivated_at", "deleted_at", "purge_after",
}  # fmt: skip
SETUP = "2026-08-28T09:00:00Z"  # when the practice fixture added its clients


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)


@pytest.fixture
def sqlite_only(db_target: str) -> None:
    if "://" in db_target:
        pytest.skip("SQLite only: checks the database file itself")


def listed(client_id, email, first, last, status="active", programs=(), **times):
    return {
        "id": client_id,
        "email": email,
        "first_name": first,
        "last_name": last,
        "status": status,
        "programs": list(programs),
        "created_at": times.get("created_at", SETUP),
        "deactivated_at": times.get("deactivated_at"),
        "deleted_at": times.get("deleted_at"),
        "purge_after": times.get("purge_after"),
        "days_until_purge": times.get("days_until_purge"),
        # Nothing since joining but for Ana, whose latest record is a message a day ago.
        "last_activity": times.get("last_activity", times.get("created_at", SETUP)),
        "held": False,
        "hold": None,
    }


ANA = listed(
    1, "ana@example.org", "Ana", "Silva", programs=["Spring Reset"],
    last_activity="2026-11-25T09:00:00Z",
)  # fmt: skip
BEN = listed(2, "ben@example.org", "Ben", "Okafor", programs=["Spring Reset"])
CHLOE = listed(3, "chloe@example.org", "Chloe", "Nguyen", programs=["Sleep Foundations"])
DEV = listed(4, "dev@example.org", "Dev", "Schmidt")
ELIF = listed(5, "elif@example.org", "Elif", "Haddad", programs=["Sleep Foundations"])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- init ------------------------------------------------------------------------------------


def test_init_creates_a_private_file_in_private_folders_and_is_idempotent(sqlite_only, tmp_path):
    """SQLite only: file modes. A real process, so the CLI's umask applies as in real use."""
    db = tmp_path / "new" / "nested" / "practice.db"
    first = pbclients("--db", str(db), "init")
    assert first.returncode == 0, first.stderr
    assert first.stdout.decode() == f"Practice database ready: {db}\n"
    assert mode(db) == 0o600
    assert mode(db.parent) == 0o700
    assert mode(db.parent.parent) == 0o700
    add = pbclients(
        "--db", str(db), "add", "--email", "a@example.org", "--first-name", "A",
        "--last-name", "B", "--yes",
    )  # fmt: skip
    assert add.returncode == 0, add.stderr
    again = pbclients("--db", str(db), "init")
    assert again.returncode == 0, again.stderr
    listing = pbclients("--db", str(db), "list", "--format", "ids")
    assert listing.stdout == b"1\n"
    assert mode(db) == 0o600
    for sidecar in (Path(f"{db}-wal"), Path(f"{db}-shm")):
        if sidecar.exists():
            assert mode(sidecar) & 0o077 == 0


def test_init_without_db_uses_the_user_data_folder(sqlite_only, isolated_home):
    """SQLite only: the default location is practice.db in the platformdirs data folder."""
    run = pbclients("init", env=subprocess_env())
    assert run.returncode == 0, run.stderr
    db = isolated_home / "xdg_data_home" / "pbclients" / "practice.db"
    assert run.stdout.decode() == f"Practice database ready: {db}\n"
    assert mode(db) == 0o600
    assert mode(db.parent) == 0o700


def test_init_twice_keeps_the_data_on_both_engines(cli, practice, engine):
    before = snapshot(engine)
    for _ in range(2):
        run = cli("init")
        assert run.exit_code == 0, run.stderr
        assert run.stdout.startswith("Practice database ready: ")
    assert snapshot(engine) == before


def test_commands_on_a_missing_database_say_to_run_init(tmp_path):
    missing = tmp_path / "nope.db"
    run = CliRunner().invoke(app, ["--db", str(missing), "list"])
    assert run.exit_code == 2
    assert run.stderr == (
        f"Error: There is no practice database at {missing}; create it with `pbclients init` "
        "or point --db at an existing one.\n"
    )
    assert not missing.exists()


# --- demo ------------------------------------------------------------------------------------


def test_demo_builds_a_practice_and_can_rebuild_it(tmp_path):
    db = str(tmp_path / "try.db")
    runner = CliRunner()
    run = runner.invoke(app, ["--db", db, "demo", "--clients", "40"])
    assert run.exit_code == 0, run.stderr
    assert run.stdout.startswith(f"Demo practice ready: {db}\n40 clients (")
    assert f"pbclients --db {db} list" in run.stdout
    ids = runner.invoke(app, ["--db", db, "list", "--status", "all", "--format", "ids"])
    assert ids.stdout == "".join(f"{n}\n" for n in range(1, 41))
    plan = records(runner.invoke(app, ["--db", db, "plan", "--format", "json"]).stdout)
    assert (plan["limit"], plan["counted"]) == (500, 40)
    assert runner.invoke(app, ["--db", db, "audit", "verify"]).exit_code == 0
    again = runner.invoke(app, ["--db", db, "demo", "--clients", "10"])
    assert again.exit_code == 0, again.stderr
    ids = runner.invoke(app, ["--db", db, "list", "--status", "all", "--format", "ids"])
    assert ids.stdout == "".join(f"{n}\n" for n in range(1, 11))


def test_demo_on_an_empty_database_builds_on_both_engines(cli, engine):
    run = cli("demo", "--clients", "12")
    assert run.exit_code == 0, run.stderr
    assert count(engine, "client") == 12
    assert count(engine, "setting", "WHERE key = 'demo' AND value = '1'") == 1


def test_demo_refuses_to_overwrite_a_real_practice(cli, practice, engine, db_target):
    before = snapshot(engine)
    run = cli("demo", "--clients", "5")
    assert run.exit_code == 3
    assert run.stderr == (
        f"Error: {db_target} holds a real practice, not a demo; nothing was changed. "
        "Give demo another --db path.\n"
    )
    assert snapshot(engine) == before


def test_demo_without_db_writes_demo_db_in_the_user_data_folder(sqlite_only, isolated_home):
    """SQLite only: the default demo file, never practice.db."""
    run = CliRunner().invoke(app, ["demo", "--clients", "5"])
    assert run.exit_code == 0, run.stderr
    folder = isolated_home / "xdg_data_home" / "pbclients"
    assert run.stdout.startswith(f"Demo practice ready: {folder / 'demo.db'}\n")
    assert (folder / "demo.db").exists()
    assert not (folder / "practice.db").exists()
    assert mode(folder / "demo.db") == 0o600


# --- add -------------------------------------------------------------------------------------

ADD_ZOE = ["add", "--email", "Zoe@Example.org", "--first-name", "Zoe", "--last-name", "Park"]


def test_add_one_client_exact_json_and_listing(cli, practice, engine):
    run = cli(*ADD_ZOE, "--phone", "+1 555 0199", "--yes", "--format", "json")
    assert run.exit_code == 0, run.stderr
    got = records(run.stdout)
    batch = got[0]["batch"]
    assert got == [
        {
            "reference": "Zoe@Example.org", "id": 6, "email": "Zoe@Example.org",
            "before": None, "after": "active", "outcome": "changed", "backup": None,
            "sha256": None, "note": None, "batch": batch,
        }
    ]  # fmt: skip
    shown = records(cli("list", "--search", "zoe", "--format", "json").stdout)
    assert shown == [listed(6, "Zoe@Example.org", "Zoe", "Park", created_at=NOW_TEXT)]
    assert records(cli("show", "zoe@example.org", "--format", "json").stdout)["phone"] == (
        "+1 555 0199"
    )
    assert audit_count(engine) == 6


def test_add_table_output(cli, practice):
    run = cli(*ADD_ZOE, "--yes")
    assert run.exit_code == 0
    assert run.stdout.strip().splitlines()[-1].startswith("Added 1 client (batch ")


def test_add_with_an_existing_program_enrols(cli, practice):
    run = cli(*ADD_ZOE, "--program", "sleep foundations", "--yes")
    assert run.exit_code == 0, run.stderr
    shown = records(cli("show", "6", "--format", "json").stdout)
    assert shown["programs"] == ["Sleep Foundations"]


def test_add_with_a_new_program_creates_it_and_says_so(cli, practice, engine):
    before = snapshot(engine)
    dry = cli(*ADD_ZOE, "--program", "Yoga", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert dry.stdout.rstrip().endswith(
        "Dry run: would add 1 client; nothing was written. Would create the program 'Yoga'."
    )
    assert snapshot(engine) == before
    made = cli(*ADD_ZOE, "--program", "Yoga", "--yes")
    assert made.exit_code == 0, made.stderr
    assert "Created the program 'Yoga'." in made.stdout
    assert records(cli("list", "--program", "yoga", "--format", "json").stdout) == [
        listed(6, "Zoe@Example.org", "Zoe", "Park", programs=["Yoga"], created_at=NOW_TEXT)
    ]


def test_add_matches_an_existing_program_case_insensitively(cli, practice, engine):
    made = cli(*ADD_ZOE, "--program", "spring reset", "--yes")
    assert made.exit_code == 0, made.stderr
    assert "Created the program" not in made.stdout
    assert records(cli("show", "6", "--format", "json").stdout)["programs"] == ["Spring Reset"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--email", "ANA@example.org", "--first-name", "A", "--last-name", "S"],
            "Error: 'ANA@example.org' is already client 1; nothing was added. Remove it from "
            "the input, or use `pbclients show` to look at the existing client.\n",
        ),
        (
            ["--email", "not-an-email", "--first-name", "A", "--last-name", "S"],
            "Error: --email 'not-an-email' is not an e-mail address; give one like "
            "ana@example.org. Nothing was changed.\n",
        ),
        (
            ["--email", "x@example.org", "--first-name", "  ", "--last-name", "S"],
            "Error: --first-name cannot be empty; give the client's first name.\n",
        ),
    ],
    ids=["existing-email", "bad-email", "empty-name"],
)
def test_add_bad_input_exits_3_and_adds_nothing(cli, practice, engine, args, message):
    before = snapshot(engine)
    run = cli("add", *args, "--yes")
    assert run.exit_code == 3
    assert run.stderr == message
    assert snapshot(engine) == before


def test_add_beyond_the_plan_limit_exits_6_and_adds_nothing(cli, practice, engine):
    assert cli("plan", "--set-limit", "5", "--yes").exit_code == 0
    sql(engine, "UPDATE client SET status = 'deactivated' WHERE id = 2")
    before = snapshot(engine)
    run = cli(*ADD_ZOE, "--yes")
    assert run.exit_code == 6
    assert run.stderr == (
        "Error: Adding 1 client would exceed the plan limit of 5 (5 counted: 4 active, "
        "1 deactivated); nothing was added. Deleting clients frees their seats (deleting the "
        "1 deactivated would free 1), or raise the limit with `pbclients plan --set-limit N`.\n"
    )
    assert snapshot(engine) == before
    assert cli(*ADD_ZOE, "--dry-run").exit_code == 6
    # A deleted client frees its seat at once.
    sql(engine, "UPDATE client SET status = 'deleted' WHERE id = 2")
    assert cli(*ADD_ZOE, "--yes").exit_code == 0


def test_add_without_a_terminal_or_yes_exits_2_and_dry_run_needs_neither(cli, practice, engine):
    before = snapshot(engine)
    run = cli(*ADD_ZOE)
    assert run.exit_code == 2
    assert "pass --yes to go ahead" in run.stderr
    dry = cli(*ADD_ZOE, "--dry-run", "--format", "json")
    assert dry.exit_code == 0, dry.stderr
    assert outcomes(dry.stdout) == [("Zoe@Example.org", None, None, "active", "planned")]
    assert snapshot(engine) == before


# --- import ----------------------------------------------------------------------------------

NEW_CSV = (
    "email,first_name,last_name,phone,program\n"
    "fay@example.org,Fay,Wong,+1 555 0111,Spring Reset\n"
    "gus@example.org,Gus,Rossi,,\n"
)


@pytest.mark.parametrize("via", ["file", "stdin"])
def test_import_adds_every_row_with_programs(cli, practice, engine, tmp_path, via):
    if via == "file":
        run = cli("import", write(tmp_path / "new.csv", NEW_CSV), "--yes", "--format", "json")
    else:
        run = cli("import", "-", "--yes", "--format", "json", input=NEW_CSV)
    assert run.exit_code == 0, run.stderr
    assert outcomes(run.stdout) == [
        ("fay@example.org", 6, None, "active", "changed"),
        ("gus@example.org", 7, None, "active", "changed"),
    ]
    assert records(cli("list", "--search", "@example.org", "--format", "json").stdout)[5:] == [
        listed(6, "fay@example.org", "Fay", "Wong", programs=["Spring Reset"], created_at=NOW_TEXT),
        listed(7, "gus@example.org", "Gus", "Rossi", created_at=NOW_TEXT),
    ]
    assert audit_count(engine) == 7


def test_import_creates_a_new_program_once_for_all_its_rows(cli, practice, engine, tmp_path):
    path = write(
        tmp_path / "new.csv",
        "email,first_name,last_name,program\nh@x.org,H,I,Pilates\nj@x.org,J,K,pilates\n",
    )
    run = cli("import", path, "--yes")
    assert run.exit_code == 0, run.stderr
    assert run.stdout.count("Created the program 'Pilates'.") == 1
    enrolled = records(cli("list", "--program", "Pilates", "--format", "json").stdout)
    assert [(c["id"], c["programs"]) for c in enrolled] == [(6, ["Pilates"]), (7, ["Pilates"])]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "fay@example.org,Fay,Wong\nnot-an-email,Bad,Row\n",
            "{path} line 3 has 'not-an-email' in the e-mail column, which is not an e-mail "
            "address; correct it or remove the row. Nothing was changed.",
        ),
        (
            "fay@example.org,Fay,Wong\ngus@example.org,,Rossi\n",
            "{path} line 3 has an empty first_name cell; fill it in or remove the row. "
            "Nothing was changed.",
        ),
        (
            "fay@example.org,Fay,Wong\nBEN@example.org,Ben,Again\n",
            "'BEN@example.org' (line 3 of {path}) is already client 2; nothing was added. "
            "Remove it from the input, or use `pbclients show` to look at the existing client.",
        ),
        (
            "fay@example.org,Fay,Wong\nFAY@example.org,Fay,Twice\n",
            "'FAY@example.org' appears twice (line 2 of {path} and line 3 of {path}); nothing "
            "was added. Keep one row per client.",
        ),
    ],
    ids=["bad-email", "empty-cell", "existing-email", "twice-in-file"],
)
def test_import_is_all_or_nothing(cli, practice, engine, tmp_path, body, message):
    path = write(tmp_path / "new.csv", "email,first_name,last_name\n" + body)
    before = snapshot(engine)
    run = cli("import", path, "--yes")
    assert run.exit_code == 3
    assert run.stderr == "Error: " + message.format(path=path) + "\n"
    assert snapshot(engine) == before


def test_import_beyond_the_plan_limit_exits_6_and_adds_nothing(cli, practice, engine, tmp_path):
    assert cli("plan", "--set-limit", "6", "--yes").exit_code == 0
    before = snapshot(engine)
    run = cli("import", write(tmp_path / "new.csv", NEW_CSV), "--yes")
    assert run.exit_code == 6
    assert run.stderr.startswith("Error: Adding 2 clients would exceed the plan limit of 6 ")
    assert snapshot(engine) == before


def test_import_without_a_terminal_or_yes_exits_2(cli, practice, engine, tmp_path):
    before = snapshot(engine)
    assert cli("import", write(tmp_path / "new.csv", NEW_CSV)).exit_code == 2
    assert cli("import", "-", input=NEW_CSV).exit_code == 2
    dry = cli("import", "-", "--dry-run", input=NEW_CSV)
    assert dry.exit_code == 0, dry.stderr
    assert (
        dry.stdout.strip().splitlines()[-1] == "Dry run: would add 2 clients; nothing was written."
    )
    assert snapshot(engine) == before


def test_import_of_a_header_only_file_adds_nothing(cli, practice, engine, tmp_path):
    before = snapshot(engine)
    run = cli("import", write(tmp_path / "new.csv", "email,first_name,last_name\n"), "--yes")
    assert run.exit_code == 0
    assert run.stderr == "The file has no client rows; nothing to add.\n"
    assert snapshot(engine) == before


def test_import_reads_cp1252_with_semicolons(cli, practice, tmp_path):
    data = "E-mail;First name;Last name\r\nines@example.org;Inês;Araújo\r\n".encode("cp1252")
    run = cli("import", write(tmp_path / "w.csv", data), "--encoding", "cp1252", "--yes")
    assert run.exit_code == 0, run.stderr
    shown = records(cli("show", "ines@example.org", "--format", "json").stdout)
    assert (shown["first_name"], shown["last_name"]) == ("Inês", "Araújo")


def _json_array(rows: list[dict[str, object]]) -> str:
    """What every changing command prints for --format json (`print_json_array`)."""
    from pbclients.cli.output import print_json_array

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdout", out)
        print_json_array(rows)
    return out.getvalue()


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "applied"])
def test_import_json_is_the_records_every_command_prints(cli, practice, tmp_path, dry_run):
    """Import encodes its results from a template; they must be the shared records exactly."""
    from pbclients.results import ChangeResult, Outcome

    emails = ['q"uote\\back%d@example.org', "Zoë.Ünïcode@example.org", "plain@example.org"]
    body = "".join(f'"{e.replace(chr(34), chr(34) * 2)}",F,L\n' for e in emails)
    path = write(tmp_path / "new.csv", "email,first_name,last_name\n" + body)
    run = cli("import", path, "--format", "json", *(["--dry-run"] if dry_run else ["--yes"]))
    assert run.exit_code == 0, run.stderr
    batch = None if dry_run else records(run.stdout)[0]["batch"]
    outcome = Outcome.PLANNED if dry_run else Outcome.CHANGED
    expected = [
        ChangeResult(e, None if dry_run else 6 + n, e, None, "active", outcome).as_record(batch)
        for n, e in enumerate(emails)
    ]
    assert run.stdout == _json_array(expected)


def test_import_names_an_email_given_twice_chunks_apart(cli, practice, engine, tmp_path):
    rows = [f"c{n}@example.org,C,{n}\n" for n in range(12_000)] + ["C5@EXAMPLE.org,Again,X\n"]
    path = write(tmp_path / "new.csv", "email,first_name,last_name\n" + "".join(rows))
    before = snapshot(engine)
    run = cli("import", path, "--yes")
    assert run.exit_code == 3
    assert run.stderr == (
        f"Error: 'C5@EXAMPLE.org' appears twice (line 7 of {path} and line 12002 of {path}); "
        "nothing was added. Keep one row per client.\n"
    )
    assert snapshot(engine) == before


def test_import_reports_the_first_fault_of_the_file_as_a_whole(cli, practice, engine, tmp_path):
    """A row already a client's, then a bad e-mail, then a byte that is not UTF-8: the file is
    read to its end before any one of them is reported, in the order a whole reading finds."""
    head = "email,first_name,last_name\nben@example.org,Ben,Again\nnot-an-email,A,B\n"
    bad = write(tmp_path / "bad.csv", head.encode() + b"x@example.org,\xff,B\n")
    run = cli("import", bad, "--yes")
    assert run.exit_code == 3
    assert run.stderr.startswith(f"Error: {bad} is not valid UTF-8 at line 4;")
    run = cli("import", write(tmp_path / "email.csv", head), "--yes")
    assert run.stderr.startswith(f"Error: {tmp_path / 'email.csv'} line 3 has 'not-an-email'")


def test_import_refuses_an_email_taken_between_preview_and_apply(practice, engine, tmp_path):
    """The unique index on live e-mails catches it; the error names the row, nothing is added."""
    from pbclients import importing
    from pbclients.csvinput import iter_import_csv
    from pbclients.errors import BadInput
    from pbclients.operation import Change
    from pbclients.roster import NewClient, add_clients

    data = b"email,first_name,last_name\nfay@example.org,Fay,Wong\ngus@example.org,Gus,Rossi\n"
    with importing.Intake.of(
        iter_import_csv(io.BytesIO(data), source="new.csv"), "new.csv"
    ) as intake:
        plan = importing.check(engine, intake)
        add_clients(engine, [NewClient("GUS@example.org", "Gus", "Other")], Change("admin"))
        before = snapshot(engine)
        with pytest.raises(BadInput) as error:
            importing.add(engine, plan, Change("admin"))
    assert str(error.value) == (
        "'gus@example.org' (line 3 of new.csv) is already client 6; nothing was added. "
        "Remove it from the input, or use `pbclients show` to look at the existing client."
    )
    assert snapshot(engine) == before


def test_equal_hashes_of_different_emails_are_not_duplicates(tmp_path):
    from pbclients import importing
    from pbclients.csvinput import ImportRow

    rows = [
        ImportRow(2, "a@x.org", "A", "B", None, None),
        ImportRow(3, "b@x.org", "B", "C", None, None),
    ]
    with importing.Intake.of(rows, "new.csv") as intake:
        importing._refuse_repeats(intake, intake.rows(), {hash("a@x.org"), hash("b@x.org")})


def test_add_preview_reads_only_and_apply_checks_again(practice, engine):
    """The preview neither waits for nor takes the write lock; what it checked, apply checks
    again in its own transaction."""
    from pbclients import roster
    from pbclients.db import writing
    from pbclients.errors import BadInput
    from pbclients.operation import Change
    from pbclients.roster import NewClient

    before = snapshot(engine)
    with writing(engine):  # another admin's transaction holds the write lock meanwhile
        plan = roster.preview(engine, [NewClient("fay@example.org", "Fay", "Ro", None, "Tai")])
    assert (plan.changing, plan.detail.new_programs) == (1, ("Tai",))
    assert snapshot(engine) == before
    roster.add_clients(engine, [NewClient("FAY@example.org", "F", "R")], Change("other"))
    with pytest.raises(BadInput, match=r"'fay@example\.org' is already client 6"):
        roster.apply(engine, plan, Change("admin"))
    with pytest.raises(BadInput, match="is already client 6"):
        roster.preview(engine, [NewClient("fay@example.org", "Fay", "Ro")])


# --- list ------------------------------------------------------------------------------------


@pytest.fixture
def mixed(practice, engine):
    """Client 2 deactivated and client 4 deleted (pending purge), set directly."""
    sql(
        engine,
        "UPDATE client SET status = 'deactivated', deactivated_at = '2026-11-20 10:00:00' "
        "WHERE id = 2",
    )
    sql(
        engine,
        "UPDATE client SET status = 'deleted', deleted_at = '2026-11-16 09:00:00', "
        "purge_after = '2026-12-16 09:00:00' WHERE id = 4",
    )


BEN_OFF = {**BEN, "status": "deactivated", "deactivated_at": "2026-11-20T10:00:00Z"}
DEV_GONE = {
    **DEV,
    "status": "deleted",
    "deleted_at": "2026-11-16T09:00:00Z",
    "purge_after": "2026-12-16T09:00:00Z",
    "days_until_purge": 20,
}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], [ANA, BEN_OFF, CHLOE, ELIF]),
        (["--status", "active"], [ANA, CHLOE, ELIF]),
        (["--status", "deactivated"], [BEN_OFF]),
        (["--status", "deleted"], [DEV_GONE]),
        (["--status", "all"], [ANA, BEN_OFF, CHLOE, DEV_GONE, ELIF]),
        (["--search", "NGUY"], [CHLOE]),
        (["--search", "elif@"], [ELIF]),
        (["--search", "ana silva"], [ANA]),
        (["--search", "dev"], []),
        (["--search", "dev", "--status", "all"], [DEV_GONE]),
        (["--program", "Spring Reset"], [ANA, BEN_OFF]),
        (["--program", "spring reset", "--status", "active"], [ANA]),
        (["--limit", "2"], [ANA, BEN_OFF]),
        (["--status", "all", "--limit", "4"], [ANA, BEN_OFF, CHLOE, DEV_GONE]),
    ],
)
def test_list_json_filters_with_exact_records(cli, mixed, args, expected):
    run = cli("list", *args, "--format", "json")
    assert run.exit_code == 0, run.stderr
    got = records(run.stdout)
    assert got == expected
    for record in got:
        assert list(record) == LIST_KEYS
        assert set(record) >= CONTRACT_KEYS


def test_list_csv_has_the_same_fields_as_columns(cli, mixed):
    run = cli("list", "--status", "all", "--format", "csv")
    assert run.exit_code == 0, run.stderr
    rows = list(csv.reader(io.StringIO(run.stdout)))
    # The hold's details are in --format json; CSV says whether a client is held.
    assert rows[0] == [key for key in LIST_KEYS if key != "hold"]
    assert rows[1:] == [
        ["1", "ana@example.org", "Ana", "Silva", "active", "Spring Reset", SETUP, "", "", "", "",
         "2026-11-25T09:00:00Z", "False"],
        ["2", "ben@example.org", "Ben", "Okafor", "deactivated", "Spring Reset", SETUP,
         "2026-11-20T10:00:00Z", "", "", "", SETUP, "False"],
        ["3", "chloe@example.org", "Chloe", "Nguyen", "active", "Sleep Foundations", SETUP,
         "", "", "", "", SETUP, "False"],
        ["4", "dev@example.org", "Dev", "Schmidt", "deleted", "", SETUP, "",
         "2026-11-16T09:00:00Z", "2026-12-16T09:00:00Z", "20", SETUP, "False"],
        ["5", "elif@example.org", "Elif", "Haddad", "active", "Sleep Foundations", SETUP,
         "", "", "", "", SETUP, "False"],
    ]  # fmt: skip


def test_list_ids_and_table(cli, mixed):
    assert cli("list", "--format", "ids").stdout == "1\n2\n3\n5\n"
    assert cli("list", "--status", "deleted", "--format", "ids").stdout == "4\n"
    table = cli("list")
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["id", "name", "email", "status", "programs", "since"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3", "5"]
    deleted = cli("list", "--status", "deleted").stdout.splitlines()
    assert deleted[0].split()[-2:] == ["purge", "in"]
    assert deleted[1].split()[-2:] == ["20", "d"]
    assert cli("list", "--search", "nobody").stdout == "No clients match.\n"


def test_list_unknown_program_exits_3(cli, mixed):
    run = cli("list", "--program", "Yoga")
    assert run.exit_code == 3
    assert run.stderr.startswith("Error: There is no program named 'Yoga' (programs: ")


@pytest.mark.parametrize("args", [["--status", "gone"], ["--limit", "0"], ["--format", "xml"]])
def test_list_bad_options_are_usage_errors(cli, practice, args):
    run = cli("list", *args)
    assert run.exit_code == 2
    assert run.stderr.startswith("Usage: ")


def test_machine_formats_return_every_match_without_a_cap(cli, engine):
    from pbclients.operation import Change
    from pbclients.roster import NewClient, add_clients
    from tests.factory import NOW

    total = 2_150  # more than a table shows and more than one page of the query
    people = [NewClient(f"p{n}@example.org", "P", f"N{n}") for n in range(1, total + 1)]
    add_clients(engine, people, Change("setup", None, NOW))
    expected_ids = list(range(1, total + 1))
    ids = cli("list", "--format", "ids").stdout.split()
    assert [int(i) for i in ids] == expected_ids
    assert [r["id"] for r in records(cli("list", "--format", "json").stdout)] == expected_ids
    rows = cli("list", "--format", "csv").stdout.splitlines()
    assert len(rows) == total + 1
    table = cli("list").stdout.splitlines()  # not a terminal: the table is not capped either
    assert len(table) == total + 1
    limited = cli("list", "--format", "ids", "--limit", "2001").stdout.split()
    assert len(limited) == 2001


# --- show ------------------------------------------------------------------------------------


def test_show_json_exact(cli, practice):
    run = cli("show", "ANA@example.org", "--format", "json")
    assert run.exit_code == 0, run.stderr
    assert records(run.stdout) == {
        **ANA,
        "phone": "+1 555 0101",
        "capabilities": {
            "portal_login": True, "view_content": True, "journal_and_messages": True,
            "join_telehealth": True, "continue_programs": True, "email_notifications": True,
            "complete_forms": True, "be_charged": True,
        },
        "appointments": [
            {
                "id": 1, "starts_at": "2026-11-29T09:00:00Z", "title": "Follow-up",
                "duration_minutes": 50, "telehealth": True, "client_can_join": True,
            }
        ],
        "enrolments": [
            {
                "program": "Spring Reset", "kind": "program", "progress_percent": 0,
                "enrolled_at": SETUP, "completed_at": None, "state": "in progress",
            }
        ],
        "counts": {
            "enrolments": 1, "appointments": 2, "journal_entries": 1, "protocols": 0,
            "session_notes": 1, "messages": 1, "forms": 0, "documents": 1,
            "payment_methods": 0, "payment_plans": 0, "notifications": 0,
        },
    }  # fmt: skip


def test_show_json_of_a_deactivated_client(cli, practice):
    assert cli("deactivate", "1", "2", "--yes").exit_code == 0
    shown = records(cli("show", "1", "--format", "json").stdout)
    assert shown["status"] == "deactivated"
    assert shown["deactivated_at"] == NOW_TEXT
    assert shown["capabilities"] == {
        "portal_login": False, "view_content": False, "journal_and_messages": False,
        "join_telehealth": False, "continue_programs": False, "email_notifications": False,
        "complete_forms": True, "be_charged": True,
    }  # fmt: skip
    assert [(a["telehealth"], a["client_can_join"]) for a in shown["appointments"]] == [
        (True, False)
    ]
    assert shown["enrolments"][0]["state"] == "paused"
    ben = records(cli("show", "2", "--format", "json").stdout)
    assert (ben["counts"]["payment_methods"], ben["counts"]["payment_plans"]) == (1, 1)


def test_show_table_lists_every_capability(cli, practice):
    assert cli("deactivate", "1", "--yes").exit_code == 0
    run = cli("show", "1")
    assert run.exit_code == 0
    lines = run.stdout.splitlines()
    assert lines[:3] == [
        "Ana Silva  (client 1)",
        "e-mail: ana@example.org    phone: +1 555 0101",
        f"status: deactivated since {NOW_TEXT}",
    ]
    allowed = {
        "log in to the client portal": "no",
        "receive and complete forms sent by direct e-mail link": "yes",
        "be charged on a saved payment method (practice's discretion)": "yes",
        "join a telehealth session (appointments stay on the calendar)": "no",
    }
    for description, answer in allowed.items():
        assert any(
            line.split(description)[-1].split() == [answer] for line in lines if description in line
        )


def test_show_a_deleted_client_says_when_it_is_purged(cli, mixed):
    run = cli("show", "4")
    assert run.exit_code == 0
    assert (
        "status: deleted on 2026-11-16T09:00:00Z; purged after 2026-12-16T09:00:00Z "
        "(20 days left)" in run.stdout
    )


def test_show_an_unknown_client_exits_3_in_one_line(cli, practice):
    run = cli("show", "zed@example.org")
    assert run.exit_code == 3
    assert run.stderr == (
        "Error: There is no client 'zed@example.org'; "
        "find it with `pbclients list --search TEXT`.\n"
    )
    assert run.stdout == ""


# --- clock -----------------------------------------------------------------------------------


def test_pbclients_now_is_the_clock_for_timestamps(cli, practice, monkeypatch):
    monkeypatch.setenv("PBCLIENTS_NOW", "2027-01-02T03:04:05Z")
    assert cli(*ADD_ZOE, "--yes").exit_code == 0
    assert cli("deactivate", "6", "--yes").exit_code == 0
    shown = records(cli("show", "6", "--format", "json").stdout)
    assert (shown["created_at"], shown["deactivated_at"]) == (
        "2027-01-02T03:04:05Z",
        "2027-01-02T03:04:05Z",
    )
    events = records(cli("audit", "--client", "6", "--format", "json").stdout)
    assert [e["at"] for e in events] == ["2027-01-02T03:04:05Z"] * 2


def test_a_malformed_pbclients_now_is_a_usage_error(cli, practice, monkeypatch):
    monkeypatch.setenv("PBCLIENTS_NOW", "tomorrow")
    run = cli("list")
    assert run.exit_code == 2
    assert run.stderr == (
        "Error: PBCLIENTS_NOW='tomorrow' is not an ISO-8601 timestamp; use e.g. "
        "2026-11-26T09:00:00Z or unset it.\n"
    )
