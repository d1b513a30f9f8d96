"""Time in the roster: `--at` schedules, `schedule`, `policy`, `run-due` and `due`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pbclients.cli.backups import BackupDirOption
from pbclients.cli.common import confirm, err, reporting
from pbclients.cli.options import (
    DryRunOption,
    FormatOption,
    MaxChangesOption,
    OutputFormat,
    ReasonOption,
    YesOption,
    whole_number,
)
from pbclients.cli.output import console, plural, print_csv, print_json, print_json_array
from pbclients.cli.render import literal

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy import Engine

    from pbclients.cli.common import AppState
    from pbclients.cli.run import Wording
    from pbclients.due import DueRun, Outlook
    from pbclients.limits import MaxChanges
    from pbclients.operation import Batch, Plan
    from pbclients.schedules import ScheduleDetail, ScheduleInfo

# Schedule ids are INTEGER columns, as client ids are.
_MAX_ID = 2**31 - 1
ScheduleIdArgument = Annotated[
    int, typer.Argument(metavar="ID", parser=whole_number(1, _MAX_ID), help="Schedule id.")
]


def local_time(moment: datetime, time_zone: str) -> str:
    """A moment as the practice reads it: `2026-12-31 00:00 Europe/Lisbon`."""
    from zoneinfo import ZoneInfo

    return f"{moment.astimezone(ZoneInfo(time_zone)):%Y-%m-%d %H:%M} {time_zone}"


def due_time(engine: Engine, at: str) -> tuple[datetime, str]:
    """`--at WHEN` as a UTC moment (exit 2 if unreadable, 3 if past), and the time zone."""
    from pbclients import clock, schedules

    time_zone = schedules.practice_time_zone(engine)
    now = clock.now()
    due_at = schedules.parse_when(at, now, time_zone)
    schedules.check_future(due_at, now)
    return due_at, time_zone


def carry_out_later(
    app: AppState,
    engine: Engine,
    command: Plan[Any],
    wording: Wording[Any],
    due: tuple[datetime, str],
    *,
    backup_dir: Path | None = None,
    output: OutputFormat,
    yes: bool,
    dry_run: bool,
    reason: str | None,
    stdin_used: bool = False,
    max_changes: MaxChanges | None = None,
) -> None:
    """`carry_out` for `--at`: confirm and store a schedule of the command's plan."""
    from pbclients import schedules
    from pbclients.cli.run import carry_out

    plan = schedules.preview(command, due[0], due[1], backup_dir)
    carry_out(
        app, engine, plan, schedules.apply, _later(wording),
        output=output, yes=yes, dry_run=dry_run, reason=reason, stdin_used=stdin_used,
        max_changes=max_changes,
    )  # fmt: skip


def _later(wording: Wording[Any]) -> Wording[ScheduleDetail]:
    from pbclients.cli.run import Wording

    def question(plan: Plan[ScheduleDetail]) -> str:
        detail = plan.detail
        when = local_time(detail.due_at, detail.time_zone)
        return (
            f"Schedule for {when}: {wording.question(detail.command)}\n"
            "  Nothing changes before then; `pbclients run-due` carries it out, and "
            "`pbclients schedule cancel ID` stops it."
        )

    def summary(outcome: Plan[ScheduleDetail] | Batch[ScheduleDetail], dry_run: bool) -> str:
        detail = outcome.detail
        when = local_time(detail.due_at, detail.time_zone)
        verb = detail.action.value
        count = plural(outcome.count(_scheduled(outcome)), "client")
        if dry_run:
            return f"Dry run: would schedule to {verb} {count} on {when}; nothing was written."
        if detail.schedule_id is None:
            return wording.summary(detail.command, False)
        number = detail.schedule_id
        return (
            f"Schedule {number}: {verb} {count} on {when}. See it with "
            f"`pbclients schedule show {number}`, cancel it with "
            f"`pbclients schedule cancel {number}`."
        )

    return Wording(
        question=question,
        summary=summary,
        typed=wording.typed,
        progress_label="Scheduling",
    )


def _scheduled(outcome: Plan[Any] | Batch[Any]) -> Any:
    from pbclients.results import Outcome

    return Outcome.SCHEDULED if getattr(outcome, "batch_id", None) else Outcome.PLANNED


# --- schedule -----------------------------------------------------------------------------------

schedule_app = typer.Typer(no_args_is_help=False, invoke_without_command=True)

_SCHEDULE_FIELDS = [
    "id", "action", "due_at", "clients", "state", "created_at", "actor", "reason", "batch",
    "finished_at",
]  # fmt: skip


@schedule_app.callback(invoke_without_command=True)
def schedule(
    ctx: typer.Context,
    everything: Annotated[
        bool, typer.Option("--all", help="Also the schedules carried out or cancelled.")
    ] = False,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """List the pending schedules: changes decided with --at, oldest due first.

    Example:
        pbclients deactivate --program Reset --at 2026-12-31 --reason "program ends"
        pbclients schedule
        pbclients schedule show 3
        pbclients schedule cancel 3
    """
    if ctx.invoked_subcommand is not None:
        return
    with reporting(ctx) as app:
        from pbclients import schedules

        engine = app.engine()
        found = schedules.pending(engine, everything=everything)
        time_zone = schedules.practice_time_zone(engine)
        records = [info.as_record() for info in found]
        if output is OutputFormat.JSON:
            print_json_array(records)
            return
        if output is OutputFormat.CSV:
            print_csv(records, _SCHEDULE_FIELDS)
            return
        out = console()
        if not found:
            out.print("No pending schedules." if not everything else "No schedules.")
            return
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        for name in ("id", "action", "due", "clients", "state", "by", "reason"):
            table.add_column(name, overflow="fold")
        for info in found:
            cells = (
                info.id, info.action.value, local_time(info.due_at, time_zone),
                len(info.client_ids), info.state, info.actor, info.reason,
            )  # fmt: skip
            table.add_row(*(literal(cell) for cell in cells))
        out.print(table)


@schedule_app.command("show")
def schedule_show(
    ctx: typer.Context, schedule_id: ScheduleIdArgument, output: FormatOption = OutputFormat.TABLE
) -> None:
    """Show one schedule: what, when, who decided it and why, and its clients.

    Example:
        pbclients schedule show 3 --format json
    """
    with reporting(ctx) as app:
        from pbclients import schedules

        engine = app.engine()
        info = schedules.find(engine, schedule_id)
        record = info.as_record(with_clients=True)
        if output is OutputFormat.JSON:
            print_json(record)
            return
        if output is OutputFormat.CSV:
            record["client_ids"] = " ".join(map(str, info.client_ids))
            print_csv([record], list(record))
            return
        time_zone = schedules.practice_time_zone(engine)
        _show(info, time_zone)


def _show(info: ScheduleInfo, time_zone: str) -> None:
    from pbclients import clock

    out = console()
    rows: list[tuple[str, object]] = [
        ("schedule", info.id),
        ("action", info.action.value),
        ("due", f"{local_time(info.due_at, time_zone)} ({clock.iso(info.due_at)})"),
        ("state", info.state),
        ("created", clock.iso(info.created_at)),
        ("by", info.actor),
        ("reason", info.reason or "-"),
        ("clients", " ".join(map(str, info.client_ids)) or "-"),
    ]
    if info.backup_dir:
        rows.append(("backups to", info.backup_dir))
    if info.batch_id:
        rows.append(("batch", info.batch_id))
    if info.finished_at:
        rows.append(("finished", clock.iso(info.finished_at)))
    for label, value in rows:
        line = literal(f"{label + ':':<11} ")
        line.append_text(literal(value))
        out.print(line)


@schedule_app.command("cancel")
def schedule_cancel(
    ctx: typer.Context,
    schedule_id: ScheduleIdArgument,
    yes: YesOption = False,
    reason: ReasonOption = None,
) -> None:
    """Cancel a pending schedule: none of its clients will be changed by it.

    Example:
        pbclients schedule cancel 3 --reason "program extended"
    """
    with reporting(ctx) as app:
        from pbclients import schedules

        engine = app.engine()
        info = schedules.find(engine, schedule_id)
        time_zone = schedules.practice_time_zone(engine)
        if info.state == schedules.PENDING:
            when = local_time(info.due_at, time_zone)
            confirm(
                f"Cancel schedule {info.id} ({info.action.value} "
                f"{plural(len(info.client_ids), 'client')} on {when})?",
                yes=yes,
            )
        cancelled, batch_id = schedules.cancel(engine, schedule_id, app.change(reason))
        console().print(
            f"Cancelled schedule {cancelled.id}: its "
            f"{plural(len(cancelled.client_ids), 'client')} will not be changed by it "
            f"(audit batch {batch_id})."
        )


# --- policy -------------------------------------------------------------------------------------

policy_app = typer.Typer(no_args_is_help=False, invoke_without_command=True)


def _policy_lines(record: dict[str, Any]) -> list[str]:
    def rule(value: str | None, verb: str) -> str:
        if value is None:
            return "off"
        return f"{verb} clients inactive for {value}"

    return [
        f"deactivate-after: {rule(record['deactivate_after'], 'deactivate active')}",
        f"delete-after:     {rule(record['delete_after'], 'delete deactivated')}",
        f"max-changes:      {record['max_changes']} per run (over it, the policy changes "
        "nobody and run-due exits 7)",
        f"never selected:   clients with any of: {'; '.join(record['exemptions'])}",
    ]


def _print_policy(record: dict[str, Any], output: OutputFormat) -> None:
    if output is OutputFormat.JSON:
        print_json(record)
    elif output is OutputFormat.CSV:
        print_csv([{**record, "exemptions": "; ".join(record["exemptions"])}], list(record))
    else:
        out = console()
        for line in _policy_lines(record):
            out.print(literal(line))


@policy_app.callback(invoke_without_command=True)
def policy(ctx: typer.Context, output: FormatOption = OutputFormat.TABLE) -> None:
    """Show the automation policy: which inactive clients `run-due` changes by itself.

    Example:
        pbclients policy
        pbclients policy set --deactivate-after 180d --delete-after 2y --max-changes 20
        pbclients policy set --deactivate-after off
    """
    if ctx.invoked_subcommand is not None:
        return
    with reporting(ctx) as app:
        from pbclients import automation

        _print_policy(automation.current(app.engine()).as_record(), output)


@policy_app.command("set")
def policy_set(
    ctx: typer.Context,
    deactivate_after: Annotated[
        str | None,
        typer.Option(
            "--deactivate-after",
            metavar="AGE|off",
            help="Deactivate active clients inactive this long (180d, 26w, 6m, 1y), or off.",
            show_default=False,
        ),
    ] = None,
    delete_after: Annotated[
        str | None,
        typer.Option(
            "--delete-after",
            metavar="AGE|off",
            help="Delete (backup first) deactivated clients inactive this long, or off.",
            show_default=False,
        ),
    ] = None,
    max_changes: MaxChangesOption = None,
    yes: YesOption = False,
    reason: ReasonOption = None,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Change the automation policy that `run-due` applies (audited).

    Clients with an upcoming appointment or an active payment plan are never
    selected. The cap (default 5% of counted clients) bounds each run: over it, the
    policy changes nobody that run and `run-due` exits 7.

    Example:
        pbclients policy set --deactivate-after 180d --max-changes 5%
        pbclients policy set --delete-after 2y
        pbclients policy set --deactivate-after off --delete-after off
    """
    with reporting(ctx) as app:
        from pbclients import automation
        from pbclients.errors import UsageError

        deactivate = _rule(deactivate_after, "--deactivate-after")
        delete = _rule(delete_after, "--delete-after")
        if deactivate is None and delete is None and max_changes is None:
            raise UsageError(
                "Give at least one of --deactivate-after, --delete-after or --max-changes; "
                "`pbclients policy` shows the current policy."
            )
        engine = app.engine()
        changes = [
            f"{name} {value}"
            for name, value in (
                ("deactivate-after", deactivate),
                ("delete-after", delete),
                ("max-changes", max_changes),
            )
            if value is not None
        ]
        confirm(
            f"Set the automation policy: {', '.join(changes)}? The next `pbclients run-due` "
            "applies it.",
            yes=yes,
        )
        changed = automation.configure(
            engine, app.change(reason), deactivate_after=deactivate, delete_after=delete,
            max_changes=max_changes,
        )  # fmt: skip
        _print_policy(changed.as_record(), output)


def _rule(text: str | None, option: str) -> Any:
    if text is None:
        return None
    if text.strip().lower() == "off":
        return "off"
    from pbclients.activity import parse_age

    return parse_age(text, option)


# --- run-due and due ----------------------------------------------------------------------------


def run_due(
    ctx: typer.Context,
    backup_dir: BackupDirOption = None,
    dry_run: DryRunOption = False,
    output: Annotated[
        OutputFormat | None,
        typer.Option(
            "--format",
            "-f",
            help="Output for people (table) or scripts (json, csv). Without it, a successful "
            "run prints nothing unless run on a terminal.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Carry out everything due now: schedules, the automation policy, purge, then prune.

    The one cron entry a practice needs. Each due schedule is applied like its
    command typed now (a deletion is backed up and verified first); then the
    policy (`pbclients policy`) deactivates and deletes inactive clients up to
    its cap; then deleted clients past retention are purged, and the backups of
    purged clients past the record retention are pruned (`pbclients backups
    prune`; from --backup-dir, default the backups folder). Never overlaps
    another run or purge (that one exits 5). Silent on success unless on a
    terminal; each run adds one line to the run log (see `pbclients paths`).
    A step that fails does not stop the others; the exit code is the first
    failure's: 4 a backup failed (the schedule stays pending), 7 the policy
    would exceed its cap (it changed nobody).

    Example:
        pbclients run-due --dry-run
        # crontab: every night at 03:15
        15 3 * * * pbclients --db /srv/practice.db run-due
    """
    with reporting(ctx) as app:
        from pbclients import clock
        from pbclients import due as dueing

        engine = app.engine()
        folder = _backup_folder(backup_dir)
        if dry_run:
            now = clock.now()
            outlook = dueing.upcoming(engine, now, now)
            _print_outlook(outlook, output or OutputFormat.TABLE, dry_run=True)
            return
        try:
            run = dueing.run_due(engine, app.actor, folder, on_log_error=_log_error)
        except dueing.DueRunFailed as failed:
            if output is not None or sys.stdout.isatty():
                _print_run(failed.run, output or OutputFormat.TABLE)
            for step, error in failed.run.failures:
                err(f"Error in {step}: {error}")
            raise typer.Exit(failed.exit_code) from None
        if output is not None or sys.stdout.isatty():
            _print_run(run, output or OutputFormat.TABLE)


def _backup_folder(backup_dir: Path | None) -> Path:
    from pbclients.paths import default_backup_dir

    return (backup_dir or default_backup_dir()).expanduser().absolute()


def _log_error(error: OSError) -> None:
    err(f"Error: could not append to the run log ({error}); check the log folder.")


def _run_record(run: DueRun) -> dict[str, Any]:
    policy = run.policy
    return {
        "schedules": [
            {
                "id": outcome.schedule.id,
                "action": outcome.schedule.action.value,
                "changed": outcome.changed,
                "skipped": [{"id": r.client_id, "note": r.note} for r in outcome.skipped],
                "batch": outcome.batch.batch_id if outcome.batch else None,
            }
            for outcome in run.schedules
        ],
        "policy": None
        if policy is None
        else {
            "deactivated": policy.deactivated.changing if policy.deactivated else 0,
            "deleted": policy.deleted.changing if policy.deleted else 0,
            "deactivate_batch": policy.deactivated.batch_id if policy.deactivated else None,
            "delete_batch": policy.deleted.batch_id if policy.deleted else None,
            "candidates": policy.candidates.total,
            "cap": policy.limit,
            "skipped": policy.skipped,
        },
        "purged": run.purge.changing if run.purge else 0,
        "purge_batch": run.purge.batch_id if run.purge else None,
        "pruned": run.prune.changing if run.prune else 0,
        "prune_batch": run.prune.batch_id if run.prune else None,
        "failures": [{"step": step, "error": str(error)} for step, error in run.failures],
        "exit_code": int(run.exit_code),
    }


def _print_run(run: DueRun, output: OutputFormat) -> None:
    record = _run_record(run)
    if output is OutputFormat.JSON:
        print_json(record)
        return
    if output is OutputFormat.CSV:
        rows = [
            {"step": f"schedule {s['id']}", "changed": s["changed"], "skipped": len(s["skipped"]),
             "batch": s["batch"]}
            for s in record["schedules"]
        ]  # fmt: skip
        policy = record["policy"] or {}
        rows.append(
            {"step": "policy", "changed": policy.get("deactivated", 0) + policy.get("deleted", 0),
             "skipped": policy.get("candidates", 0) if policy.get("skipped") == "over-cap" else 0,
             "batch": policy.get("deactivate_batch")}
        )  # fmt: skip
        rows.append({"step": "purge", "changed": record["purged"], "skipped": 0,
                     "batch": record["purge_batch"]})  # fmt: skip
        rows.append({"step": "prune", "changed": record["pruned"], "skipped": 0,
                     "batch": record["prune_batch"]})  # fmt: skip
        print_csv(rows, ["step", "changed", "skipped", "batch"])
        return
    out = console()
    for outcome in run.schedules:
        line = (
            f"Schedule {outcome.schedule.id}: {outcome.schedule.action.value}d "
            f"{plural(outcome.changed, 'client')}"
        )
        if outcome.skipped:
            notes = ", ".join(f"{r.client_id} {r.note}" for r in outcome.skipped[:10])
            more = f" and {len(outcome.skipped) - 10} more" if len(outcome.skipped) > 10 else ""
            line += f"; skipped {len(outcome.skipped)} ({notes}{more})"
        if outcome.batch and outcome.batch.batch_id:
            line += f"; batch {outcome.batch.batch_id}"
        out.print(literal(line + "."))
    if not run.schedules:
        out.print("Schedules: none due.")
    policy = run.policy
    if policy is None or policy.skipped == "off":
        out.print("Policy: off.")
    elif policy.skipped:
        out.print(
            f"Policy: skipped, {policy.candidates.total} clients selected, over its cap of "
            f"{policy.limit}."
        )
    else:
        done = [
            f"{verb} {plural(batch.changing, 'client')} (batch {batch.batch_id})"
            for verb, batch in (("deleted", policy.deleted), ("deactivated", policy.deactivated))
            if batch is not None and batch.batch_id
        ]
        out.print(f"Policy: {', '.join(done) if done else 'no client to change'}.")
    purged = run.purge.changing if run.purge else 0
    out.print(f"Purge: {plural(purged, 'client')} purged permanently." if purged else
              "Purge: nothing past retention.")  # fmt: skip
    pruned = run.prune.changing if run.prune else 0
    out.print(f"Prune: {plural(pruned, 'backup')} removed at the end of retention." if pruned
              else "Prune: no backup past its retention.")  # fmt: skip


_DUE_FIELDS = ["at", "action", "id", "name", "email", "source"]


def due(
    ctx: typer.Context,
    within: Annotated[
        str,
        typer.Option(
            "--within",
            metavar="AGE",
            help="How far ahead to look (14d, 2w, 1m).",
        ),
    ] = "14d",
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """List what will happen in the coming days: schedules, policy changes, purges.

    Per client, with name and e-mail, so clients can be warned in advance. The
    policy's candidates are those who stay inactive until then.

    Example:
        pbclients due
        pbclients due --within 30d --format csv > warn.csv
    """
    with reporting(ctx) as app:
        from pbclients import clock
        from pbclients import due as dueing
        from pbclients.activity import parse_age

        horizon = parse_age(within, "--within")
        engine = app.engine()
        now = clock.now()
        outlook = dueing.upcoming(engine, now, horizon.after(now))
        _print_outlook(outlook, output, dry_run=False, within=str(horizon))


def _print_outlook(
    outlook: Outlook, output: OutputFormat, *, dry_run: bool, within: str | None = None
) -> None:
    records = [item.as_record() for item in outlook.items]
    if output is OutputFormat.JSON:
        print_json_array(records)
    elif output is OutputFormat.CSV:
        print_csv(records, _DUE_FIELDS)
    else:
        out = console()
        if records:
            from rich.table import Table

            table = Table(box=None, pad_edge=False)
            for name in _DUE_FIELDS:
                table.add_column(name, overflow="fold")
            for record in records:
                table.add_row(*(literal(record[name]) for name in _DUE_FIELDS))
            out.print(table)
        changes = plural(len(records), "client change")
        if dry_run:
            out.print(f"Dry run: {changes} due now; nothing was written.")
        else:
            out.print(f"{changes} due within {within}.")
    if outlook.policy_over_cap:
        err(
            f"Note: the automation policy selects {outlook.policy_total:,} clients, more than "
            f"its cap of {outlook.policy_limit:,}; run-due would skip it and exit 7."
        )
