"""Options shared by several commands, defined once."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Literal

import typer

from pbclients import settings
from pbclients.cli.complete import client_references
from pbclients.errors import UsageError
from pbclients.limits import MaxChanges, parse_max_changes

# `--limit N`: more than any roster holds, and well inside SQL's 64-bit LIMIT.
MAX_ROWS = 1_000_000_000


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
    typer.Argument(
        help="Client IDs or e-mails (case-insensitive).",
        show_default=False,
        autocompletion=client_references,
    ),
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
InactiveForOption = Annotated[
    str | None,
    typer.Option(
        "--inactive-for",
        metavar="AGE",
        help="Clients with no activity for this long (180d, 12w, 6m, 1y); an upcoming "
        "appointment counts as activity. Alone, or with --program.",
        rich_help_panel=SELECTION,
        show_default=False,
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
AtOption = Annotated[
    str | None,
    typer.Option(
        "--at",
        metavar="WHEN",
        help="Do it later instead: a date (midnight in the practice's time zone, see "
        "`plan --set-timezone`), a date-time, or +30d; `pbclients run-due` carries it out.",
        show_default=False,
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


def _max_changes(text: str | MaxChanges) -> MaxChanges:
    if isinstance(text, MaxChanges):  # a default, already parsed
        return text
    try:
        return parse_max_changes(text)
    except UsageError as error:
        # Click's own usage error: exit 2 with the command's usage line.
        raise typer.BadParameter(str(error).removeprefix("--max-changes ")) from None


MaxChangesOption = Annotated[
    MaxChanges | None,
    typer.Option(
        "--max-changes",
        metavar="N|P%",
        parser=_max_changes,
        help="Change nothing and exit 7 if more than N clients (or P% of the clients "
        "counted toward the plan) would change.",
        show_default=False,
    ),
]


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """A typer `parser` for a count or a number of days: the digits 0-9, from low to high.

    Typer's own int accepts `1_000`, and a number that later overflows a SQL parameter or
    a date (`--set-retention 99999999999` would break every deletion after it); this
    refuses it up front as a usage error (exit 2) naming the range.
    """

    def parse(text: str | int) -> int:
        number = settings.whole_number(str(text), low, high)
        if number is None:
            # !r: the value is echoed with any control character escaped.
            raise typer.BadParameter(
                f"{str(text)!r} is not a whole number from {low:,} to {high:,} (digits 0-9)."
            )
        return number

    return parse


def parse_plan_limit(text: str, option: str = "--set-limit") -> int | Literal["unlimited"]:
    """`N` (0 to settings.MAX_PLAN_LIMIT) or `none`/`unlimited`."""
    if text.strip().lower() in ("none", "unlimited"):
        return "unlimited"
    if not (text.strip().isascii() and text.strip().isdigit()):
        raise UsageError(f"{option} {text!r} is not a number; give a whole number or none.")
    number = settings.whole_number(text, 0, settings.MAX_PLAN_LIMIT)
    if number is None:
        raise UsageError(
            f"{option} {text!r} is more than the largest plan limit, "
            f"{settings.MAX_PLAN_LIMIT:,}; give a smaller number, or none for unlimited."
        )
    return number
