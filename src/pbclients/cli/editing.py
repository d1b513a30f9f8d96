"""edit, enrol, unenrol: keeping a client's file up to date, active or deactivated."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from pbclients.cli.access import build_selection
from pbclients.cli.common import reporting
from pbclients.cli.complete import client_references
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
    ReasonOption,
    SkipUnknownOption,
    YesOption,
)
from pbclients.cli.output import plural
from pbclients.cli.render import visible

if TYPE_CHECKING:
    from pbclients.cli.run import Wording
    from pbclients.editing import EditDetail
    from pbclients.enrolment import EnrolmentDetail
    from pbclients.limits import MaxChanges
    from pbclients.operation import Batch, Plan

EDIT_FIELDS = ["reference", "id", "email", "changed", "before", "after", "outcome", "batch"]


def edit(
    ctx: typer.Context,
    client: Annotated[
        str,
        typer.Argument(
            help="Client ID or e-mail.", show_default=False, autocompletion=client_references
        ),
    ],
    email: Annotated[
        str | None, typer.Option("--email", help="New e-mail (their portal login).")
    ] = None,
    first_name: Annotated[str | None, typer.Option("--first-name", help="New first name.")] = None,
    last_name: Annotated[str | None, typer.Option("--last-name", help="New last name.")] = None,
    phone: Annotated[
        str | None,
        typer.Option(
            "--phone", help="New phone number; --no-phone removes it.", show_default=False
        ),
    ] = None,
    no_phone: Annotated[bool, typer.Option("--no-phone", help="Remove the phone number.")] = False,
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    reason: ReasonOption = None,
    output: FormatOption = OutputFormat.TABLE,
    max_changes: MaxChangesOption = None,
) -> None:
    """Change a client's e-mail, names or phone; active and deactivated clients alike.

    Deactivation archives portal access, not the file: the practice keeps it up
    to date. A deleted client is not edited (bring it back with undo or restore
    first). A new e-mail must not belong to another client. The audit trail
    records which fields changed, never their values; `pbclients undo BATCH`
    puts the old values back.

    Example:
        pbclients edit 12 --email ana.silva@example.org
        pbclients edit ana@example.org --last-name "Silva Costa" --no-phone --dry-run
    """
    with reporting(ctx) as app:
        from pbclients import editing
        from pbclients.cli.run import carry_out
        from pbclients.errors import UsageError

        values = edit_values(email, first_name, last_name, phone, no_phone)
        if not values:
            raise UsageError(
                "Say what to change: --email, --first-name, --last-name, --phone or --no-phone."
            )
        engine = app.engine()
        plan = editing.preview(engine, [editing.ClientEdit(client, values)])
        carry_out(
            app, engine, plan, editing.apply, edit_wording(),
            output=output, yes=yes, dry_run=dry_run, reason=reason, max_changes=max_changes,
        )  # fmt: skip


def edit_values(
    email: str | None,
    first_name: str | None,
    last_name: str | None,
    phone: str | None,
    no_phone: bool,
) -> dict[str, str | None]:
    """The new values given (None: keep the field), checked as `edit` checks them."""
    from pbclients.csvinput import check_email, check_text
    from pbclients.errors import BadInput, UsageError

    if phone is not None and no_phone:
        raise UsageError("Give --phone or --no-phone, not both.")
    values: dict[str, str | None] = {}
    if email is not None:
        values["email"] = check_email(email.strip(), "--email")
    for name, value, option in (
        ("first_name", first_name, "--first-name"),
        ("last_name", last_name, "--last-name"),
    ):
        if value is not None:
            if not value.strip():
                raise BadInput(f"{option} cannot be empty; give the client's new value.")
            values[name] = check_text(value.strip(), option)
    if phone is not None:
        values["phone"] = check_text(phone.strip(), "--phone") or None
    if no_phone:
        values["phone"] = None
    return values


def edit_wording() -> Wording[EditDetail]:
    """How edit speaks: its question, summary and records (also `browse`'s)."""
    from pbclients.cli.run import Wording

    return Wording(question=_edit_question, summary=_edit_summary, records=edit_records)


def _edit_question(plan: Plan[EditDetail]) -> str:
    lines = []
    for edit in plan.detail.edits.values():
        lines.append(f"Client {edit.client_id}:")
        lines += [
            f"  {name.replace('_', ' ')}: {_value(edit.before[name])} -> {_value(edit.after[name])}"
            for name in edit.changed
        ]
    lines.append("The client is not notified; a new e-mail is their new portal login.")
    return f"Edit {plural(plan.changing, 'client')}?\n  " + "\n  ".join(lines)


def _edit_summary(outcome: Plan[EditDetail] | Batch[EditDetail], dry_run: bool) -> str:
    batch_id = getattr(outcome, "batch_id", None)
    if dry_run:
        return f"Dry run: would edit {plural(outcome.changing, 'client')}; nothing was written."
    if batch_id:
        return (
            f"Edited {plural(outcome.changing, 'client')}. Batch {batch_id}; put the old values "
            f"back with `pbclients undo {batch_id}`."
        )
    return "Nothing to edit: the client already has these values."


def edit_records(
    outcome: Plan[EditDetail] | Batch[EditDetail],
) -> tuple[list[dict[str, Any]], list[str]]:
    """One record per client: the names of the changed fields, and their values before/after."""
    batch_id = getattr(outcome, "batch_id", None)
    rows = []
    for result in outcome.results:
        found = outcome.detail.edits.get(result.client_id or 0)
        changed = list(found.changed) if found else []
        rows.append(
            {
                "reference": result.reference,
                "id": result.client_id,
                "email": found.after["email"] if found else result.email,
                "changed": changed,
                "before": {name: found.before[name] for name in changed} if found else {},
                "after": {name: found.after[name] for name in changed} if found else {},
                "outcome": result.outcome.value,
                "batch": batch_id,
            }
        )
    return rows, EDIT_FIELDS


def _value(value: str | None) -> str:
    return "(none)" if value is None else f"'{visible(value)}'"


TargetProgram = Annotated[
    str,
    typer.Option(
        "--program", metavar="NAME", help="The program to enrol in or leave.", show_default=False
    ),
]


def enrol(
    ctx: typer.Context,
    program: TargetProgram,
    clients: ClientsArgument = None,
    csv_file: CsvOption = None,
    column: ColumnOption = None,
    ids_from: IdsFromOption = None,
    skip_unknown: SkipUnknownOption = False,
    encoding: EncodingOption = "utf-8",
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    reason: ReasonOption = None,
    output: FormatOption = OutputFormat.TABLE,
    max_changes: MaxChangesOption = None,
) -> None:
    """Enrol clients in a program (created on first use); a deactivated client starts paused.

    Someone already enrolled is reported unchanged. Deleted clients cannot be
    enrolled. Clients are not notified.

    Example:
        pbclients enrol 12 ana@example.org --program "Spring Reset"
        pbclients enrol --csv autumn.csv --program "Autumn Group" --yes
    """
    _change_enrolment(
        ctx, program, enrolling=True, clients=clients, csv_file=csv_file, column=column,
        ids_from=ids_from, skip_unknown=skip_unknown, encoding=encoding, yes=yes,
        dry_run=dry_run, reason=reason, output=output, max_changes=max_changes,
    )  # fmt: skip


def unenrol(
    ctx: typer.Context,
    program: TargetProgram,
    clients: ClientsArgument = None,
    csv_file: CsvOption = None,
    column: ColumnOption = None,
    ids_from: IdsFromOption = None,
    skip_unknown: SkipUnknownOption = False,
    encoding: EncodingOption = "utf-8",
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    reason: ReasonOption = None,
    output: FormatOption = OutputFormat.TABLE,
    max_changes: MaxChangesOption = None,
) -> None:
    """Take clients out of a program; `pbclients undo BATCH` puts them back with their progress.

    Someone not enrolled is reported unchanged. Clients are not notified.

    Example:
        pbclients unenrol 12 --program "Spring Reset"
        pbclients list --program "Spring Reset" --format ids | pbclients unenrol --ids-from - \\
            --program "Spring Reset" --yes
    """
    _change_enrolment(
        ctx, program, enrolling=False, clients=clients, csv_file=csv_file, column=column,
        ids_from=ids_from, skip_unknown=skip_unknown, encoding=encoding, yes=yes,
        dry_run=dry_run, reason=reason, output=output, max_changes=max_changes,
    )  # fmt: skip


def _change_enrolment(
    ctx: typer.Context,
    program: str,
    *,
    enrolling: bool,
    clients: list[str] | None,
    csv_file: str | None,
    column: str | None,
    ids_from: str | None,
    skip_unknown: bool,
    encoding: str,
    yes: bool,
    dry_run: bool,
    reason: str | None,
    output: OutputFormat,
    max_changes: MaxChanges | None,
) -> None:
    with reporting(ctx) as app:
        from pbclients import enrolment
        from pbclients.cli.run import Wording, carry_out
        from pbclients.csvinput import check_text

        name = check_text(program.strip(), "--program")
        selection, stdin_used = build_selection(
            clients, csv_file, column, ids_from, None, skip_unknown, encoding
        )
        engine = app.engine()
        preview = enrolment.preview_enrol if enrolling else enrolment.preview_unenrol
        plan = preview(engine, selection, name)
        verb = "enrol" if enrolling else "unenrol"
        wording: Wording[EnrolmentDetail] = Wording(
            question=lambda plan: _enrolment_question(plan, verb),
            summary=lambda outcome, dry_run: _enrolment_summary(outcome, verb, dry_run=dry_run),
        )
        carry_out(
            app, engine, plan, enrolment.apply, wording,
            output=output, yes=yes, dry_run=dry_run, reason=reason, stdin_used=stdin_used,
            max_changes=max_changes,
        )  # fmt: skip


def _enrolment_question(plan: Plan[EnrolmentDetail], verb: str) -> str:
    program = visible(plan.detail.program)
    lines = []
    if verb == "enrol":
        if plan.detail.program_id is None:
            lines.append(f"Creates the program '{program}'.")
        lines.append("Deactivated clients start paused and continue when reactivated.")
    else:
        lines.append("Their progress in it is kept for `pbclients undo` until they are purged.")
    lines.append("Clients are not notified of this change.")
    preposition = "in" if verb == "enrol" else "from"
    return (
        f"{verb.capitalize()} {plural(plan.changing, 'client')} {preposition} '{program}'?\n  "
        + "\n  ".join(lines)
    )


def _enrolment_summary(
    outcome: Plan[EnrolmentDetail] | Batch[EnrolmentDetail], verb: str, *, dry_run: bool
) -> str:
    from pbclients.results import Outcome

    program = visible(outcome.detail.program)
    preposition = "in" if verb == "enrol" else "from"
    unchanged = outcome.count(Outcome.UNCHANGED)
    skipped = outcome.count(Outcome.SKIPPED)
    parts = []
    if unchanged:
        parts.append(f"{unchanged} already {'enrolled' if verb == 'enrol' else 'not enrolled'}")
    if skipped:
        parts.append(f"{skipped} unknown skipped")
    rest = f" ({', '.join(parts)})" if parts else ""
    batch_id = getattr(outcome, "batch_id", None)
    if dry_run:
        return (
            f"Dry run: would {verb} {plural(outcome.changing, 'client')} {preposition} "
            f"'{program}'{rest}; nothing was written."
        )
    if batch_id:
        return (
            f"{verb.capitalize()}led {plural(outcome.changing, 'client')} {preposition} "
            f"'{program}'{rest}. Batch {batch_id}; revert it with `pbclients undo {batch_id}`."
        )
    return f"Nothing to {verb}{rest}."
