"""Start-up: --version, `python -m pbclients`, fast --help, and how errors are printed.

Everything here runs a real process: imports, exit codes and stderr as a shell sees them.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pbclients import __version__
from tests.helpers import pbclients, subprocess_env

HEAVY = ("sqlalchemy", "sqlmodel", "alembic", "psycopg")


def test_version():
    run = pbclients("--version")
    assert (run.returncode, run.stdout, run.stderr) == (
        0,
        f"pbclients {__version__}\n".encode(),
        b"",
    )


def test_python_dash_m_version_and_the_console_script_agree():
    script = Path(sys.executable).with_name("pbclients")
    if not script.exists():
        pytest.skip("the pbclients console script is not installed next to this Python")
    run = subprocess.run([str(script), "--version"], capture_output=True, env=subprocess_env())
    assert run.returncode == 0
    assert run.stdout == pbclients("--version").stdout == f"pbclients {__version__}\n".encode()


def test_help_lists_the_commands():
    run = pbclients("--help", env=subprocess_env(COLUMNS="120"))
    assert run.returncode == 0
    out = run.stdout.decode()
    for command in ("init", "demo", "add", "import", "list", "show", "deactivate", "activate",
                    "plan", "audit", "paths"):  # fmt: skip
        assert f" {command} " in out, command
    bare = pbclients()
    assert bare.returncode in (0, 2)  # no_args_is_help
    assert b"Usage: " in bare.stdout + bare.stderr


_MODULES_AFTER = """
import json, sys
sys.argv = ["pbclients", *json.loads(sys.argv[1])]
from pbclients.cli.app import main
try:
    main()
except SystemExit:
    pass
sys.stderr.write("MODULES " + json.dumps(sorted(sys.modules)) + "\\n")
"""


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["deactivate", "--help"]])
def test_help_and_version_import_no_database_library(args):
    run = subprocess.run(
        [sys.executable, "-c", _MODULES_AFTER, json.dumps(args)],
        capture_output=True,
        env=subprocess_env(),
        check=True,
    )
    line = next(x for x in run.stderr.decode().splitlines() if x.startswith("MODULES "))
    loaded = {name.split(".")[0] for name in json.loads(line.removeprefix("MODULES "))}
    assert "pbclients" in loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_importtime_of_help_shows_no_database_library():
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pbclients", "--help"],
        capture_output=True,
        env=subprocess_env(),
    )
    assert run.returncode == 0
    imported = [
        line.rsplit("|", 1)[-1].strip()
        for line in run.stderr.decode().splitlines()
        if line.startswith("import time:") and "|" in line
    ]
    assert any(name.startswith("pbclients") for name in imported)
    assert not [name for name in imported if name.split(".")[0] in HEAVY]


def _loaded_modules(args: list[str]) -> set[str]:
    """Every module `pbclients ARGS` has imported when it ends."""
    run = subprocess.run(
        [sys.executable, "-c", _MODULES_AFTER, json.dumps(args)],
        capture_output=True,
        env=subprocess_env(),
        check=True,
    )
    line = next(x for x in run.stderr.decode().splitlines() if x.startswith("MODULES "))
    return set(json.loads(line.removeprefix("MODULES ")))


def _modules_after(args: list[str]) -> set[str]:
    """The packages `pbclients ARGS` has imported when it ends."""
    return {name.split(".")[0] for name in _loaded_modules(args)}


# The read commands answer through the bare driver (pbclients.readdb): importing the ORM
# would cost them several times their query (issue 12).
READ_COMMANDS = [
    ["list", "--limit", "5"],
    ["list", "--format", "json", "--search", "a", "--held"],
    ["list", "--inactive-for", "30d", "--format", "ids"],
    ["show", "1"],
    ["show", "1", "--format", "json"],
    ["plan"],
    ["plan", "--format", "json"],
    ["audit", "--limit", "20"],
    ["audit", "--client", "1", "--format", "csv"],
]


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("startup") / "p.db"
    assert pbclients("--db", str(db), "demo", "--clients", "5").returncode == 0
    return db


@pytest.mark.parametrize("args", READ_COMMANDS, ids=" ".join)
def test_read_commands_import_no_orm(args, demo_db):
    loaded = _modules_after(["--db", str(demo_db), *args])
    assert "pbclients" in loaded
    assert not loaded & {"sqlalchemy", "sqlmodel", "alembic", "pydantic"}, sorted(loaded)


def test_a_changing_command_does_import_the_database_layer(tmp_path):
    """A command that writes does import the ORM (the checks above are real)."""
    db = tmp_path / "p.db"
    assert pbclients("--db", str(db), "init").returncode == 0
    loaded = _modules_after(["--db", str(db), "plan", "--set-limit", "5", "--yes"])
    assert {"sqlalchemy", "sqlmodel"} <= loaded


# --- errors ----------------------------------------------------------------------------------


def test_an_error_is_one_line_on_stderr_without_a_traceback(tmp_path):
    missing = tmp_path / "missing.db"
    run = pbclients("--db", str(missing), "list")
    assert run.returncode == 2
    assert run.stdout == b""
    assert run.stderr.decode() == (
        f"Error: There is no practice database at {missing}; create it with `pbclients init` "
        "or point --db at an existing one.\n"
    )


def test_debug_shows_the_traceback(tmp_path):
    missing = tmp_path / "missing.db"
    run = pbclients("--debug", "--db", str(missing), "list")
    assert run.returncode == 2
    err = run.stderr.decode()
    assert err.startswith("Traceback (most recent call last):\n")
    assert "pbclients.errors.UsageError: There is no practice database" in err
    assert err.endswith(f"Error: There is no practice database at {missing}; create it with "
                        "`pbclients init` or point --db at an existing one.\n")  # fmt: skip


def test_an_unexpected_error_is_one_line_exit_1_and_debug_shows_its_traceback(tmp_path):
    damaged = tmp_path / "damaged.db"
    assert pbclients("--db", str(damaged), "init").returncode == 0
    # A schema edited behind pbclients' back: nothing the tool can explain in advance.
    with sqlite3.connect(damaged) as connection:
        connection.execute("ALTER TABLE client RENAME COLUMN first_name TO given_name")
    run = pbclients("--db", str(damaged), "list")
    assert run.returncode == 1
    assert run.stderr.decode() == (
        "Unexpected error: OperationalError: no such column: "
        "client.first_name. Run the command again with --debug for details.\n"
    )
    debug = pbclients("--debug", "--db", str(damaged), "list")
    assert debug.returncode == 1
    assert b"Traceback (most recent call last):" in debug.stderr


@pytest.mark.parametrize(
    "args",
    [["--frobnicate"], ["list", "--frobnicate"], ["nosuchcommand"], ["show"], ["audit", "--limit"]],
)
def test_usage_errors_exit_2(args, tmp_path):
    from typer.testing import CliRunner

    from pbclients.cli.app import app

    run = CliRunner().invoke(app, ["--db", str(tmp_path / "p.db"), *args])
    assert run.exit_code == 2
    assert "Traceback" not in run.stderr
    assert "Error" in run.stderr  # click's usage error panel
    assert run.stdout == ""


def test_only_browse_imports_textual(tmp_path):
    """Textual (and its start-up cost) is `browse`'s alone: help and a real command skip it."""
    db = tmp_path / "p.db"
    assert pbclients("--db", str(db), "init").returncode == 0
    for args in (["--help"], ["browse", "--help"], ["--db", str(db), "list"]):
        assert "textual" not in _modules_after(args), args


# --- one command built per process -------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["list", "--limit", "5"], "list"),
        (["--db", "p.db", "--actor", "ann", "--debug", "show", "1"], "show"),
        (["--db=p.db", "--actor=ann", "audit", "verify"], "audit"),
        # The value of --db may be a command's name: it is not the command.
        (["--db", "list", "plan"], "plan"),
        (["run-due", "--help"], "run-due"),
        ([], None),
        (["--help"], None),
        (["--version"], None),
        (["--show-completion", "bash"], None),
        (["--db"], None),
        (["lst"], None),
        (["--db", "p.db", "nosuchcommand", "list"], None),
    ],
)
def test_invoked_command_is_named_only_when_certain(args, command):
    from pbclients.cli.app import invoked_command

    assert invoked_command(args) == command


def _command_lines() -> list[list[str]]:
    """Every command and sub-command of the whole app, as the words that name it."""
    import typer.main

    from pbclients.cli.app import whole_app

    root = typer.main.get_group(whole_app())
    lines = []
    for name, command in root.commands.items():
        lines.append([name])
        lines += [[name, sub] for sub in getattr(command, "commands", {})]
    return lines


@pytest.mark.parametrize("words", _command_lines(), ids=" ".join)
def test_a_command_built_alone_is_the_same_command(words, tmp_path):
    """What a process builds for one command (`build_app`) parses, helps and fails exactly
    as that command does within the whole app."""
    from typer.testing import CliRunner

    from pbclients.cli.app import build_app, whole_app

    alone = build_app([words[0]])
    for args in ([*words, "--help"], [*words, "--no-such-option"]):
        whole = CliRunner().invoke(whole_app(), args, env={"COLUMNS": "100"})
        single = CliRunner().invoke(alone, args, env={"COLUMNS": "100"})
        assert (single.exit_code, single.stdout, single.stderr) == (
            whole.exit_code,
            whole.stdout,
            whole.stderr,
        ), args
    assert whole.exit_code == 2


def test_a_command_imports_no_other_command(demo_db):
    loaded = _loaded_modules(["--db", str(demo_db), "list", "--limit", "5"])
    assert "pbclients.cli.roster" in loaded
    others = {"access", "backups", "editing", "maintenance", "store", "timing", "hold"}
    assert not loaded & {f"pbclients.cli.{module}" for module in others}


def test_a_mistyped_command_is_suggested_once():
    run = pbclients("lst")
    assert run.returncode == 2
    err = " ".join(run.stderr.decode().split())
    assert "No such command 'lst'." in err
    assert err.count("Did you mean") == 1 and "'list'" in err
