"""`import --update`: add the new clients of a file and update the ones already there.

A row updates a live client when its `id` names one, or else when its e-mail
(case-insensitive) is a live client's; every other row adds a client, as a
plain import does. Updated rows change e-mail, names and a phone given in the
file (an empty or missing phone keeps the one on file; `edit --no-phone`
removes it); their program column is not applied. All rows or none: the adds
and the edits are one transaction and one batch, with an `add` or `edit`
audit event per client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine

from pbclients import audit, editing, roster
from pbclients.db import reading, writing
from pbclients.errors import BadInput
from pbclients.operation import Action, Batch, Change, Plan, ProgressCallback, carried_out
from pbclients.plan import ensure_room
from pbclients.results import ChangeResult, Outcome
from pbclients.selection import is_client_id, live_email_owners


@dataclass(frozen=True)
class ImportRow:
    """One row of the file: the client it describes, and the id it names if any."""

    client: roster.NewClient
    client_id: str | None = None


@dataclass(frozen=True)
class ImportDetail:
    """The clients to add (and the programs that creates), and the edits of the others."""

    adds: tuple[roster.NewClient, ...]
    new_programs: tuple[str, ...]
    edits: editing.EditDetail


def preview(engine: Engine, rows: Sequence[ImportRow]) -> Plan[ImportDetail]:
    """What the import would add and update, row by row; reads only.

    Each result's note says `added`, `updated: <fields>` or `unchanged`.
    """
    with reading(engine) as session:
        owners = live_email_owners(session, [row.client.email.casefold() for row in rows])
        adding: list[roster.NewClient] = []
        updating: list[editing.ClientEdit] = []
        for row in rows:
            target = _target(row, owners)
            if target is None:
                adding.append(row.client)
            else:
                updating.append(editing.ClientEdit(target, _values(row.client), row.client.where))
        edit_plan = editing.plan_edits(session, updating)
    # The same checks as a plain import: duplicates, the plan limit, programs to create.
    add_plan = roster.preview(engine, adding) if adding else None
    new_programs = add_plan.detail.new_programs if add_plan else ()
    results = _in_file_order(rows, owners, add_plan, edit_plan)
    detail = ImportDetail(tuple(adding), new_programs, edit_plan.detail)
    return Plan(Action.ADD, results, detail)


def apply(
    engine: Engine,
    plan: Plan[ImportDetail],
    change: Change,
    *,
    on_progress: ProgressCallback | None = None,
) -> Batch[ImportDetail]:
    """Add and update as planned in one transaction; re-checks duplicates, room and values."""
    detail = plan.detail
    adding = detail.adds
    batch_id = audit.new_batch_id()
    with writing(engine) as session:
        ids: list[int] = []
        if adding:
            roster.refuse_duplicates(session, adding)
            ensure_room(session, len(adding))
            program_ids, _created = roster.create_programs(session, adding)
            ids = roster.insert_clients(session, adding, program_ids, change, batch_id)
        if detail.edits.edits:
            audit.append(
                session,
                editing.write_edits(session, list(detail.edits.edits.values()), batch_id),
                batch_id=batch_id,
                actor=change.actor,
                reason=change.reason,
                at=change.at,
            )
    if on_progress:
        on_progress(plan.changing, plan.changing)
    new_ids = iter(ids)
    results = [
        ChangeResult(r.reference, next(new_ids), r.email, r.before, r.after, Outcome.CHANGED,
                     note=r.note)
        if r.note == ADDED
        else carried_out(r)
        for r in plan.results
    ]  # fmt: skip
    return Batch(plan.action, results, detail, batch_id)


ADDED = "added"


def _target(row: ImportRow, owners: dict[str, int]) -> str | None:
    """The live client a row updates (as a reference), or None for a new client."""
    if row.client_id:
        if not is_client_id(row.client_id.strip()):
            raise BadInput(
                f"The id {row.client_id!r} ({row.client.where}) is not a client ID; correct it "
                "or empty the cell to add the row as a new client. Nothing was changed."
            )
        return row.client_id.strip()
    owner = owners.get(row.client.email.casefold())
    return None if owner is None else str(owner)


def _values(client: roster.NewClient) -> dict[str, str | None]:
    values: dict[str, str | None] = {
        "email": client.email,
        "first_name": client.first_name,
        "last_name": client.last_name,
    }
    if client.phone:
        values["phone"] = client.phone
    return values


def _in_file_order(
    rows: Sequence[ImportRow],
    owners: dict[str, int],
    add_plan: Plan[roster.AddDetail] | None,
    edit_plan: Plan[editing.EditDetail],
) -> list[ChangeResult]:
    added = iter(add_plan.results if add_plan else [])
    edited = iter(edit_plan.results)
    results = []
    for row in rows:
        if _target(row, owners) is None:
            r = next(added)
            results.append(
                ChangeResult(r.reference, None, r.email, None, r.after, Outcome.PLANNED,
                             note=ADDED)
            )  # fmt: skip
        else:
            r = next(edited)
            note = f"updated: {r.note}" if r.outcome is Outcome.PLANNED else "unchanged"
            results.append(
                ChangeResult(r.reference, r.client_id, r.email, r.before, r.after, r.outcome,
                             note=note)
            )  # fmt: skip
    return results
