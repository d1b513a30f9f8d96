"""Turning what the admin typed (IDs, e-mails, CSV rows, a program) into clients.

Every reference is resolved before anything changes, in a few chunked
set-based queries, so an unknown reference stops the whole command.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Row
from sqlmodel import Session, col, select

from pbclients.activity import Inactivity, inactive_since
from pbclients.csvinput import Reference
from pbclients.db import load_ids
from pbclients.errors import UnknownClient, UsageError
from pbclients.lookup import can_match, chunks, parse_client_id, shorten
from pbclients.models import Client, Enrolment
from pbclients.policy import Status


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
    if len(text) < 10 and text.isdigit() and text.isascii():
        # A plain ID of up to nine digits is always in range: a bulk selection is mostly
        # these, and they skip the stricter parse below (100,000 calls on a large CSV).
        return int(text)
    client_id = parse_client_id(text)
    return client_id if client_id is not None else text.casefold()


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
    # Once per reference: local names and the status lookup inlined (see `_status`).
    add, statuses = resolved.clients.append, _STATUSES
    for key, reference in unique.items():
        row = by_id.get(key) if isinstance(key, int) else by_email.get(key)
        if row is None:
            unknown.append(reference)
            continue
        client_id, email, status = row.id, row.email, row.status
        if client_id not in seen_ids:
            seen_ids.add(client_id)
            add(Selected(reference.text, client_id, email, statuses.get(status) or _status(status)))
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
    return inactive_since(inactive.cutoff, inactive.now)


def find_program(session: Session, name: str) -> int:
    """A program's id by name (case-insensitive); an unknown name is exit 3."""
    from pbclients.readdb import Reader
    from pbclients.roster_view import find_program_id

    return find_program_id(Reader.of(session), name)
