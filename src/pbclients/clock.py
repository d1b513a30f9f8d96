"""The one clock: every timestamp the tool writes or compares comes from here.

`PBCLIENTS_NOW` (ISO-8601) pins it, so tests and a replayed cron run see the
time they ask for.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import overload

from pbclients.errors import UsageError

# The clock must lie where every backup can be written: a ZIP archive stores member times
# as MS-DOS dates, 1980-01-01 to 2107-12-31 (zipfile refuses earlier years, and a later one
# overflows the 16-bit date field), and `delete` and `export` stamp backups with "now".
# Refusing such a clock up front (exit 2) beats a crash halfway through a deletion.
EARLIEST = datetime(1980, 1, 1, tzinfo=UTC)
LATEST = datetime(2107, 12, 31, 23, 59, 59, tzinfo=UTC)

# `Nd` ages (`--since 30d`, `--deactivated-before 365d`): a century covers any real
# question, and keeps `now - N days` far from the calendar's ends.
MAX_AGE_DAYS = 36_500

_EXAMPLE = "2026-11-26T09:00:00Z"


def now() -> datetime:
    pinned = os.environ.get("PBCLIENTS_NOW")
    if not pinned:
        moment = datetime.now(UTC).replace(microsecond=0)
        if not EARLIEST <= moment <= LATEST:
            raise UsageError(
                f"The system clock reads {iso(moment)}, outside the range pbclients supports "
                f"({_range()}); set the clock, or pin one with PBCLIENTS_NOW={_EXAMPLE}."
            )
        return moment
    pinned_moment: datetime | None
    try:
        pinned_moment = as_utc(datetime.fromisoformat(pinned.replace("Z", "+00:00")))
    except ValueError:
        raise UsageError(
            f"PBCLIENTS_NOW={pinned!r} is not an ISO-8601 timestamp; "
            f"use e.g. {_EXAMPLE} or unset it."
        ) from None
    except OverflowError:
        # e.g. 9999-12-31T23:00-05:00, whose UTC time is past the calendar's end.
        pinned_moment = None
    if pinned_moment is None or not EARLIEST <= pinned_moment <= LATEST:
        raise UsageError(
            f"PBCLIENTS_NOW={pinned!r} is outside the range pbclients supports ({_range()}); "
            f"use e.g. {_EXAMPLE} or unset it."
        )
    return pinned_moment


def _range() -> str:
    return f"{EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d} UTC, the dates a ZIP backup can hold"


def as_utc(moment: datetime) -> datetime:
    """Naive timestamps are taken as UTC, which is how the database stores them."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@overload
def iso(moment: datetime) -> str: ...
@overload
def iso(moment: datetime | None) -> str | None: ...
def iso(moment: datetime | None) -> str | None:
    """ISO-8601 UTC with a Z, the one format for printed and exported times."""
    if moment is None:
        return None
    return as_utc(moment).isoformat().replace("+00:00", "Z")


def parse_moment(text: str, option: str) -> datetime:
    """An ISO-8601 date or timestamp, or `Nd` for N days before now (as in `--since 30d`)."""
    value = text.strip()
    days = value[:-1]
    # ASCII digits only: int() would also read Arabic-Indic or full-width digits.
    if value.endswith("d") and days.isascii() and days.isdigit():
        if len(days) > len(str(MAX_AGE_DAYS)) or int(days) > MAX_AGE_DAYS:
            raise UsageError(
                f"{option} {text!r} is too long ago; give at most {MAX_AGE_DAYS:,}d "
                "(100 years) or a date."
            )
        return now() - timedelta(days=int(days))
    try:
        return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        raise UsageError(
            f"{option} {text!r} is not a date; use e.g. 2026-01-31, 2026-01-31T09:00Z or 30d."
        ) from None
    except OverflowError:
        raise UsageError(
            f"{option} {text!r} falls outside the calendar once converted to UTC; give a "
            "date between 0001-01-02 and 9999-12-30."
        ) from None
