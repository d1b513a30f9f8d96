"""Numbers, dates, sizes and encodings at the edges, and selections that come out empty.

Every case drives the real CLI on both engines and asserts the documented exit code, the
one-sentence message and that nothing changed where nothing should: a reference too big
for an id column, an age of 99999999999 days, a clock in year 9999, a retention that
would push purge dates off the calendar, a CSV field of 200,000 characters, a UTF-16
file, a NUL in a name, an empty pipeline. None of them may end in "Unexpected error"
(exit 1), on the command itself or on a later, unrelated one.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.helpers import NOW_TEXT, snapshot, sql, statuses, write
from tests.hostile.strings import HOSTILE, HOSTILE_EMAILS

Run = Callable[..., Any]

HUGE = "9" * 5_000


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)


def clean(run: Any, code: int) -> Any:
    """The exit code, and no crash: never exit 1, never a traceback, stderr one line."""
    assert run.exit_code == code, (run.stdout[-1500:], run.stderr[-1500:])
    assert "Unexpected error" not in run.stderr
    assert "Traceback" not in run.stderr
    if code in (2, 3) and run.stderr.startswith("Error: "):
        assert run.stderr.count("\n") == 1, run.stderr
    return run


# --- references that no id column can hold --------------------------------------------------

# Each is an unknown reference (exit 3) wherever a client is named. Python's int() reads
# several of them (Arabic-Indic digits, `1_0`), SQLite overflows on 2**63 and PostgreSQL
# on 2**31 (its integer ids), and int() refuses the 5,000-digit one with a ValueError.
NOT_A_CLIENT = {
    "20-digits": "99999999999999999999",
    "5000-digits": HUGE,
    "past-int32": "2147483648",
    "past-int64": "9223372036854775808",
    "zero": "0",
    "plus-sign": "+5",
    "arabic-digits": "١٢٣",
    "devanagari-digit": "३",
    "underscore": "1_0",
    "exponent": "1e3",
    "hex": "0x1",
    "nul-email": "ana\x00@example.org",
    "escape-email": "ana\x1b[2J@example.org",
}


@pytest.mark.parametrize("ref", list(NOT_A_CLIENT.values()), ids=list(NOT_A_CLIENT))
def test_a_reference_no_client_can_have_is_unknown_in_every_command(
    cli: Run, practice: Any, engine: Engine, ref: str
) -> None:
    before = snapshot(engine)
    for args in (
        ["show", ref],
        ["show", ref, "--format", "json"],
        ["deactivate", ref, "--yes"],
        ["activate", ref, "--dry-run"],
        ["delete", ref, "--yes"],
        ["export", ref],
    ):
        run = clean(cli(*args), 3)
        assert run.stderr.startswith(("Error: There is no client '", "Error: Unknown client '"))
        assert run.stdout == ""
        # A 5,000-digit reference is named, not pasted whole into the sentence.
        assert len(run.stderr) < 400
    if ref != "0":  # 0 is an id: a purged client's events stay in the trail, so exit 0
        clean(cli("audit", "--client", ref), 3)
    assert snapshot(engine) == before


def test_a_long_reference_is_shortened_in_the_message(cli: Run, practice: Any) -> None:
    run = clean(cli("deactivate", HUGE, "--yes"), 3)
    assert run.stderr == (
        f"Error: Unknown client '{'9' * 60}... (5,000 characters)'; nothing was changed. "
        "Check the references, or use --skip-unknown to change the others.\n"
    )


def test_edge_references_from_files_name_their_line_and_can_be_skipped(
    cli: Run, practice: Any, engine: Engine, tmp_path: Path
) -> None:
    refs = [ref for ref in NOT_A_CLIENT.values() if "\x00" not in ref]
    ids_file = write(tmp_path / "ids.txt", "1\n" + "\n".join(refs) + "\n")
    before = snapshot(engine)
    run = clean(cli("deactivate", "--ids-from", ids_file, "--yes"), 3)
    assert f"(line 2 of {ids_file})" in run.stderr
    assert snapshot(engine) == before

    out = io.StringIO()
    out.write("id\n1\n" + "".join(f"{ref}\n" for ref in refs))
    csv_file = write(tmp_path / "ids.csv", out.getvalue())
    clean(cli("deactivate", "--csv", csv_file, "--yes"), 3)
    assert snapshot(engine) == before

    run = clean(cli("deactivate", "--csv", csv_file, "--skip-unknown", "--yes", "-f", "json"), 0)
    results = json.loads(run.stdout)
    assert [(r["reference"], r["outcome"]) for r in results] == [("1", "changed")] + [
        (ref, "skipped") for ref in refs
    ]
    assert statuses(engine)[1] == "deactivated"


def test_ids_with_leading_zeros_or_spaces_are_still_ids(cli: Run, practice: Any) -> None:
    run = clean(cli("show", "0" * 30 + "2", "--format", "json"), 0)
    assert json.loads(run.stdout)["id"] == 2
    run = clean(cli("deactivate", " 3 ", "0" * 5_000 + "4", "--dry-run", "-f", "json"), 0)
    assert [r["id"] for r in json.loads(run.stdout)] == [3, 4]


def test_a_nul_in_a_lookup_finds_nothing_on_every_engine(cli: Run, practice: Any) -> None:
    # PostgreSQL refuses to bind NUL (a DataError); no writer of ours stores one.
    run = clean(cli("list", "--search", "an\x00a"), 0)
    assert run.stdout == "No clients match.\n"
    run = clean(cli("deactivate", "--program", "Spring\x00Reset", "--yes"), 3)
    assert run.stderr.startswith("Error: There is no program named 'Spring\\x00Reset'")
    clean(cli("list", "--program", "Spring\x00Reset"), 3)


# --- numeric options and settings -----------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["0", "1000000001", "99999999999999999999", HUGE, "١٢٣", "1_0", "1e3", "", "x"]
)
@pytest.mark.parametrize("command", [["list"], ["list", "-f", "json"], ["audit"]])
def test_limit_takes_digits_within_a_range(cli: Run, practice: Any, command: list[str],
                                           value: str) -> None:  # fmt: skip
    run = clean(cli(*command, "--limit", value), 2)
    assert "Invalid value for '--limit'" in run.stderr
    assert "is not a whole number from 1 to 1,000,000,000 (digits 0-9)." in " ".join(
        line.strip("│ ") for line in run.stderr.splitlines()
    )
    assert run.stdout == ""


def test_the_largest_limit_is_accepted(cli: Run, practice: Any) -> None:
    run = clean(cli("list", "--format", "ids", "--limit", "1000000000"), 0)
    assert run.stdout.split() == ["1", "2", "3", "4", "5"]
    clean(cli("audit", "--limit", "1000000000", "--format", "json"), 0)


@pytest.mark.parametrize("value", ["0", "36501", "99999999999", HUGE, "١٢", "1_0", "-1"])
def test_retention_is_refused_outside_1_to_36500_days(cli: Run, practice: Any, engine: Engine,
                                                      value: str) -> None:  # fmt: skip
    before = snapshot(engine)
    run = clean(cli("plan", "--set-retention", value, "--yes"), 2)
    assert "Invalid value for '--set-retention'" in run.stderr
    assert snapshot(engine) == before


def test_a_century_of_retention_keeps_every_later_command_working(cli: Run, practice: Any) -> None:
    clean(cli("plan", "--set-retention", "36500", "--yes"), 0)
    clean(cli("delete", "1", "--yes"), 0)
    listed = json.loads(clean(cli("list", "--status", "deleted", "-f", "json"), 0).stdout)
    assert [(c["purge_after"], c["days_until_purge"]) for c in listed] == [
        ("2126-11-02T09:00:00Z", 36500)
    ]
    clean(cli("list", "--status", "deleted"), 0)
    clean(cli("show", "1"), 0)
    clean(cli("purge", "--yes"), 0)
    assert "1" in clean(cli("list", "--status", "deleted", "-f", "ids"), 0).stdout.split()


@pytest.mark.parametrize("value", ["1000000001", "99999999999999999999", HUGE])
def test_a_plan_limit_past_a_billion_is_refused(cli: Run, practice: Any, engine: Engine,
                                                value: str) -> None:  # fmt: skip
    before = snapshot(engine)
    run = clean(cli("plan", "--set-limit", value, "--yes"), 2)
    assert run.stderr.endswith(
        "is more than the largest plan limit, 1,000,000,000; give a smaller number, or none "
        "for unlimited.\n"
    )
    assert snapshot(engine) == before


@pytest.mark.parametrize("value", ["١٢٣", "1_0", "+5", "1e3"])
def test_a_plan_limit_in_other_digits_is_not_a_number(cli: Run, practice: Any,
                                                      value: str) -> None:  # fmt: skip
    run = clean(cli("plan", "--set-limit", value, "--yes"), 2)
    assert run.stderr == (
        f"Error: --set-limit {value!r} is not a number; give a whole number or none.\n"
    )


def test_the_largest_plan_limit_is_accepted(cli: Run, practice: Any) -> None:
    clean(cli("plan", "--set-limit", "1000000000", "--yes"), 0)
    plan = json.loads(clean(cli("plan", "-f", "json"), 0).stdout)
    assert (plan["limit"], plan["available"]) == (1_000_000_000, 1_000_000_000 - 5)


def store_setting(engine: Engine, key: str, value: str) -> None:
    """As an older version, another writer or a copied database may have left it."""
    sql(engine, "DELETE FROM setting WHERE key = :key", key=key)
    sql(engine, "INSERT INTO setting (key, value) VALUES (:key, :value)", key=key, value=value)


def test_a_stored_retention_past_the_calendar_is_read_as_a_century(
    cli: Run, practice: Any, engine: Engine
) -> None:
    store_setting(engine, "retention_days", "99999999999")
    assert "retention before purge: 36500 days" in clean(cli("plan"), 0).stdout
    clean(cli("delete", "1", "--yes"), 0)
    listed = json.loads(clean(cli("list", "--status", "all", "-f", "json"), 0).stdout)
    assert listed[0]["purge_after"] == "2126-11-02T09:00:00Z"


def test_a_stored_setting_that_is_no_number_says_how_to_fix_it(
    cli: Run, practice: Any, engine: Engine
) -> None:
    store_setting(engine, "retention_days", "thirty\x1b[2J")
    before = snapshot(engine)
    run = clean(cli("delete", "1", "--yes"), 2)
    assert run.stderr == (
        "Error: The practice's retention days setting holds 'thirty\\x1b[2J', which is not a "
        "whole number; set it again with `pbclients plan --set-retention DAYS`.\n"
    )
    assert snapshot(engine) == before
    clean(cli("list"), 0)  # commands that do not need it are unaffected
    clean(cli("plan", "--set-retention", "30", "--yes"), 0)
    events = json.loads(
        clean(cli("audit", "--action", "plan.set_retention", "-f", "json"), 0).stdout
    )
    # The trail keeps no text another writer left: the old value is recorded as "invalid".
    assert [(e["before"], e["after"]) for e in events] == [("invalid", "30")]
    clean(cli("delete", "1", "--yes"), 0)

    store_setting(engine, "plan_limit", "lots")
    run = clean(cli("add", "--email", "new@example.org", "--first-name", "N", "--last-name",
                    "W", "--yes"), 2)  # fmt: skip
    assert run.stderr == (
        "Error: The practice's plan limit setting holds 'lots', which is not a whole number; "
        "set it again with `pbclients plan --set-limit N`.\n"
    )
    store_setting(engine, "plan_limit", HUGE)
    clean(cli("add", "--email", "new@example.org", "--first-name", "N", "--last-name", "W",
              "--yes"), 0)  # fmt: skip


# --- ages and dates ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("99999999999d", "is too long ago; give at most 36,500d (100 years) or a date."),
        (HUGE + "d", "is too long ago; give at most 36,500d (100 years) or a date."),
        ("36501d", "is too long ago; give at most 36,500d (100 years) or a date."),
        ("\u0661\u0662d", "is not a date; use e.g. 2026-01-31, 2026-01-31T09:00Z or 30d."),
        ("1_0d", "is not a date; use e.g. 2026-01-31, 2026-01-31T09:00Z or 30d."),
        ("-5d", "is not a date; use e.g. 2026-01-31, 2026-01-31T09:00Z or 30d."),
        (
            "9999-12-31T23:59:59-01:00",
            "falls outside the calendar once converted to UTC; give a date between "
            "0001-01-02 and 9999-12-30.",
        ),
        (
            "0001-01-01T00:00:00+01:00",
            "falls outside the calendar once converted to UTC; give a date between "
            "0001-01-02 and 9999-12-30.",
        ),
    ],
)
def test_ages_and_dates_at_the_calendar_ends_are_usage_errors(
    cli: Run, practice: Any, engine: Engine, value: str, problem: str
) -> None:
    before = snapshot(engine)
    shown = repr(value) if len(value) < 100 else None
    for args in (["audit", "--since", value], ["delete", "--deactivated-before", value, "--yes"]):
        option = args[1]
        run = clean(cli(*args), 2)
        assert run.stderr.endswith(f"{problem}\n")
        if shown:
            assert run.stderr.startswith(f"Error: {option} {shown} ")
    assert snapshot(engine) == before


def test_a_century_ago_and_the_calendar_ends_are_accepted(cli: Run, practice: Any) -> None:
    clean(cli("audit", "--since", "36500d"), 0)
    clean(cli("audit", "--since", "0001-01-01"), 0)
    clean(cli("audit", "--since", "9999-12-31"), 0)
    clean(cli("delete", "--deactivated-before", "36500d", "--dry-run"), 0)


# --- the clock ----------------------------------------------------------------------------

OUT_OF_RANGE = [
    "1979-12-31T23:59:59Z",  # ZIP cannot store it: export/delete would crash mid-way
    "1970-01-01",
    "2108-01-01T00:00:00Z",  # past ZIP's 16-bit date field
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-01:00",  # past the calendar once in UTC
    "0001-01-01T00:00:00+01:00",
]
EVERY_COMMAND = [
    ["list"],
    ["list", "--format", "json"],
    ["show", "1"],
    ["plan"],
    ["audit"],
    ["audit", "verify"],
    ["paths"],
    ["db", "status"],
    ["add", "--email", "new@example.org", "--first-name", "N", "--last-name", "W", "--yes"],
    ["deactivate", "1", "--yes"],
    ["activate", "1", "--dry-run"],
    ["delete", "1", "--yes"],
    ["export", "1"],
    ["restore", "nothing.zip", "--yes"],
    ["undo", "0123456789ab", "--yes"],
    ["purge", "--yes"],
    ["plan", "--set-limit", "9", "--yes"],
]


@pytest.mark.parametrize("moment", OUT_OF_RANGE)
def test_a_clock_outside_1980_to_2107_is_refused_by_every_command(
    cli: Run, practice: Any, engine: Engine, moment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", moment)
    before = snapshot(engine)
    for command in EVERY_COMMAND:
        run = clean(cli(*command), 2)
        assert run.stderr == (
            f"Error: PBCLIENTS_NOW={moment!r} is outside the range pbclients supports "
            "(1980-01-01 to 2107-12-31 UTC, the dates a ZIP backup can hold); use e.g. "
            "2026-11-26T09:00:00Z or unset it.\n"
        ), command
        assert run.stdout == ""
    assert snapshot(engine) == before


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "86401", "1e400", "ten"])
def test_a_lock_timeout_that_is_no_wait_is_a_usage_error(
    cli: Run, practice: Any, engine: Engine, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PBCLIENTS_LOCK_TIMEOUT", value)
    before = snapshot(engine)
    run = clean(cli("deactivate", "1", "--yes"), 2)
    assert run.stderr == (
        f"Error: PBCLIENTS_LOCK_TIMEOUT={value!r} is not a number of seconds from 0 to 86400.\n"
    )
    assert snapshot(engine) == before


@pytest.mark.parametrize("moment", ["1980-01-01T00:00:00Z", "2107-12-31T23:59:59Z"])
def test_the_first_and_last_supported_moments_write_backups(
    cli: Run, practice: Any, engine: Engine, tmp_path: Path, moment: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("PBCLIENTS_NOW", moment)
    clean(cli("deactivate", "2", "--yes"), 0)
    exported = json.loads(
        clean(cli("export", "3", "--backup-dir", str(tmp_path / "b"), "-f", "json"), 0).stdout
    )
    run = clean(cli("delete", "2", "--backup-dir", str(tmp_path / "b"), "--yes", "-f", "json"), 0)
    deleted = json.loads(run.stdout)
    for result in (*exported, *deleted):
        with zipfile.ZipFile(result["backup"]) as archive:
            assert {info.date_time[0] for info in archive.infolist()} == {int(moment[:4])}
        clean(cli("export", "--verify", result["backup"]), 0)
    clean(cli("purge", "--yes"), 0)
    clean(cli("list", "--status", "all"), 0)
    assert statuses(engine)[2] == "deleted"


def test_a_naive_clock_is_taken_as_utc(
    cli: Run, practice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", "2026-11-26T09:00:00")
    clean(cli("deactivate", "1", "--yes"), 0)
    listed = json.loads(clean(cli("list", "-f", "json"), 0).stdout)
    assert listed[0]["deactivated_at"] == "2026-11-26T09:00:00Z"


# --- CSV sizes and encodings, through the CLI ----------------------------------------------


def test_a_csv_field_past_the_parser_limit_has_its_own_message(
    cli: Run, practice: Any, engine: Engine, tmp_path: Path
) -> None:
    before = snapshot(engine)
    path = write(tmp_path / "ended.csv", "id,notes\n1," + "x" * 200_000 + "\n")
    run = clean(cli("deactivate", "--csv", path, "--yes"), 3)
    assert run.stderr.startswith(
        f"Error: {path}: the field on line 2 is longer than 131,072 characters;"
    )
    data = "email,first_name,last_name\n" + "a" * 140_000
    run = clean(cli("import", "-", "--yes", input=data), 3)
    assert run.stderr.startswith(
        "Error: standard input: the field on line 2 is longer than 131,072 characters;"
    )
    assert snapshot(engine) == before


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be"])
def test_utf16_files_from_excel_are_read(cli: Run, practice: Any, engine: Engine,
                                         tmp_path: Path, codec: str) -> None:  # fmt: skip
    bom = b"\xfe\xff" if codec == "utf-16-be" else b""
    ended = write(tmp_path / "ended.txt", bom + "id\tname\r\n1\tAna\r\n2\tBen\r\n".encode(codec))
    run = clean(cli("deactivate", "--csv", ended, "--yes", "-f", "json"), 0)
    assert [r["id"] for r in json.loads(run.stdout)] == [1, 2]
    new = write(
        tmp_path / "new.txt",
        bom + "email\tfirst_name\tlast_name\r\nzoe@example.org\tZoë\tÅberg\r\n".encode(codec),
    )
    run = clean(cli("import", new, "--yes", "-f", "json"), 0)
    shown = json.loads(clean(cli("show", "zoe@example.org", "-f", "json"), 0).stdout)
    assert (shown["first_name"], shown["last_name"]) == ("Zoë", "Åberg")
    before = snapshot(engine)
    run = clean(cli("deactivate", "--csv", ended, "--encoding", "cp1252", "--yes"), 3)
    assert "pass --encoding utf-16, or leave --encoding out" in run.stderr
    no_bom = write(tmp_path / "nobom.csv", "id\r\n3\r\n".encode("utf-16-le"))
    run = clean(cli("activate", "--csv", no_bom, "--yes"), 3)
    assert "pass --encoding utf-16-le" in run.stderr
    assert snapshot(engine) == before


# --- control characters in what is added ----------------------------------------------------

_CONTROL = {key: value for key, value in HOSTILE.items() if any(
    ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029\u202a\u202b\u202c\u202d"
    "\u202e\u2066\u2067\u2068\u2069" for c in value
)}  # fmt: skip
_HARMLESS = ["rtl-name", "combining", "emoji", "bidi-marks", "markup-close", "sql-drop",
             "formula-hyperlink", "arabic-digits", "very-long"]  # fmt: skip


def test_the_corpus_has_control_characters_to_refuse() -> None:
    assert {"nul", "csi-clear", "osc52-clipboard", "c1-csi", "bidi-override", "newline",
            "bidi-isolate", "line-separator", "delete"} <= set(_CONTROL)  # fmt: skip


@pytest.mark.parametrize("key", list(_CONTROL))
def test_add_and_import_refuse_control_characters(cli: Run, practice: Any, engine: Engine,
                                                  tmp_path: Path, key: str) -> None:  # fmt: skip
    value = _CONTROL[key]
    before = snapshot(engine)
    base = ["add", "--email", "new@example.org", "--first-name", "N", "--last-name", "W"]
    for option in ("--first-name", "--last-name", "--phone", "--program"):
        args = [*base, option, f"x{value}x", "--yes"]
        run = clean(cli(*args), 3)
        assert run.stderr.startswith(f"Error: {option} has a control character ("), run.stderr
    run = clean(cli("add", "--email", f"a{value}b@example.org", "--first-name", "N",
                    "--last-name", "W", "--yes"), 3)  # fmt: skip
    assert run.stderr.startswith("Error: --email has a control character (")

    # The id cell too, which only --update reads: every cell is set aside in tab-separated
    # lines, where a tab or line break would shift a row or add one.
    for column in ("first_name", "phone", "program", "id"):
        out = io.StringIO()
        out.write("id,email,first_name,last_name,phone,program\n")
        out.write(",bo@example.org,Bo,Li,,\n")
        cells = {"first_name": "Ann", "phone": "555", "program": "Reset", "id": "1",
                 column: f"x{value}x"}  # fmt: skip
        quoted = '"' + cells[column].replace('"', '""') + '"'
        cells[column] = quoted
        out.write(f"{cells['id']},ann@example.org,{cells['first_name']},Lee,{cells['phone']},"
                  f"{cells['program']}\n")  # fmt: skip
        path = write(tmp_path / "new.csv", out.getvalue())
        for update in ([], ["--update"]):
            run = clean(cli("import", path, *update, "--yes"), 3)
            assert run.stderr.startswith(f"Error: {path} line 3 has a control character ("), (
                run.stderr
            )
            assert f"in the {column} column" in run.stderr
    assert snapshot(engine) == before


@pytest.mark.parametrize("key", _HARMLESS)
def test_hostile_but_printable_names_are_added_and_read_back(cli: Run, engine: Engine,
                                                             key: str) -> None:  # fmt: skip
    value = HOSTILE[key]
    clean(cli("add", "--email", "new@example.org", "--first-name", value, "--last-name",
              value, "--program", value[:200], "--yes"), 0)  # fmt: skip
    shown = json.loads(clean(cli("show", "new@example.org", "-f", "json"), 0).stdout)
    assert (shown["first_name"], shown["last_name"]) == (value, value)


@pytest.mark.parametrize("key", ["idn", "formula", "plus-tag", "markup", "sql"])
def test_odd_but_valid_emails_are_added(cli: Run, engine: Engine, key: str) -> None:
    email = HOSTILE_EMAILS[key]
    clean(cli("add", "--email", email, "--first-name", "N", "--last-name", "W", "--yes"), 0)
    clean(cli("show", email, "-f", "json"), 0)


# --- empty selections -----------------------------------------------------------------------

EMPTY_INPUTS = {
    "ids-stdin-empty": (["--ids-from", "-"], ""),
    "ids-stdin-comments": (["--ids-from", "-"], "# nobody today\n\n   \n"),
    "csv-stdin-header-only": (["--csv", "-"], "id,email\n"),
    "csv-file-header-only": (["--csv", "{tmp}/ended.csv"], None),
    "ids-file-empty": (["--ids-from", "{tmp}/empty.txt"], None),
}
NOTHING = {
    "deactivate": "Nothing to deactivate.",
    "activate": "Nothing to activate.",
    "delete": "Nothing to delete.",
    "export": "Nothing to export.",
}


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
@pytest.mark.parametrize("source", list(EMPTY_INPUTS))
@pytest.mark.parametrize("command", list(NOTHING))
def test_an_empty_selection_from_a_pipeline_is_nothing_to_do(
    cli: Run, practice: Any, engine: Engine, tmp_path: Path, command: str, source: str,
    fmt: str,
) -> None:  # fmt: skip
    write(tmp_path / "ended.csv", "\ufeffClient ID;Name\r\n\r\n")
    write(tmp_path / "empty.txt", "")
    options, stdin = EMPTY_INPUTS[source]
    options = [option.format(tmp=tmp_path) for option in options]
    before = snapshot(engine)
    # No --yes: nothing to do asks nothing, even without a terminal.
    run = clean(cli(command, *options, "--format", fmt, input=stdin), 0)
    if fmt == "json":
        assert run.stdout == "[]\n"
    elif fmt == "csv":
        assert run.stdout.startswith("reference,id,email,before,after,outcome,")
        assert run.stdout.count("\n") == 1
    else:
        assert run.stdout == f"{NOTHING[command]}\n"
    assert run.stderr == ""
    assert snapshot(engine) == before


@pytest.mark.parametrize("command", list(NOTHING))
def test_no_selection_at_all_is_still_a_usage_error(cli: Run, practice: Any,
                                                   command: str) -> None:  # fmt: skip
    run = clean(cli(command, *([] if command == "export" else ["--yes"])), 2)
    assert run.stderr.startswith("Error: Name the clients to ")


def test_an_empty_pipeline_never_widens_a_deletion(
    cli: Run, practice: Any, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", "2026-01-01T00:00:00Z")
    clean(cli("deactivate", "2", "4", "--yes"), 0)
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)
    before = snapshot(engine)
    # `--deactivated-before` alone means every such client; with an input that held
    # nobody, it must mean nobody.
    for options, stdin in (
        (["--ids-from", "-"], ""),
        (["--csv", "-"], "id\n"),
    ):
        run = clean(cli("delete", *options, "--deactivated-before", "30d", "--yes",
                        input=stdin), 0)  # fmt: skip
        assert run.stdout == "Nothing to delete.\n"
    assert snapshot(engine) == before
    # The same option alone does select them: the test above can fail.
    clean(cli("delete", "--deactivated-before", "30d", "--yes"), 0)
    assert [i for i, s in statuses(engine).items() if s == "deleted"] == [2, 4]


def test_a_program_nobody_live_is_enrolled_in_is_nothing_to_do(cli: Run, practice: Any,
                                                               engine: Engine) -> None:  # fmt: skip
    clean(cli("add", "--email", "solo@example.org", "--first-name", "So", "--last-name", "Lo",
              "--program", "Solo", "--yes"), 0)  # fmt: skip
    clean(cli("delete", "solo@example.org", "--yes"), 0)
    before = snapshot(engine)
    run = clean(cli("deactivate", "--program", "Solo", "--format", "json"), 0)
    assert run.stdout == "[]\n"
    assert snapshot(engine) == before


def test_a_header_only_import_is_nothing_to_add_and_scripts_get_a_document(
    cli: Run, practice: Any, engine: Engine
) -> None:
    before = snapshot(engine)
    run = clean(cli("import", "-", "--format", "json", input="email,first_name,last_name\n"), 0)
    assert (run.stdout, run.stderr) == ("[]\n", "The file has no client rows; nothing to add.\n")
    run = clean(cli("import", "-", "--format", "csv", input="email,first_name,last_name\n"), 0)
    assert run.stdout.startswith("reference,id,email,before,after,outcome,")
    assert snapshot(engine) == before
