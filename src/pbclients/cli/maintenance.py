"""purge and undo: remove what retention allows, revert an earlier batch."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from pbclients.cli.common import confirm, reporting
from pbclients.cli.options import DryRunOption, OutputFormat, ReasonOption, YesOption
from pbclients.cli.output import plural, render_batch
from pbclients.cli.render import visible
from pbclients.errors import ExitCode, PbClientsError

if TYPE_CHECKING:
    from pbclients.purge import RunLog
    from pbclients.results import Batch

QuietFormatOption = Annotated[
    OutputFormat | None,
    typer.Option(
        "--format",
        "-f",
        help=(
            "Output for people (table) or scripts (json, csv). Without it, a successful "
            "purge prints nothing unless run on a terminal."
        ),
        show_default=False,
    ),
]


def purge(
    ctx: typer.Context,
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    output: QuietFormatOption = None,
) -> None:
    """Permanently remove every deleted client whose retention period has passed.

    A client deleted on day D with a 30-day retention goes from D+30 on, with all
    of their records; the audit trail keeps only the id, the time and the backup's
    SHA-256. This cannot be undone: the deletion's backup is the only way back.
    Safe to run twice, and never overlaps another purge (that one exits 5). Prints
    nothing on success unless run on a terminal; each run adds one line to the
    purge log (see `pbclients paths`).

    Example:
        pbclients purge --dry-run
        pbclients purge --yes
        # crontab: every night at 03:15
        15 3 * * * pbclients --db /srv/practice.db purge --yes
    """
    with reporting(ctx) as app:
        from pbclients import clock
        from pbclients import purge as purging

        if dry_run:
            preview = purging.preview_purge(app.engine(), clock.now())
            count = plural(preview.changing, "client")
            render_batch(
                preview,
                output or OutputFormat.TABLE,
                f"Dry run: would purge {count} permanently; nothing was written.",
            )
            return
        run = purging.RunLog(app.db)
        exit_code: int = ExitCode.ERROR
        try:
            change = app.change(None)
            run.start = change.at

            def ask(preview: Batch) -> None:
                confirm(
                    f"Permanently purge {plural(preview.changing, 'client')} and all of their "
                    "records? This is irreversible: only their deletion backups can bring "
                    "them back.",
                    yes=yes,
                )

            engine = app.engine()
            batch = purging.purge(engine, change, confirm=ask)
            run.purged = batch.changing
            run.chunks = int(batch.extra.get("chunks", 0))
            for key in ("wal", "vacuum"):
                if key in batch.extra:
                    run.notes[key] = str(batch.extra[key])
            exit_code = ExitCode.OK
        except PbClientsError as error:
            exit_code = error.exit_code
            if isinstance(error, purging.PurgeStopped):
                # Chunks committed before the lock was lost stay purged: log them.
                run.purged, run.chunks = error.purged, error.chunks
                run.notes["stopped"] = "lock-lost"
            raise
        except KeyboardInterrupt:
            exit_code = 130
            raise
        finally:
            _write_log(run, exit_code)
        if output is not None or sys.stdout.isatty():
            if batch.changing:
                summary = (
                    f"Purged {plural(batch.changing, 'client')} permanently (batch "
                    f"{batch.batch_id}); the audit trail keeps their ids and backup checksums."
                )
            else:
                summary = "Nothing to purge: no deleted client is past its retention period."
            render_batch(batch, output or OutputFormat.TABLE, summary)


def _write_log(run: RunLog, exit_code: int) -> None:
    from pbclients.cli.common import err

    try:
        run.write(exit_code)
    except OSError as error:
        err(f"Error: could not append to the purge log ({error}); check the log folder.")


def undo(
    ctx: typer.Context,
    batch_id: Annotated[
        str, typer.Argument(metavar="BATCH", help="Batch id, as printed by the change and `audit`.")
    ],
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    reason: ReasonOption = None,
    output: Annotated[
        OutputFormat,
        typer.Option("--format", "-f", help="Output for people (table) or scripts (json, csv)."),
    ] = OutputFormat.TABLE,
) -> None:
    """Revert one earlier activate, deactivate or delete batch from the audit trail.

    Each client returns to the state it had before the batch, unless it has
    changed since (reported as skipped and left alone). A deletion can be undone
    only while the clients are pending purge; they take their plan seats back.

    Example:
        pbclients audit --action deactivate --since 1d
        pbclients undo 3f2a9c81d0e4 --dry-run
        pbclients undo 3f2a9c81d0e4 --reason "wrong program" --yes
    """
    with reporting(ctx) as app:
        from pbclients import undo as undoing

        engine = app.engine()
        preview = undoing.preview_undo(engine, batch_id)
        shown_id = visible(batch_id)  # as typed: echoed in the summary and the question
        action = visible(preview.extra["action"])
        rest = _skipped_text(preview)
        if dry_run or preview.changing == 0:
            summary = (
                f"Dry run: would revert {plural(preview.changing, 'client')} of {action} "
                f"batch {shown_id}{rest}; nothing was written."
                if dry_run
                else f"Nothing to undo in batch {shown_id}{rest}."
            )
            render_batch(preview, output, summary)
            return
        consequence = {
            "delete": "They come back as they were before the deletion and take plan seats.",
            "deactivate": "They get portal access back; they are not notified.",
            "activate": "They lose portal access again; they are not notified.",
        }[preview.extra["action"]]
        confirm(
            f"Undo {action} batch {shown_id}: revert {plural(preview.changing, 'client')}{rest}?"
            f"\n  {consequence}",
            yes=yes,
        )
        batch = undoing.undo_batch(engine, batch_id, app.change(reason))
        rest = _skipped_text(batch)
        if batch.batch_id:
            summary = (
                f"Reverted {plural(batch.changing, 'client')} of {action} batch {shown_id}{rest}. "
                f"Batch {batch.batch_id}."
            )
        else:
            summary = f"Nothing to undo in batch {shown_id}{rest}."
        render_batch(batch, output, summary)


def _skipped_text(batch: Batch) -> str:
    """Which clients are left alone and why, e.g. " (skipped: 2 changed since, 5 purged)"."""
    from pbclients.results import Outcome

    skipped = [r for r in batch.results if r.outcome is Outcome.SKIPPED]
    if not skipped:
        return ""
    shown = ", ".join(f"{r.client_id} {r.note}" for r in skipped[:10])
    more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
    return f" (skipped, left alone: {shown}{more})"
