"""Adding clients (`add`, `import`); reading the roster is `roster_view`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, insert
from sqlmodel import Session, col, select

from pbclients import audit
from pbclients.csvinput import check_text
from pbclients.db import reading, writing
from pbclients.errors import BadInput
from pbclients.models import Client, Enrolment, Program
from pbclients.operation import Action, Batch, Change, Plan, ProgressCallback
from pbclients.plan import PlanUsage, ensure_room, usage
from pbclients.policy import Status
from pbclients.results import ChangeResult, Outcome
from pbclients.selection import chunks, live_email_owners


@dataclass(frozen=True)
class NewClient:
    email: str
    first_name: str
    last_name: str
    phone: str | None = None
    program: str | None = None
    where: str = ""  # "line 4 of new.csv", for messages
    # A client that arrives from another system paused (a FHIR Patient with active false)
    # is added deactivated: it counts toward the plan limit all the same.
    status: Status = Status.ACTIVE


@dataclass(frozen=True)
class AddDetail:
    """The clients to add, the programs adding them creates, and the seats in use.

    In a plan, `new_programs` are those that would be created; in a batch, those
    that were (another admin may have created one in between).
    """

    clients: tuple[NewClient, ...]
    new_programs: tuple[str, ...]
    seats: PlanUsage


def preview(engine: Engine, new_clients: Sequence[NewClient]) -> Plan[AddDetail]:
    """Add, as an operation (see pbclients.operation): every client or none.

    Refused on a duplicate e-mail (exit 3) or past the plan limit (exit 6). A
    program named in the input that does not exist yet will be created, so an
    import can start a new group program.
    """
    _refuse_control_characters(new_clients)
    with reading(engine) as session:
        refuse_duplicates(session, new_clients)
        ensure_room(session, len(new_clients))
        _, missing = _known_programs(session, new_clients)
        seats = usage(session)
    results = [
        ChangeResult(c.email, None, c.email, None, c.status.value, Outcome.PLANNED)
        for c in new_clients
    ]
    return Plan(Action.ADD, results, AddDetail(tuple(new_clients), tuple(missing.values()), seats))


def apply(
    engine: Engine,
    plan: Plan[AddDetail],
    change: Change,
    *,
    on_progress: ProgressCallback | None = None,
) -> Batch[AddDetail]:
    """Add the planned clients in one transaction, checking duplicates and room again."""
    new_clients = plan.detail.clients
    batch_id = audit.new_batch_id()
    with writing(engine) as session:
        refuse_duplicates(session, new_clients)
        ensure_room(session, len(new_clients))
        program_ids, created = create_programs(session, new_clients)
        ids = insert_clients(session, new_clients, program_ids, change, batch_id)
        if on_progress:
            on_progress(len(ids), len(ids))
        seats = usage(session)
    results = [
        ChangeResult(c.email, client_id, c.email, None, c.status.value, Outcome.CHANGED)
        for client_id, c in zip(ids, new_clients, strict=True)
    ]
    return Batch(Action.ADD, results, AddDetail(new_clients, tuple(created), seats), batch_id)


def add_clients(
    engine: Engine, new_clients: Sequence[NewClient], change: Change
) -> Batch[AddDetail]:
    """Preview and apply at once, for callers with nobody to confirm (tests, scripts)."""
    return apply(engine, preview(engine, new_clients), change)


def _refuse_control_characters(new_clients: Sequence[NewClient]) -> None:
    """The CLI checks each option and CSV cell as it reads them; this keeps any other
    caller from storing a NUL, an escape sequence or a bidi override either."""
    for client in new_clients:
        where = client.where or "The new client"
        for value in (client.email, client.first_name, client.last_name, client.phone,
                      client.program):  # fmt: skip
            if value:
                check_text(value, where)


def refuse_duplicates(session: Session, new_clients: Sequence[NewClient]) -> None:
    """Refuse (exit 3) an e-mail given twice, or one a live client already has."""
    first_seen: dict[str, NewClient] = {}
    for client in new_clients:
        key = client.email.casefold()
        if key in first_seen:
            raise BadInput(
                f"'{client.email}' appears twice ({first_seen[key].where} and {client.where}); "
                "nothing was added. Keep one row per client."
            )
        first_seen[key] = client
    owners = live_email_owners(session, list(first_seen))
    for key, client in first_seen.items():
        if key in owners:
            where = f" ({client.where})" if client.where else ""
            raise BadInput(
                f"'{client.email}'{where} is already client {owners[key]}; nothing was added. "
                "Remove it from the input, or use `pbclients show` to look at the existing client."
            )


def _known_programs(
    session: Session, new_clients: Sequence[NewClient]
) -> tuple[dict[str, int], dict[str, str]]:
    """Program ids by case-folded name, and the named programs that do not exist yet."""
    known = {
        name.casefold(): int(program_id or 0)
        for program_id, name in session.exec(select(Program.id, Program.name)).all()
    }
    missing: dict[str, str] = {}
    for client in new_clients:
        if client.program and client.program.casefold() not in known:
            missing.setdefault(client.program.casefold(), client.program)
    return known, missing


def create_programs(
    session: Session, new_clients: Sequence[NewClient]
) -> tuple[dict[str, int], list[str]]:
    """Program ids by case-folded name, creating the missing ones; and the names created."""
    known, missing = _known_programs(session, new_clients)
    for key, name in missing.items():
        program = Program(name=name)
        session.add(program)
        session.flush()
        known[key] = int(program.id or 0)
    return known, list(missing.values())


def insert_clients(
    session: Session,
    new_clients: Sequence[NewClient],
    program_ids: dict[str, int],
    change: Change,
    batch_id: str,
) -> list[int]:
    """Insert the clients (set-based), their enrolments and one `add` event each; their ids.

    Checks nothing: the caller has refused duplicates and made room in this transaction.
    """
    rows = [
        {
            "email": c.email,
            "email_key": c.email.casefold(),
            "first_name": c.first_name,
            "last_name": c.last_name,
            "phone": c.phone,
            "status": c.status.value,
            "created_at": change.at,
            "deactivated_at": change.at if c.status is Status.DEACTIVATED else None,
        }
        for c in new_clients
    ]
    ids: list[int] = []
    for chunk in chunks(rows):
        ids.extend(
            session.scalars(
                insert(Client).returning(col(Client.id), sort_by_parameter_order=True), chunk
            )
        )
    enrolments = [
        {
            "client_id": client_id,
            "program_id": program_ids[c.program.casefold()],
            "enrolled_at": change.at,
        }
        for client_id, c in zip(ids, new_clients, strict=True)
        if c.program
    ]
    if enrolments:
        session.execute(insert(Enrolment), enrolments)
    audit.append(
        session,
        (
            audit.NewEvent(Action.ADD, client_id, None, c.status.value)
            for client_id, c in zip(ids, new_clients, strict=True)
        ),
        batch_id=batch_id,
        actor=change.actor,
        reason=change.reason,
        at=change.at,
    )
    return ids
