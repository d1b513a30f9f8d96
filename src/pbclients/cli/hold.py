"""hold: place clients under legal hold, or release them (`hold --release`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from pbclients.cli.access import build_selection
from pbclients.cli.common import reporting
from pbclients.cli.options import (
    ClientsArgument,
    ColumnOption,
    CsvOption,
    DryRunOption,
    EncodingOption,
    FormatOption,
    IdsFromOption,
    MaxChangesOption,
    OutputFormat,
    ProgramOption,
    SkipUnknownOption,
    YesOption,
)
from pbclients.cli.output import plural
from pbclients.cli.render import visible

if TYPE_CHECKING:
    from pbclients.cli.run import Wording
    from pbclients.holds import HoldDetail
    from pbclients.operation import Batch, Plan


def hold(
    ctx: typer.Context,
    clients: ClientsArgument = None,
    csv_file: CsvOption = None,
    column: ColumnOption = None,
    ids_from: IdsFromOption = None,
    program: ProgramOption = None,
    skip_unknown: SkipUnknownOption = False,
    encoding: EncodingOption = "utf-8",
    release: Annotated[
        bool, typer.Option("--release", help="Release the clients' legal hold instead.")
    ] = False,
    reason: Annotated[
        str | None,
        typer.Option(
            "--reason",
            metavar="TEXT",
            help="Why (required to hold, e.g. a case number); recorded in the audit trail.",
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            metavar="DATE",
            help="The hold ends by itself after this day (UTC), or at this ISO-8601 time "
            "[default: until released].",
            show_default=False,
        ),
    ] = None,
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    output: FormatOption = OutputFormat.TABLE,
    max_changes: MaxChangesOption = None,
) -> None:
    """Place clients under legal hold: they cannot be deleted or purged until released.

    A held client is never deleted (delete exits 3 naming it), never purged (a
    deleted one stays pending past its purge date) and never selected by an
    automatic rule; deactivating and activating stay allowed. `--release` lifts
    the hold; a hold given --until ends by itself after that day. Only client
    IDs go into the audit trail, with the reason.

    Example:
        pbclients hold 12 ana@example.org --reason "litigation 2026-114"
        pbclients hold --csv subpoena.csv --reason "subpoena 88" --until 2027-06-30 --dry-run
        pbclients hold --release 12 --reason "case closed"
    """
    with reporting(ctx) as app:
        from pbclients import holds
        from pbclients.cli.run import carry_out
        from pbclients.errors import UsageError

        if release and until is not None:
            raise UsageError("--until sets when a hold ends; drop it with --release.")
        ends = holds.parse_until(until) if until is not None else None
        selection, stdin_used = build_selection(
            clients, csv_file, column, ids_from, program, skip_unknown, encoding
        )
        engine = app.engine()
        plan = holds.preview(engine, holds.HoldRequest(selection, release, reason, ends))
        carry_out(
            app, engine, plan, holds.apply, hold_wording(release),
            output=output, yes=yes, dry_run=dry_run, reason=reason, stdin_used=stdin_used,
            max_changes=max_changes,
        )  # fmt: skip


def hold_wording(release: bool) -> Wording[HoldDetail]:
    """How hold and release speak: their question and summary."""
    from pbclients.cli.run import Wording

    return Wording(
        question=_release_question if release else _hold_question,
        summary=lambda outcome, dry_run: _summary(outcome, release, dry_run=dry_run),
        progress_label="Releasing" if release else "Holding",
    )


def _hold_question(plan: Plan[HoldDetail]) -> str:
    detail = plan.detail
    until = f"after {_day(detail)}" if detail.until else "when released"
    return (
        f"Place {plural(plan.changing, 'client')} under legal hold?\n"
        "  They cannot be deleted or purged and no automatic rule touches them; "
        "deactivating and activating stay allowed.\n"
        f"  The hold ends {until}. Reason: {visible(detail.reason)}"
    )


def _release_question(plan: Plan[HoldDetail]) -> str:
    return (
        f"Release the legal hold on {plural(plan.changing, 'client')}?\n"
        "  They can be deleted again; a deleted one already past its retention period is "
        "purged by the next purge."
    )


def _day(detail: HoldDetail) -> str:
    """The last day a hold lasts through (UTC): the day before the moment it ends."""
    from datetime import timedelta

    from pbclients import clock

    if detail.until is None:
        return "-"
    end = clock.as_utc(detail.until)
    if (end.hour, end.minute, end.second) == (0, 0, 0):
        return (end - timedelta(days=1)).date().isoformat()
    return str(clock.iso(end))


def _summary(outcome: Plan[HoldDetail] | Batch[HoldDetail], release: bool, *, dry_run: bool) -> str:
    from pbclients.results import Outcome

    verb = "release" if release else "hold"
    done = "released" if release else "held"
    parts = []
    unchanged = outcome.count(Outcome.UNCHANGED)
    skipped = outcome.count(Outcome.SKIPPED)
    if unchanged:
        parts.append(f"{unchanged} {'not held' if release else 'already held'}")
    if skipped:
        parts.append(f"{skipped} unknown skipped")
    rest = f" ({', '.join(parts)})" if parts else ""
    count = plural(outcome.changing, "client")
    batch_id = getattr(outcome, "batch_id", None)
    if dry_run:
        return f"Dry run: would {verb} {count}{rest}; nothing was written."
    if batch_id:
        after = (
            "They can be deleted again."
            if release
            else "Release them with `pbclients hold --release CLIENT`."
        )
        return f"{done.capitalize()} {count}{rest}. Batch {batch_id}. {after}"
    return f"Nothing to {verb}{rest}."
