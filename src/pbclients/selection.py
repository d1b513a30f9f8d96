"""Turning what the admin typed (IDs, e-mails, CSV rows, a program) into clients.

Every reference is resolved before anything changes, in a few chunked
set-based queries, so an unknown reference stops the whole command.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import ColumnElement, Row, func
from sqlmodel import Session, col, select

from pbclients.csvinput import Reference
from pbclients.db import load_ids
from pbclients.errors import BadInput, UnknownClient, UsageError
from pbclients.models import Client, Enrolment, Program
from pbclients.policy import Status
from pbclients.settings import whole_number

T = TypeVar("T")

# Well under SQLite's and PostgreSQL's limits on bound parameters per statement.
CHUNK = 10_000

# Client ids are INTEGER columns: 32 bits on PostgreSQL (64 on SQLite, but a backup or a
# `db copy` holds no larger id either), so a larger number names no client on any engine.
# Binding one would fail instead (PostgreSQL: a DataError; SQLite past 64 bits: an
# OverflowError), so it is an unknown reference before any query.
MAX_CLIENT_ID = 2**31 - 1


@dataclass(frozen=True)
class Inactivity:
    """`--inactive-for`: clients with no activity after `cutoff`, as of `now`."""

    cutoff: datetime
    now: datetime


@dataclass(frozen=True)
class Selection:
    references: Sequence[Reference] = ()
    program: str | None = None
    skip_unknown: bool = False
    # A --csv or --ids-from input was given, even if it held no reference: an empty
    # pipeline selects nobody ("nothing to do"), it is not a missing selection, and it
    # must never widen a selection (`delete --deactivated-before` alone means "all").
    from_input: bool = False
    # --inactive-for: every live inactive client, or those of `program`. It selects by
    # itself, so it narrows a program but is not combined with named clients.
    inactive: Inactivity | None = None

    def is_empty(self) -> bool:
        """True when no selection option was given at all (a usage error)."""
        return (
            not self.references
            and self.program is None
            and not self.from_input
            and self.inactive is None
        )


class Selected(NamedTuple):
    """One resolved client (a tuple: a bulk command makes 100,000 of them)."""

    reference: str
    client_id: int
    email: str
    status: Status


@dataclass(frozen=True)
class Resolved:
    clients: list[Selected] = field(default_factory=list)
    skipped: list[Reference] = field(default_factory=list)


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def live_email_owners(session: Session, email_keys: Sequence[str]) -> dict[str, int]:
    """Which visible (not deleted) client holds each of these case-folded e-mails."""
    owners: dict[str, int] = {}
    for chunk in chunks(sorted(set(email_keys))):
        query = select(Client.id, Client.email_key).where(
            col(Client.email_key).in_(chunk), Client.status != Status.DELETED.value
        )
        for client_id, key in session.exec(query):
            if client_id is not None:
                owners[key] = client_id
    return owners


def reference_key(text: str) -> int | str:
    """IDs and e-mails compare as the tool compares them: `007` is 7, e-mail case is ignored.

    Anything that is not an ID (including a number too large to be one) is looked up as an
    e-mail, finds nobody, and so is an unknown reference like any other typo.
    """
    client_id = parse_client_id(text)
    return client_id if client_id is not None else text.casefold()


def parse_client_id(text: str) -> int | None:
    """The client ID `text` spells with the digits 0-9 (`007` is 7), or None.

    Not int(), which also reads Arabic-Indic digits, `+5` and `1_000` (no admin means an
    ID by them) and fails on 4,300+ digits; and a value past MAX_CLIENT_ID names no
    client.
    """
    return whole_number(text, 0, MAX_CLIENT_ID)


def is_client_id(text: str) -> bool:
    return parse_client_id(text) is not None


_STATUSES = {status.value: status for status in Status}


def _status(value: str) -> Status:
    # A dict lookup: calling the enum class costs more than the query, per row.
    return _STATUSES.get(value) or Status(value)


def resolve(session: Session, selection: Selection) -> Resolved:
    if selection.is_empty():
        raise UsageError(
            "Name the clients to change: IDs or e-mails, --csv FILE, --ids-from FILE "
            "or --program NAME."
        )
    if selection.inactive is not None and (selection.references or selection.from_input):
        raise UsageError(
            "--inactive-for selects clients itself; combine it with --program, "
            "not with client IDs, e-mails, --csv or --ids-from."
        )
    if selection.inactive is not None and selection.program is None:
        return Resolved(
            [
                Selected(str(row.id), row.id, row.email, _status(row.status))
                for row in _rows_inactive(session, selection.inactive)
            ]
        )
    # Keyed by int for IDs and by casefolded text for e-mails, so the two never collide.
    unique: dict[int | str, Reference] = {}
    for reference in selection.references:
        unique.setdefault(reference_key(reference.text), reference)

    by_id = _rows_by_id(session, [key for key in unique if isinstance(key, int)])
    by_email = _rows_by_email(session, [key for key in unique if isinstance(key, str)])

    resolved = Resolved()
    seen_ids: set[int] = set()
    unknown: list[Reference] = []
    for key, reference in unique.items():
        row = by_id.get(key) if isinstance(key, int) else by_email.get(key)
        if row is None:
            unknown.append(reference)
        elif row.id not in seen_ids:
            seen_ids.add(row.id)
            resolved.clients.append(
                Selected(reference.text, row.id, row.email, _status(row.status))
            )
    if selection.program is not None:
        for row in _rows_in_program(session, selection.program, selection.inactive):
            if row.id not in seen_ids:
                seen_ids.add(row.id)
                resolved.clients.append(
                    Selected(str(row.id), row.id, row.email, _status(row.status))
                )
    if unknown and not selection.skip_unknown:
        raise UnknownClient(_unknown_message(unknown))
    resolved.skipped.extend(unknown)
    return resolved


def shorten(text: str, keep: int = 60) -> str:
    """A reference as quoted in a message: a 5,000-digit one would bury the sentence."""
    if len(text) <= keep:
        return text
    return f"{text[:keep]}... ({len(text):,} characters)"


def _unknown_message(unknown: list[Reference]) -> str:
    shown = ", ".join(
        f"'{shorten(ref.text)}'" + (f" ({ref.where()})" if ref.where() else "")
        for ref in unknown[:5]
    )
    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    noun = "client" if len(unknown) == 1 else "clients"
    return (
        f"Unknown {noun} {shown}{more}; nothing was changed. "
        "Check the references, or use --skip-unknown to change the others."
    )


# Rows of (id, email, email_key, status), read by attribute: SQLAlchemy's own rows,
# since wrapping 100,000 of them again costs a second per resolution.
_Row = Row[Any]


_COLUMNS = (col(Client.id), col(Client.email), col(Client.email_key), col(Client.status))


def _rows(session: Session, query: Any) -> Sequence[_Row]:
    return session.execute(query).all()


def _rows_by_id(session: Session, ids: list[int]) -> dict[int, _Row]:
    if not ids:
        return {}
    # One join against the temp id table: 100,000 IDs as chunked IN lists cost twice as much.
    selected = load_ids(session, ids)
    query = select(*_COLUMNS).join(selected, selected.c.id == Client.id)
    return {row.id: row for row in _rows(session, query)}


def _rows_by_email(session: Session, keys: list[str]) -> dict[str, _Row]:
    found: dict[str, _Row] = {}
    for chunk in chunks([key for key in keys if can_match(key)]):
        query = select(*_COLUMNS).where(col(Client.email_key).in_(chunk)).order_by(col(Client.id))
        for row in _rows(session, query):
            # A live client owns its e-mail; a deleted one pending purge only if no one else does.
            current = found.get(row.email_key)
            if current is None or current.status == Status.DELETED:
                found[row.email_key] = row
    return found


def _rows_in_program(session: Session, name: str, inactive: Inactivity | None) -> list[_Row]:
    program_id = find_program(session, name)
    if inactive is not None:
        # IN, not a join: the inactivity test has a NOT EXISTS on enrolment of its own,
        # which a joined enrolment would swallow by correlation.
        enrolled = select(Enrolment.client_id).where(Enrolment.program_id == program_id)
        query = (
            select(*_COLUMNS)
            .where(
                col(Client.id).in_(enrolled),
                Client.status != Status.DELETED,
                _inactive_clause(inactive),
            )
            .order_by(col(Client.id))
        )
        return list(_rows(session, query))
    query = (
        select(*_COLUMNS)
        .join(Enrolment, col(Enrolment.client_id) == Client.id)
        .where(Enrolment.program_id == program_id, Client.status != Status.DELETED)
        .order_by(col(Client.id))
    )
    return list(_rows(session, query))


def _rows_inactive(session: Session, inactive: Inactivity) -> list[_Row]:
    """Every live client inactive since the cutoff, in one statement (see activity)."""
    query = (
        select(*_COLUMNS)
        .where(Client.status != Status.DELETED, _inactive_clause(inactive))
        .order_by(col(Client.id))
    )
    return list(_rows(session, query))


def _inactive_clause(inactive: Inactivity) -> ColumnElement[bool]:
    # Imported here: activity builds on this module's chunks() and shorten().
    from pbclients.activity import inactive_since

    return inactive_since(inactive.cutoff, inactive.now)


def can_match(text: str) -> bool:
    """Whether a stored value could equal `text`: PostgreSQL text cannot hold NUL (binding it
    raises a DataError) and no pbclients writer stores one, so such a lookup finds nothing."""
    return "\x00" not in text


def find_program(session: Session, name: str) -> int:
    program_id = (
        session.exec(
            select(Program.id).where(func.lower(Program.name) == name.strip().casefold())
        ).first()
        if can_match(name)
        else None
    )
    if program_id is None:
        known = ", ".join(session.exec(select(Program.name).order_by(Program.name)).all()) or "none"
        raise BadInput(
            f"There is no program named '{name}' (programs: {known}); nothing was changed."
        )
    return program_id
