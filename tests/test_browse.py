"""`pbclients browse`: Textual's Pilot presses real keys against a real practice database.

Each test builds the app as the command does (AppState -> engine -> BrowseApp) on the
`practice` fixture (SQLite, and PostgreSQL when a server is given), waits until the
table's count and visible rows are in, and reads the screen back: the table's lines, the
status line, the screen on top. Actions are checked against the database itself.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pbclients.cli.browse.actions import ACTIONS, Picked
from pbclients.policy import Status
from pbclients.roster_view import ClientFilter
from tests.helpers import (
    NOW_TEXT,
    records,
    run_in_pty,
    snapshot,
    sql,
    statuses,
    subprocess_env,
)

SIZE = (120, 30)

DEACTIVATE_QUESTION = (
    "Deactivate 3 clients?\n"
    "  They lose portal login, content, journal and messages at once.\n"
    "  3 program enrolments pause (progress is kept).\n"
    "  1 payment plan will still charge; stop them in billing if that is not intended.\n"
    "  They still hold plan seats; forms sent by e-mail link still work.\n"
    "  Clients are not notified of this change."
)


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)


def make_app(db_target: str):
    from pbclients.cli.browse.app import BrowseApp
    from pbclients.cli.common import AppState
    from pbclients.roster_view import program_names

    state = AppState(db_target, None, False)
    database = state.database()
    return BrowseApp(state, database, program_names(database))


async def settle(pilot) -> None:
    """Until no read is running and the rows on screen are in."""
    app = pilot.app
    for _ in range(200):
        await app.workers.wait_for_complete()
        await pilot.pause()
        if not app.workers and app.table.loaded:
            return
    raise AssertionError("browse did not settle")


def drive(db_target: str, steps: Callable[[Any, Any], Awaitable[None]]) -> None:
    """Run the app headless at a fixed size and play `steps(app, pilot)`."""
    app = make_app(db_target)

    async def run() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await steps(app, pilot)

    try:
        asyncio.run(run())
    finally:
        while app.state.opened:
            app.state.opened.pop().dispose()


async def search(pilot, text: str) -> None:
    # "/" focuses the box with its text selected: typing replaces the last search.
    await pilot.press("slash", *text, "enter")
    await settle(pilot)


def table_lines(app) -> list[str]:
    table = app.table
    return [table.render_line(y).text.rstrip() for y in range(table.size.height)]


def status_line(app) -> str:
    return str(app.query_one("#status").render())


def same_database(engine_a, engine_b) -> tuple[dict, dict]:
    """Both databases' rows, with what is random per run (batch ids, hash chain) masked."""

    def masked(engine):
        rows = snapshot(engine)
        from pbclients.models import AuditEvent

        columns = [c.name for c in AuditEvent.__table__.columns]  # type: ignore[attr-defined]
        random = {columns.index(name) for name in ("batch_id", "prev_hash", "hash")}
        rows["audit_event"] = [
            tuple("*" if i in random else v for i, v in enumerate(row))
            for row in rows["audit_event"]
        ]
        # The chain's head is "events:hash"; the hash differs as the batch ids do.
        rows["setting"] = [
            (key, value.split(":")[0] if key == "audit_head" else value)
            for key, value in rows["setting"]
        ]
        return rows

    return masked(engine_a), masked(engine_b)


@pytest.fixture
def twin(db_target: str, practice, engine, tmp_path: Path):
    """A second database holding the same practice, for the command to act on."""
    from pbclients.db import make_engine

    if "://" not in db_target:
        copy = tmp_path / "copy.db"
        engine.dispose()
        shutil.copyfile(db_target, copy)
        yield str(copy)
        return
    from tests.conftest import create_postgres_database, drop_postgres_database, postgres_admin_url

    engine.dispose()
    admin = postgres_admin_url()
    url = create_postgres_database(admin, template=db_target.rpartition("/")[2])
    try:
        yield url
    finally:
        make_engine(url).dispose()
        drop_postgres_database(admin, url)


# --- the main flow ----------------------------------------------------------------------------


def test_filter_search_select_three_and_deactivate_as_the_command_does(
    db_target, practice, engine, twin, cli
):
    seen: dict[str, Any] = {}

    async def steps(app, pilot):
        await pilot.press("left")  # Active -> All (the tabs wrap)
        await settle(pilot)
        seen["all"] = status_line(app)
        for name in ("ben", "chloe", "elif"):
            await search(pilot, name)
            await pilot.press("space")
        seen["picked"] = status_line(app)
        await pilot.press("d")
        await app.workers.wait_for_complete()
        await pilot.pause()
        seen["question"] = app.screen.question
        await pilot.press("y")
        await app.workers.wait_for_complete()
        await settle(pilot)
        seen["result"] = str(app.screen.query_one("#body").render())
        seen["after"] = status_line(app)

    drive(db_target, steps)
    assert seen["all"] == "All: 5 matches  |  0 selected"
    assert seen["picked"] == "All: 1 match for 'elif'  |  3 selected"
    assert seen["question"] == DEACTIVATE_QUESTION
    assert seen["result"].startswith("Deactivated 3 clients. Batch ")
    batch = seen["result"].split("Batch ", 1)[1].split(";", 1)[0]
    assert seen["result"] == (
        f"Deactivated 3 clients. Batch {batch}; revert it with `pbclients undo {batch}`. "
        "Clients were not notified."
    )
    assert seen["after"] == "All: 1 match for 'elif'  |  0 selected"  # selection cleared

    from typer.testing import CliRunner

    from pbclients.cli.app import app as cli_app
    from pbclients.db import make_engine

    run = CliRunner().invoke(cli_app, ["--db", twin, "deactivate", "2", "3", "5", "--yes"])
    assert run.exit_code == 0, run.output
    browsed, commanded = make_engine(db_target), make_engine(twin)
    try:
        assert statuses(browsed) == {1: "active", 2: "deactivated", 3: "deactivated",
                                     4: "active", 5: "deactivated"}  # fmt: skip
        mine, theirs = same_database(browsed, commanded)
        assert mine == theirs
    finally:
        browsed.dispose()
        commanded.dispose()
    verify = cli("audit", "verify")
    assert verify.exit_code == 0, verify.output


def test_cancel_changes_nothing(db_target, practice, engine):
    before = snapshot(engine)
    seen: list[str] = []

    async def steps(app, pilot):
        await pilot.press("space", "space")
        for cancel in ("n", "escape"):
            await pilot.press("d")
            await app.workers.wait_for_complete()
            await pilot.pause()
            seen.append(type(app.screen).__name__)
            await pilot.press(cancel)
            await pilot.pause()
            seen.append(type(app.screen).__name__)
        seen.append(status_line(app))

    drive(db_target, steps)
    assert seen == ["ConfirmScreen", "Screen", "ConfirmScreen", "Screen",
                    "Active: 5 matches  |  2 selected"]  # fmt: skip
    assert snapshot(engine) == before


def test_select_every_match_and_delete_asks_for_the_typed_count(db_target, practice, engine):
    before = snapshot(engine)
    seen: list[Any] = []

    async def steps(app, pilot):
        await pilot.press("right")  # Deactivated: nobody
        await settle(pilot)
        await pilot.press("left")  # back to Active
        await settle(pilot)
        await pilot.press("a")
        seen.append(status_line(app))
        await pilot.press("space")  # unticks client 1 only
        seen.append(status_line(app))
        await pilot.press("x")
        await app.workers.wait_for_complete()
        await pilot.pause()
        seen.append((app.screen.typed, app.screen.question.splitlines()[0]))
        await pilot.press("y", "3", "enter")  # y is a letter in the box, 3 is not 4
        await pilot.pause()
        seen.append(type(app.screen).__name__)
        await pilot.press("escape")
        seen.append(status_line(app))

    drive(db_target, steps)
    assert seen == [
        "Active: 5 matches  |  5 selected (every match)",
        "Active: 5 matches  |  4 selected (every match)",
        (4, "Delete 4 clients?"),
        "Screen",
        "Active: 5 matches  |  0 selected",
    ]
    assert snapshot(engine) == before


def test_deleted_rows_show_days_until_purge(db_target, practice, engine, cli, tmp_path):
    run = cli("delete", "4", "--yes", "--backup-dir", str(tmp_path / "b"))
    assert run.exit_code == 0, run.output
    seen: list[str] = []

    async def steps(app, pilot):
        await pilot.press("right", "right")  # Deleted
        await settle(pilot)
        seen.extend(table_lines(app)[:3])

    drive(db_target, steps)
    assert seen[0].split() == ["id", "name", "e-mail", "status", "programs", "last",
                               "activity", "purge", "in"]  # fmt: skip
    assert seen[1].split() == ["[", "]", "4", "Dev", "Schmidt", "dev@example.org", "deleted",
                               "2026-08-28", "30", "d"]  # fmt: skip
    assert seen[2] == ""


def test_hostile_strings_are_shown_literally(db_target, practice, engine):
    sql(
        engine,
        "UPDATE client SET first_name = :first, last_name = :last WHERE id = 1",
        first="[bold red]Ana\x1b[2J",
        last="[/]\u202eSilva",
    )
    seen: dict[str, Any] = {}

    async def steps(app, pilot):
        seen["row"] = app.table.render_line(1)
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        seen["file"] = app.screen.query_one("#show")
        seen["svg"] = app.export_screenshot()

    drive(db_target, steps)
    row = seen["row"]
    # The name is cut to its column (with an ellipsis); the client's file shows it whole.
    assert "[bold red]Ana\\x1b[2…" in row.text
    # Literal text: no segment is coloured red by the name, none carries a control character.
    assert not any(s.style and s.style.color and s.style.color.name == "red" for s in row)
    assert not any("\x1b" in s.text or "\u202e" in s.text for s in row)
    assert "\x1b" not in seen["svg"] and "\u202e" not in seen["svg"]
    assert "[bold red]Ana\\x1b[2J [/]\\u202eSilva" in seen["svg"].replace("&#160;", " ")


def test_enter_shows_the_file_and_e_edits_it_as_edit_does(db_target, practice, engine):
    seen: dict[str, Any] = {}

    async def steps(app, pilot):
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        seen["screen"] = type(app.screen).__name__
        seen["svg"] = app.export_screenshot()
        await pilot.press("e")
        await app.workers.wait_for_complete()
        await pilot.pause()
        box = app.screen.query_one("#last_name")
        box.value = "Silva Costa"
        await pilot.press("ctrl+s")
        await app.workers.wait_for_complete()
        await pilot.pause()
        seen["question"] = app.screen.question
        await pilot.press("y")
        await app.workers.wait_for_complete()
        await pilot.pause()
        seen["result"] = str(app.screen.query_one("#body").render())

    drive(db_target, steps)
    assert seen["screen"] == "ClientScreen"
    svg = seen["svg"].replace("&#160;", " ")
    for text in ("Ana Silva", "What this client can do now", "log in to the client portal",
                 "Upcoming appointments", "Follow-up"):  # fmt: skip
        assert text in svg, text
    assert seen["question"] == (
        "Edit 1 client?\n  Client 1:\n    last name: 'Silva' -> 'Silva Costa'\n"
        "  The client is not notified; a new e-mail is their new portal login."
    )
    assert seen["result"].startswith("Edited 1 client. Batch ")
    from tests.helpers import count

    assert count(engine, "client", "WHERE last_name = 'Silva Costa' AND id = 1") == 1


def test_an_action_that_is_refused_says_why_and_changes_nothing(db_target, practice, engine):
    before = snapshot(engine)
    seen: list[str] = []

    async def steps(app, pilot):
        await pilot.press("space", "r")  # Ana is active already
        await app.workers.wait_for_complete()
        await pilot.pause()
        seen.append(str(app.screen.query_one("#body").render()))

    drive(db_target, steps)
    assert seen == ["Nothing to activate (1 already activated)."]
    assert snapshot(engine) == before


def test_hold_asks_for_a_reason_and_runs_the_hold_command(db_target, practice, engine, cli):
    seen: dict[str, Any] = {}

    async def steps(app, pilot):
        await pilot.press("space", "h")  # Ana, the first row
        await pilot.pause()
        await pilot.press("escape")  # no reason: nothing happens
        await pilot.pause()
        seen["cancelled"] = cli("list", "--held", "--format", "ids").stdout
        await pilot.press("h")
        await pilot.pause()
        await pilot.press(*"case 7", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        seen["question"] = app.screen.question
        await pilot.press("y")
        await app.workers.wait_for_complete()
        await settle(pilot)

    drive(db_target, steps)
    assert seen["cancelled"] == ""
    assert seen["question"].startswith("Place 1 client under legal hold?")
    assert seen["question"].endswith("Reason: case 7")
    assert cli("list", "--held", "--format", "ids").stdout == "1\n"
    [event] = records(cli("audit", "--action", "hold", "--format", "json").stdout)
    assert (event["client_id"], event["reason"]) == (1, "case 7")


def test_keys_and_quit(db_target, practice, engine):
    seen: list[Any] = []

    async def steps(app, pilot):
        await pilot.press("question_mark")
        await pilot.pause()
        seen.append(type(app.screen).__name__)
        await pilot.press("escape", "q")
        await pilot.pause()
        seen.append(app.is_running)

    drive(db_target, steps)
    assert seen == ["HelpScreen", False]


# --- the command in a real terminal -------------------------------------------------------------


@pytest.mark.parametrize("keys", ["q", "/an\x11"])  # q from the table; Ctrl+Q from the search
def test_the_command_runs_in_a_terminal_and_quits_with_0(sqlite_practice, keys):
    # One engine is enough here: the Pilot tests above run on both.
    code, _, _ = run_in_pty(
        ["--db", sqlite_practice, "browse"], keys, env=subprocess_env(),
        marker=b"ana@example.org",
    )  # fmt: skip
    assert code == 0


def test_without_a_terminal_it_refuses_with_exit_2(cli):
    run = cli("browse")
    assert run.exit_code == 2
    assert run.stderr == (
        "Error: browse needs a terminal; in a script use `pbclients list` and the commands.\n"
    )


# --- the selection, as plain code ---------------------------------------------------------------


def test_picked_counts_every_match_without_holding_their_ids():
    picked = Picked()
    picked.toggle(3)
    picked.toggle(5)
    picked.toggle(3)
    assert (picked.count(), picked.has(5), picked.has(3)) == (1, True, False)
    picked.select_all(ClientFilter((Status.ACTIVE,)), 1_000_000)
    picked.toggle(7)
    assert (picked.count(), picked.has(7), picked.has(8), picked.ids) == (999_999, False, True, {7})
    picked.clear()
    assert picked.count() == 0


def test_the_actions_are_the_commands():
    assert [(a.key, a.command) for a in ACTIONS] == [
        ("d", "deactivate"), ("r", "activate"), ("x", "delete"), ("b", "export"),
        ("h", "hold"), ("u", "hold --release"),
    ]  # fmt: skip


# --- screenshots ------------------------------------------------------------------------------


@pytest.fixture
def sqlite_practice(tmp_path: Path, sqlite_template: Path) -> str:
    from pbclients.db import make_engine
    from tests.factory import build_small_practice

    path = tmp_path / "practice.db"
    shutil.copyfile(sqlite_template, path)
    engine = make_engine(str(path))
    build_small_practice(engine)
    engine.dispose()
    return str(path)


def _settled(pilot) -> Awaitable[None]:
    return settle(pilot)


def test_snapshot_main_screen(sqlite_practice, snap_compare):
    app = make_app(sqlite_practice)
    assert snap_compare(app, press=["down", "space", "down", "space"], terminal_size=SIZE,
                        run_before=_settled)  # fmt: skip


def test_snapshot_confirmation_screen(sqlite_practice, snap_compare):
    app = make_app(sqlite_practice)

    async def before(pilot) -> None:
        await settle(pilot)
        await pilot.press("space", "space", "d")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=before)
