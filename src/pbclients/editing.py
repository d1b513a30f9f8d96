"""Editing a client's file: e-mail, names and phone, for active and deactivated clients.

Deactivation archives access, not the file: the practice keeps reviewing and
updating it. A deleted client is not edited (bring it back first with undo or
restore). A new e-mail must not belong to another live client.

The audit trail records which fields changed, never their values; the values
an edit replaced are kept in `undo_record`, outside the trail, so that `undo`
can put them back, and are removed when the client is purged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass

from sqlalchemy import Engine, bindparam, insert, update
from sqlalchemy import select as sql_select
from sqlmodel import Session, col, select

from pbclients import audit
from pbclients.db import load_ids, reading, writing
from pbclients.errors import BadInput, DatabaseBusy, TransitionNotAllowed, UnknownClient
from pbclients.lookup import chunks, parse_client_id
from pbclients.models import Client, UndoRecord
from pbclients.operation import Action, Batch, Change, Plan, ProgressCallback, carried_out
from pbclients.policy import Status
from pbclients.readdb import Reader
from pbclients.results import ChangeResult, Outcome
from pbclients.roster_view import find_client_id, no_such_client
from pbclients.selection import live_email_owners

# The fields of a client's file that `edit` changes, in the order they are shown.
EDITABLE = ("email", "first_name", "last_name", "phone")
Values = dict[str, str | None]
# A client as an edit finds it: id, status and editable fields.
NamedClient = tuple[int, str, Values]


@dataclass(frozen=True)
class ClientEdit:
    """New values for one client's fields; a field absent from `values` is kept."""

    reference: str
    values: Mapping[str, str | None]
    where: str = ""  # "line 4 of clients.csv", for messages


@dataclass(frozen=True)
class FieldChanges:
    """One client's edit: which fields change, from what, to what."""

    client_id: int
    changed: tuple[str, ...]
    before: Values
    after: Values


@dataclass(frozen=True)
class EditDetail:
    # One per result whose client changes (or would), keyed by client id.
    edits: Mapping[int, FieldChanges]


def preview(engine: Engine, edits: Sequence[ClientEdit]) -> Plan[EditDetail]:
    """What `apply` would change, field by field; reads only."""
    with reading(engine) as session:
        return plan_edits(session, edits)


def plan_edits(session: Session, edits: Sequence[ClientEdit]) -> Plan[EditDetail]:
    """The plan of `preview`, in the caller's session."""
    results: list[ChangeResult] = []
    changes: dict[int, FieldChanges] = {}
    found = clients_named(session, [edit.reference for edit in edits])
    named = ClientIds()
    for edit in edits:
        result, change = planned_edit(edit, found[edit.reference], named)
        results.append(result)
        if change is not None:
            changes[change.client_id] = change
    refuse_taken_emails(session, changes.values())
    return Plan(Action.EDIT, results, EditDetail(changes))


def planned_edit(
    edit: ClientEdit, client: NamedClient | None, named: ClientIds
) -> tuple[ChangeResult, FieldChanges | None]:
    """One edit against its client as `clients_named` found it: its result, and its
    changes (None when every value is already the file's).

    Refused when the client is unknown or deleted, or already among `named` (which
    gains it): a client edited by two rows would end with whichever came last.
    """
    if client is None:
        raise no_such_client(edit.reference)
    client_id, status, before = client
    if status == Status.DELETED.value:
        raise TransitionNotAllowed(
            f"Client {client_id} ('{edit.reference}') is deleted and cannot be edited; "
            "nothing was changed. Bring it back with `pbclients undo BATCH` or "
            "`pbclients restore BACKUP` first."
        )
    if not named.add(client_id):
        raise BadInput(
            f"Client {client_id} is named twice{_at(edit.where)}; nothing was changed. "
            "Keep one row per client."
        )
    after = dict(before)
    after.update({name: edit.values[name] for name in EDITABLE if name in edit.values})
    changed = tuple(name for name in EDITABLE if before[name] != after[name])
    outcome = Outcome.PLANNED if changed else Outcome.UNCHANGED
    result = ChangeResult(edit.reference, client_id, before["email"], status, status,
                          outcome, note=", ".join(changed) or None)  # fmt: skip
    return result, FieldChanges(client_id, changed, before, after) if changed else None


class ClientIds:
    """A set of client ids at about a bit each (`import --update` names up to every client).

    The bits are kept in blocks of 4,096 ids, made as ids fall in them, so that the size
    follows the ids named, not the largest of them.
    """

    _BLOCK = 4096

    def __init__(self) -> None:
        self._blocks: dict[int, bytearray] = {}

    def add(self, client_id: int) -> bool:
        """Add `client_id`; False if it was there already."""
        block, offset = divmod(client_id, self._BLOCK)
        bits = self._blocks.get(block)
        if bits is None:
            bits = self._blocks[block] = bytearray(self._BLOCK // 8)
        byte, bit = divmod(offset, 8)
        if bits[byte] >> bit & 1:
            return False
        bits[byte] |= 1 << bit
        return True


def apply(
    engine: Engine,
    plan: Plan[EditDetail],
    change: Change,
    *,
    on_progress: ProgressCallback | None = None,
) -> Batch[EditDetail]:
    """Carry out an edit plan in one transaction, with one audit event per changed client."""
    if not plan.detail.edits:
        return Batch(plan.action, plan.results, plan.detail)
    batch_id = audit.new_batch_id()
    with writing(engine) as session:
        apply_edits(session, plan.detail, change, batch_id)
    if on_progress:
        on_progress(len(plan.detail.edits), len(plan.detail.edits))
    results = [carried_out(result) for result in plan.results]
    return Batch(plan.action, results, plan.detail, batch_id)


def apply_edits(session: Session, detail: EditDetail, change: Change, batch_id: str) -> None:
    """Write planned edits in the caller's transaction, with their audit events."""
    audit.append(
        session,
        write_edits(session, list(detail.edits.values()), batch_id),
        batch_id=batch_id,
        actor=change.actor,
        reason=change.reason,
        at=change.at,
    )


def write_edits(
    session: Session, edits: Sequence[FieldChanges], batch_id: str
) -> list[audit.NewEvent]:
    """Check nothing moved since the plan, write the values, keep the old ones for undo.

    Returns the audit events to record (field names only); undo records them under its
    own reason.
    """
    _check_unchanged(session, edits)
    refuse_taken_emails(session, edits)
    write_values(session, [(edit.client_id, edit.after) for edit in edits])
    session.execute(
        insert(UndoRecord),
        [
            {
                "batch_id": batch_id,
                "client_id": edit.client_id,
                "data": json.dumps({"before": edit.before, "after": edit.after}),
            }
            for edit in edits
        ],
    )
    return [
        audit.NewEvent(Action.EDIT, edit.client_id, None, None, {"fields": list(edit.changed)})
        for edit in edits
    ]


def write_values(session: Session, rows: Sequence[tuple[int, Values]]) -> None:
    """Set every editable field of these clients (one executemany, not a query per row)."""
    statement = (
        update(Client)
        .where(col(Client.id) == bindparam("client_id"))
        .values(
            email=bindparam("new_email"),
            email_key=bindparam("new_email_key"),
            first_name=bindparam("new_first_name"),
            last_name=bindparam("new_last_name"),
            phone=bindparam("new_phone"),
        )
        .execution_options(synchronize_session=False)
    )
    params = [
        {
            "client_id": client_id,
            "new_email": values["email"],
            # Derived here from the e-mail itself, never taken from elsewhere: it is the
            # key that keeps one login per live client.
            "new_email_key": str(values["email"]).casefold(),
            "new_first_name": values["first_name"],
            "new_last_name": values["last_name"],
            "new_phone": values["phone"],
        }
        for client_id, values in rows
    ]
    for chunk in chunks(params):
        session.connection().execute(statement, list(chunk))


def current_values(session: Session, client_ids: Sequence[int]) -> dict[int, tuple[str, Values]]:
    """Each client's status and editable fields, read in one query."""
    selected = load_ids(session, client_ids)
    query = sql_select(*(col(getattr(Client, name)) for name in ("id", "status", *EDITABLE))).where(
        col(Client.id).in_(select(selected.c.id))
    )
    if session.get_bind().dialect.name == "postgresql":
        # Held until commit, so no other writer edits these clients between check and write.
        query = query.with_for_update()
    return {
        int(row[0]): (row[1], dict(zip(EDITABLE, row[2:], strict=True)))
        for row in session.execute(query)
    }


def _check_unchanged(session: Session, edits: Sequence[FieldChanges]) -> None:
    current = current_values(session, [edit.client_id for edit in edits])
    for edit in edits:
        status, values = current.get(edit.client_id, (None, {}))
        if status in (None, Status.DELETED.value) or values != edit.before:
            raise DatabaseBusy(
                f"Client {edit.client_id} changed while this command ran; "
                "nothing was changed, run it again."
            )


def refuse_taken_emails(session: Session, edits: Iterable[FieldChanges]) -> None:
    """A new e-mail must not be another live client's, nor another client's of this edit."""
    wanted: dict[str, FieldChanges] = {}
    for edit in edits:
        if "email" not in edit.changed:
            continue
        key = str(edit.after["email"]).casefold()
        if key in wanted:
            raise given_to_both(wanted[key], edit)
        wanted[key] = edit
    for key, owner in live_email_owners(session, list(wanted)).items():
        edit = wanted[key]
        if owner != edit.client_id:
            raise BadInput(
                f"The e-mail '{edit.after['email']}' already belongs to client {owner}; "
                f"nothing was changed. Give client {edit.client_id} another e-mail."
            )


def given_to_both(first: FieldChanges, again: FieldChanges) -> BadInput:
    return BadInput(
        f"Clients {first.client_id} and {again.client_id} would both get the "
        f"e-mail '{again.after['email']}'; nothing was changed."
    )


def clients_named(session: Session, references: Sequence[str]) -> dict[str, NamedClient | None]:
    """Each reference's client (as `find_client_id` finds it, None for nobody): its id,
    status and editable fields, read a chunk of clients a statement (`import --update`
    names thousands). The caller refuses an unknown one in file order, among its checks."""
    reader = Reader.of(session)
    ids: dict[str, int | None] = {}
    for reference in references:
        client_id = parse_client_id(reference.strip())
        if client_id is None:
            with suppress(UnknownClient):
                client_id = find_client_id(reader, reference)
        ids[reference] = client_id
    rows: dict[int, tuple[str, Values]] = {}
    for chunk in chunks(sorted({client_id for client_id in ids.values() if client_id})):
        marks = ", ".join("?" * len(chunk))
        for client_id, status, *fields in reader.iterate(
            f"SELECT id, status, {', '.join(EDITABLE)} FROM client WHERE id IN ({marks})", *chunk
        ):
            rows[client_id] = (status, dict(zip(EDITABLE, fields, strict=True)))
    return {
        reference: None if client_id not in rows else (client_id, *rows[client_id])
        for reference, client_id in ids.items()
    }


def _at(where: str) -> str:
    return f" ({where})" if where else ""
