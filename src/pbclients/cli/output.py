"""Rendering results: rich tables for people, JSON and CSV for scripts, from one place."""

from __future__ import annotations

import csv
import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from pbclients.cli.options import OutputFormat
from pbclients.cli.render import csv_cell, json_text, literal, plain

if TYPE_CHECKING:
    from rich.console import Console

    from pbclients.operation import Batch, Plan

Records = Callable[[Any], tuple[list[dict[str, Any]], list[str]]]

# A terminal table longer than this helps nobody; scripts use --format json|csv|ids.
TABLE_ROWS = 50

BATCH_FIELDS = ["reference", "id", "email", "before", "after", "outcome", "batch"]


def console() -> Console:
    """stdout for people. Markup and emoji codes are off: whatever is printed is literal,
    and data goes through `render` (control characters made visible) first."""
    return _console_class()(highlight=False, markup=False, emoji=False)


@functools.cache
def _console_class() -> type[Console]:
    from rich.console import Console

    class PipeConsole(Console):
        """rich ends the process with exit 1 when stdout's reader goes away; we end it
        quietly with 0, like every other write to a closed pipe (`stdout_closed`)."""

        def on_broken_pipe(self) -> None:
            self.quiet = True
            stdout_closed()

    return PipeConsole


def stdout_closed() -> NoReturn:
    """The reader of our output went away (`pbclients list | head -1`): end quietly.

    As the Python docs advise for SIGPIPE, point stdout at /dev/null so that the
    interpreter's last flush of what is still buffered does not fail again on the way
    out. Exit 0: whatever the command did is done, the reader only chose to stop reading.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # no real file descriptor behind stdout (an in-process test runner)
    raise typer.Exit(0)


def say(line: str, *, soft_wrap: bool = False) -> None:
    """One sentence the tool composed (with data already passed through `visible`)."""
    console().print(plain(line), soft_wrap=soft_wrap)


def print_json(data: Any) -> None:
    """One JSON object, indented for people reading it."""
    sys.stdout.write(json_text(json.dumps(data, indent=2, ensure_ascii=False)) + "\n")


def print_json_array(records: Iterable[Any]) -> None:
    """A JSON array, one record a line, streamed as the records come.

    `list` may return a million clients: neither the records nor the text are held
    whole, and writes are batched because stdout may be unbuffered.
    """
    print_json_lines(map(json.JSONEncoder(ensure_ascii=False).encode, records))


def print_json_lines(encoded: Iterable[str]) -> None:
    """`print_json_array` of records already encoded (on one line each, without indent)."""
    pending = ["["]
    separator = "\n  "
    for record in encoded:
        pending.append(separator + record)
        separator = ",\n  "
        if len(pending) >= 2048:
            sys.stdout.write(json_text("".join(pending)))
            pending.clear()
    pending.append("\n]\n" if separator == ",\n  " else "]\n")
    sys.stdout.write(json_text("".join(pending)))


def print_csv(records: Iterable[dict[str, Any]], fields: Sequence[str]) -> None:
    """CSV with a header row; cells a spreadsheet would run as formulas are neutralised."""
    writer = csv.DictWriter(
        sys.stdout, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for record in records:
        writer.writerow({key: csv_cell(record.get(key)) for key in fields})


def render_batch(
    outcome: Plan[Any] | Batch[Any],
    output: OutputFormat,
    summary: str,
    records: Records | None = None,
) -> None:
    """One result per selected client, then (for people) what it means.

    `summary` is composed by the command; any data in it has been through `visible`.
    `records` gives an operation's own records and fields instead of the results'.
    """
    batch_id = getattr(outcome, "batch_id", None)  # a plan has none yet
    if records is not None:
        rows, fields = records(outcome)
    elif output is OutputFormat.JSON:
        print_json_lines(result.as_json(batch_id) for result in outcome.results)
        return
    else:
        rows = [result.as_record(batch_id) for result in outcome.results]
        fields = list(BATCH_FIELDS)
        if any(result.backup for result in outcome.results):
            fields += ["backup", "sha256"]
    render_rows(rows, len(rows), fields, output, summary)


def render_rows(
    rows: Iterable[dict[str, Any]],
    total: int,
    fields: Sequence[str],
    output: OutputFormat,
    summary: str,
) -> None:
    """`render_batch` for records read as they are written (`import` of a whole file):
    `total` of them, of which a table shows the first TABLE_ROWS."""
    if output is OutputFormat.JSON:
        print_json_array(rows)
        return
    if output is OutputFormat.CSV:
        print_csv(rows, fields)
        return
    from itertools import islice

    from rich.table import Table

    out = console()
    first = list(islice(rows, TABLE_ROWS))
    if first:
        table = Table(box=None, pad_edge=False)
        shown = [f for f in fields if f not in ("batch", "sha256")]
        for name in shown:
            table.add_column(name, overflow="fold")
        for row in first:
            table.add_row(*(literal(_shown(row.get(name))) for name in shown))
        out.print(table)
        if total > TABLE_ROWS:
            out.print(f"... and {total - TABLE_ROWS} more (use --format csv to see all).")
    out.print(plain(summary))


def _shown(value: Any) -> Any:
    """A table cell: a list or mapping (an edit's fields) as one line of text."""
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return ", ".join(f"{key}={'' if item is None else item}" for key, item in value.items())
    return value


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
