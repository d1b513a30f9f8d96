"""export, delete, restore: verified backups, deletion that frees seats, and the way back."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pbclients.cli.access import build_selection
from pbclients.cli.common import AppState, reporting
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
from pbclients.cli.output import plural, print_json, say
from pbclients.cli.render import visible
from pbclients.cli.store import IdentityOption
from pbclients.errors import UsageError

if TYPE_CHECKING:
    from datetime import datetime

    from pbclients.cli.run import Wording
    from pbclients.deletion import DeleteDetail
    from pbclients.exporting import ExportDetail
    from pbclients.operation import Batch, Plan
    from pbclients.restore import RestoreDetail

BackupDirOption = Annotated[
    Path | None,
    typer.Option(
        "--backup-dir",
        metavar="FOLDER",
        help="Where backups are written (default: backups/ in the user data folder; "
        "see `pbclients paths`).",
        show_default=False,
    ),
]


class ExportFormat(StrEnum):
    """`export --format`: the result formats, and fhir, which writes FHIR files instead."""

    TABLE = "table"
    JSON = "json"
    CSV = "csv"
    FHIR = "fhir"


def _folder(backup_dir: Path | None) -> Path:
    from pbclients.paths import default_backup_dir

    return backup_dir if backup_dir is not None else default_backup_dir()


def export(
    ctx: typer.Context,
    clients: ClientsArgument = None,
    csv_file: CsvOption = None,
    column: ColumnOption = None,
    ids_from: IdsFromOption = None,
    program: ProgramOption = None,
    skip_unknown: SkipUnknownOption = False,
    encoding: EncodingOption = "utf-8",
    backup_dir: BackupDirOption = None,
    verify: Annotated[
        Path | None,
        typer.Option(
            "--verify",
            metavar="FILE",
            help="Re-check an existing backup (every checksum and record count) instead.",
            show_default=False,
        ),
    ] = None,
    identity: IdentityOption = None,
    output: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            "-f",
            help="table, json or csv: how results are shown; fhir: write the records as "
            "FHIR R4B Bulk Data NDJSON into --out DIR instead of backups.",
            case_sensitive=False,
        ),
    ] = ExportFormat.TABLE,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="With --format fhir: a new or empty folder for <Type>.ndjson and manifest.json.",
            show_default=False,
        ),
    ] = None,
    every: Annotated[
        bool,
        typer.Option(
            "--all",
            help="With --format fhir: every active and deactivated client (not deleted ones).",
        ),
    ] = False,
) -> None:
    """Write a verified backup of each client, one file per client; nothing else changes.

    Each backup is a ZIP archive with the complete record (profile, records,
    documents, payments, audit history) and a manifest of SHA-256 checksums,
    read back and checked after it is written. File names carry the client ID
    and the time, never a name or e-mail. Existing files are never overwritten.
    With a backup key (`pbclients plan --set-backup-key-file`) each file is
    encrypted with age (.pbbackup.zip.age) and checked by decrypting it back.

    With --format fhir --out DIR the same records are written as HL7 FHIR R4B
    (Bulk Data NDJSON, one <Type>.ndjson file per resource type, and
    manifest.json, which is printed); see the README section "FHIR".

    Example:
        pbclients export 12 ana@example.org
        pbclients export --program "Spring Reset" --backup-dir /mnt/backups --format json
        pbclients export --verify ~/backups/client-000012-20261126T090000Z.pbbackup.zip
        pbclients export --format fhir --all --out ~/fhir-2026-11
    """
    with reporting(ctx) as app:
        if (out is not None or every) and output is not ExportFormat.FHIR:
            raise UsageError("--out and --all write FHIR; add --format fhir, or drop them.")
        if output is ExportFormat.FHIR:
            if out is None:
                raise UsageError(
                    "--format fhir writes files; give a new or empty folder: --out DIR."
                )
            if verify is not None or backup_dir is not None:
                raise UsageError("--format fhir takes no --verify or --backup-dir; drop them.")
            _export_fhir(
                app, out, every, clients, csv_file, column, ids_from, program, skip_unknown,
                encoding,
            )  # fmt: skip
            return
        if verify is not None:
            if clients or csv_file or ids_from or program:
                raise UsageError("--verify FILE checks a backup; give no clients with it.")
            _verify(app, verify, OutputFormat(output.value), identity)
            return
        if identity:
            raise UsageError(
                "--identity opens an encrypted backup for --verify; new backups are "
                "encrypted with the practice's key (`pbclients plan --set-backup-key-file`)."
            )
        from pbclients import exporting
        from pbclients.cli.run import carry_out

        selection, stdin_used = build_selection(
            clients, csv_file, column, ids_from, program, skip_unknown, encoding
        )
        engine = app.engine()
        plan = exporting.preview(engine, exporting.Export(selection, _folder(backup_dir)))
        carry_out(
            app, engine, plan, exporting.apply, export_wording(),
            output=OutputFormat(output.value), yes=True, dry_run=False, reason=None,
            stdin_used=stdin_used,
        )  # fmt: skip


def export_wording() -> Wording[ExportDetail]:
    """How export speaks (also `browse`'s): it asks nothing, a backup changes no client."""
    from pbclients.cli.run import Wording

    return Wording(
        question=lambda plan: f"Back up {plural(plan.changing, 'client')}?",
        summary=lambda outcome, _dry_run: _export_summary(outcome),
        progress_label="Writing backups",
        asks=False,  # a backup changes nothing in the roster
    )


def _export_fhir(
    app: AppState,
    out: Path,
    every: bool,
    clients: list[str] | None,
    csv_file: str | None,
    column: str | None,
    ids_from: str | None,
    program: str | None,
    skip_unknown: bool,
    encoding: str,
) -> None:
    """`export --format fhir`: the manifest on stdout, a one-line summary on stderr."""
    from pbclients.cli.common import err
    from pbclients.cli.progress import progress
    from pbclients.fhir import export as fhir_export

    selection = None
    if every:
        if clients or csv_file or ids_from or program:
            raise UsageError("--all selects every client; give no other selection with it.")
    else:
        selection, _ = build_selection(
            clients, csv_file, column, ids_from, program, skip_unknown, encoding
        )
    engine = app.engine()
    request = fhir_export.FhirExport(selection, out, "pbclients export --format fhir")
    plan = fhir_export.preview(engine, request)
    if plan.changing == 0:
        err("No client to export; nothing was written.")
        return
    with progress(plan.changing, "Writing FHIR") as on_progress:
        batch = fhir_export.apply(engine, plan, app.change(None), on_progress=on_progress)
    print_json(batch.detail.manifest)
    exported = sum(1 for r in batch.results if r.outcome.value == "exported")
    resources = sum(int(f["count"]) for f in batch.detail.manifest["output"])
    err(
        f"Wrote {plural(resources, 'FHIR resource')} of {plural(exported, 'client')} "
        f"to {visible(batch.detail.folder)}."
    )


def _export_summary(outcome: Plan[ExportDetail] | Batch[ExportDetail]) -> str:
    from pbclients.results import Outcome

    exported = outcome.count(Outcome.EXPORTED)
    if not exported:
        return "Nothing to export."
    return f"Wrote and verified {plural(exported, 'backup')} in {visible(outcome.detail.folder)}."


def _verify(app: AppState, path: Path, output: OutputFormat, identity: list[Path] | None) -> None:
    from pbclients.backup.keys import practice_opener
    from pbclients.backup.reader import verify_backup

    # The database is opened only if an encrypted backup needs the practice's key.
    manifest = verify_backup(path, opener=practice_opener(app.engine, tuple(identity or ())))
    record = manifest.as_record()
    if output is OutputFormat.JSON:
        print_json(record)
        return
    if output is OutputFormat.CSV:
        from pbclients.cli.output import print_csv

        fields = [k for k in record if k not in ("counts", "fhir")]
        print_csv([record], fields)
        return
    # Everything but the checksum comes from inside the archive, which is untrusted.
    counts = ", ".join(
        f"{visible(kind.replace('_', ' '))} {visible(n)}"
        for kind, n in manifest.counts.items()
        if n
    )
    say(
        f"Backup {visible(manifest.path)} is intact: client {visible(manifest.client_id)}, "
        f"written {visible(manifest.created_at)} by pbclients "
        f"{visible(manifest.pbclients_version)} (format {visible(manifest.format_version)}); "
        "every checksum matches."
    )
    say(f"records: {counts or 'none'}")
    say(f"sha256: {visible(manifest.sha256)}")


def delete(
    ctx: typer.Context,
    clients: ClientsArgument = None,
    csv_file: CsvOption = None,
    column: ColumnOption = None,
    ids_from: IdsFromOption = None,
    program: ProgramOption = None,
    deactivated_before: Annotated[
        str | None,
        typer.Option(
            "--deactivated-before",
            metavar="DATE|Nd",
            help="Clients deactivated before this date (or N days ago); with other selection "
            "options, only those of them.",
            rich_help_panel="Selection",
            show_default=False,
        ),
    ] = None,
    inactive_for: InactiveForOption = None,
    skip_unknown: SkipUnknownOption = False,
    encoding: EncodingOption = "utf-8",
    backup_dir: BackupDirOption = None,
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    reason: ReasonOption = None,
    output: FormatOption = OutputFormat.TABLE,
    max_changes: MaxChangesOption = None,
    at: AtOption = None,
) -> None:
    """Back up, verify, then delete clients: they vanish from the roster and free their seats.

    A complete backup of every selected client is written and read back first;
    if any backup fails, no client is deleted (exit 4). Deleted clients are
    purged permanently after the retention period (30 days unless changed with
    `pbclients plan --set-retention`); until then `pbclients undo BATCH` brings
    them back, and afterwards `pbclients restore BACKUP`. Deleting more than one
    client asks you to type how many.

    Example:
        pbclients delete 12 --reason "asked to be forgotten"
        pbclients delete --deactivated-before 365d --dry-run
        pbclients delete --inactive-for 2y --max-changes 5% --dry-run
        pbclients delete --csv leavers.csv --backup-dir /mnt/backups --yes --format json
        pbclients delete --program Reset --at 2027-01-31 --reason "program ended"
    """
    with reporting(ctx) as app:
        from pbclients import clock, deletion
        from pbclients.cli.run import carry_out
        from pbclients.cli.timing import carry_out_later, due_time

        cutoff = (
            clock.parse_moment(deactivated_before, "--deactivated-before")
            if deactivated_before
            else None
        )
        selection, stdin_used = build_selection(
            clients, csv_file, column, ids_from, program, skip_unknown, encoding, inactive_for
        )
        engine = app.engine()
        due = due_time(engine, at) if at is not None else None
        folder = _folder(backup_dir)
        plan = deletion.preview(engine, deletion.Deletion(selection, folder, cutoff))
        if due is not None:
            carry_out_later(
                app, engine, plan, delete_wording(folder), due,
                backup_dir=plan.detail.backup_dir,
                output=output, yes=yes, dry_run=dry_run, reason=reason, stdin_used=stdin_used,
                max_changes=max_changes,
            )  # fmt: skip
            return
        carry_out(
            app, engine, plan, deletion.apply, delete_wording(folder),
            output=output, yes=yes, dry_run=dry_run, reason=reason, stdin_used=stdin_used,
            max_changes=max_changes,
        )  # fmt: skip


def delete_wording(folder: Path) -> Wording[DeleteDetail]:
    """How delete speaks (also `browse`'s); more than one client is confirmed by typing."""
    from pbclients.cli.run import Wording

    return Wording(
        # The folder as the admin gave it; the summary names the absolute path written to.
        question=lambda plan: _delete_question(plan, folder),
        summary=_delete_summary,
        typed=True,
        progress_label="Writing backups",
    )


def _day(moment: datetime) -> str:
    """The UTC date of a moment, as ISO-8601."""
    from pbclients import clock

    return clock.as_utc(moment).date().isoformat()


def _delete_question(plan: Plan[DeleteDetail], folder: Path) -> str:
    detail = plan.detail
    lines = [
        f"A verified backup of each is written to {visible(folder)} first.",
        f"Their data is purged permanently after {detail.retention_days} days "
        f"(on {_day(detail.purge_after)}); until then `pbclients undo` brings them back.",
        f"This frees {plural(detail.seats_freed, 'plan seat')}.",
    ]
    consequences = plan.consequences
    if consequences and consequences.upcoming_telehealth:
        sessions = consequences.upcoming_telehealth
        lines.append(
            f"{plural(sessions, 'upcoming telehealth session')} "
            f"{'leaves' if sessions == 1 else 'leave'} the calendar with them."
        )
    if consequences and consequences.active_payment_plans:
        plans = consequences.active_payment_plans
        lines.append(
            f"{plural(plans, 'active payment plan')} {'is' if plans == 1 else 'are'} theirs; "
            f"cancel {'it' if plans == 1 else 'them'} in billing if they should stop charging."
        )
    return f"Delete {plural(plan.changing, 'client')}?\n  " + "\n  ".join(lines)


def _delete_summary(outcome: Plan[DeleteDetail] | Batch[DeleteDetail], dry_run: bool) -> str:
    from pbclients.results import Outcome

    parts = []
    unchanged = outcome.count(Outcome.UNCHANGED)
    skipped = outcome.count(Outcome.SKIPPED)
    if unchanged:
        parts.append(f"{unchanged} already deleted")
    if skipped:
        parts.append(f"{skipped} skipped")
    rest = f" ({', '.join(parts)})" if parts else ""
    detail = outcome.detail
    when = f"after {detail.retention_days} days (on {_day(detail.purge_after)})"
    batch_id = getattr(outcome, "batch_id", None)  # a plan has none
    if dry_run:
        return (
            f"Dry run: would back up and delete {plural(outcome.changing, 'client')}{rest}, "
            f"freeing {plural(outcome.changing, 'plan seat')}; they would be purged {when}. "
            "Nothing was written."
        )
    if batch_id:
        return (
            f"Deleted {plural(outcome.changing, 'client')}{rest}; verified backups are in "
            f"{visible(detail.backup_dir)}. {plural(detail.seats_freed, 'plan seat')} freed. "
            f"They are purged permanently {when}; until then "
            f"`pbclients undo {batch_id}` brings them back."
        )
    return f"Nothing to delete{rest}."


def restore(
    ctx: typer.Context,
    backup: Annotated[
        Path, typer.Argument(metavar="BACKUP", help="A backup file (.zip, or .zip.age).")
    ],
    identity: IdentityOption = None,
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    reason: ReasonOption = None,
    output: FormatOption = OutputFormat.TABLE,
    max_changes: MaxChangesOption = None,
) -> None:
    """Bring a client back from a backup, as deactivated, with every record.

    Works whether the client was purged already or is still pending purge. The
    backup is verified first: a damaged one is refused and nothing is written.
    Refused when its e-mail now belongs to another client (exit 3) or when the
    plan has no free seat (exit 6). Reactivate with `pbclients activate`. An
    encrypted backup is opened with --identity, else the practice's key; exit 4
    when none opens it.

    Example:
        pbclients restore ~/backups/client-000012-20261126T090000Z.pbbackup.zip --dry-run
        pbclients restore client-000012-20261126T090000Z.pbbackup.zip --yes
        pbclients restore client-000012-20261126T090000Z.pbbackup.zip.age -i ~/backup-key.txt
    """
    with reporting(ctx) as app:
        from pbclients import restore as restoring
        from pbclients.cli.run import Wording, carry_out

        engine = app.engine()
        plan = restoring.preview(engine, restoring.Restore(backup, tuple(identity or ())))
        wording: Wording[RestoreDetail] = Wording(
            question=_restore_question, summary=lambda outcome, _dry_run: _restore_summary(outcome)
        )
        carry_out(
            app, engine, plan, restoring.apply, wording,
            output=output, yes=yes, dry_run=dry_run, reason=reason, max_changes=max_changes,
        )  # fmt: skip


def _restore_question(plan: Plan[RestoreDetail]) -> str:
    result = plan.results[0]
    counts = plan.detail.counts
    records = sum(n for kind, n in counts.items() if kind != "audit_events")
    return (
        f"Restore client {result.client_id or '(new id)'} ({visible(result.email)}) with "
        f"{plural(records, 'record')} from a backup of {visible(plan.detail.created_at)}?\n"
        "  It comes back deactivated and takes a plan seat; the client is not notified."
    )


def _restore_summary(outcome: Plan[RestoreDetail] | Batch[RestoreDetail]) -> str:
    from pbclients.results import Outcome

    result = outcome.results[0]
    if result.outcome is Outcome.PLANNED:
        return (
            f"Dry run: would restore client {result.client_id or '(new id)'} as deactivated "
            f"({visible(result.before)} before); nothing was written."
        )
    if result.outcome is Outcome.UNCHANGED:
        return f"Nothing to restore: {visible(result.note)}."
    moved = (
        f" ({visible(result.note)}, so it was given id {result.client_id})" if result.note else ""
    )
    batch_id = getattr(outcome, "batch_id", None)
    return (
        f"Restored client {result.client_id} as deactivated{moved}. "
        f"Batch {batch_id}; reactivate it with `pbclients activate {result.client_id}`."
    )
