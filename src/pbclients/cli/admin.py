"""plan, audit, paths: the practice's plan, its audit trail, and where files live."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from pbclients.cli.common import confirm, reporting
from pbclients.cli.options import (
    MAX_ROWS,
    FormatOption,
    OutputFormat,
    ReasonOption,
    YesOption,
    parse_plan_limit,
    whole_number,
)
from pbclients.cli.output import console, print_csv, print_json, print_json_array, say
from pbclients.cli.render import literal, visible
from pbclients.errors import ExitCode
from pbclients.settings import MAX_RETENTION_DAYS

AUDIT_FIELDS = [
    "id",
    "at",
    "actor",
    "action",
    "client_id",
    "before",
    "after",
    "batch",
    "reason",
    "detail",
]


def plan(
    ctx: typer.Context,
    set_limit: Annotated[
        str | None,
        typer.Option("--set-limit", metavar="N|none", help="New plan limit; none for unlimited."),
    ] = None,
    set_retention: Annotated[
        int | None,
        typer.Option(
            "--set-retention",
            metavar="DAYS",
            parser=whole_number(1, MAX_RETENTION_DAYS),
            help=f"Days a deleted client is kept before purge (1 to {MAX_RETENTION_DAYS:,}).",
        ),
    ] = None,
    yes: YesOption = False,
    reason: ReasonOption = None,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Show the plan limit and what counts toward it; change it with --set-limit.

    Active and deactivated clients hold a seat; deleting a client frees it at once.

    Example:
        pbclients plan
        pbclients plan --set-limit 500
        pbclients plan --format json
    """
    with reporting(ctx) as app:
        from pbclients import plan as practice_plan

        engine = app.engine()
        if set_limit is None and set_retention is None:
            usage = practice_plan.current_usage(engine)
        else:
            limit = _parse_limit(set_limit)
            changes = []
            if limit is not None:
                changes.append(f"plan limit to {limit}")
            if set_retention is not None:
                changes.append(f"retention to {set_retention} days")
            confirm(f"Set the {' and the '.join(changes)}?", yes=yes)
            usage = practice_plan.configure(
                engine, app.change(reason), limit=limit, retention_days=set_retention
            )
        if output is OutputFormat.JSON:
            print_json(usage.as_record())
        elif output is OutputFormat.CSV:
            print_csv([usage.as_record()], list(usage.as_record()))
        else:
            out = console()
            limit_text = "unlimited" if usage.limit is None else str(usage.limit)
            out.print(f"plan limit: {limit_text}")
            out.print(
                f"counted:    {usage.counted} "
                f"(active {usage.active} + deactivated {usage.deactivated})"
            )
            out.print(f"available:  {'unlimited' if usage.available is None else usage.available}")
            out.print(f"deleted, pending purge: {usage.deleted} (hold no seat)")
            out.print(f"retention before purge: {usage.retention_days} days")


def _parse_limit(text: str | None) -> int | Literal["unlimited"] | None:
    return None if text is None else parse_plan_limit(text)


audit_app = typer.Typer(no_args_is_help=False, invoke_without_command=True)


@audit_app.callback(invoke_without_command=True)
def audit(
    ctx: typer.Context,
    client: Annotated[str | None, typer.Option("--client", help="Client ID or e-mail.")] = None,
    action: Annotated[
        str | None, typer.Option("--action", help="e.g. deactivate, delete, purge.")
    ] = None,
    batch: Annotated[str | None, typer.Option("--batch", help="Events of one batch.")] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", metavar="DATE|Nd", help="From this date, or N days ago."),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", metavar="N", parser=whole_number(1, MAX_ROWS), help="The newest N events."
        ),
    ] = None,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Show the audit trail: who changed which client, when, from which state to which, why.

    Events hold client IDs only, never names or e-mails.

    Example:
        pbclients audit --client 12
        pbclients audit --action deactivate --since 7d --format json
        pbclients audit verify
    """
    if ctx.invoked_subcommand is not None:
        return
    with reporting(ctx) as app:
        from pbclients import audit as trail
        from pbclients.clock import parse_moment

        engine = app.engine()
        where = trail.EventFilter(
            client=client,
            action=action,
            batch_id=batch,
            since=parse_moment(since, "--since") if since else None,
            limit=limit,
        )
        records = [trail.as_record(event) for event in trail.trail(engine, where)]
        if output is OutputFormat.JSON:
            print_json_array(records)
        elif output is OutputFormat.CSV:
            print_csv(records, AUDIT_FIELDS)
        else:
            from rich.table import Table

            out = console()
            if not records:
                out.print("No audit events match.")
                return
            table = Table(box=None, pad_edge=False)
            for name in ("id", "at", "actor", "action", "client", "change", "batch", "reason"):
                table.add_column(name, no_wrap=name in ("id", "at", "client", "batch"))
            for r in records:
                change = f"{r['before'] or '-'} -> {r['after'] or '-'}"
                cells = (r["id"], r["at"], r["actor"], r["action"], r["client_id"], change)
                table.add_row(*(literal(v) for v in (*cells, r["batch"], r["reason"])))
            out.print(table)


@audit_app.command("verify")
def audit_verify(ctx: typer.Context) -> None:
    """Check that the audit trail is intact: no event edited, removed or reordered.

    Exits 0 when intact, 1 naming the first broken event.

    Example:
        pbclients audit verify
    """
    with reporting(ctx) as app:
        from pbclients import audit as trail
        from pbclients.cli.common import err

        check = trail.check(app.engine())
        if not check.intact:
            err(f"Audit trail broken at event {check.broken_at}: {check.problem}.")
            raise typer.Exit(ExitCode.ERROR)
        console().print(f"Audit trail intact: {check.checked} events verified.")


def paths(ctx: typer.Context) -> None:
    """Show where the database, backups and logs are (after --db and PBCLIENTS_DB).

    Example:
        pbclients paths
    """
    with reporting(ctx) as app:
        from pbclients import paths as where

        say(f"database: {visible(where.shown(app.db))}")
        say(f"demo database: {visible(where.demo_db())}")
        say(f"backups: {visible(where.default_backup_dir())}")
        say(f"purge log: {visible(where.purge_log())}")
