"""`pbclients browse`: the roster full-screen (Textual), on the commands' domain functions.

Textual is imported only when `browse` runs (see `app`): every other command starts as
fast as before.
"""

from __future__ import annotations

import sys

import typer

from pbclients.cli.common import reporting


def browse(ctx: typer.Context) -> None:
    """Browse the roster full-screen: filter, search, select clients and act on them.

    Status tabs (Active, Deactivated, Deleted, All), a search box and a program
    picker narrow the table; Space selects clients, a selects every match; then
    d deactivates, r activates, x deletes, b exports backups, each confirmed as
    the command confirms it. Enter shows a client's file, e edits it, ? lists
    the keys, q quits.

    Example:
        pbclients browse
        pbclients --db /srv/practice/practice.db browse
    """
    with reporting(ctx) as state:
        from pbclients.errors import UsageError

        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise UsageError(
                "browse needs a terminal; in a script use `pbclients list` and the commands."
            )
        from pbclients.cli.browse.app import BrowseApp
        from pbclients.roster_view import program_names

        # Reads through the bare driver; the engine is opened when the first action runs.
        database = state.database()
        BrowseApp(state, database, program_names(database)).run()
