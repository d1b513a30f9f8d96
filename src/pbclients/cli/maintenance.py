"""purge and undo: remove what retention allows, revert an earlier batch."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from pbclients.cli.common import confirm, reporting
from pbclients.cli.options import (
    DryRunOption,
    MaxChangesOption,
    OutputFormat,
    ReasonOption,
    YesOption,
)
from pbclients.cli.output import plural, render_batch
from pbclients.cli.render import visible

if TYPE_CHECKING:
    from pbclients.operation import Batch, Plan
    from pbclients.purge import PurgeDetail
    from pbclients.undo import UndoDetail

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
    max_changes: MaxChangesOption = None,
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
        # in cron, prefer `pbclients run-due`: schedules, policy, then this purge
    """
    from pbclients.cli.run import without_gc

    with reporting(ctx) as app, without_gc():
        from pbclients import clock
        from pbclients import purge as purging
        from pbclients.cli.run import check_cap, warn_cap

        engine = app.engine()
        if dry_run:
            plan = purging.preview(engine, clock.now())
            count = plural(plan.changing, "client")
            held = (
                f" {plural(plan.detail.held, 'client')} past retention kept under legal hold."
                if plan.detail.held
                else ""
            )
            render_batch(
                plan,
                output or OutputFormat.TABLE,
                f"Dry run: would purge {count} permanently; nothing was written.{held}",
            )
            warn_cap(engine, plan.changing, max_changes)
            return

        def ask(plan: Plan[PurgeDetail]) -> None:
            # Under the purge's lock, before the question: over the cap, nothing is purged.
            check_cap(engine, plan.changing, max_changes)
            confirm(
                f"Permanently purge {plural(plan.changing, 'client')} and all of their "
                "records? This is irreversible: only their deletion backups can bring "
                "them back.",
                yes=yes,
            )

        # The domain confirms through `ask` under its lock and writes the purge log line.
        batch = purging.purge(engine, app.change(None), confirm=ask, on_log_error=_log_error)
        if output is not None or sys.stdout.isatty():
            if batch.changing:
                summary = (
                    f"Purged {plural(batch.changing, 'client')} permanently (batch "
                    f"{batch.batch_id}); the audit trail keeps their ids and backup checksums."
                )
            elif batch.detail.held:
                summary = "Nothing to purge."
            else:
                summary = "Nothing to purge: no deleted client is past its retention period."
            if batch.detail.held:
                summary += (
                    f" {plural(batch.detail.held, 'client')} past retention kept under legal "
                    "hold (see `pbclients list --held`)."
                )
            render_batch(batch, output or OutputFormat.TABLE, summary)


def _log_error(error: OSError) -> None:
    from pbclients.cli.common import err

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
    max_changes: MaxChangesOption = None,
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
        from pbclients.cli.run import Wording, carry_out

        engine = app.engine()
        plan = undoing.preview(engine, batch_id)
        wording: Wording[UndoDetail] = Wording(
            question=_undo_question, summary=_undo_summary, progress_label="Reverting"
        )
        carry_out(
            app, engine, plan, undoing.apply, wording,
            output=output, yes=yes, dry_run=dry_run, reason=reason, max_changes=max_changes,
        )  # fmt: skip


_CONSEQUENCE = {
    "delete": "They come back as they were before the deletion and take plan seats.",
    "deactivate": "They get portal access back; they are not notified.",
    "activate": "They lose portal access again; they are not notified.",
    "edit": "Their e-mail, names and phone go back to the values before the edit.",
    "enrol": "They leave the program again; their progress in it is kept for undo.",
    "unenrol": "They are enrolled again with the progress they had.",
}


def _undo_question(plan: Plan[UndoDetail]) -> str:
    detail = plan.detail
    # The batch id as typed, and the action as recorded: both made visible.
    return (
        f"Undo {visible(detail.action)} batch {visible(detail.undoes)}: revert "
        f"{plural(plan.changing, 'client')}{_skipped_text(plan)}?\n  {_CONSEQUENCE[detail.action]}"
    )


def _undo_summary(outcome: Plan[UndoDetail] | Batch[UndoDetail], dry_run: bool) -> str:
    action, shown_id = visible(outcome.detail.action), visible(outcome.detail.undoes)
    rest = _skipped_text(outcome)
    batch_id = getattr(outcome, "batch_id", None)
    if dry_run:
        return (
            f"Dry run: would revert {plural(outcome.changing, 'client')} of {action} "
            f"batch {shown_id}{rest}; nothing was written."
        )
    if batch_id:
        return (
            f"Reverted {plural(outcome.changing, 'client')} of {action} batch {shown_id}{rest}. "
            f"Batch {batch_id}."
        )
    return f"Nothing to undo in batch {shown_id}{rest}."


def _skipped_text(outcome: Plan[UndoDetail] | Batch[UndoDetail]) -> str:
    """Which clients are left alone and why, e.g. " (skipped: 2 changed since, 5 purged)"."""
    from pbclients.results import Outcome

    skipped = [r for r in outcome.results if r.outcome is Outcome.SKIPPED]
    if not skipped:
        return ""
    shown = ", ".join(f"{r.client_id} {r.note}" for r in skipped[:10])
    more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
    return f" (skipped, left alone: {shown}{more})"
