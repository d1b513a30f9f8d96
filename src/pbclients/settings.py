"""Practice settings kept in the database (plan limit, retention, demo marker).

Imported by the CLI's option definitions for the ranges below, so the database models
are imported only when a setting is read or written: `--help` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pbclients.errors import UsageError

if TYPE_CHECKING:
    from sqlmodel import Session

PLAN_LIMIT = "plan_limit"
RETENTION_DAYS = "retention_days"
DEMO = "demo"
AUDIT_HEAD = "audit_head"

DEFAULT_RETENTION_DAYS = 30
# A century: deletion computes purge_after = now + retention, which must stay inside the
# calendar (and the clock may be as late as 2107, see clock.LATEST).
MAX_RETENTION_DAYS = 36_500
# Far beyond any practice, and small enough for every integer column and JSON reader.
MAX_PLAN_LIMIT = 1_000_000_000


def get(session: Session, key: str) -> str | None:
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


def _stored(session: Session, key: str, option: str) -> int | None:
    """A numeric setting as stored, capped at the largest value the tool accepts.

    The database may come from an older version or another writer: a larger number is
    read as the largest allowed (the same in effect: unlimited, or never purged within
    the clock's range), while text that is no number at all is reported with its fix
    instead of failing every later command with an unexpected error.
    """
    value = get(session, key)
    if value is None:
        return None
    high = MAX_PLAN_LIMIT if key == PLAN_LIMIT else MAX_RETENTION_DAYS
    stripped = value.strip()
    if stripped.isascii() and stripped.isdigit():
        digits = stripped.lstrip("0") or "0"
        return high if len(digits) > len(str(high)) else min(int(digits), high)
    raise UsageError(
        f"The practice's {key.replace('_', ' ')} setting holds {value!r}, which is not a "
        f"whole number; set it again with `pbclients plan {option}`."
    )


def plan_limit(session: Session) -> int | None:
    return _stored(session, PLAN_LIMIT, "--set-limit N")


def retention_days(session: Session) -> int:
    days = _stored(session, RETENTION_DAYS, "--set-retention DAYS")
    return DEFAULT_RETENTION_DAYS if days is None else days


def is_demo(session: Session) -> bool:
    return get(session, DEMO) == "1"
