"""`--max-changes N|P%`: how many clients one run may change before it changes none.

A cap is a number of clients, or a percentage of the clients that count toward the
plan (active and deactivated), rounded down: the cap exists so that a run never does
more damage than the admin expected, so a fraction never rounds up into one more
client. The automation policy's cap is the same value.
"""

from __future__ import annotations

from dataclasses import dataclass

from pbclients.errors import ChangeLimitExceeded, UsageError
from pbclients.settings import whole_number

# More than any roster holds; a larger count is a typo, not a limit.
MAX_COUNT = 1_000_000_000


@dataclass(frozen=True)
class MaxChanges:
    """At most `count` clients, or at most `percent`% of the counted clients."""

    count: int | None = None
    percent: int | None = None

    def __str__(self) -> str:
        return f"{self.percent}%" if self.percent is not None else str(self.count)

    @property
    def needs_counted(self) -> bool:
        return self.percent is not None

    def limit(self, counted: int) -> int:
        """The cap in clients, for a roster of `counted` counted clients."""
        if self.percent is not None:
            return counted * self.percent // 100
        return self.count or 0

    def check(self, changing: int, counted: int) -> None:
        """Refuse (exit 7) a run that would change more clients than the cap allows."""
        limit = self.limit(counted)
        if changing > limit:
            raise ChangeLimitExceeded(exceeded_message(changing, limit))


def exceeded_message(changing: int, limit: int) -> str:
    noun = "client" if changing == 1 else "clients"
    return (
        f"would change {changing:,} {noun}, more than the limit of {limit:,}; "
        "review with --dry-run, then raise --max-changes."
    )


def parse_max_changes(text: str, option: str = "--max-changes") -> MaxChanges:
    """`N` (0 to 1,000,000,000 clients) or `P%` (1 to 100); anything else is exit 2."""
    value = text.strip()
    if value.endswith("%"):
        percent = whole_number(value[:-1].strip(), 1, 100)
        if percent is None:
            raise UsageError(
                f"{option} {text!r} is not a percentage; give a whole number from 1% to 100%."
            )
        return MaxChanges(percent=percent)
    count = whole_number(value, 0, MAX_COUNT)
    if count is None:
        raise UsageError(
            f"{option} {text!r} is not a number of clients; give a whole number from 0 to "
            f"{MAX_COUNT:,}, or a percentage such as 5%."
        )
    return MaxChanges(count=count)
