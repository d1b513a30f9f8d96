"""db status, db copy: the database's schema version, and moving a practice to PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from pbclients.cli.common import confirm, reporting
from pbclients.cli.options import DryRunOption, FormatOption, OutputFormat, YesOption
from pbclients.cli.output import console, plural, print_csv, print_json
from pbclients.cli.render import plain, visible
from pbclients.errors import UsageError

if TYPE_CHECKING:
    from pbclients.dbcopy import CopyReport

db_app = typer.Typer(no_args_is_help=True)


@db_app.callback()
def db() -> None:
    """The practice database itself: its schema version, and copying it to PostgreSQL.

    Example:
        pbclients db status
        pbclients db copy --to postgresql://practice@db.internal/practice
    """


@db_app.command("status")
def status(ctx: typer.Context, output: FormatOption = OutputFormat.TABLE) -> None:
    """Show the database's schema revision, the newest one, and whether it is up to date.

    Run `pbclients init` to upgrade a database that is behind.

    Example:
        pbclients db status
        pbclients --db postgresql://practice@db.internal/practice db status --format json
    """
    with reporting(ctx) as app:
        from sqlalchemy.exc import DBAPIError

        from pbclients.paths import is_url
        from pbclients.schema import database_status

        try:
            # Read-only: status never writes, not even to a database it then refuses.
            database, dialect, found = database_status(app.db)
        except DBAPIError as error:
            where = "the PostgreSQL server" if is_url(app.db) else app.db
            problem = str(error.orig).strip().splitlines()[0]
            raise UsageError(
                f"Cannot open {where} ({problem}); check --db or PBCLIENTS_DB."
            ) from error
        current, head = found
        record = {
            "database": database,
            "engine": dialect,
            "current": current,
            "head": head,
            "up_to_date": found.up_to_date,
        }
        if output is OutputFormat.JSON:
            print_json(record)
            return
        if output is OutputFormat.CSV:
            print_csv([record], list(record))
            return
        out = console()
        out.print(plain(f"database: {visible(record['database'])}"))
        out.print(f"engine:   {record['engine']}")
        out.print(f"schema:   {current or 'none'} (newest: {head})")
        if found.up_to_date:
            out.print("Up to date.")
        elif current is None:
            out.print("No pbclients schema yet; create it with `pbclients init`.")
        else:
            out.print("Behind; upgrade it with `pbclients init` (existing data is kept).")


@db_app.command("copy")
def copy(
    ctx: typer.Context,
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="PATH|URL",
            help="The new database: a postgresql:// URL (or a SQLite path); it must be empty.",
        ),
    ],
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Copy the whole practice into a new, empty database, e.g. to move to PostgreSQL.

    Every table is copied in one transaction on the target and each table's row
    count is verified before it commits; the source is left as it is. Stop other
    pbclients runs first, then point --db (or PBCLIENTS_DB) at the new database.

    Example:
        createdb practice
        pbclients db copy --to postgresql://practice@db.internal/practice
        pbclients --db postgresql://practice@db.internal/practice db status
    """
    with reporting(ctx) as app:
        from pbclients import dbcopy

        engine = app.engine()
        plan = dbcopy.plan_copy(engine, to)
        if dry_run:
            _render(plan, output)
            return
        confirm(
            f"Copy the whole practice ({plural(plan.rows('client'), 'client')}, "
            f"{plural(plan.total, 'row')} in {plural(len(plan.tables), 'table')}) "
            f"from {plan.source} to {plan.target}?\n"
            "  The target must stay empty until the copy is done; the source is not changed.",
            yes=yes,
        )
        report = dbcopy.copy_practice(engine, to)
        _render(report, output)


def _render(report: CopyReport, output: OutputFormat) -> None:
    if output is OutputFormat.JSON:
        print_json(report.as_record())
        return
    if output is OutputFormat.CSV:
        print_csv([{"table": t.table, "rows": t.rows} for t in report.tables], ["table", "rows"])
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    table.add_column("table")
    table.add_column("rows", justify="right")
    for counted in report.tables:
        table.add_row(counted.table, str(counted.rows))
    out = console()
    out.print(table)
    if report.dry_run:
        out.print(
            f"Dry run: would copy {plural(report.total, 'row')} in "
            f"{plural(len(report.tables), 'table')} to {visible(report.target)}, which is empty; "
            "nothing was written."
        )
        return
    out.print(
        f"Copied {plural(report.total, 'row')} in {plural(len(report.tables), 'table')} "
        f"to {visible(report.target)} (schema {report.revision}); every count matches the "
        f"source. Use it with --db {visible(report.target)} or PBCLIENTS_DB."
    )
