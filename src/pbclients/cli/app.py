"""The `pbclients` command: global options and the list of commands."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from functools import cache
from typing import Annotated

import typer

from pbclients import __version__
from pbclients.cli.common import AppState

ROSTER = "Roster"
ACCESS = "Portal access"
DATA = "Deletion and backups"
ADMIN = "Practice"
TIME = "Schedules and automation"

# Every command: the module of `pbclients.cli` and the function (or Typer sub-app) behind
# it, and its panel in --help. Within a panel --help lists commands, then sub-apps, each in
# this order. A process imports and builds only the command it runs (`invoked_command`):
# building all of them would cost every command the start-up of all the others.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "init": ("roster", "init", ROSTER),
    "demo": ("roster", "demo", ROSTER),
    "add": ("roster", "add", ROSTER),
    "import": ("roster", "import_clients", ROSTER),
    "list": ("roster", "list_clients", ROSTER),
    "show": ("roster", "show", ROSTER),
    "browse": ("browse", "browse", ROSTER),
    "edit": ("editing", "edit", ROSTER),
    "enrol": ("editing", "enrol", ROSTER),
    "unenrol": ("editing", "unenrol", ROSTER),
    "deactivate": ("access", "deactivate", ACCESS),
    "activate": ("access", "activate", ACCESS),
    "undo": ("maintenance", "undo", ACCESS),
    "export": ("backups", "export", DATA),
    "delete": ("backups", "delete", DATA),
    "restore": ("backups", "restore", DATA),
    "purge": ("maintenance", "purge", DATA),
    "hold": ("hold", "hold", DATA),
    "backups": ("store", "backups_app", DATA),
    "schedule": ("timing", "schedule_app", TIME),
    "policy": ("timing", "policy_app", TIME),
    "run-due": ("timing", "run_due", TIME),
    "due": ("timing", "due", TIME),
    "plan": ("admin", "plan", ADMIN),
    "audit": ("admin", "audit_app", ADMIN),
    "paths": ("admin", "paths", ADMIN),
    "db": ("database", "db_app", ADMIN),
}

# The global options, to find the command's name after them.
_OPTIONS_WITH_VALUE = ("--db", "--actor")
_FLAGS = ("--debug",)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pbclients {__version__}")
        raise typer.Exit()


def main_options(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="PATH|URL",
            # PBCLIENTS_DB is resolved in paths.resolve_db, not here: `demo` must tell an
            # explicit --db from the environment, which may name the real practice.
            help=(
                "Practice database: a SQLite file or a postgresql:// URL (else env "
                "PBCLIENTS_DB, else practice.db in the user data folder; see `pbclients paths`)."
            ),
            show_default=False,
        ),
    ] = None,
    actor: Annotated[
        str | None,
        typer.Option(
            "--actor",
            envvar="PBCLIENTS_ACTOR",
            help="Who is acting, for the audit trail (default: your login name).",
            show_default=False,
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Manage a practice's client roster."""
    ctx.obj = AppState(db_option=db, actor_option=actor, debug=debug)


def build_app(names: Iterable[str]) -> typer.Typer:
    """The `pbclients` command with its global options and the named `COMMANDS`."""
    app = typer.Typer(
        name="pbclients",
        help=(
            "Manage a practice's client roster: who may use the client portal, who is "
            "paused (deactivated), who is deleted and when their data is purged."
        ),
        epilog=(
            "Exit codes: 0 done, 1 declined or unexpected error, 2 usage, 3 bad input, "
            "4 backup failed, 5 busy, 6 plan limit, 7 more changes than --max-changes; "
            "for 2 to 7 nothing was changed."
        ),
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(main_options)
    for name in names:
        module, attribute, panel = COMMANDS[name]
        target = getattr(importlib.import_module(f"pbclients.cli.{module}"), attribute)
        if isinstance(target, typer.Typer):
            app.add_typer(target, name=name, rich_help_panel=panel)
        else:
            app.command(name, rich_help_panel=panel)(target)
    return app


@cache
def whole_app() -> typer.Typer:
    """Every command: for --help, completion, a mistyped command, and tests."""
    return build_app(COMMANDS)


def invoked_command(args: list[str]) -> str | None:
    """The command these arguments run, when it is certain; else None (--help, --version,
    no command, an unknown one or an option this cannot place)."""
    waiting_for_value = False
    for arg in args:
        if waiting_for_value:
            waiting_for_value = False
        elif arg in _OPTIONS_WITH_VALUE:
            waiting_for_value = True
        elif arg in _FLAGS or arg.startswith(tuple(f"{o}=" for o in _OPTIONS_WITH_VALUE)):
            continue
        else:
            return arg if arg in COMMANDS else None
    return None


def __getattr__(name: str) -> typer.Typer:
    # `app` is the whole command, built on first use (tests, documentation tools).
    if name == "app":
        return whole_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    # Everything this process creates (database, backups, logs) holds client data.
    os.umask(0o077)
    _refuse_undecodable_arguments()
    command = invoked_command(sys.argv[1:])
    app = whole_app() if command is None else build_app([command])
    try:
        app()
    finally:
        _flush_stdout()


def _refuse_undecodable_arguments() -> None:
    """Stop at once on an argument that is not text in the terminal's encoding.

    Python hands such bytes over as lone surrogates, which no database, file or terminal
    accepts: left alone they fail deep inside a command ("Unexpected error"), or after
    its change is committed, when the result echoes the reference.
    """
    from pbclients.cli.common import err
    from pbclients.cli.render import visible
    from pbclients.errors import ExitCode

    given = [("argument", arg) for arg in sys.argv[1:]]
    given.append(("variable PBCLIENTS_ACTOR", os.environ.get("PBCLIENTS_ACTOR", "")))
    for where, value in given:
        if any("\ud800" <= char <= "\udfff" for char in value):
            err(
                f"The {where} {visible(value)} is not valid text in this terminal's encoding "
                "(bytes shown as \\udcXX); retype it (or rename the file it names), or use a "
                "UTF-8 locale (e.g. LANG=C.UTF-8). Nothing was changed."
            )
            sys.exit(ExitCode.USAGE)


def _flush_stdout() -> None:
    """Flush what is still buffered now, while a closed pipe can be handled quietly.

    Left to the interpreter's shutdown, a reader that stopped early (`| head -1`) would
    get "Exception ignored ... BrokenPipeError" on stderr and exit status 120. The exit
    status the command chose is kept.
    """
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
