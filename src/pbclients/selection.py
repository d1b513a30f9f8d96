"""Turning what the admin typed (IDs, e-mails, CSV rows, a program) into clients.

Every reference is resolved before anything changes, in a few chunked
set-based queries, so an unknown reference stops the whole command.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlmodel import Session, col, select

from pbclients.activity import Inactivity, inactive_where
from pbclients.csvinput import Reference
from pbclients.db import load_ids
from pbclients.errors import UnknownClient, UsageError
from pbclients.lookup import can_match, chunks, parse_client_id, shorten
from pbclients.models import Client
from pbclients.policy import Status
from pbclients.readdb import Reader


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
                Selected(str(client_id), client_id, email, _status(status))
                for client_id, email, _key, status in _rows_inactive(session, selection.inactive)
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
        client_id, email, _key, status = row
        if client_id not in seen_ids:
            seen_ids.add(client_id)
            add(Selected(reference.text, client_id, email, statuses.get(status) or _status(status)))
    if selection.program is not None:
        for client_id, email, _key, status in _rows_in_program(
            session, selection.program, selection.inactive
        ):
            if client_id not in seen_ids:
                seen_ids.add(client_id)
                resolved.clients.append(Selected(str(client_id), client_id, email, _status(status)))
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


# A client as the selection reads it: (id, email, email_key, status), the driver's own
# row. Read at driver level: SQLAlchemy's rows cost as much again as the query itself on
# a selection of 100,000 clients.
_Row = tuple[Any, ...]

_SELECT = "SELECT client.id, client.email, client.email_key, client.status FROM client"
_DELETED = Status.DELETED.value


def _rows_by_id(session: Session, ids: list[int]) -> dict[int, _Row]:
    if not ids:
        return {}
    # One join against the temp id table: 100,000 IDs as chunked IN lists cost twice as much.
    selected = load_ids(session, ids).name
    rows = Reader.of(session).iterate(f"{_SELECT} JOIN {selected} ON {selected}.id = client.id")
    return {row[0]: row for row in rows}


def _rows_by_email(session: Session, keys: list[str]) -> dict[str, _Row]:
    reader = Reader.of(session)
    found: dict[str, _Row] = {}
    for chunk in chunks([key for key in keys if can_match(key)]):
        marks = ", ".join("?" * len(chunk))
        query = f"{_SELECT} WHERE client.email_key IN ({marks}) ORDER BY client.id"
        for row in reader.iterate(query, *chunk):
            # A live client owns its e-mail; a deleted one pending purge only if no one else does.
            current = found.get(row[2])
            if current is None or current[3] == _DELETED:
                found[row[2]] = row
    return found


def _rows_in_program(session: Session, name: str, inactive: Inactivity | None) -> list[_Row]:
    program_id = find_program(session, name)
    reader = Reader.of(session)
    if inactive is not None:
        # IN, not a join: the inactivity test has a NOT EXISTS on enrolment of its own,
        # which a joined enrolment would swallow by correlation.
        condition, values = inactive_where(reader, inactive.cutoff, inactive.now)
        return reader.rows(
            f"{_SELECT} WHERE client.id IN "
            "(SELECT enrolment.client_id FROM enrolment WHERE enrolment.program_id = ?) "
            f"AND client.status <> ? AND {condition} ORDER BY client.id",
            program_id, _DELETED, *values,
        )  # fmt: skip
    return reader.rows(
        f"{_SELECT} JOIN enrolment ON enrolment.client_id = client.id "
        "WHERE enrolment.program_id = ? AND client.status <> ? ORDER BY client.id",
        program_id, _DELETED,
    )  # fmt: skip


def _rows_inactive(session: Session, inactive: Inactivity) -> list[_Row]:
    """Every live client inactive since the cutoff, in one statement (see activity)."""
    reader = Reader.of(session)
    condition, values = inactive_where(reader, inactive.cutoff, inactive.now)
    return reader.rows(
        f"{_SELECT} WHERE client.status <> ? AND {condition} ORDER BY client.id",
        _DELETED, *values,
    )  # fmt: skip


def find_program(session: Session, name: str) -> int:
    """A program's id by name (case-insensitive); an unknown name is exit 3."""
    from pbclients.roster_view import find_program_id

    return find_program_id(Reader.of(session), name)
