"""Practice settings kept in the database (plan limit, retention, demo marker).

Imported by the CLI's option definitions for the ranges below, so the database models
are imported only when a setting is read or written: `--help` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pbclients.errors import UsageError

if TYPE_CHECKING:
    from sqlmodel import Session

    from pbclients.readdb import Reader

PLAN_LIMIT = "plan_limit"
RETENTION_DAYS = "retention_days"
# Years a client's record (its backups, once purged) is kept after the last activity.
RECORD_RETENTION_YEARS = "record_retention_years"
DEMO = "demo"
AUDIT_HEAD = "audit_head"
TIME_ZONE = "time_zone"
DEFAULT_TIME_ZONE = "UTC"
# The age identity or recipients file every backup is encrypted with (absent: plain).
BACKUP_KEY_FILE = "backup_key_file"

DEFAULT_RETENTION_DAYS = 30
# A century: deletion computes purge_after = now + retention, which must stay inside the
# calendar (and the clock may be as late as 2107, see clock.LATEST).
MAX_RETENTION_DAYS = 36_500
# Far beyond any practice, and small enough for every integer column and JSON reader.
MAX_PLAN_LIMIT = 1_000_000_000
# Seven years covers US state minimums for adults; the law never asks for more than a
# century, which also keeps every retention end inside the calendar.
DEFAULT_RECORD_RETENTION_YEARS = 7
MAX_RECORD_RETENTION_YEARS = 100


def get(session: Session | Reader, key: str) -> str | None:
    """A stored setting; a read-only command reads it through the bare driver."""
    from pbclients.readdb import Reader

    if isinstance(session, Reader):
        value = session.scalar("SELECT setting.value FROM setting WHERE setting.key = ?", key)
        return None if value is None else str(value)
    from pbclients.models import Setting

    setting = session.get(Setting, key)
    return setting.value if setting else None


def put(session: Session, key: str, value: str | None) -> None:
    from pbclients.models import Setting

    setting = session.get(Setting, key)
    if value is None:
        if setting:
            session.delete(setting)
    elif setting:
        setting.value = value
    else:
        session.add(Setting(key=key, value=value))
    session.flush()


def whole_number(text: str, low: int, high: int) -> int | None:
    """`text` as a whole number in [low, high] written with the digits 0-9, else None.

    Stricter than int(), which also reads Arabic-Indic digits, `+5` and `1_000`, and
    refuses 4,300+ digits with a ValueError; the length is checked first, so a huge
    number costs nothing.
    """
    value = text.strip()
    if not (value.isascii() and value.isdigit()):
        return None
    digits = value.lstrip("0") or "0"
    if len(digits) > len(str(high)):
        return None
    number = int(digits)
    return number if low <= number <= high else None


def _stored(session: Session | Reader, key: str, option: str) -> int | None:
    """A numeric setting as stored, capped at the largest value the tool accepts.

    The database may come from an older version or another writer: a larger number is
    read as the largest allowed (the same in effect: unlimited, or never purged within
    the clock's range), while text that is no number at all is reported with its fix
    instead of failing every later command with an unexpected error.
    """
    value = get(session, key)
    if value is None:
        return None
    high = {PLAN_LIMIT: MAX_PLAN_LIMIT, RECORD_RETENTION_YEARS: MAX_RECORD_RETENTION_YEARS}.get(
        key, MAX_RETENTION_DAYS
    )
    stripped = value.strip()
    if stripped.isascii() and stripped.isdigit():
        digits = stripped.lstrip("0") or "0"
        return high if len(digits) > len(str(high)) else min(int(digits), high)
    raise UsageError(
        f"The practice's {key.replace('_', ' ')} setting holds {value!r}, which is not a "
        f"whole number; set it again with `pbclients plan {option}`."
    )


def plan_limit(session: Session | Reader) -> int | None:
    return _stored(session, PLAN_LIMIT, "--set-limit N")


def retention_days(session: Session | Reader) -> int:
    days = _stored(session, RETENTION_DAYS, "--set-retention DAYS")
    return DEFAULT_RETENTION_DAYS if days is None else days


def time_zone_name(text: str, option: str = "--set-timezone") -> str:
    """An IANA time zone name (`Europe/Lisbon`) checked with zoneinfo, else a usage error."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = text.strip()
    try:
        # zoneinfo itself refuses keys that leave its folder (`../`, absolute paths).
        ZoneInfo(name)
    except (ValueError, ZoneInfoNotFoundError, OSError):
        raise UsageError(
            f"{option} {text[:60]!r} is not a time zone; give an IANA name such as "
            "Europe/Lisbon, America/New_York or UTC."
        ) from None
    return name


def time_zone(session: Session | Reader) -> str:
    """The practice's time zone: a date given to `--at` means midnight there."""
    stored = get(session, TIME_ZONE)
    if stored is None:
        return DEFAULT_TIME_ZONE
    return time_zone_name(stored, "The stored time zone")


def record_retention_years(session: Session | Reader) -> int:
    years = _stored(session, RECORD_RETENTION_YEARS, "--set-record-retention YEARS")
    # At least one year: a stored 0 would make every purged client's backup prunable.
    return DEFAULT_RECORD_RETENTION_YEARS if years is None else max(1, years)


def backup_key_file(session: Session | Reader) -> str | None:
    """The practice's backup key file (an absolute path), or None: backups are plain."""
    return get(session, BACKUP_KEY_FILE) or None


def is_demo(session: Session) -> bool:
    return get(session, DEMO) == "1"
