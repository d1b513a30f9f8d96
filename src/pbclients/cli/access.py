"""activate / deactivate: pause or resume portal access for one or many clients."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from pbclients.cli.common import read_input, reporting, source_name
from pbclients.cli.options import (
    AtOption,
    ClientsArgument,
    ColumnOption,
    CsvOption,
    DryRunOption,
    EncodingOption,
    FormatOption,
    IdsFromOption,
    InactiveForOption,
    MaxChangesOption,
    OutputFormat,
    ProgramOption,
    ReasonOption,
    SkipUnknownOption,
    YesOption,
)
from pbclients.cli.output import plural
from pbclients.errors import UsageError
from pbclients.policy import Status

if TYPE_CHECKING:
    from pbclients.cli.run import Wording
    from pbclients.limits import MaxChanges
    from pbclients.operation import Batch, NoDetail, Plan
    from pbclients.results import Consequences
    from pbclients.selection import Selection


def build_selection(
    clients: list[str] | None,
    csv_file: str | None,
    column: str | None,
    ids_from: str | None,
    program: str | None,
    skip_unknown: bool,
    encoding: str,
    inactive_for: str | None = None,
) -> tuple[Selection, bool]:
    """The selection options as one Selection, and whether standard input was read."""
    from pbclients.activity import Inactivity
    from pbclients.csvinput import Reference, read_reference_csv, read_reference_lines
    from pbclients.selection import Selection

    if csv_file == "-" and ids_from == "-":
        raise UsageError(
            "Only one of --csv and --ids-from can read standard input; give the other a file."
        )
    if column and not csv_file:
        raise UsageError("--column only applies to --csv FILE; add --csv or drop --column.")
    inactive = None
    if inactive_for is not None:
        from pbclients import activity, clock

        # Checked before any input is read: a bad age is a usage error (exit 2).
        now = clock.now()
        inactive = Inactivity(activity.inactive_cutoff(inactive_for, now), now)
    references = [Reference(text.strip(), "argument", None) for text in clients or []]
    if csv_file:
        references += read_reference_csv(
            read_input(csv_file), source=source_name(csv_file), column=column, encoding=encoding
        )
    if ids_from:
        references += read_reference_lines(
            read_input(ids_from), source=source_name(ids_from), encoding=encoding
        )
    stdin_used = "-" in (csv_file, ids_from)
    # An input that held no reference selects nobody (exit 0), unlike no option at all.
    from_input = bool(csv_file or ids_from)
    selection = Selection(
        references, program, skip_unknown, from_input=from_input, inactive=inactive
    )
    return selection, stdin_used


def consequence_lines(consequences: Consequences | None, target: Status) -> list[str]:
    if consequences is None:
        return []
    lines = []
    if target is Status.DEACTIVATED:
        lines.append("They lose portal login, content, journal and messages at once.")
        if consequences.upcoming_telehealth:
            lines.append(
                f"{plural(consequences.upcoming_telehealth, 'upcoming telehealth session')} "
                f"({plural(consequences.clients_with_telehealth, 'client')}) stay on the calendar "
                "but cannot be joined."
            )
        if consequences.active_enrolments:
            lines.append(
                f"{plural(consequences.active_enrolments, 'program enrolment')} pause "
                "(progress is kept)."
            )
        if consequences.active_payment_plans:
            lines.append(
                f"{plural(consequences.active_payment_plans, 'payment plan')} will still charge; "
                "stop them in billing if that is not intended."
            )
        lines.append("They still hold plan seats; forms sent by e-mail link still work.")
    else:
        lines.append("Portal access, programs and notifications resume exactly as they were.")
    lines.append("Clients are not notified of this change.")
    return lines


def _change_status(
    ctx: typer.Context,
    target: Status,
    *,
    clients: list[str] | None,
    csv_file: str | None,
    column: str | None,
    ids_from: str | None,
    program: str | None,
    skip_unknown: bool,
    encoding: str,
    yes: bool,
    dry_run: bool,
    reason: str | None,
    output: OutputFormat,
    max_changes: MaxChanges | None,
    inactive_for: str | None = None,
    at: str | None = None,
) -> None:
    from pbclients.cli.run import without_gc

    with reporting(ctx) as app, without_gc():
        from pbclients import lifecycle
        from pbclients.cli.run import carry_out
        from pbclients.cli.timing import carry_out_later, due_time

        selection, stdin_used = build_selection(
            clients, csv_file, column, ids_from, program, skip_unknown, encoding, inactive_for
        )
        engine = app.engine()
        due = due_time(engine, at) if at is not None else None
        # The consequences are only for the confirmation prompt.
        asks = not (yes or dry_run)
        plan = lifecycle.preview(
            engine, lifecycle.StatusChange(selection, target), with_consequences=asks
        )
        if due is not None:
            carry_out_later(
                app, engine, plan, status_wording(target), due,
                output=output, yes=yes, dry_run=dry_run, reason=reason, stdin_used=stdin_used,
                max_changes=max_changes,
            )  # fmt: skip
            return
        carry_out(
            app, engine, plan, lifecycle.apply, status_wording(target),
            output=output, yes=yes, dry_run=dry_run, reason=reason, stdin_used=stdin_used,
            max_changes=max_changes,
        )  # fmt: skip


def status_wording(target: Status) -> Wording[NoDetail]:
    """How activate/deactivate speak: their question and summary (also `browse`'s)."""
    from pbclients.cli.run import Wording

    verb = "activate" if target is Status.ACTIVE else "deactivate"
    return Wording(
        question=lambda plan: _question(plan, verb, target),
        summary=lambda outcome, dry_run: _summary(outcome, verb, dry_run=dry_run),
    )


def _question(plan: Plan[NoDetail], verb: str, target: Status) -> str:
    lines = consequence_lines(plan.consequences, target)
    return f"{verb.capitalize()} {plural(plan.changing, 'client')}?\n  " + "\n  ".join(lines)


def _summary(outcome: Plan[NoDetail] | Batch[NoDetail], verb: str, *, dry_run: bool) -> str:
    from pbclients.results import Outcome

    parts = []
    unchanged = outcome.count(Outcome.UNCHANGED)
    skipped = outcome.count(Outcome.SKIPPED)
    if unchanged:
        parts.append(f"{unchanged} already {verb}d")
    if skipped:
        parts.append(f"{skipped} unknown skipped")
    rest = f" ({', '.join(parts)})" if parts else ""
    batch_id = getattr(outcome, "batch_id", None)
    if dry_run:
        return (
            f"Dry run: would {verb} {plural(outcome.changing, 'client')}{rest}; "
            "nothing was written."
        )
    if batch_id:
        return (
            f"{verb.capitalize()}d {plural(outcome.changing, 'client')}{rest}. "
            f"Batch {batch_id}; revert it with `pbclients undo {batch_id}`. "
            "Clients were not notified."
        )
    return f"Nothing to {verb}{rest}."


def deactivate(
    ctx: typer.Context,
    clients: ClientsArgument = None,
    csv_file: CsvOption = None,
    column: ColumnOption = None,
    ids_from: IdsFromOption = None,
    program: ProgramOption = None,
    inactive_for: InactiveForOption = None,
    skip_unknown: SkipUnknownOption = False,
    encoding: EncodingOption = "utf-8",
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    reason: ReasonOption = None,
    output: FormatOption = OutputFormat.TABLE,
    max_changes: MaxChangesOption = None,
    at: AtOption = None,
) -> None:
    """Pause portal access for clients; their records stay intact and editable.

    Deactivated clients cannot log in, see content, message or join telehealth,
    and their programs pause; forms by e-mail link and saved payment plans
    still work. They keep their plan seat. Clients are not notified.

    Example:
        pbclients deactivate 12 ana@example.org --reason "program ended"
        pbclients deactivate --csv ended.csv --dry-run
        pbclients list --program Reset --format ids | pbclients deactivate --ids-from - --yes
        pbclients deactivate --inactive-for 180d --max-changes 50 --dry-run
        pbclients deactivate --program Reset --at 2026-12-31 --reason "program ends"
    """
    _change_status(
        ctx, Status.DEACTIVATED, clients=clients, csv_file=csv_file, column=column,
        ids_from=ids_from, program=program, skip_unknown=skip_unknown, encoding=encoding,
        yes=yes, dry_run=dry_run, reason=reason, output=output, max_changes=max_changes,
        inactive_for=inactive_for, at=at,
    )  # fmt: skip


def activate(
    ctx: typer.Context,
    clients: ClientsArgument = None,
    csv_file: CsvOption = None,
    column: ColumnOption = None,
    ids_from: IdsFromOption = None,
    program: ProgramOption = None,
    skip_unknown: SkipUnknownOption = False,
    encoding: EncodingOption = "utf-8",
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    reason: ReasonOption = None,
    output: FormatOption = OutputFormat.TABLE,
    max_changes: MaxChangesOption = None,
    at: AtOption = None,
) -> None:
    """Resume portal access for deactivated clients, exactly as it was.

    Same credentials (no password reset), programs continue where they paused.
    Clients are not notified. Deleted clients cannot be activated: use undo or
    restore.

    Example:
        pbclients activate 12
        pbclients activate --ids-from returning.txt --reason "new season" --yes
        pbclients activate 12 --at +14d
    """
    _change_status(
        ctx, Status.ACTIVE, clients=clients, csv_file=csv_file, column=column,
        ids_from=ids_from, program=program, skip_unknown=skip_unknown, encoding=encoding,
        yes=yes, dry_run=dry_run, reason=reason, output=output, max_changes=max_changes,
        at=at,
    )  # fmt: skip
