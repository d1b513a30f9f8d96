"""The plan limit: active and deactivated clients hold a seat, deleted ones free it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pbclients import settings
from pbclients.backup.keys import KeyFile, encrypting, load
from pbclients.errors import BadInput, PlanLimitReached, UsageError
from pbclients.policy import Status, counts_toward_plan
from pbclients.readdb import Database, Reader

# `plan` reads through the bare driver; changing the settings needs the ORM session.
if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlmodel import Session

    from pbclients.operation import Change


@dataclass(frozen=True)
class PlanUsage:
    limit: int | None
    counted: int
    active: int
    deactivated: int
    deleted: int
    available: int | None
    retention_days: int
    record_retention_years: int = settings.DEFAULT_RECORD_RETENTION_YEARS
    time_zone: str = settings.DEFAULT_TIME_ZONE
    # The age key file backups are encrypted with (PBCLIENTS_BACKUP_KEY_FILE, else the
    # setting); None: plain backups.
    backup_key_file: str | None = None

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def usage(db: Session | Reader) -> PlanUsage:
    """Seats and settings, read with the statements `plan` uses, in the caller's transaction."""
    reader = db if isinstance(db, Reader) else Reader.of(db)
    by_status = dict(
        reader.rows("SELECT client.status, count(*) FROM client GROUP BY client.status")
    )
    counts = {status: int(by_status.get(status.value, 0)) for status in Status}
    counted = sum(n for status, n in counts.items() if counts_toward_plan(status))
    limit = settings.plan_limit(reader)
    key_file = encrypting(settings.backup_key_file(reader))
    return PlanUsage(
        limit=limit,
        counted=counted,
        active=counts[Status.ACTIVE],
        deactivated=counts[Status.DEACTIVATED],
        deleted=counts[Status.DELETED],
        available=None if limit is None else max(0, limit - counted),
        retention_days=settings.retention_days(reader),
        record_retention_years=settings.record_retention_years(reader),
        time_zone=settings.time_zone(reader),
        backup_key_file=str(key_file.path) if key_file is not None else None,
    )


def current_usage(source: Database | Engine) -> PlanUsage:
    """`usage` in a read of its own, for the `plan` command."""
    from pbclients.roster_view import database_of

    with database_of(source).read() as reader:
        return usage(reader)


def ensure_room(session: Session, adding: int, *, verb: str = "Adding") -> None:
    """Refuse (exit 6) before anything is added past the limit."""
    current = usage(session)
    if current.limit is None or current.counted + adding <= current.limit:
        return
    noun = "client" if adding == 1 else "clients"
    raise PlanLimitReached(
        f"{verb} {adding} {noun} would exceed the plan limit of {current.limit} "
        f"({current.counted} counted: {current.active} active, {current.deactivated} "
        f"deactivated); nothing was added. Deleting clients frees their seats "
        f"(deleting the {current.deactivated} deactivated would free {current.deactivated}), "
        "or raise the limit with `pbclients plan --set-limit N`."
    )


def configure(
    engine: Engine,
    change: Change,
    *,
    limit: int | Literal["unlimited"] | None = None,
    retention_days: int | None = None,
    record_retention_years: int | None = None,
    time_zone: str | None = None,
    backup_key_file: Path | Literal["none"] | None = None,
) -> PlanUsage:
    """Set the plan limit, the retention period, the record retention, the time zone
    and/or the backup key file in one audited transaction.

    A backup key file is read and checked first (KeyUnavailable, exit 4, if it is not a
    usable age identity or recipients file) and stored as an absolute path; "none"
    returns the practice to plain backups.
    """
    from pbclients import audit
    from pbclients.db import writing
    from pbclients.operation import Action

    key_path, recipients = _checked_key(backup_key_file)
    if record_retention_years is not None and not (
        1 <= record_retention_years <= settings.MAX_RECORD_RETENTION_YEARS
    ):
        raise BadInput(
            "The record retention must be from 1 to "
            f"{settings.MAX_RECORD_RETENTION_YEARS} years; nothing was changed."
        )
    if time_zone is not None:
        time_zone = settings.time_zone_name(time_zone)
    if retention_days is not None and retention_days < 1:
        raise BadInput("The retention period must be at least 1 day; nothing was changed.")
    if retention_days is not None and retention_days > settings.MAX_RETENTION_DAYS:
        raise BadInput(
            f"The retention period can be at most {settings.MAX_RETENTION_DAYS:,} days "
            "(100 years); nothing was changed."
        )
    if isinstance(limit, int) and limit < 0:
        raise BadInput("The plan limit cannot be negative; nothing was changed.")
    if isinstance(limit, int) and limit > settings.MAX_PLAN_LIMIT:
        raise BadInput(
            f"The plan limit can be at most {settings.MAX_PLAN_LIMIT:,}, or none for "
            "unlimited; nothing was changed."
        )
    with writing(engine) as session:
        events = []
        if limit is not None:
            old = _recorded(lambda: _limit_text(settings.plan_limit(session)))
            new = None if limit == "unlimited" else str(limit)
            settings.put(session, settings.PLAN_LIMIT, new)
            events.append(audit.NewEvent(Action.SET_LIMIT, None, old, new or "none"))
        if retention_days is not None:
            old = _recorded(lambda: str(settings.retention_days(session)))
            settings.put(session, settings.RETENTION_DAYS, str(retention_days))
            events.append(audit.NewEvent(Action.SET_RETENTION, None, old, str(retention_days)))
        if record_retention_years is not None:
            old = _recorded(lambda: str(settings.record_retention_years(session)))
            new_years = str(record_retention_years)
            settings.put(session, settings.RECORD_RETENTION_YEARS, new_years)
            events.append(audit.NewEvent(Action.SET_RECORD_RETENTION, None, old, new_years))
        if time_zone is not None:
            old = _recorded(lambda: settings.time_zone(session))
            settings.put(session, settings.TIME_ZONE, time_zone)
            events.append(audit.NewEvent(Action.SET_TIMEZONE, None, old, time_zone))
        if backup_key_file is not None:
            old = settings.backup_key_file(session) or "none"
            settings.put(session, settings.BACKUP_KEY_FILE, key_path)
            # The recipients are public keys: the trail says whom backups are readable by.
            events.append(
                audit.NewEvent(
                    Action.SET_BACKUP_KEY, None, old, key_path or "none",
                    {"recipients": recipients} if recipients else None,
                )
            )  # fmt: skip
        audit.append(
            session,
            events,
            batch_id=audit.new_batch_id(),
            actor=change.actor,
            reason=change.reason,
            at=change.at,
        )
        return usage(session)


def _checked_key(
    key_file: Path | Literal["none"] | None,
) -> tuple[str | None, list[str]]:
    """(the absolute path to store, its recipients) of a new backup key file, loaded now."""
    if key_file is None or key_file == "none":
        return None, []
    path = Path(key_file).expanduser().absolute()
    keyring = load(KeyFile(path, "--set-backup-key-file"), "nothing was changed")
    return str(path), [str(recipient) for recipient in keyring.recipients]


def _limit_text(limit: int | None) -> str:
    return "none" if limit is None else str(limit)


def _recorded(read: Callable[[], str]) -> str:
    """The old value for the audit trail; a stored value that is no number is replaced,
    not copied: the trail keeps no free text from another writer."""
    try:
        return read()
    except UsageError:
        return "invalid"
