"""The one way the CLI carries out a changing operation (see pbclients.operation).

A command builds its request, calls the operation's `preview`, and hands the
plan to `carry_out`, which does the rest the same way for every operation:
a dry run renders the plan and stops (saying so when it exceeds
`--max-changes`); a plan larger than `--max-changes` stops with exit 7 before
anything is asked or changed; otherwise the admin confirms (the
question holds the count and the operation's consequence lines, and large
deletions ask for the count to be typed), `apply` runs with a progress bar,
and the batch is rendered with its summary and undo hint.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from pbclients.cli.common import confirm, err
from pbclients.cli.output import render_batch
from pbclients.cli.progress import progress

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from pbclients.cli.common import AppState
    from pbclients.cli.options import OutputFormat
    from pbclients.cli.output import Records
    from pbclients.limits import MaxChanges
    from pbclients.operation import Batch, Change, Plan, ProgressCallback

D = TypeVar("D")


class Apply(Protocol[D]):
    def __call__(
        self,
        engine: Engine,
        plan: Plan[D],
        change: Change,
        *,
        on_progress: ProgressCallback | None = None,
    ) -> Batch[D]: ...


@dataclass(frozen=True)
class Wording(Generic[D]):
    """How the CLI speaks of one operation.

    `question`: the confirmation, its first line the count, then the consequences.
    `summary`: one paragraph after the results, for a plan (dry run, or nothing to
    do) or a batch. `typed`: more than one client must be confirmed by typing the
    count. `records`: the operation's own JSON/CSV records, when results are not
    enough (edit shows its fields). `asks`: False for an operation that changes
    nothing the admin must confirm (export writes backups only); `question` is
    then never asked.
    """

    question: Callable[[Plan[D]], str]
    summary: Callable[[Plan[D] | Batch[D], bool], str]
    typed: bool = False
    progress_label: str = "Applying"
    records: Records | None = None
    asks: bool = True


@contextmanager
def without_gc() -> Iterator[None]:
    """Run a bulk command with CPython's cyclic garbage collector paused.

    A bulk command holds a few hundred thousand small containers at once (references,
    rows, results, audit rows), none of them in a reference cycle, and the collector
    walks all of them again every time they grow by a quarter: 15-25% of the CPU of
    deactivating 100,000 clients. Reference counting still frees everything at once;
    the few cycles made meanwhile are collected when the block ends.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def carry_out(
    app: AppState,
    engine: Engine,
    plan: Plan[D],
    apply: Apply[D],
    wording: Wording[D],
    *,
    output: OutputFormat,
    yes: bool,
    dry_run: bool,
    reason: str | None,
    stdin_used: bool = False,
    max_changes: MaxChanges | None = None,
) -> Batch[D] | None:
    """Dry run, or confirm, apply and render; returns the batch when one was applied."""
    if dry_run or plan.changing == 0:
        render_batch(plan, output, wording.summary(plan, dry_run), wording.records)
        if dry_run:
            warn_cap(engine, plan.changing, max_changes)
        return None
    # Before the question: a run over its cap changes nothing, so there is nothing to ask.
    check_cap(engine, plan.changing, max_changes)
    typed = plan.changing if wording.typed and plan.changing > 1 else None
    if wording.asks:
        confirm(wording.question(plan), yes=yes, stdin_used=stdin_used, typed=typed)
    with progress(plan.changing, wording.progress_label) as on_progress:
        batch = apply(engine, plan, app.change(reason), on_progress=on_progress)
    render_batch(batch, output, wording.summary(batch, False), wording.records)
    return batch


def _counted(engine: Engine, max_changes: MaxChanges) -> int:
    """The clients a percentage cap is taken of (read only when the cap is one)."""
    if not max_changes.needs_counted:
        return 0
    from pbclients import plan as seats

    return seats.current_usage(engine).counted


def check_cap(engine: Engine, changing: int, max_changes: MaxChanges | None) -> None:
    """Refuse (exit 7) a run that would change more clients than `--max-changes`."""
    if max_changes is not None and changing:
        max_changes.check(changing, _counted(engine, max_changes))


def warn_cap(engine: Engine, changing: int, max_changes: MaxChanges | None) -> None:
    """A dry run still shows the whole plan (exit 0) and says the real run would stop."""
    if max_changes is None or not changing:
        return
    from pbclients.limits import exceeded_message

    limit = max_changes.limit(_counted(engine, max_changes))
    if changing > limit:
        # stderr: --format json/csv keep stdout a document to parse.
        err(f"Note: a real run {exceeded_message(changing, limit)} It would exit 7.")
