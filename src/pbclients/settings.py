"""Practice settings kept in the database (plan limit, retention, demo marker)."""

from __future__ import annotations

from sqlmodel import Session

from pbclients.models import Setting

PLAN_LIMIT = "plan_limit"
RETENTION_DAYS = "retention_days"
DEMO = "demo"
AUDIT_HEAD = "audit_head"

DEFAULT_RETENTION_DAYS = 30


def get(session: Session, key: str) -> str | None:
    setting = session.get(Setting, key)
    return setting.value if setting else None


def put(session: Session, key: str, value: str | None) -> None:
    setting = session.get(Setting, key)
    if value is None:
        if setting:
            session.delete(setting)
    elif setting:
        setting.value = value
    else:
        session.add(Setting(key=key, value=value))
    session.flush()


def plan_limit(session: Session) -> int | None:
    value = get(session, PLAN_LIMIT)
    return int(value) if value is not None else None


def retention_days(session: Session) -> int:
    value = get(session, RETENTION_DAYS)
    return int(value) if value is not None else DEFAULT_RETENTION_DAYS


def is_demo(session: Session) -> bool:
    return get(session, DEMO) == "1"
