"""backups: the backup store (list, verify, prune); export, delete and restore are in backups.py."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pbclients.cli.common import reporting
from pbclients.cli.options import (
    DryRunOption,
    FormatOption,
    MaxChangesOption,
    OutputFormat,
    ReasonOption,
    YesOption,
)
from pbclients.cli.output import console, plural, print_csv, print_json_array
from pbclients.cli.render import literal, plain, visible

if TYPE_CHECKING:
    from pbclients.backup_store import Checked, PruneDetail
    from pbclients.operation import Batch, Plan

StoreDirOption = Annotated[
    Path | None,
    typer.Option(
        "--backup-dir",
        metavar="FOLDER",
        help="The folder of backups (default: backups/ in the user data folder; "
        "see `pbclients paths`).",
        show_default=False,
    ),
]

IdentityOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--identity",
        "-i",
        metavar="FILE",
        help="An age identity file that opens encrypted backups (repeatable; default: "
        "PBCLIENTS_BACKUP_KEY_FILE, else the practice's key file).",
        show_default=False,
    ),
]

LIST_FIELDS = ["file", "client_id", "created", "size", "state", "held", "retention_end", "problem"]
VERIFY_FIELDS = ["file", "client_id", "status", "sha256", "problem"]

backups_app = typer.Typer(no_args_is_help=False, invoke_without_command=True)


def _folder(ctx: typer.Context, backup_dir: Path | None) -> Path:
    """The subcommand's --backup-dir, else the group's (`backups --backup-dir X verify`)."""
    from pbclients.paths import default_backup_dir

    if backup_dir is not None:
        return backup_dir
    parent = ctx.parent.params.get("backup_dir") if ctx.parent is not None else None
    return Path(parent) if parent is not None else default_backup_dir()


def _identities(ctx: typer.Context, identity: list[Path] | None) -> tuple[Path, ...]:
    """The subcommand's --identity files, else the group's (`backups -i KEY verify`)."""
    if identity:
        return tuple(identity)
    parent = ctx.parent.params.get("identity") if ctx.parent is not None else None
    return tuple(Path(path) for path in parent or ())


@backups_app.callback(invoke_without_command=True)
def backups(
    ctx: typer.Context,
    backup_dir: StoreDirOption = None,
    identity: IdentityOption = None,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """List the backups in the folder: client, state, size and when retention ends.

    A client's state is exists, deleted (pending purge), held (legal hold) or
    purged; a backup's retention ends its client's last activity (or deletion, if
    later) plus the record retention (`pbclients plan --set-record-retention`).
    Encrypted backups (.age) are opened with --identity, else the practice's key.

    Example:
        pbclients backups
        pbclients backups --backup-dir /mnt/backups --format json
        pbclients backups verify
        pbclients backups prune --dry-run
        pbclients backups keygen ~/.config/pbclients/backup-key.txt
    """
    if ctx.invoked_subcommand is not None:
        return
    with reporting(ctx) as app:
        from pbclients import backup_store, clock
        from pbclients.backup.keys import practice_opener

        folder = _folder(ctx, backup_dir)
        engine = app.engine()
        opener = practice_opener(engine, _identities(ctx, identity))
        stored = backup_store.inventory(engine, folder, clock.now(), opener=opener)
        records = [backup.as_record() for backup in stored]
        if output is OutputFormat.JSON:
            print_json_array(records)
            return
        if output is OutputFormat.CSV:
            print_csv(records, LIST_FIELDS)
            return
        from rich.table import Table

        out = console()
        if not records:
            out.print(plain(f"No backups in {visible(folder)}."))
            return
        table = Table(box=None, pad_edge=False)
        for name in ("file", "client", "created", "size", "state", "retention ends"):
            # The file name is what the admin copies: folded whole, never cut short.
            table.add_column(name, no_wrap=name != "file", overflow="fold")
        for record in records:
            table.add_row(
                literal(record["file"]),
                literal(record["client_id"] if record["client_id"] is not None else "-"),
                literal((record["created"] or "-")[:19]),
                literal(_size(int(record["size"]))),
                literal(record["state"]),
                literal((record["retention_end"] or "-")[:10]),
            )
        out.print(table)
        out.print(plain(f"{plural(len(records), 'backup')} in {visible(folder)}."))


def _size(number: int) -> str:
    if number < 1 << 10:
        return f"{number:,} bytes"
    if number < 1 << 20:
        return f"{number / (1 << 10):,.1f} KiB"
    return f"{number / (1 << 20):,.1f} MiB"


@backups_app.command("verify")
def verify(
    ctx: typer.Context,
    files: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="[FILE]...", help="Backups to check (default: every one).", show_default=False
        ),
    ] = None,
    backup_dir: StoreDirOption = None,
    identity: IdentityOption = None,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Re-check every backup in the folder (or the FILEs): checksums, manifest, records.

    Exits 4 naming each backup that is damaged, truncated or incomplete, or
    encrypted and not opened by the identity; the others are still checked. An
    encrypted backup is decrypted with --identity, else the practice's key. A
    progress bar shows on a terminal.

    Example:
        pbclients backups verify
        pbclients backups verify --backup-dir /mnt/backups --format json
        pbclients backups verify client-000012-20261126T090000Z.pbbackup.zip
        pbclients backups verify --identity ~/backup-key.txt
    """
    with reporting(ctx) as app:
        from pbclients import backup_store
        from pbclients.backup.keys import practice_opener
        from pbclients.cli.progress import progress
        from pbclients.errors import BackupFailed

        folder = _folder(ctx, backup_dir)
        paths = list(files) if files else backup_store.folder_files(folder)
        # The database is opened only if an encrypted backup needs the practice's key.
        opener = practice_opener(app.engine, _identities(ctx, identity))
        with progress(len(paths), "Verifying backups", large=2) as on_progress:
            checked = backup_store.verify(paths, on_progress, opener=opener)
        records = [result.as_record() for result in checked]
        if output is OutputFormat.JSON:
            print_json_array(records)
        elif output is OutputFormat.CSV:
            print_csv(records, VERIFY_FIELDS)
        else:
            _verify_table(checked, folder, bool(files))
        bad = [result for result in checked if not result.intact]
        if bad:
            named = "; ".join(
                f"{visible(result.path.name)} ({visible(result.problem)})" for result in bad[:10]
            )
            more = f"; and {len(bad) - 10} more" if len(bad) > 10 else ""
            raise BackupFailed(
                f"{len(bad)} of {plural(len(checked), 'backup')} failed verification: "
                f"{named}{more}. They cannot be restored; keep another copy of those clients' "
                "records"
            )


def _verify_table(checked: list[Checked], folder: Path, named: bool) -> None:
    out = console()
    if not checked:
        out.print(plain(f"No backups in {visible(folder)} to verify."))
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for name in ("file", "client", "status", "problem"):
        table.add_column(name, no_wrap=name != "problem", overflow="fold")
    for result in checked:
        table.add_row(
            literal(result.path.name),
            literal(result.client_id if result.client_id is not None else "-"),
            literal("ok" if result.intact else "bad"),
            literal(result.problem or ""),
        )
    out.print(table)
    intact = sum(1 for result in checked if result.intact)
    where = "" if named else f" in {visible(folder)}"
    out.print(plain(f"{intact} of {plural(len(checked), 'backup')}{where} intact."))


@backups_app.command("prune")
def prune(
    ctx: typer.Context,
    backup_dir: StoreDirOption = None,
    identity: IdentityOption = None,
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    reason: ReasonOption = None,
    output: FormatOption = OutputFormat.TABLE,
    max_changes: MaxChangesOption = None,
) -> None:
    """Remove backups whose retention has ended, of purged clients not under legal hold.

    Each removed file is recorded in the audit trail (client ID and SHA-256). A
    backup of a client who still exists, is deleted but not purged, or is held is
    never removed, nor one that cannot be read (an encrypted one is read with
    --identity, else the practice's key). Removing more than one asks you to
    type how many.

    Example:
        pbclients backups prune --dry-run
        pbclients backups prune --backup-dir /mnt/backups --yes
    """
    with reporting(ctx) as app:
        from pbclients import backup_store
        from pbclients.cli.run import Wording, carry_out

        engine = app.engine()
        request = backup_store.Prune(_folder(ctx, backup_dir), _identities(ctx, identity))
        plan = backup_store.preview(engine, request)
        wording: Wording[PruneDetail] = Wording(
            question=_prune_question,
            summary=_prune_summary,
            typed=True,
            progress_label="Removing backups",
        )
        carry_out(
            app, engine, plan, backup_store.apply, wording,
            output=output, yes=yes, dry_run=dry_run, reason=reason, max_changes=max_changes,
        )  # fmt: skip


def _prune_question(plan: Plan[PruneDetail]) -> str:
    return (
        f"Remove {plural(plan.changing, 'backup')} from {visible(plan.detail.folder)} "
        "permanently?\n"
        f"  Their clients are purged and {plan.detail.years} years have passed since their "
        "last activity; after this no copy of those records is left here."
    )


def _prune_summary(outcome: Plan[PruneDetail] | Batch[PruneDetail], dry_run: bool) -> str:
    detail = outcome.detail
    kept = ", ".join(f"{number} {why}" for why, number in sorted(detail.kept.items()))
    rest = f" Kept: {kept}." if kept else ""
    count = plural(outcome.changing, "backup")
    batch_id = getattr(outcome, "batch_id", None)
    if dry_run:
        return f"Dry run: would remove {count}; nothing was removed.{rest}"
    if batch_id:
        return f"Removed {count} (batch {batch_id}); the audit trail keeps their checksums.{rest}"
    return f"Nothing to prune.{rest}"


@backups_app.command("keygen")
def keygen(
    ctx: typer.Context,
    path: Annotated[
        Path,
        typer.Argument(metavar="PATH", help="The new identity file (never overwritten)."),
    ],
) -> None:
    """Write a new age identity for encrypted backups (mode 0600) and print its recipient.

    The file is what `age-keygen -o PATH` writes. Keep a copy somewhere safe and
    offline: without it no encrypted backup can be read, ever. Then require
    encryption with `pbclients plan --set-backup-key-file PATH`.

    Example:
        pbclients backups keygen ~/.config/pbclients/backup-key.txt
        pbclients plan --set-backup-key-file ~/.config/pbclients/backup-key.txt
    """
    with reporting(ctx):
        from pbclients.backup.keys import keygen as new_identity
        from pbclients.cli.common import err

        recipient = new_identity(path)
        # The recipient alone on stdout, for scripts (`age -r "$(...)"`); advice on stderr.
        console().print(literal(recipient))
        err(
            f"Wrote a new identity to {visible(path)}. Keep a copy offline: an encrypted "
            "backup cannot be read without it. Use it with `pbclients plan "
            "--set-backup-key-file PATH`."
        )


ledger_app = typer.Typer(no_args_is_help=True)
backups_app.add_typer(ledger_app, name="ledger")


@ledger_app.callback()
def ledger() -> None:
    """The erasure ledger: every purged client (id, time, backup SHA-256), kept outside the
    database so that a restored old copy of the database is purged again.

    Example:
        pbclients backups ledger verify
    """


@ledger_app.command("verify")
def ledger_verify(ctx: typer.Context, output: FormatOption = OutputFormat.TABLE) -> None:
    """Check the erasure ledger's chain: no line edited, removed, reordered or cut off.

    Exits 0 when intact, 1 naming the first line that does not fit.

    Example:
        pbclients backups ledger verify
        pbclients backups ledger verify --format json
    """
    with reporting(ctx) as app:
        from pbclients import ledger as erasures
        from pbclients.cli.common import err
        from pbclients.cli.output import print_json
        from pbclients.errors import ExitCode

        found = erasures.verify(app.engine())
        if output is OutputFormat.JSON:
            print_json(
                {"ledger": str(found.path), "entries": found.checked, "intact": found.intact,
                 "broken_at": found.broken_at, "problem": found.problem}
            )  # fmt: skip
        elif output is OutputFormat.CSV:
            record = {"ledger": str(found.path), "entries": found.checked,
                      "intact": found.intact, "broken_at": found.broken_at,
                      "problem": found.problem}  # fmt: skip
            print_csv([record], list(record))
        elif found.intact:
            console().print(
                plain(f"Erasure ledger intact: {plural(found.checked, 'line')} verified "
                      f"({visible(found.path)}).")
            )  # fmt: skip
        if not found.intact:
            err(
                f"Erasure ledger {visible(found.path)} broken at line {found.broken_at}: "
                f"{visible(found.problem)}."
            )
            raise typer.Exit(ExitCode.ERROR)
