"""Options shared by several commands, defined once."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


class ListFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"
    IDS = "ids"


class StatusFilter(StrEnum):
    ACTIVE = "active"
    DEACTIVATED = "deactivated"
    DELETED = "deleted"
    ALL = "all"


SELECTION = "Selection"

ClientsArgument = Annotated[
    list[str] | None,
    typer.Argument(help="Client IDs or e-mails (case-insensitive).", show_default=False),
]
CsvOption = Annotated[
    str | None,
    typer.Option(
        "--csv",
        metavar="FILE|-",
        help="CSV with a header row; the ID or e-mail column is found by name.",
        rich_help_panel=SELECTION,
    ),
]
ColumnOption = Annotated[
    str | None,
    typer.Option(
        "--column",
        metavar="NAME",
        help="CSV column holding the references.",
        rich_help_panel=SELECTION,
    ),
]
IdsFromOption = Annotated[
    str | None,
    typer.Option(
        "--ids-from",
        metavar="FILE|-",
        help="One ID or e-mail per line; blank lines and # comments are skipped.",
        rich_help_panel=SELECTION,
    ),
]
ProgramOption = Annotated[
    str | None,
    typer.Option(
        "--program",
        metavar="NAME",
        help="Every client enrolled in this program.",
        rich_help_panel=SELECTION,
    ),
]
SkipUnknownOption = Annotated[
    bool,
    typer.Option(
        "--skip-unknown",
        help="Change the known clients and report unknown ones as skipped.",
        rich_help_panel=SELECTION,
    ),
]
EncodingOption = Annotated[
    str,
    typer.Option(
        "--encoding",
        metavar="NAME",
        help="Text encoding of the input file (e.g. cp1252).",
        rich_help_panel=SELECTION,
    ),
]
YesOption = Annotated[
    bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (for scripts).")
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", "-n", help="Show exactly what would change; write nothing.")
]
ReasonOption = Annotated[
    str | None, typer.Option("--reason", metavar="TEXT", help="Why, recorded in the audit trail.")
]
FormatOption = Annotated[
    OutputFormat,
    typer.Option("--format", "-f", help="Output for people (table) or scripts (json, csv)."),
]
