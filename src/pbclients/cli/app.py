"""The `pbclients` command: global options and the list of commands."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from pbclients import __version__
from pbclients.cli import access, admin, backups, editing, maintenance, roster, timing
from pbclients.cli.browse import browse
from pbclients.cli.common import AppState
from pbclients.cli.database import db_app
from pbclients.cli.hold import hold
from pbclients.cli.store import backups_app

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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pbclients {__version__}")
        raise typer.Exit()


@app.callback()
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


ROSTER = "Roster"
ACCESS = "Portal access"
DATA = "Deletion and backups"
ADMIN = "Practice"
TIME = "Schedules and automation"

app.command(rich_help_panel=ROSTER)(roster.init)
app.command(rich_help_panel=ROSTER)(roster.demo)
app.command(rich_help_panel=ROSTER)(roster.add)
app.command("import", rich_help_panel=ROSTER)(roster.import_clients)
app.command("list", rich_help_panel=ROSTER)(roster.list_clients)
app.command(rich_help_panel=ROSTER)(roster.show)
app.command(rich_help_panel=ROSTER)(browse)
app.command(rich_help_panel=ROSTER)(editing.edit)
app.command(rich_help_panel=ROSTER)(editing.enrol)
app.command(rich_help_panel=ROSTER)(editing.unenrol)
app.command(rich_help_panel=ACCESS)(access.deactivate)
app.command(rich_help_panel=ACCESS)(access.activate)
app.command(rich_help_panel=ACCESS)(maintenance.undo)
app.command(rich_help_panel=DATA)(backups.export)
app.command(rich_help_panel=DATA)(backups.delete)
app.command(rich_help_panel=DATA)(backups.restore)
app.command(rich_help_panel=DATA)(maintenance.purge)
app.command(rich_help_panel=DATA)(hold)
app.add_typer(backups_app, name="backups", rich_help_panel=DATA)
app.add_typer(timing.schedule_app, name="schedule", rich_help_panel=TIME)
app.add_typer(timing.policy_app, name="policy", rich_help_panel=TIME)
app.command("run-due", rich_help_panel=TIME)(timing.run_due)
app.command(rich_help_panel=TIME)(timing.due)
app.command(rich_help_panel=ADMIN)(admin.plan)
app.add_typer(admin.audit_app, name="audit", rich_help_panel=ADMIN)
app.command(rich_help_panel=ADMIN)(admin.paths)
app.add_typer(db_app, name="db", rich_help_panel=ADMIN)


def main() -> None:
    # Everything this process creates (database, backups, logs) holds client data.
    os.umask(0o077)
    _refuse_undecodable_arguments()
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
