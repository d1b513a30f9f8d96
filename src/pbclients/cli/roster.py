"""init, demo, add, import, list, show: creating the roster and looking at it."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, BinaryIO

import typer

from pbclients.cli.common import err, read_input, reporting, source_name
from pbclients.cli.complete import client_references
from pbclients.cli.options import (
    MAX_ROWS,
    DryRunOption,
    EncodingOption,
    FormatOption,
    ListFormat,
    MaxChangesOption,
    OutputFormat,
    ReasonOption,
    StatusFilter,
    YesOption,
    whole_number,
)
from pbclients.cli.output import (
    BATCH_FIELDS,
    TABLE_ROWS,
    console,
    plural,
    print_csv,
    print_json,
    print_json_array,
    print_json_lines,
    render_batch,
    render_rows,
    say,
)
from pbclients.cli.render import literal, plain, visible
from pbclients.policy import DESCRIPTIONS, Capability, Status

if TYPE_CHECKING:
    from datetime import datetime

    from rich.console import RenderableType

    from pbclients.cli.common import AppState
    from pbclients.importing import UpdatePlan
    from pbclients.limits import MaxChanges
    from pbclients.operation import Batch, Plan
    from pbclients.plan import PlanUsage
    from pbclients.readdb import Database
    from pbclients.results import ChangeResult, Outcome
    from pbclients.roster import AddDetail, NewClient
    from pbclients.roster_view import ClientDetail, ClientFilter


LIST_FIELDS = [
    "id", "email", "first_name", "last_name", "status", "programs",
    "created_at", "deactivated_at", "deleted_at", "purge_after", "days_until_purge",
    "last_activity", "held",
]  # fmt: skip


def init(ctx: typer.Context) -> None:
    """Create the practice database, or upgrade its schema; safe to run again.

    Example:
        pbclients init
        pbclients --db /srv/practice/practice.db init
    """
    with reporting(ctx) as app:
        from pbclients.paths import shown
        from pbclients.schema import init_schema

        engine = app.engine(create=True)
        init_schema(engine)
        say(f"Practice database ready: {visible(shown(app.db))}")


def demo(
    ctx: typer.Context,
    clients: Annotated[
        int, typer.Option("--clients", min=1, max=100_000, help="How many demo clients.")
    ] = 300,
    seed: Annotated[
        int, typer.Option("--seed", help="Random seed, for the same demo every time.")
    ] = 7,
) -> None:
    """Build a realistic demo practice to try everything on.

    Without --db it writes its own demo.db in the user data folder, never your
    practice database; it refuses to overwrite a database that is not a demo.

    Example:
        pbclients demo
        pbclients --db /tmp/try.db demo --clients 1000
    """
    with reporting(ctx) as app:
        from pbclients import demo as demo_practice
        from pbclients.paths import demo_db, is_url, shown

        target = app.db_option or demo_db()
        if not is_url(target):
            target = str(Path(target).expanduser().resolve())
        summary = demo_practice.build(target, clients=clients, seed=seed, actor=app.actor)
        say(f"Demo practice ready: {visible(shown(target))}")
        say(
            f"{summary.clients} clients ({summary.deactivated} deactivated) in "
            f"{summary.programs} programs, with appointments, journals, notes, messages and files."
        )
        # Quoted for the shell, then made visible: a path with a control character cannot
        # be pasted back as typed, but it must not drive the terminal either.
        db_arg = f"--db {visible(shlex.quote(shown(target)))}"
        say("Try next:")
        for line in (
            f"pbclients {db_arg} list",
            f"pbclients {db_arg} show {visible(shlex.quote(summary.sample_email))}",
            f"pbclients {db_arg} deactivate --program "
            f"{visible(shlex.quote(summary.sample_program))} --dry-run",
            f"pbclients {db_arg} plan",
            f"pbclients {db_arg} audit",
        ):
            say(f"  {line}", soft_wrap=True)  # whole lines, to copy and paste


def add(
    ctx: typer.Context,
    email: Annotated[
        str, typer.Option("--email", help="The client's e-mail (their portal login).")
    ],
    first_name: Annotated[str, typer.Option("--first-name", help="First name.")],
    last_name: Annotated[str, typer.Option("--last-name", help="Last name.")],
    phone: Annotated[str | None, typer.Option("--phone", help="Phone number.")] = None,
    program: Annotated[str | None, typer.Option("--program", help="Enrol in this program.")] = None,
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    reason: ReasonOption = None,
    output: FormatOption = OutputFormat.TABLE,
    max_changes: MaxChangesOption = None,
) -> None:
    """Add one client (refused past the plan limit).

    Example:
        pbclients add --email ana@example.org --first-name Ana --last-name Silva
        pbclients add --email bo@example.org --first-name Bo --last-name Li --program Reset
    """
    from pbclients.csvinput import check_email, check_text

    with reporting(ctx) as app:
        from pbclients.roster import NewClient

        new = NewClient(
            check_email(email.strip(), "--email"),
            check_text(_required(first_name, "--first-name"), "--first-name"),
            check_text(_required(last_name, "--last-name"), "--last-name"),
            check_text((phone or "").strip(), "--phone") or None,
            check_text((program or "").strip(), "--program") or None,
        )
        _add(app, [new], yes, dry_run, reason, output, stdin_used=False, max_changes=max_changes)


def import_clients(
    ctx: typer.Context,
    file: Annotated[
        str | None,
        typer.Argument(
            metavar="FILE.csv",
            help="CSV: email, first_name, last_name[, phone, program]; - for stdin.",
            show_default=False,
        ),
    ] = None,
    fhir: Annotated[
        str | None,
        typer.Option(
            "--fhir",
            metavar="FILE",
            help="Instead of a CSV: FHIR Patient NDJSON, one Patient, or a Bundle; - for stdin.",
            show_default=False,
        ),
    ] = None,
    encoding: EncodingOption = "utf-8",
    update: Annotated[
        bool,
        typer.Option(
            "--update",
            help="Rows whose id or e-mail is a live client's update that client instead.",
        ),
    ] = False,
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    reason: ReasonOption = None,
    output: FormatOption = OutputFormat.TABLE,
    max_changes: MaxChangesOption = None,
) -> None:
    """Add clients from a CSV file, all or nothing.

    Columns: email, first_name, last_name, optional phone and program (enrols
    the client in that program). Refused as a whole on a bad row, an e-mail
    that is already a client, or past the plan limit. With --update, a row
    whose id column or e-mail names a live client updates that client's e-mail,
    names and phone instead (an empty phone keeps the one on file); the dry run
    says per row: added, updated (with the fields) or unchanged.

    With --fhir, clients come from HL7 FHIR Patients (another system's export):
    name, e-mail and phone; a Patient with active false arrives deactivated.
    The same checks apply; a Patient without an e-mail is refused by its line.

    Example:
        pbclients import new-clients.csv --dry-run
        pbclients import new-clients.csv --reason "autumn intake" --yes
        pbclients import roster-export.csv --update --dry-run
        pbclients import --fhir fhir-export/Patient.ndjson --dry-run
    """
    with reporting(ctx) as app:
        from pbclients.errors import UsageError

        if fhir is not None:
            if file is not None or update:
                raise UsageError("--fhir FILE is the input; give no FILE.csv or --update with it.")
            _import_fhir(app, fhir, yes, dry_run, reason, output, max_changes)
            return
        if file is None:
            raise UsageError("Give the clients to add: FILE.csv, or --fhir FILE.")
        if not update:
            _import_file(app, file, encoding, yes, dry_run, reason, output, max_changes)
            return
        _import_update(app, file, encoding, yes, dry_run, reason, output, max_changes)


def _import_file(
    app: AppState,
    file: str,
    encoding: str,
    yes: bool,
    dry_run: bool,
    reason: str | None,
    output: OutputFormat,
    max_changes: MaxChanges | None,
) -> None:
    """A plain import, as `_add` does it but streamed: a file of any length is read once
    into an intake, then checked, confirmed, added and reported a chunk at a time."""
    from pbclients import importing
    from pbclients.cli.common import confirm
    from pbclients.cli.progress import progress
    from pbclients.cli.run import check_cap, warn_cap
    from pbclients.csvinput import iter_import_csv
    from pbclients.results import Outcome

    source = source_name(file)
    with _opened(file) as stream:
        rows = iter_import_csv(stream, source=source, encoding=encoding)
        intake = importing.Intake.of(rows, source)
    with intake:
        if not intake.count:
            _add(app, [], yes, dry_run, reason, output, stdin_used=file == "-")
            return
        engine = app.engine()
        plan = importing.check(engine, intake)
        count = intake.count
        if dry_run:
            summary = _added_summary(count, plan.new_programs, None, dry_run)
            if output is OutputFormat.JSON:
                print_json_lines(_json_records(plan.emails_and_ids(), Outcome.PLANNED, None))
            else:
                records = (result.as_record(None) for result in plan.results())
                render_rows(records, count, BATCH_FIELDS, output, summary)
            warn_cap(engine, count, max_changes)
            return
        check_cap(engine, count, max_changes)
        question = _adding_question(count, plan.seats, plan.new_programs)
        confirm(question, yes=yes, stdin_used=file == "-")
        with progress(count, "Adding") as on_progress:
            added = importing.add(engine, plan, app.change(reason), on_progress=on_progress)
        batch_id = added.batch_id
        if output is OutputFormat.JSON:
            print_json_lines(_json_records(added.emails_and_ids(), Outcome.CHANGED, batch_id))
            return
        summary = _added_summary(count, added.new_programs, batch_id, dry_run)
        records = (result.as_record(batch_id) for result in added.results())
        render_rows(records, count, BATCH_FIELDS, output, summary)


def _json_records(
    emails_and_ids: Iterable[tuple[str, int | None]], outcome: Outcome, batch_id: str | None
) -> Iterator[str]:
    """The results of an import, encoded as `print_json_array` encodes them.

    They differ only in the e-mail (which is also the reference) and the id, so the
    record of `ChangeResult.as_record` is encoded once with markers in those places:
    a million records then cost an escaped string each instead of an encoded dict.
    """
    import json
    from json.encoder import encode_basestring

    from pbclients.results import ChangeResult

    email_mark, id_mark = "\x00", "\x01"
    record = ChangeResult(email_mark, None, email_mark, None, Status.ACTIVE.value, outcome)
    fields = record.as_record(batch_id) | {"id": id_mark}
    template = json.JSONEncoder(ensure_ascii=False).encode(fields)
    # The record names the reference, then the id, then the e-mail; the text around them
    # is the same for every record.
    head, rest = template.split(encode_basestring(email_mark), 1)
    after_reference, rest = rest.split(encode_basestring(id_mark), 1)
    after_id, tail = rest.split(encode_basestring(email_mark), 1)
    for email, client_id in emails_and_ids:
        shown = encode_basestring(email)
        yield (
            f"{head}{shown}{after_reference}{'null' if client_id is None else client_id}"
            f"{after_id}{shown}{tail}"
        )


@contextmanager
def _opened(file: str) -> Iterator[BinaryIO]:
    """The file to import, or standard input's bytes set aside to be read more than once."""
    from pbclients.errors import UsageError

    if file == "-":
        import shutil
        import tempfile

        with tempfile.TemporaryFile() as spool:
            shutil.copyfileobj(sys.stdin.buffer, spool)
            spool.seek(0)
            yield spool
        return
    try:
        stream = Path(file).expanduser().open("rb")
    except FileNotFoundError:
        raise UsageError(f"{visible(file)}: no such file; check the path.") from None
    except IsADirectoryError:
        raise UsageError(
            f"{visible(file)} is a folder, not a file; give the file inside it."
        ) from None
    except PermissionError:
        raise UsageError(
            f"{visible(file)} cannot be read (permission denied); "
            "check its permissions or copy it somewhere readable."
        ) from None
    with stream:
        yield stream


def _import_fhir(
    app: AppState,
    fhir: str,
    yes: bool,
    dry_run: bool,
    reason: str | None,
    output: OutputFormat,
    max_changes: MaxChanges | None,
) -> None:
    """`import --fhir`: Patients -> the same add operation as a CSV import."""
    from pbclients import roster
    from pbclients.cli.run import Wording, carry_out
    from pbclients.fhir.intake import read_patients
    from pbclients.roster import NewClient

    source = source_name(fhir)
    patients = read_patients(read_input(fhir), source=source)
    if patients.skipped:
        left_out = ", ".join(f"{n} {kind}" for kind, n in sorted(patients.skipped.items()))
        err(
            f"Left out the resources of {visible(source)} that are not Patients: "
            f"{visible(left_out)}."
        )
    new = [
        NewClient(
            p.email, p.first_name, p.last_name, p.phone, None, p.where,
            Status.ACTIVE if p.active else Status.DEACTIVATED,
        )
        for p in patients.patients
    ]  # fmt: skip
    if not new:
        _add(app, new, yes, dry_run, reason, output, stdin_used=fhir == "-")
        return
    paused = sum(1 for c in new if c.status is Status.DEACTIVATED)

    def question(plan: Plan[AddDetail]) -> str:
        text = _add_question(plan)
        if not paused:
            return text
        # Patients marked inactive by the other system arrive paused, as they were there.
        return text.replace(
            " They get portal access.",
            f" {plural(paused, 'client')} of them arrive deactivated, without portal access.",
        )

    engine = app.engine()
    plan = roster.preview(engine, new)
    wording: Wording[AddDetail] = Wording(
        question=question, summary=_add_summary, progress_label="Adding"
    )
    carry_out(
        app, engine, plan, roster.apply, wording,
        output=output, yes=yes, dry_run=dry_run, reason=reason, stdin_used=fhir == "-",
        max_changes=max_changes,
    )  # fmt: skip


def _required(value: str, option: str) -> str:
    from pbclients.errors import BadInput

    if not value.strip():
        field = option.removeprefix("--").replace("-", " ")
        raise BadInput(f"{option} cannot be empty; give the client's {field}.")
    return value.strip()


def _add(
    app: AppState,
    new: list[NewClient],
    yes: bool,
    dry_run: bool,
    reason: str | None,
    output: OutputFormat,
    *,
    stdin_used: bool,
    max_changes: MaxChanges | None = None,
) -> None:
    from pbclients import roster
    from pbclients.cli.run import Wording, carry_out

    engine = app.engine()
    if not new:
        err("The file has no client rows; nothing to add.")
        if output is not OutputFormat.TABLE:
            # Scripts still get a document to parse: `[]`, or the CSV header.
            from pbclients.operation import Action, Batch, NoDetail

            render_batch(Batch(Action.ADD, [], NoDetail()), output, "")
        return
    plan = roster.preview(engine, new)
    wording: Wording[AddDetail] = Wording(
        question=_add_question, summary=_add_summary, progress_label="Adding"
    )
    carry_out(
        app, engine, plan, roster.apply, wording,
        output=output, yes=yes, dry_run=dry_run, reason=reason, stdin_used=stdin_used,
        max_changes=max_changes,
    )  # fmt: skip


def _import_update(
    app: AppState,
    file: str,
    encoding: str,
    yes: bool,
    dry_run: bool,
    reason: str | None,
    output: OutputFormat,
    max_changes: MaxChanges | None,
) -> None:
    """`import --update`, streamed as a plain import is: the rows are set aside, sorted
    into adds and edits, then confirmed, applied and reported a chunk at a time."""
    from contextlib import closing

    from pbclients import importing
    from pbclients.cli.common import confirm
    from pbclients.cli.progress import progress
    from pbclients.cli.run import check_cap, warn_cap
    from pbclients.csvinput import iter_import_csv

    source = source_name(file)
    with _opened(file) as stream:
        intake = importing.Intake.of(
            iter_import_csv(stream, source=source, encoding=encoding), source
        )
    with intake:
        engine = app.engine()
        with closing(importing.check_update(engine, intake)) as plan:
            if dry_run or not plan.changing:
                _render_update(plan.results(), plan, None, dry_run, output)
                if dry_run:
                    warn_cap(engine, plan.changing, max_changes)
                return
            check_cap(engine, plan.changing, max_changes)
            confirm(_update_question(plan), yes=yes, stdin_used=file == "-")
            with progress(plan.changing, "Importing") as on_progress:
                done = importing.update(engine, plan, app.change(reason), on_progress=on_progress)
            _render_update(done.results(), plan, done.batch_id, False, output)


def _update_question(plan: UpdatePlan) -> str:
    new_programs = "".join(
        f"\n  Creates the program '{visible(name)}'." for name in plan.new_programs
    )
    return (
        f"Add {plural(plan.adding, 'client')} (they get portal access) and update "
        f"{plural(plan.updating, 'client')}? Clients are not notified.{new_programs}"
    )


def _render_update(
    results: Iterable[ChangeResult],
    plan: UpdatePlan,
    batch_id: str | None,
    dry_run: bool,
    output: OutputFormat,
) -> None:
    counts = (
        f"{plural(plan.adding, 'client')} added, {plan.updating} updated, "
        f"{plan.unchanged} unchanged"
    )
    if dry_run:
        summary = f"Dry run: {counts}; nothing was written."
    elif batch_id:
        summary = f"{counts} (batch {batch_id})."
    else:
        summary = "Nothing to import: every row is unchanged."
    records = (result.as_record(batch_id) for result in results)
    fields = ["reference", "id", "email", "before", "after", "outcome", "note", "batch"]
    render_rows(records, plan.intake.count, fields, output, summary)


def _add_question(plan: Plan[AddDetail]) -> str:
    return _adding_question(plan.changing, plan.detail.seats, plan.detail.new_programs)


def _adding_question(count: int, seats: PlanUsage, new_programs: Sequence[str]) -> str:
    used = "" if seats.limit is None else f" ({seats.counted} of {seats.limit} plan seats used)"
    creates = "".join(f"\n  Creates the program '{visible(name)}'." for name in new_programs)
    return f"Add {plural(count, 'client')}{used}? They get portal access.{creates}"


def _add_summary(outcome: Plan[AddDetail] | Batch[AddDetail], dry_run: bool) -> str:
    batch_id = None if dry_run else getattr(outcome, "batch_id", None)
    return _added_summary(outcome.changing, outcome.detail.new_programs, batch_id, dry_run)


def _added_summary(
    count: int, new_programs: Sequence[str], batch_id: str | None, dry_run: bool
) -> str:
    if dry_run:
        summary = f"Dry run: would add {plural(count, 'client')}; nothing was written."
        created = "Would create"
    else:
        summary = f"Added {plural(count, 'client')} (batch {batch_id})."
        created = "Created"
    for name in new_programs:
        summary += f" {created} the program '{visible(name)}'."
    return summary


def list_clients(
    ctx: typer.Context,
    status: Annotated[
        StatusFilter | None,
        typer.Option(
            "--status",
            help="active, deactivated, deleted or all [default: active and deactivated]",
            show_default=False,
        ),
    ] = None,
    search: Annotated[
        str | None, typer.Option("--search", help="Part of a name or e-mail.")
    ] = None,
    program: Annotated[
        str | None, typer.Option("--program", help="Only clients enrolled in this program.")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            metavar="N",
            parser=whole_number(1, MAX_ROWS),
            help="At most this many clients.",
        ),
    ] = None,
    inactive_for: Annotated[
        str | None,
        typer.Option(
            "--inactive-for",
            metavar="AGE",
            help="Only clients with no activity for this long (180d, 12w, 6m, 1y); "
            "an upcoming appointment counts as activity.",
            show_default=False,
        ),
    ] = None,
    held: Annotated[
        bool,
        typer.Option(
            "--held",
            help="Only clients under legal hold (of every status unless --status is given).",
        ),
    ] = False,
    output: Annotated[
        ListFormat, typer.Option("--format", "-f", help="table, json, csv or ids (one ID a line).")
    ] = ListFormat.TABLE,
) -> None:
    """List clients, filtered; json/csv/ids return every match unless --limit.

    Example:
        pbclients list --status deactivated
        pbclients list --search silva --format json
        pbclients list --program "Spring Reset" --format ids > spring.txt
        pbclients list --inactive-for 6m --status active --format csv
        pbclients list --held
    """
    with reporting(ctx) as app:
        from contextlib import closing

        from pbclients import activity, clock, roster_view
        from pbclients.activity import Inactivity

        if status is None and held:
            # A held client pending purge is the one a hold is most often about.
            statuses = tuple(Status)
        elif status is None:
            statuses = roster_view.LISTED_BY_DEFAULT
        elif status is StatusFilter.ALL:
            statuses = tuple(Status)
        else:
            statuses = (Status(status.value),)
        now = clock.now()
        inactive = (
            None
            if inactive_for is None
            else Inactivity(activity.inactive_cutoff(inactive_for, now), now)
        )
        where = roster_view.ClientFilter(
            statuses, search, program, limit, inactive, held_at=now if held else None
        )
        database = app.database()
        if output is ListFormat.TABLE:
            _list_table(database, where, now)
            return
        # Closed as soon as the output stops, a closed pipe included: the read ends there.
        if output is ListFormat.IDS:
            # One statement, ids only: no programs, holds or activity to look up.
            with closing(roster_view.iter_ids(database, where)) as ids:
                for client_id in ids:
                    sys.stdout.write(f"{client_id}\n")
            return
        with closing(roster_view.iter_clients(database, where, now)) as clients:
            if output is ListFormat.JSON:
                print_json_array(c.as_record(now) for c in clients)
            else:
                print_csv((c.as_record(now) for c in clients), LIST_FIELDS)


def _list_table(database: Database, where: ClientFilter, now: datetime) -> None:
    from contextlib import closing
    from dataclasses import replace

    from rich.table import Table

    from pbclients import roster_view
    from pbclients.clock import iso

    capped = where.limit is None and sys.stdout.isatty()
    shown_where = replace(where, limit=TABLE_ROWS) if capped else where
    deleted = Status.DELETED in where.statuses
    table = Table(box=None, pad_edge=False)
    # The e-mail identifies the client: wrap names and programs rather than cut it.
    for name in ("id", "name", "email", "status", "programs", "since"):
        table.add_column(name, no_wrap=name in ("id", "email", "status", "since"))
    if deleted:
        table.add_column("purge in")
    shown = 0
    with closing(roster_view.iter_clients(database, shown_where)) as clients:
        for client in clients:
            since = client.deleted_at or client.deactivated_at or client.created_at
            row = [
                literal(client.id),
                literal(f"{client.first_name} {client.last_name}"),
                literal(client.email),
                literal(client.status),
                literal(", ".join(client.programs)),
                literal((iso(since) or "")[:10]),
            ]
            if deleted:
                days = client.days_until_purge(now)
                row.append(literal("" if days is None else f"{days} d"))
            table.add_row(*row)
            shown += 1
    out = console()
    if shown == 0:
        out.print("No clients match.")
        return
    out.print(table)
    if capped:
        total = roster_view.count_clients(database, where)
        if total > shown:
            out.print(f"... and {total - shown} more; use --limit N or --format csv to see them.")


def show(
    ctx: typer.Context,
    client: Annotated[
        str, typer.Argument(help="Client ID or e-mail.", autocompletion=client_references)
    ],
    output: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="table, json or csv.")
    ] = OutputFormat.TABLE,
) -> None:
    """Show one client: state, what they can do in it, appointments, programs, records.

    Example:
        pbclients show 12
        pbclients show ana@example.org --format json
    """
    with reporting(ctx) as app:
        from pbclients import clock, roster_view

        now = clock.now()
        detail = roster_view.client_detail(app.database(), client, now)
        if output is OutputFormat.JSON:
            print_json(detail.as_record(now))
        elif output is OutputFormat.CSV:
            print_csv([detail.summary.as_record(now)], LIST_FIELDS)
        else:
            _show_table(detail, now)


def _show_table(detail: ClientDetail, now: datetime) -> None:
    out = console()
    for part in show_renderables(detail, now):
        out.print(part)


def show_renderables(detail: ClientDetail, now: datetime) -> list[RenderableType]:
    """`show`'s table view as rich renderables, in order (`browse` shows the same file)."""
    from rich.table import Table

    from pbclients.clock import iso

    parts: list[RenderableType] = []
    s = detail.summary
    heading = literal(f"{s.first_name} {s.last_name}", style="bold")
    parts.append(heading + plain(f"  (client {s.id})"))
    parts.append(plain(f"e-mail: {visible(s.email)}    phone: {visible(detail.phone or '-')}"))
    state_line = f"status: {visible(s.status)}"
    if s.deactivated_at and s.status == Status.DEACTIVATED:
        state_line += f" since {iso(s.deactivated_at)}"
    if s.deleted_at:
        state_line += (
            f" on {iso(s.deleted_at)}; purged after {iso(s.purge_after)} "
            f"({s.days_until_purge(now)} days left)"
        )
    parts.append(plain(state_line))
    if s.hold is not None:
        until = f" until {iso(s.hold.until)}" if s.hold.until else " until released"
        # The reason and actor are free text: literal, with control characters made visible.
        parts.append(
            plain(f"legal hold: held since {iso(s.hold.held_at)}{until} by ")
            + literal(s.hold.actor)
            + plain("; reason: ")
            + literal(s.hold.reason)
        )
        parts.append(plain("It cannot be deleted or purged until the hold is released."))
    parts.append(plain(f"last activity: {(iso(s.last_activity) or '-')[:10]}"))

    capabilities = Table(
        title="What this client can do now", box=None, pad_edge=False, title_justify="left"
    )
    capabilities.add_column("capability")
    capabilities.add_column("allowed")
    for capability in Capability:
        allowed = detail.capabilities[capability.value]
        capabilities.add_row(literal(DESCRIPTIONS[capability]), literal("yes" if allowed else "no"))
    parts.append(capabilities)

    blocked = [a for a in detail.appointments if a.telehealth and not a.client_can_join]
    if blocked:
        parts.append(
            plain(
                f"Warning: {plural(len(blocked), 'upcoming telehealth session')} on the "
                "calendar that this client cannot join while deactivated."
            )
        )
    if detail.appointments:
        appointments = Table(
            title="Upcoming appointments", box=None, pad_edge=False, title_justify="left"
        )
        for name in ("when", "title", "minutes", "telehealth"):
            appointments.add_column(name)
        for a in detail.appointments:
            appointments.add_row(
                literal(iso(a.starts_at)),
                literal(a.title),
                literal(a.duration_minutes),
                literal("yes" if a.telehealth else "no"),
            )
        parts.append(appointments)
    if detail.enrolments:
        enrolments = Table(
            title="Programs and packages", box=None, pad_edge=False, title_justify="left"
        )
        for name in ("program", "kind", "progress", "state"):
            enrolments.add_column(name)
        for e in detail.enrolments:
            enrolments.add_row(
                literal(e.program),
                literal(e.kind),
                literal(f"{e.progress_percent}%"),
                literal(e.state),
            )
        parts.append(enrolments)
    parts.append(
        plain(
            "records: "
            + ", ".join(
                f"{visible(kind.replace('_', ' '))} {n}" for kind, n in detail.counts.items()
            )
        )
    )
    return parts
