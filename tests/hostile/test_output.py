"""Hostile strings through every command that prints client data, in every format.

The strings are written straight into the database, as the client portal, an older
version or a copied database would, so that no input validation stands in front of the
renderer: what is stored is shown as literal text, never markup, never a terminal
control, never a spreadsheet formula; JSON gives it back exactly.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, text
from sqlmodel import col

from pbclients.cli.render import csv_cell, literal, message, visible
from pbclients.db import writing
from pbclients.formulas import neutralise, unneutralise
from pbclients.models import Appointment, Client, Enrolment, Program
from tests.factory import NOW
from tests.helpers import NOW_TEXT, run_in_pty, snapshot, subprocess_env, write
from tests.hostile.strings import FORMULA_START, HOSTILE, HOSTILE_EMAILS, SGR, forbidden

pytestmark = pytest.mark.usefixtures("pinned_clock")

HOSTILE_ACTOR = "[bold]root[/bold]\x1b]52;c;ZXZpbA==\x07"
HOSTILE_REASON = '=HYPERLINK("http://evil.example")\x1b[2J[/]\u202e'


@pytest.fixture
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)


def _stored(db_target: str) -> dict[str, str]:
    # PostgreSQL text cannot hold NUL, so no other writer could have stored it there.
    if db_target.startswith("postgresql"):
        return {key: value for key, value in HOSTILE.items() if "\x00" not in value}
    return dict(HOSTILE)


def plant(engine: Engine, strings: dict[str, str]) -> dict[str, int]:
    """One client per hostile string (as both names, and its program and appointment
    title), one per hostile e-mail; returns test id -> client id."""
    ids: dict[str, int] = {}
    with writing(engine) as session:
        for n, (key, value) in enumerate(strings.items(), start=1):
            email = f"client{n}@example.org"
            client_id = session.execute(
                insert(Client).returning(col(Client.id)),
                {
                    "email": email,
                    "email_key": email,
                    "first_name": value,
                    "last_name": value,
                    "status": "active",
                    "created_at": NOW - timedelta(days=30),
                },
            ).scalar_one()
            program_id = session.execute(
                insert(Program).returning(col(Program.id)), {"name": f"{value} #{n}"}
            ).scalar_one()
            session.execute(
                insert(Enrolment),
                {"client_id": client_id, "program_id": program_id, "enrolled_at": NOW},
            )
            session.execute(
                insert(Appointment),
                {
                    "client_id": client_id,
                    "starts_at": NOW + timedelta(days=2),
                    "telehealth": True,
                    "title": value,
                },
            )
            ids[key] = client_id
        for key, email in HOSTILE_EMAILS.items():
            ids[f"email-{key}"] = session.execute(
                insert(Client).returning(col(Client.id)),
                {
                    "email": email,
                    "email_key": email.casefold(),
                    "first_name": "Mail",
                    "last_name": key,
                    "status": "active",
                    "created_at": NOW - timedelta(days=30),
                },
            ).scalar_one()
    return ids


def for_people(output: str) -> None:
    """Output for a person: no control sequence of ours, no ESC, C1, bidi, NUL, DEL."""
    assert forbidden(SGR.sub("", output)) == [], output[:2000]
    assert "\r" not in output


def for_spreadsheet(output: str) -> list[dict[str, str]]:
    """CSV output: clean bytes, and no cell a spreadsheet would run as a formula."""
    assert forbidden(output) == []
    rows = list(csv.DictReader(io.StringIO(output, newline="")))
    for row in rows:
        for cell in row.values():
            assert not cell.startswith(FORMULA_START), cell
    return rows


def for_scripts(output: str) -> Any:
    """JSON output: clean bytes (JSON escapes), and the exact values once parsed."""
    assert forbidden(output) == []
    return json.loads(output)


Run = Callable[..., Any]


def ok(result: Any, code: int = 0) -> Any:
    assert result.exit_code == code, (result.stdout[-2000:], result.stderr[-2000:])
    for_people(result.stderr)
    return result


# --- the renderer itself -------------------------------------------------------------


@pytest.mark.parametrize("key", list(HOSTILE))
def test_visible_leaves_nothing_a_terminal_acts_on(key: str) -> None:
    shown = visible(HOSTILE[key])
    assert forbidden(shown) == []
    assert "\n" not in shown and "\r" not in shown and "\t" not in shown
    # rich keeps it literal: what is printed is what visible() made, markup included.
    assert literal(HOSTILE[key]).plain == shown


def test_visible_escapes_are_unambiguous() -> None:
    assert visible("a\x1bb") == "a\\x1bb"
    assert visible("a\\x1bb") == "a\\\\x1bb"  # the four characters, not ESC
    assert visible("\u202eevil") == "\\u202eevil"
    assert visible("x\x9b2J") == "x\\x9b2J"
    assert visible("tab\there\nnew") == "tab\\there\\nnew"
    assert visible("\U000e0001tag") == "\\U000e0001tag"
    assert visible("[bold]x[/]") == "[bold]x[/]"
    assert visible(None) == ""
    assert visible(12) == "12"
    # A joiner spells Persian words and emoji; after ASCII it only hides something.
    spelled = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 \U0001f469\u200d\u2695\ufe0f"
    assert visible(spelled) == spelled
    assert visible("a\u200dna") == "a\\u200dna"


def test_message_keeps_repr_quoted_values_readable() -> None:
    # Domain errors quote with repr(), which already escaped the backslash.
    assert message("client " + repr("a\x1b")) == "client 'a\\x1b'"
    assert message("raw\x1b[2J and \u202e") == "raw\\x1b[2J and \\u202e"


@pytest.mark.parametrize(
    "value",
    [*HOSTILE.values(), *HOSTILE_EMAILS.values(), "'", "''", "'a", "'=", "-", "", "plain"],
)
def test_neutralise_round_trips_and_never_leaves_a_formula(value: str) -> None:
    cell = neutralise(value)
    assert not cell.startswith(FORMULA_START)
    assert unneutralise(cell) == value


def test_csv_cells_keep_numbers_and_neutralise_each_program() -> None:
    assert csv_cell(-3) == -3  # a day count, not a formula
    assert csv_cell(None) == ""
    assert csv_cell("-") == "'-"
    assert csv_cell(["Reset", "=cmd|' /C calc'!A0"]) == "Reset;'=cmd|' /C calc'!A0"
    assert csv_cell("\t=1+1") == "\\t=1+1"  # the tab is made visible, so no formula


# --- every command, on both engines -----------------------------------------------


def test_list_in_every_format(cli: Run, engine: Engine, db_target: str) -> None:
    strings = _stored(db_target)
    ids = plant(engine, strings)
    before = snapshot(engine)

    table = ok(cli("list", "--status", "all")).stdout
    for_people(table)
    assert "An[/]a" in table and "[bold red]URGENT[/bold red]" in table
    assert "Zoe\\x1b[2J\\x1b[H" in table and "\\u202eevil.exe\\u202c" in table
    assert "Cy\\x9b2J" in table and "Mallory\\rAlice" in table

    records = for_scripts(ok(cli("list", "--format", "json")).stdout)
    by_id = {r["id"]: r for r in records}
    for key, value in strings.items():
        assert by_id[ids[key]]["first_name"] == value
        assert by_id[ids[key]]["programs"] == [f"{value} #{ids[key]}"]
    for key, email in HOSTILE_EMAILS.items():
        assert by_id[ids[f"email-{key}"]]["email"] == email

    rows = for_spreadsheet(ok(cli("list", "--format", "csv")).stdout)
    by_row = {int(r["id"]): r for r in rows}
    assert by_row[ids["formula-hyperlink"]]["first_name"] == "'" + HOSTILE["formula-hyperlink"]
    assert by_row[ids["formula-plus"]]["last_name"] == "'+1"
    assert by_row[ids["quote-formula"]]["first_name"] == "''=already quoted"
    assert by_row[ids["csi-clear"]]["first_name"] == "Zoe\\x1b[2J\\x1b[H"
    assert by_row[ids["email-formula"]]["email"] == "'=1+1@example.org"
    assert by_row[ids["sql-drop"]]["first_name"] == HOSTILE["sql-drop"]

    ids_out = ok(cli("list", "--format", "ids")).stdout
    assert sorted(int(line) for line in ids_out.split()) == sorted(ids.values())
    assert snapshot(engine) == before


def test_show_in_every_format(cli: Run, engine: Engine, db_target: str) -> None:
    strings = _stored(db_target)
    ids = plant(engine, strings)
    for key, value in strings.items():
        shown = ok(cli("show", str(ids[key]))).stdout
        for_people(shown)
        assert visible(value) in shown.replace("\n", "") or key == "very-long"
        record = for_scripts(ok(cli("show", str(ids[key]), "--format", "json")).stdout)
        assert (record["first_name"], record["last_name"]) == (value, value)
        assert record["appointments"][0]["title"] == value
        rows = for_spreadsheet(ok(cli("show", str(ids[key]), "--format", "csv")).stdout)
        assert len(rows) == 1
    for email in HOSTILE_EMAILS.values():
        shown = ok(cli("show", "--", email)).stdout
        for_people(shown)
        assert f"e-mail: {visible(email)}" in shown


def test_unknown_hostile_references_are_echoed_inert(cli: Run, engine: Engine) -> None:
    plant(engine, {"markup-close": HOSTILE["markup-close"]})
    before = snapshot(engine)
    for key, value in HOSTILE.items():
        if "\x00" in value or key == "very-long":
            continue  # NUL cannot be an argument; very long is tested below
        for command in (["show", "--", value], ["deactivate", "--yes", "--", value]):
            result = cli(*command)
            assert result.exit_code == 3, (command, result.stderr)
            for_people(result.stderr)
            assert result.stdout == ""
    long_result = cli("deactivate", HOSTILE["very-long"], "--yes")
    assert long_result.exit_code == 3
    assert snapshot(engine) == before


def test_changing_commands_report_inertly(cli: Run, engine: Engine, tmp_path: Path) -> None:
    """deactivate/activate/export/delete/undo/restore, chosen by a CSV of our own list,
    with a hostile actor and reason, in table, JSON and CSV."""
    ids = plant(engine, {k: HOSTILE[k] for k in ("markup-close", "csi-clear", "formula-at")})
    emails = {k: HOSTILE_EMAILS[k] for k in ("formula", "markup", "escape", "bidi")}
    exported = write(tmp_path / "all.csv", ok(cli("list", "--format", "csv")).stdout)
    hostile = ["--actor", HOSTILE_ACTOR]
    changed = ok(
        cli(*hostile, "deactivate", "--csv", exported, "--reason", HOSTILE_REASON, "--yes")
    ).stdout
    for_people(changed)
    assert f"Deactivated {len(ids)} clients" in changed

    # References echoed as typed: the hostile e-mails themselves.
    result = ok(cli("activate", "--yes", "--format", "csv", "--", *emails.values()))
    rows = for_spreadsheet(result.stdout)
    assert [r["reference"] for r in rows] == [neutralise(message(e)) for e in emails.values()]
    batch = rows[0]["batch"]
    result = ok(cli("deactivate", "--yes", "--format", "json", "--", *emails.values()))
    assert [r["reference"] for r in for_scripts(result.stdout)] == list(emails.values())
    for_people(ok(cli("undo", batch, "--yes")).stdout)
    for_people(ok(cli("undo", batch, "--dry-run", "--format", "csv")).stdout)

    backups = tmp_path / "backups [/] \x1b[2J"
    for output in ("table", "json", "csv"):
        result = ok(cli("export", str(ids["markup-close"]), "--backup-dir", str(backups),
                        "--format", output))  # fmt: skip
        {"table": for_people, "json": for_scripts, "csv": for_spreadsheet}[output](result.stdout)
    table = ok(cli("export", str(ids["csi-clear"]), "--backup-dir", str(backups))).stdout
    assert "backups [/] \\x1b[2J" in table.replace("\n", "")

    deleted = ok(cli(*hostile, "delete", str(ids["csi-clear"]), "--backup-dir", str(backups),
                     "--reason", HOSTILE_REASON, "--yes"))  # fmt: skip
    for_people(deleted.stdout)
    record = for_scripts(ok(cli("list", "--status", "deleted", "--format", "json")).stdout)[0]
    assert record["first_name"] == HOSTILE["csi-clear"]
    backup = next(p for p in backups.iterdir() if f"{ids['csi-clear']:06d}" in p.name)
    for output in ("table", "json", "csv"):
        result = ok(cli("export", "--verify", str(backup), "--format", output))
        {"table": for_people, "json": for_scripts, "csv": for_spreadsheet}[output](result.stdout)

    audit_batch = next(
        r for r in for_scripts(ok(cli("audit", "--format", "json")).stdout)
        if r["action"] == "delete"
    )["batch"]  # fmt: skip
    for_people(ok(cli("undo", audit_batch, "--yes", "--format", "table")).stdout)
    # Deleted again and restored from the backup: the restore's report is inert too.
    ok(cli("delete", str(ids["csi-clear"]), "--backup-dir", str(tmp_path / "b2"), "--yes"))
    for output in ("table", "json", "csv"):
        result = ok(cli("restore", str(backup), "--dry-run", "--format", output))
        {"table": for_people, "json": for_scripts, "csv": for_spreadsheet}[output](result.stdout)


def test_audit_shows_hostile_actor_and_reason_inertly(cli: Run, engine: Engine) -> None:
    ids = plant(engine, {"formula-at": HOSTILE["formula-at"]})
    ok(cli("--actor", HOSTILE_ACTOR, "deactivate", str(ids["formula-at"]),
           "--reason", HOSTILE_REASON, "--yes"))  # fmt: skip
    table = ok(cli("audit")).stdout
    for_people(table)
    assert "[bold]root[/bold]\\x1b]52;c;ZXZpbA==\\x07" in table.replace("\n", "")
    events = for_scripts(ok(cli("audit", "--format", "json")).stdout)
    assert (events[-1]["actor"], events[-1]["reason"]) == (HOSTILE_ACTOR, HOSTILE_REASON)
    rows = for_spreadsheet(ok(cli("audit", "--format", "csv")).stdout)
    assert rows[-1]["reason"] == "'" + message(HOSTILE_REASON)
    for output in ("table", "json", "csv"):
        for_people(ok(cli("plan", "--format", output)).stdout)


def test_adding_hostile_program_names_reports_inertly(cli: Run, engine: Engine) -> None:
    before = snapshot(engine)
    refused = cli("add", "--email", "ana@example.org", "--first-name", "Ana",
                  "--last-name", "Silva", "--program", "[bold red]P\x1b[2J", "--yes")  # fmt: skip
    assert refused.exit_code == 3
    for_people(refused.stderr)
    assert snapshot(engine) == before
    result = ok(
        cli("add", "--email", "ana@example.org", "--first-name", "An[/]a",
            "--last-name", "[link=http://x]y[/link]", "--program", "[bold red]P[/]", "--yes")
    )  # fmt: skip
    for_people(result.stdout)
    assert "Created the program '[bold red]P[/]'." in result.stdout
    assert "An[/]a [link=http://x]y[/link]" in ok(cli("list")).stdout


def test_a_terminal_gets_colour_but_no_data_sequence(cli: Run, engine: Engine) -> None:
    """rich on a terminal (FORCE_COLOR): its own SGR styles, nothing from the data."""
    ids = plant(engine, {k: HOSTILE[k] for k in ("csi-clear", "osc8-link", "bidi-override")})
    ok(cli("--actor", HOSTILE_ACTOR, "deactivate", str(ids["csi-clear"]), "--yes",
           "--reason", HOSTILE_REASON))  # fmt: skip
    for args in (["list"], ["show", str(ids["osc8-link"])], ["audit"]):
        result = ok(cli(*args, env={"FORCE_COLOR": "1", "TERM": "xterm-256color"}))
        assert SGR.search(result.stdout)  # it did render for a terminal
        for_people(result.stdout)


# --- CSV round trip: the tool reads its own output back --------------------------------

FORMULA_NAMES = [
    HOSTILE["formula-hyperlink"],
    "+1",
    "-2+3",
    "@SUM(1)",
    HOSTILE["formula-dde"],
    "'=already quoted",
    "''twice",
    "'plain quote",
    "back\\slash",
    "O'Brien",
]


def test_own_csv_selects_the_same_clients(cli: Run, engine: Engine, tmp_path: Path) -> None:
    strings = {f"f{n}": name for n, name in enumerate(FORMULA_NAMES)}
    ids = plant(engine, strings)
    emails = {f"email-{k}": HOSTILE_EMAILS[k] for k in ("formula", "plus-tag", "minus", "idn")}
    chosen = sorted(ids[k] for k in (*list(strings)[:5], *emails))
    listed = ok(cli("list", "--format", "csv")).stdout
    rows = [r for r in for_spreadsheet(listed) if int(r["id"]) in chosen]
    # The exported file, cut down to the chosen rows, cells untouched.
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    by_id = write(tmp_path / "by-id.csv", out.getvalue())
    result = ok(cli("deactivate", "--csv", by_id, "--format", "json", "--yes"))
    assert sorted(r["id"] for r in for_scripts(result.stdout)) == chosen

    # By e-mail: the neutralised e-mail cells must resolve to the same clients.
    out = io.StringIO()
    email_writer = csv.writer(out, lineterminator="\n")
    email_writer.writerow(["email"])
    email_writer.writerows([[r["email"]] for r in rows])
    by_email = write(tmp_path / "by-email.csv", out.getvalue())
    result = ok(cli("activate", "--csv", by_email, "--format", "json", "--yes"))
    assert sorted(r["id"] for r in for_scripts(result.stdout)) == chosen


def test_own_csv_imports_to_the_same_values(tmp_path: Path, db_target: str, engine: Engine,
                                            cli: Run) -> None:  # fmt: skip
    """Names exported by `list --format csv` and imported into a new practice are equal."""
    from typer.testing import CliRunner

    from pbclients.cli.app import app

    people = [
        (f"p{n}@example.org" if n % 2 else f"+p{n}@example.org", name, name[::-1] or "x")
        for n, name in enumerate(FORMULA_NAMES)
    ]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["email", "first_name", "last_name"])
    # Written the way the tool writes CSV (a cell like ''twice is read as 'twice).
    writer.writerows([[neutralise(cell) for cell in person] for person in people])
    ok(cli("import", write(tmp_path / "first.csv", out.getvalue()), "--yes"))
    exported = ok(cli("list", "--format", "csv")).stdout
    for_spreadsheet(exported)

    second = tmp_path / "second.db"
    runner = CliRunner()
    assert runner.invoke(app, ["--db", str(second), "init"]).exit_code == 0
    result = runner.invoke(
        app, ["--db", str(second), "import", write(tmp_path / "again.csv", exported), "--yes"]
    )
    assert result.exit_code == 0, result.stderr
    again = json.loads(runner.invoke(app, ["--db", str(second), "list", "--format", "json"]).stdout)
    first = for_scripts(ok(cli("list", "--format", "json")).stdout)
    fields = ("email", "first_name", "last_name")
    assert [tuple(r[f] for f in fields) for r in again] == [
        tuple(r[f] for f in fields) for r in first
    ]
    assert sorted(tuple(r[f] for f in fields) for r in first) == sorted(people)


def test_nothing_is_changed_by_looking(cli: Run, engine: Engine) -> None:
    """The output commands only read, whatever the data."""
    plant(engine, {k: HOSTILE[k] for k in ("sql-drop", "sql-like", "markup-close")})
    before = snapshot(engine)
    for args in (["list", "--search", "%"], ["list", "--search", "'; DROP TABLE client;--"],
                 ["list", "--search", "[/]"], ["audit"], ["plan"]):  # fmt: skip
        for_people(ok(cli(*args)).stdout)
    assert snapshot(engine) == before
    with writing(engine) as session:
        clients = session.execute(text("SELECT count(*) FROM client")).scalar_one()
    assert clients == 3 + len(HOSTILE_EMAILS)


def test_a_prompt_on_a_real_terminal_shows_data_inertly(
    cli: Run, engine: Engine, db_target: str, tmp_path: Path
) -> None:
    """The confirmation question (click, not rich) names a folder typed with escapes."""
    ids = plant(engine, {"csi-clear": HOSTILE["csi-clear"]})
    before = snapshot(engine)
    folder = tmp_path / "b\x1b[2J\u202e"
    code, question, _rest = run_in_pty(
        ["--db", db_target, "delete", str(ids["csi-clear"]), "--backup-dir", str(folder)],
        "n",
        env=subprocess_env(),
    )
    assert code == 1
    # run_in_pty strips CSI sequences: had ESC reached the terminal, this text would not.
    assert f"written to {tmp_path}/b\\x1b[2J\\u202e first." in question
    assert forbidden(question) == []
    assert snapshot(engine) == before


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_result_encodes_as_json_exactly_as_its_record(name: str) -> None:
    """`ChangeResult.as_json`, the fast path of bulk `--format json`, is byte for byte what
    the JSON encoder makes of `as_record`, for every hostile string in every text field."""
    from pbclients.results import ChangeResult, Outcome

    value = HOSTILE[name]
    encode = json.JSONEncoder(ensure_ascii=False).encode
    for result in (
        ChangeResult(value, 7, value, value, value, Outcome.CHANGED, value, value, value),
        ChangeResult(value, None, None, None, None, Outcome.SKIPPED, note=value),
    ):
        for batch in (value, None):
            assert result.as_json(batch) == encode(result.as_record(batch))
            assert json.loads(result.as_json(batch))["reference"] == value
