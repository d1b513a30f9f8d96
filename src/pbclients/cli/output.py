"""Rendering results: rich tables for people, JSON and CSV for scripts, from one place."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pbclients.cli.options import OutputFormat

if TYPE_CHECKING:
    from rich.console import Console

    from pbclients.results import Batch

# A terminal table longer than this helps nobody; scripts use --format json|csv|ids.
TABLE_ROWS = 50

BATCH_FIELDS = ["reference", "id", "email", "before", "after", "outcome", "batch"]


def console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def print_json(data: Any) -> None:
    """One JSON object, indented for people reading it."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def print_json_array(records: Iterable[Any]) -> None:
    """A JSON array, one record a line, streamed as the records come.

    `list` may return a million clients: neither the records nor the text are held
    whole, and writes are batched because stdout may be unbuffered.
    """
    encode = json.JSONEncoder(ensure_ascii=False).encode  # the C encoder: no indent
    pending = ["["]
    separator = "\n  "
    for record in records:
        pending.append(separator + encode(record))
        separator = ",\n  "
        if len(pending) >= 2048:
            sys.stdout.write("".join(pending))
            pending.clear()
    pending.append("\n]\n" if separator == ",\n  " else "]\n")
    sys.stdout.write("".join(pending))


def print_csv(records: Iterable[dict[str, Any]], fields: Sequence[str]) -> None:
    writer = csv.DictWriter(
        sys.stdout, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for record in records:
        writer.writerow({key: _cell(record.get(key)) for key in fields})


def _cell(value: Any) -> Any:
    if isinstance(value, list):
        return ";".join(str(item) for item in value)
    return "" if value is None else value


def render_batch(batch: Batch, output: OutputFormat, summary: str) -> None:
    """One result per selected client, then (for people) what it means."""
    records = [result.as_record(batch.batch_id) for result in batch.results]
    fields = list(BATCH_FIELDS)
    if any(result.backup for result in batch.results):
        fields += ["backup", "sha256"]
    if output is OutputFormat.JSON:
        print_json_array(records)
        return
    if output is OutputFormat.CSV:
        print_csv(records, fields)
        return
    from rich.table import Table

    out = console()
    if records:
        table = Table(box=None, pad_edge=False)
        shown = [f for f in fields if f not in ("batch", "sha256")]
        for name in shown:
            table.add_column(name, overflow="fold")
        for record in records[:TABLE_ROWS]:
            table.add_row(*("" if record[name] is None else str(record[name]) for name in shown))
        out.print(table)
        if len(records) > TABLE_ROWS:
            out.print(f"... and {len(records) - TABLE_ROWS} more (use --format csv to see all).")
    out.print(summary)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
