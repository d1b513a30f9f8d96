"""The one clock: every timestamp the tool writes or compares comes from here.

`PBCLIENTS_NOW` (ISO-8601) pins it, so tests and a replayed cron run see the
time they ask for.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from pbclients.errors import UsageError


def now() -> datetime:
    pinned = os.environ.get("PBCLIENTS_NOW")
    if not pinned:
        return datetime.now(UTC).replace(microsecond=0)
    try:
        moment = datetime.fromisoformat(pinned.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"PBCLIENTS_NOW={pinned!r} is not an ISO-8601 timestamp; "
            "use e.g. 2026-11-26T09:00:00Z or unset it."
        ) from None
    return as_utc(moment)


def as_utc(moment: datetime) -> datetime:
    """Naive timestamps are taken as UTC, which is how the database stores them."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def iso(moment: datetime | None) -> str | None:
    """ISO-8601 UTC with a Z, the one format for printed and exported times."""
    if moment is None:
        return None
    return as_utc(moment).isoformat().replace("+00:00", "Z")


def parse_moment(text: str, option: str) -> datetime:
    """An ISO-8601 date or timestamp, or `Nd` for N days before now (as in `--since 30d`)."""
    value = text.strip()
    if value.endswith("d") and value[:-1].isdigit():
        return now() - timedelta(days=int(value[:-1]))
    try:
        return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        raise UsageError(
            f"{option} {text!r} is not a date; use e.g. 2026-01-31, 2026-01-31T09:00Z or 30d."
        ) from None
