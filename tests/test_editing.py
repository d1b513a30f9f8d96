"""edit, enrol and unenrol through the real CLI, on SQLite and PostgreSQL.

The `practice` fixture: clients 1-5 (ana, ben, chloe, dev, elif@example.org), all active;
ana and ben in "Spring Reset", chloe and elif in "Sleep Foundations".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from pbclients import audit
from pbclients.db import reading
from tests.helpers import NOW_TEXT, audit_count, count, records, snapshot, sql, statuses

SETUP_EVENTS = 5
Run = Callable[..., Any]


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)


def events(engine: Engine, action: str) -> list[tuple[int | None, Any, str | None, str | None]]:
    with reading(engine) as session:
        return [
            (e.client_id, json.loads(e.detail or "null"), e.before, e.after)
            for e in audit.events(session, action=action)
        ]


def client_row(engine: Engine, client_id: int) -> tuple[Any, ...]:
    with reading(engine) as session:
        from sqlalchemy import text

        return tuple(
            session.execute(
                text(
                    "SELECT email, email_key, first_name, last_name, phone, status FROM client "
                    "WHERE id = :id"
                ),
                {"id": client_id},
            ).one()
        )


# --- edit -------------------------------------------------------------------------------------


def test_edit_changes_the_fields_and_records_only_their_names(
    cli: Run, practice: Any, engine: Engine
) -> None:
    result = cli("edit", "ana@example.org", "--email", "Ana.Costa@Example.org", "--last-name",
                 "Costa", "--no-phone", "--reason", "married", "--yes", "-f", "json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    [row] = records(result.stdout)
    assert row == {
        "reference": "ana@example.org",
        "id": 1,
        "email": "Ana.Costa@Example.org",
        "changed": ["email", "last_name", "phone"],
        "before": {"email": "ana@example.org", "last_name": "Silva", "phone": "+1 555 0101"},
        "after": {"email": "Ana.Costa@Example.org", "last_name": "Costa", "phone": None},
        "outcome": "changed",
        "batch": row["batch"],
    }
    assert client_row(engine, 1) == (
        "Ana.Costa@Example.org", "ana.costa@example.org", "Ana", "Costa", None, "active",
    )  # fmt: skip
    assert events(engine, "edit") == [(1, {"fields": ["email", "last_name", "phone"]}, None, None)]
    with reading(engine) as session:
        [event] = audit.events(session, action="edit")
        assert (event.batch_id, event.reason, event.actor) == (row["batch"], "married", "tester")
        # The trail holds no personal data: none of the old or new values.
        assert "Silva" not in str(event.detail) and "Costa" not in str(event.detail)
        assert audit.verify(session).intact
    # The new e-mail names the client at once, in any case.
    shown = cli("show", "ANA.COSTA@example.org", "--format", "json")
    assert json.loads(shown.stdout)["id"] == 1


def test_a_deactivated_client_is_edited_and_stays_deactivated(
    cli: Run, practice: Any, engine: Engine
) -> None:
    assert cli("deactivate", "2", "--yes").exit_code == 0
    result = cli("edit", "2", "--first-name", "Benjamin", "--yes")
    assert result.exit_code == 0, result.stderr
    assert "Edited 1 client. Batch " in result.stdout
    assert client_row(engine, 2)[2:] == ("Benjamin", "Okafor", None, "deactivated")


def test_a_deleted_client_is_not_edited(cli: Run, practice: Any, engine: Engine) -> None:
    sql(engine, "UPDATE client SET status = 'deleted' WHERE id = 3")
    before = snapshot(engine)
    result = cli("edit", "3", "--first-name", "C", "--yes")
    assert result.exit_code == 3
    assert result.stderr == (
        "Error: Client 3 ('3') is deleted and cannot be edited; nothing was changed. Bring it "
        "back with `pbclients undo BATCH` or `pbclients restore BACKUP` first.\n"
    )
    assert snapshot(engine) == before


def test_an_email_of_another_live_client_is_refused_whatever_its_case(
    cli, practice, engine
) -> None:
    before = snapshot(engine)
    result = cli("edit", "1", "--email", "BEN@example.ORG", "--yes")
    assert result.exit_code == 3
    assert result.stderr == (
        "Error: The e-mail 'BEN@example.ORG' already belongs to client 2; nothing was changed. "
        "Give client 1 another e-mail.\n"
    )
    assert snapshot(engine) == before


def test_changing_only_the_case_of_ones_own_email_is_allowed(
    cli: Run, practice: Any, engine: Engine
) -> None:
    result = cli("edit", "1", "--email", "ANA@example.org", "--yes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert records(result.stdout)[0]["changed"] == ["email"]
    assert client_row(engine, 1)[:2] == ("ANA@example.org", "ana@example.org")


def test_the_same_values_are_nothing_to_edit(cli: Run, practice: Any, engine: Engine) -> None:
    result = cli("edit", "1", "--first-name", "Ana", "--yes")
    assert result.exit_code == 0
    assert result.stdout.endswith("Nothing to edit: the client already has these values.\n")
    assert audit_count(engine) == SETUP_EVENTS


def test_edit_dry_run_writes_nothing_and_needs_no_terminal(
    cli: Run, practice: Any, engine: Engine
) -> None:
    before = snapshot(engine)
    result = cli("edit", "1", "--phone", "+351 900", "--dry-run", "--format", "json")
    assert result.exit_code == 0, result.stderr
    [row] = records(result.stdout)
    assert (row["outcome"], row["batch"], row["after"]) == ("planned", None, {"phone": "+351 900"})
    assert snapshot(engine) == before


def test_edit_without_a_terminal_or_yes_is_refused(cli: Run, practice: Any, engine: Engine) -> None:
    before = snapshot(engine)
    result = cli("edit", "1", "--phone", "+351 900")
    assert result.exit_code == 2
    assert "pass --yes to go ahead" in result.stderr
    assert snapshot(engine) == before


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], 2, "Say what to change: --email, --first-name, --last-name, --phone or --no-phone."),
        (["--phone", "1", "--no-phone"], 2, "Give --phone or --no-phone, not both."),
        (["--first-name", "  "], 3, "--first-name cannot be empty; give the client's new value."),
        (["--email", "not-an-email"], 3, None),
        (["--last-name", "Evil\x1b[2J"], 3, None),
    ],
)
def test_bad_edits_change_nothing(
    cli: Run, practice: Any, engine: Engine, args: list[str], code: int, message: str | None
) -> None:
    before = snapshot(engine)
    result = cli("edit", "1", *args, "--yes")
    assert result.exit_code == code, result.stderr
    assert "\x1b" not in result.stderr
    if message:
        assert result.stderr == f"Error: {message}\n"
    assert snapshot(engine) == before


def test_an_unknown_client_is_exit_3(cli: Run, practice: Any) -> None:
    result = cli("edit", "nobody@example.org", "--first-name", "X", "--yes")
    assert result.exit_code == 3
    assert "There is no client 'nobody@example.org'" in result.stderr


# --- enrol / unenrol ----------------------------------------------------------------------------


def show(cli: Run, reference: str) -> dict[str, Any]:
    return json.loads(cli("show", reference, "--format", "json").stdout)


def test_enrol_creates_the_program_and_a_deactivated_client_starts_paused(
    cli, practice, engine
) -> None:
    assert cli("deactivate", "4", "--yes").exit_code == 0
    dry = cli("enrol", "3", "4", "--program", "Autumn Group", "--dry-run")
    assert dry.exit_code == 0
    assert "Dry run: would enrol 2 clients in 'Autumn Group'; nothing was written." in dry.stdout
    result = cli("enrol", "3", "4", "1", "--program", "Autumn Group", "--yes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert [(r["id"], r["before"], r["after"], r["outcome"]) for r in records(result.stdout)] == [
        (3, "not enrolled", "enrolled", "changed"),
        (4, "not enrolled", "paused", "changed"),
        (1, "not enrolled", "enrolled", "changed"),
    ]
    states = {e["program"]: e["state"] for e in show(cli, "4")["enrolments"]}
    assert states == {"Autumn Group": "paused"}
    [(_, detail, _, _), *_] = events(engine, "enrol")
    assert set(detail) == {"program_id"}
    # Enrolling again is unchanged, in any case of the program's name.
    again = cli("enrol", "3", "--program", "autumn group", "--yes", "--format", "json")
    assert [r["outcome"] for r in records(again.stdout)] == ["unchanged"]


def test_enrol_refuses_a_deleted_client(cli: Run, practice: Any, engine: Engine) -> None:
    sql(engine, "UPDATE client SET status = 'deleted' WHERE id = 5")
    before = snapshot(engine)
    result = cli("enrol", "1", "5", "--program", "Spring Reset", "--yes")
    assert result.exit_code == 3
    assert "Client 5 ('5') is deleted and cannot be enrolled; nothing was changed." in result.stderr
    assert snapshot(engine) == before


def test_unenrol_takes_clients_out_and_reports_the_others_unchanged(
    cli: Run, practice: Any, engine: Engine
) -> None:
    result = cli("unenrol", "1", "3", "--program", "spring reset", "--yes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert [(r["id"], r["outcome"]) for r in records(result.stdout)] == [
        (1, "changed"), (3, "unchanged"),
    ]  # fmt: skip
    assert show(cli, "1")["programs"] == []
    assert show(cli, "2")["programs"] == ["Spring Reset"]
    assert statuses(engine)[1] == "active"


def test_unenrol_from_an_unknown_program_is_exit_3(cli: Run, practice: Any, engine: Engine) -> None:
    before = snapshot(engine)
    result = cli("unenrol", "1", "--program", "Nope", "--yes")
    assert result.exit_code == 3
    assert "There is no program named 'Nope'" in result.stderr
    assert snapshot(engine) == before


def test_enrol_needs_a_selection(cli: Run, practice: Any) -> None:
    result = cli("enrol", "--program", "Spring Reset", "--yes")
    assert result.exit_code == 2


# --- undo -------------------------------------------------------------------------------------


def batch_of(result: Any) -> str:
    return str(records(result.stdout)[0]["batch"])


def test_undo_of_an_edit_puts_the_old_values_back_and_can_be_undone(
    cli: Run, practice: Any, engine: Engine
) -> None:
    edited = cli(
        "edit", "1", "--email", "ana.costa@example.org", "--no-phone", "--yes", "-f", "json"
    )
    undone = cli("undo", batch_of(edited), "--yes", "--format", "json")
    assert undone.exit_code == 0, undone.stderr
    assert [(r["id"], r["outcome"]) for r in records(undone.stdout)] == [(1, "changed")]
    assert client_row(engine, 1)[:5] == (
        "ana@example.org", "ana@example.org", "Ana", "Silva", "+1 555 0101",
    )  # fmt: skip
    again = cli("undo", batch_of(undone), "--yes")
    assert again.exit_code == 0, again.stderr
    assert client_row(engine, 1)[:2] == ("ana.costa@example.org", "ana.costa@example.org")
    with reading(engine) as session:
        assert audit.verify(session).intact


def test_undo_of_an_edit_leaves_a_client_edited_since_alone(
    cli: Run, practice: Any, engine: Engine
) -> None:
    edited = cli("edit", "1", "--first-name", "Anna", "--yes", "-f", "json")
    assert cli("edit", "1", "--first-name", "Annie", "--yes").exit_code == 0
    undone = cli("undo", batch_of(edited), "--yes", "--format", "json")
    assert undone.exit_code == 0
    assert [(r["outcome"], r["note"]) for r in records(undone.stdout)] == [
        ("skipped", "changed since")
    ]
    assert client_row(engine, 1)[2] == "Annie"


def test_undo_of_an_edit_does_not_take_back_an_email_someone_else_now_has(
    cli: Run, practice: Any, engine: Engine
) -> None:
    edited = cli("edit", "1", "--email", "ana.costa@example.org", "--yes", "-f", "json")
    assert cli("edit", "2", "--email", "ANA@example.org", "--yes").exit_code == 0
    undone = cli("undo", batch_of(edited), "--yes", "--format", "json")
    assert [(r["outcome"], r["note"]) for r in records(undone.stdout)] == [
        ("skipped", "e-mail now used by client 2")
    ]
    assert client_row(engine, 1)[0] == "ana.costa@example.org"


def test_undo_of_enrol_and_unenrol_keeps_the_progress(
    cli: Run, practice: Any, engine: Engine
) -> None:
    sql(engine, "UPDATE enrolment SET progress_percent = 40 WHERE client_id = 1")
    left = cli("unenrol", "1", "--program", "Spring Reset", "--yes", "-f", "json")
    assert show(cli, "1")["enrolments"] == []
    back = cli("undo", batch_of(left), "--yes", "--format", "json")
    assert back.exit_code == 0, back.stderr
    [enrolment] = show(cli, "1")["enrolments"]
    assert (enrolment["program"], enrolment["progress_percent"]) == ("Spring Reset", 40)
    joined = cli("enrol", "4", "--program", "Spring Reset", "--yes", "-f", "json")
    assert cli("undo", batch_of(joined), "--yes").exit_code == 0
    assert show(cli, "4")["programs"] == []
    assert [e[0] for e in events(engine, "enrol")] == [1, 4]  # the undo, then the enrol


def test_purge_removes_the_values_kept_for_undo(
    cli: Run, practice: Any, engine: Engine, tmp_path: Path
) -> None:
    from tests.helpers import count

    assert cli("edit", "3", "--last-name", "Tran", "--yes").exit_code == 0
    assert count(engine, "undo_record", "WHERE client_id = 3") == 1
    folder = str(tmp_path / "backups")
    assert cli("delete", "3", "--backup-dir", folder, "--yes").exit_code == 0
    sql(engine, "UPDATE client SET purge_after = deleted_at WHERE id = 3")
    purged = cli("purge", "--yes")
    assert purged.exit_code == 0, purged.stderr
    assert count(engine, "undo_record", "WHERE client_id = 3") == 0


# --- import --update --------------------------------------------------------------------------


def test_import_update_adds_updates_and_reports_each_row(
    cli: Run, practice: Any, engine: Engine, tmp_path: Path
) -> None:
    rows = (
        "id,email,first_name,last_name,phone\n"
        "1,ana.costa@example.org,Ana,Costa,\n"  # by id: new e-mail and last name
        ",BEN@example.org,Benjamin,Okafor,+1 555 0202\n"  # by e-mail, any case
        ",chloe@example.org,Chloe,Nguyen,\n"  # the same values
        ",new@example.org,Nora,Lind,\n"  # nobody: added
    )
    (tmp_path / "roster.csv").write_text(rows)
    dry = cli("import", str(tmp_path / "roster.csv"), "--update", "--dry-run", "-f", "json")
    assert dry.exit_code == 0, dry.stderr
    assert [(r["id"], r["outcome"], r["note"]) for r in records(dry.stdout)] == [
        (1, "planned", "updated: email, last_name"),
        (2, "planned", "updated: email, first_name, phone"),  # the case of the e-mail too
        (3, "unchanged", "unchanged"),
        (None, "planned", "added"),
    ]
    before = snapshot(engine)
    assert cli("import", str(tmp_path / "roster.csv"), "--update", "--dry-run").exit_code == 0
    assert snapshot(engine) == before
    done = cli("import", str(tmp_path / "roster.csv"), "--update", "--yes", "-f", "json")
    assert done.exit_code == 0, done.stderr
    assert [r["id"] for r in records(done.stdout)] == [1, 2, 3, 6]
    assert client_row(engine, 1)[:5] == (
        "ana.costa@example.org", "ana.costa@example.org", "Ana", "Costa", "+1 555 0101",
    )  # fmt: skip
    assert client_row(engine, 2)[2:5] == ("Benjamin", "Okafor", "+1 555 0202")
    assert [e[0] for e in events(engine, "edit")] == [1, 2]


def test_import_update_refuses_the_first_bad_row_in_file_order(
    cli: Run, practice: Any, engine: Engine, tmp_path: Path
) -> None:
    """A deleted client on row 2 is the error, not the unknown id of row 3: the clients are
    read a chunk at a time, the rows still checked one after the other."""
    sql(engine, "UPDATE client SET status = 'deleted' WHERE id = 2")
    rows = "id,email,first_name,last_name\n2,ben@example.org,Ben,O\n999,x@example.org,X,Y\n"
    (tmp_path / "roster.csv").write_text(rows)
    before = snapshot(engine)
    result = cli("import", str(tmp_path / "roster.csv"), "--update", "--yes")
    assert result.exit_code == 3
    assert "Client 2 ('2') is deleted and cannot be edited" in " ".join(result.stderr.split())
    assert snapshot(engine) == before
    (tmp_path / "roster.csv").write_text("id,email,first_name,last_name\n999,x@example.org,X,Y\n")
    unknown = cli("import", str(tmp_path / "roster.csv"), "--update", "--yes")
    assert unknown.exit_code == 3
    assert "There is no client '999'" in unknown.stderr


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        # The first row changes client 1; the second would give client 2 the e-mail
        # client 3 still has: neither is applied.
        ("1,ana2@example.org,Ana,S\n2,chloe@example.org,Ben,O\n", "already belongs to client 3"),
        # The first row changes nothing, and is still a client named twice.
        ("1,ana@example.org,Ana,Silva\n1,ana@example.org,A,B\n", "Client 1 is named twice (line 3"),
    ],
    ids=["all-or-nothing", "named-twice-unchanged-first"],
)
def test_import_update_refuses_the_whole_file(
    cli: Run, practice: Any, engine: Engine, tmp_path: Path, rows: str, message: str
) -> None:
    (tmp_path / "roster.csv").write_text("id,email,first_name,last_name\n" + rows)
    before = snapshot(engine)
    result = cli("import", str(tmp_path / "roster.csv"), "--update", "--yes")
    assert result.exit_code == 3
    assert message in " ".join(result.stderr.split())
    assert snapshot(engine) == before


MANY = 12_000  # more than one chunk of rows (pbclients.lookup.CHUNK)


def _many_clients(cli: Run, tmp_path: Path) -> None:
    """Clients 6 to MANY + 5: c0@example.org ... with last names L0 ..."""
    body = "".join(f"c{n}@example.org,C,L{n}\n" for n in range(MANY))
    (tmp_path / "many.csv").write_text("email,first_name,last_name\n" + body)
    assert cli("import", str(tmp_path / "many.csv"), "--yes").exit_code == 0


def test_import_update_sorts_a_file_of_many_chunks_in_file_order(
    cli: Run, practice: Any, engine: Engine, tmp_path: Path
) -> None:
    _many_clients(cli, tmp_path)
    rows = []
    for n in range(MANY):
        if n % 3 == 0:
            rows.append(f"{n + 6},c{n}@example.org,C,New{n},\n")  # by id: a new last name
        elif n % 3 == 1:
            rows.append(f",c{n}@example.org,C,L{n},\n")  # by e-mail: the same values
        else:
            rows.append(f",n{n}@example.org,N,L{n},\n")  # nobody: added
    path = tmp_path / "update.csv"
    path.write_text("id,email,first_name,last_name,phone\n" + "".join(rows))
    dry = cli("import", str(path), "--update", "--dry-run", "-f", "json")
    assert dry.exit_code == 0, dry.stderr
    planned = records(dry.stdout)
    assert [r["note"] for r in planned] == [
        ("updated: last_name", "unchanged", "added")[n % 3] for n in range(MANY)
    ]
    shown = ("reference", "id", "email", "before", "after", "outcome", "note", "batch")
    assert [tuple(r[k] for k in shown) for r in planned[-3:]] == [
        (str(MANY + 3), MANY + 3, f"c{MANY - 3}@example.org", "active", "active", "planned",
         "updated: last_name", None),
        (str(MANY + 4), MANY + 4, f"c{MANY - 2}@example.org", "active", "active", "unchanged",
         "unchanged", None),
        (f"n{MANY - 1}@example.org", None, f"n{MANY - 1}@example.org", None, "active", "planned",
         "added", None),
    ]  # fmt: skip
    table = cli("import", str(path), "--update", "--dry-run")
    assert "Dry run: 4000 clients added, 4000 updated, 4000 unchanged; nothing was written." in (
        " ".join(table.stdout.split())
    )

    before = snapshot(engine)
    done = cli("import", str(path), "--update", "--yes", "-f", "json")
    assert done.exit_code == 0, done.stderr
    results = records(done.stdout)
    batch = results[0]["batch"]
    # The added clients take the next ids in file order.
    assert [r["id"] for r in results if r["note"] == "added"] == list(
        range(MANY + 6, MANY + 6 + MANY // 3)
    )
    assert {r["outcome"] for r in results if r["note"] != "unchanged"} == {"changed"}
    assert client_row(engine, 6)[3] == "New0" and client_row(engine, 7)[3] == "L1"
    assert len(events(engine, "edit")) == MANY // 3
    assert count(engine, "client") == 5 + MANY + MANY // 3
    # Every edit kept what it replaced, outside the trail.
    assert count(engine, "undo_record", f"WHERE batch_id = '{batch}'") == MANY // 3
    assert snapshot(engine)["client"] != before["client"]


@pytest.mark.parametrize(
    ("first", "last", "message"),
    [
        (
            "6,c0@example.org,C,L0,",
            "6,c0@example.org,C,Again,",
            "Client 6 is named twice (line {last} of {path})",
        ),
        (
            "6,z@example.org,C,L0,",
            f"{MANY + 5},Z@example.org,C,L,",
            f"Clients 6 and {MANY + 5} would both get the e-mail 'Z@example.org'",
        ),
        (
            ",new@example.org,N,N,",
            ",NEW@example.org,N,N,",
            "'NEW@example.org' appears twice (line 2 of {path} and line {last} of {path})",
        ),
        (
            ",new@example.org,N,N,",
            "7,New@Example.org,C,L1,",
            "'new@example.org' is added (line 2 of {path}) and given to client 7 "
            "(line {last} of {path})",
        ),
    ],
    ids=["client named twice", "e-mail given twice", "e-mail added twice", "added and given"],
)
def test_import_update_refuses_rows_that_clash_chunks_apart(
    cli: Run, practice: Any, engine: Engine, tmp_path: Path, first: str, last: str, message: str
) -> None:
    _many_clients(cli, tmp_path)
    # Every client but the three the first and last rows name (6, 7 and the last).
    middle = "".join(f",c{n}@example.org,C,L{n},\n" for n in range(2, MANY - 1))
    path = tmp_path / "update.csv"
    path.write_text(f"id,email,first_name,last_name,phone\n{first}\n{middle}{last}\n")
    before = snapshot(engine)
    for mode in ("--dry-run", "--yes"):
        result = cli("import", str(path), "--update", mode)
        assert result.exit_code == 3, result.stderr
        expected = message.format(last=MANY, path=path)
        assert expected in " ".join(result.stderr.split())
        assert "nothing was" in result.stderr
    assert snapshot(engine) == before


def test_import_update_stops_when_a_client_changed_since_the_plan(
    practice: Any, engine: Engine, tmp_path: Path
) -> None:
    from contextlib import closing

    from pbclients import importing
    from pbclients.csvinput import iter_import_csv
    from pbclients.errors import DatabaseBusy
    from pbclients.operation import Change

    rows = "id,email,first_name,last_name\n1,ana@example.org,Ana,Costa\n,new@example.org,N,N\n"
    path = tmp_path / "roster.csv"
    path.write_text(rows)
    with path.open("rb") as stream:
        intake = importing.Intake.of(iter_import_csv(stream, source="roster.csv"), "roster.csv")
    with intake, closing(importing.check_update(engine, intake)) as plan:
        assert (plan.adding, plan.updating, plan.unchanged) == (1, 1, 0)
        sql(engine, "UPDATE client SET first_name = 'Anna' WHERE id = 1")
        before = snapshot(engine)
        with pytest.raises(DatabaseBusy, match="Client 1 changed while this command ran"):
            importing.update(engine, plan, Change("admin"))
        assert snapshot(engine) == before
        sql(engine, "UPDATE client SET first_name = 'Ana' WHERE id = 1")
        done = importing.update(engine, plan, Change("admin"))
        # The new client's id: 6 on SQLite; PostgreSQL's sequence does not roll back.
        [edited, added] = done.results()
        assert (edited.client_id, edited.note) == (1, "updated: last_name")
        assert added.note == "added" and statuses(engine)[added.client_id or 0] == "active"


@pytest.mark.parametrize(
    ("first", "second", "last", "message"),
    [
        # A client unknown anywhere in the file is found before any e-mail is checked.
        (
            "1,ben@example.org,Ana,S,",
            "",
            "999999,x@example.org,X,Y,",
            "There is no client '999999'",
        ),
        # Two rows giving one e-mail, before an e-mail another client has.
        (
            "1,one@example.org,Ana,S,",
            "2,chloe@example.org,Ben,O,",
            "4,One@example.org,Dev,D,",
            "Clients 1 and 4 would both get the e-mail 'One@example.org'",
        ),
    ],
    ids=["unknown before taken", "given twice before taken"],
)
def test_import_update_checks_the_whole_file_in_the_order_of_its_checks(
    cli: Run, practice: Any, engine: Engine, tmp_path: Path,
    first: str, second: str, last: str, message: str,
) -> None:  # fmt: skip
    _many_clients(cli, tmp_path)
    middle = "".join(f",c{n}@example.org,C,L{n},\n" for n in range(MANY))
    path = tmp_path / "update.csv"
    path.write_text(f"id,email,first_name,last_name,phone\n{first}\n{second}\n{middle}{last}\n")
    before = snapshot(engine)
    result = cli("import", str(path), "--update", "--dry-run")
    assert result.exit_code == 3
    assert message in " ".join(result.stderr.split())
    assert snapshot(engine) == before


def test_import_update_that_adds_nobody_is_not_held_to_the_plan_limit(
    cli: Run, practice: Any, engine: Engine, tmp_path: Path
) -> None:
    """A practice over a lowered limit still keeps its clients' files up to date."""
    assert cli("plan", "--set-limit", "2", "--yes").exit_code == 0
    (tmp_path / "roster.csv").write_text("id,email,first_name,last_name\n1,ana@example.org,A,B\n")
    result = cli("import", str(tmp_path / "roster.csv"), "--update", "--yes")
    assert result.exit_code == 0, result.stderr
    assert client_row(engine, 1)[2:4] == ("A", "B")
    (tmp_path / "roster.csv").write_text("email,first_name,last_name\nnew@example.org,N,N\n")
    refused = cli("import", str(tmp_path / "roster.csv"), "--update", "--yes")
    assert refused.exit_code == 6
    assert "would exceed the plan limit of 2" in refused.stderr


def test_client_ids_take_room_for_the_ids_named_not_for_the_largest() -> None:
    import tracemalloc

    from pbclients.editing import ClientIds

    named = ClientIds()
    tracemalloc.start()
    try:
        assert named.add(2_147_483_000) and named.add(1) and named.add(4096)
        assert not named.add(2_147_483_000) and not named.add(1)
        assert named.add(2_147_482_999) and named.add(0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
