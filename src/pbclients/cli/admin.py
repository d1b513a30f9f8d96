"""plan, audit, paths: the practice's plan, its audit trail, and where files live."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from pbclients.cli.common import confirm, reporting
from pbclients.cli.complete import client_references
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
from pbclients.cli.render import literal, plain, visible
from pbclients.errors import ExitCode, UsageError
from pbclients.settings import MAX_RECORD_RETENTION_YEARS, MAX_RETENTION_DAYS, time_zone_name

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


# How `audit` shows a reason that purge erased (its digest stays in the trail).
ERASED = "(erased at purge)"


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
    set_record_retention: Annotated[
        int | None,
        typer.Option(
            "--set-record-retention",
            metavar="YEARS",
            parser=whole_number(1, MAX_RECORD_RETENTION_YEARS),
            help="Years a client's record is kept after their last activity (or deletion), "
            f"which is when `backups prune` may remove a purged client's backups "
            f"(1 to {MAX_RECORD_RETENTION_YEARS}; default 7).",
        ),
    ] = None,
    set_timezone: Annotated[
        str | None,
        typer.Option(
            "--set-timezone",
            metavar="ZONE",
            help="The practice's time zone (e.g. Europe/Lisbon): a date given to --at means "
            "midnight there (default UTC).",
        ),
    ] = None,
    set_backup_key_file: Annotated[
        str | None,
        typer.Option(
            "--set-backup-key-file",
            metavar="PATH|none",
            help="Encrypt every backup from now on with age, to the recipients of this age "
            "identity or recipients file (env PBCLIENTS_BACKUP_KEY_FILE wins over it); none "
            "for plain backups. See `pbclients backups keygen`.",
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
        pbclients plan --set-record-retention 10
        pbclients plan --set-timezone Europe/Lisbon
        pbclients plan --set-backup-key-file ~/.config/pbclients/backup-key.txt
        pbclients plan --format json
    """
    with reporting(ctx) as app:
        from pbclients import plan as practice_plan

        settings_given = (
            set_limit, set_retention, set_record_retention, set_timezone, set_backup_key_file,
        )  # fmt: skip
        if all(value is None for value in settings_given):
            usage = practice_plan.current_usage(app.database())
        else:
            engine = app.engine()
            limit = _parse_limit(set_limit)
            zone = time_zone_name(set_timezone) if set_timezone is not None else None
            changes = []
            if limit is not None:
                changes.append(f"plan limit to {limit}")
            if set_retention is not None:
                changes.append(f"retention to {set_retention} days")
            if set_record_retention is not None:
                changes.append(f"record retention to {set_record_retention} years")
            if zone is not None:
                changes.append(f"time zone to {zone}")
            key_file = _parse_key_file(set_backup_key_file)
            if key_file == "none":
                changes.append("backups to plain (not encrypted)")
            elif key_file is not None:
                changes.append(f"backup key file to {visible(key_file)}")
            confirm(f"Set the {' and the '.join(changes)}?", yes=yes)
            usage = practice_plan.configure(
                engine, app.change(reason), limit=limit, retention_days=set_retention,
                record_retention_years=set_record_retention, time_zone=zone,
                backup_key_file=key_file,
            )  # fmt: skip
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
            out.print(f"record retention: {usage.record_retention_years} years after last activity")
            out.print(literal(f"time zone:  {usage.time_zone}"))
            if usage.backup_key_file is not None:
                out.print(literal(f"backups encrypted with age, key file: {usage.backup_key_file}"))


def _parse_limit(text: str | None) -> int | Literal["unlimited"] | None:
    return None if text is None else parse_plan_limit(text)


def _parse_key_file(text: str | None) -> Path | Literal["none"] | None:
    """A key file path, or "none" (a file named none is given as ./none)."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return "none"
    if not text.strip():
        raise UsageError("--set-backup-key-file needs a file, or none for plain backups.")
    return Path(text)


audit_app = typer.Typer(no_args_is_help=False, invoke_without_command=True)


@audit_app.callback(invoke_without_command=True)
def audit(
    ctx: typer.Context,
    client: Annotated[
        str | None,
        typer.Option("--client", help="Client ID or e-mail.", autocompletion=client_references),
    ] = None,
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
        from pbclients import trail
        from pbclients.clock import parse_moment

        database = app.database()
        where = trail.EventFilter(
            client=client,
            action=action,
            batch_id=batch,
            since=parse_moment(since, "--since") if since else None,
            limit=limit,
        )
        records = [event.as_record() for event in trail.trail(database, where)]
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
                # Said by the tool, not typed by anyone: styled apart from a literal reason.
                reason = plain(ERASED, "italic") if r["reason_erased"] else literal(r["reason"])
                table.add_row(*(literal(v) for v in (*cells, r["batch"])), reason)
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
        say(f"erasure ledger: {visible(where.ledger_file())}")
