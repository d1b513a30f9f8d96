"""Adding clients (`add`, `import`); reading the roster is `roster_view`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import NamedTuple

from sqlalchemy import Engine, text
from sqlmodel import Session, select

from pbclients import audit
from pbclients.csvinput import check_text
from pbclients.db import reading, writing
from pbclients.errors import BadInput
from pbclients.lookup import chunks
from pbclients.models import Client, Program
from pbclients.operation import Action, Batch, Change, Plan, ProgressCallback
from pbclients.plan import PlanUsage, ensure_room, usage
from pbclients.policy import Status
from pbclients.results import ChangeResult, Outcome
from pbclients.selection import live_email_owners


class NewClient(NamedTuple):
    # A tuple rather than a dataclass: an import makes one per row, a million at a time.
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
        _, missing = known_programs(session, program_names(new_clients))
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
        program_ids, created = create_programs(session, program_names(new_clients))
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
            raise given_twice(first_seen[key], client)
        first_seen[key] = client
    owners = live_email_owners(session, list(first_seen))
    for key, client in first_seen.items():
        if key in owners:
            raise already_a_client(client, owners[key])


def given_twice(first: NewClient, again: NewClient) -> BadInput:
    return BadInput(
        f"'{again.email}' appears twice ({first.where} and {again.where}); "
        "nothing was added. Keep one row per client."
    )


def already_a_client(client: NewClient, client_id: int) -> BadInput:
    where = f" ({client.where})" if client.where else ""
    return BadInput(
        f"'{client.email}'{where} is already client {client_id}; nothing was added. "
        "Remove it from the input, or use `pbclients show` to look at the existing client."
    )


def program_names(new_clients: Iterable[NewClient]) -> list[str]:
    return [client.program for client in new_clients if client.program]


def known_programs(session: Session, names: Iterable[str]) -> tuple[dict[str, int], dict[str, str]]:
    """Program ids by case-folded name, and the named programs that do not exist yet."""
    known = {
        name.casefold(): int(program_id or 0)
        for program_id, name in session.exec(select(Program.id, Program.name)).all()
    }
    missing: dict[str, str] = {}
    for name in names:
        if name.casefold() not in known:
            missing.setdefault(name.casefold(), name)
    return known, missing


def create_programs(session: Session, names: Iterable[str]) -> tuple[dict[str, int], list[str]]:
    """Program ids by case-folded name, creating the missing ones; and the names created."""
    known, missing = known_programs(session, names)
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
    """Insert the clients, their enrolments and one `add` event each; their ids.

    Checks nothing: the caller has refused duplicates and made room in this transaction.
    """
    writer = ClientWriter(session, program_ids, change, batch_id)
    ids: list[int] = []
    for chunk in chunks(new_clients):
        ids.extend(writer.insert([_values(c) for c in chunk]))
    return ids


# A new client as `ClientWriter.insert` takes it: email, email_key, first_name,
# last_name, phone, program, status (its stored value).
ClientValues = tuple[str, str, str, str, str | None, str | None, str]


def _values(c: NewClient) -> ClientValues:
    return (c.email, c.email.casefold(), c.first_name, c.last_name, c.phone, c.program,
            c.status.value)  # fmt: skip


class ClientWriter:
    """Adds clients a chunk at a time, in the caller's write transaction.

    The ids are taken first (SQLite: after the largest, as SQLite would give them under
    the write lock; PostgreSQL: from the table's sequence), so that the rows go to the
    driver's executemany in one statement: an INSERT ... RETURNING goes to SQLite one
    row at a time, and through the ORM's per-row parameter handling on both engines.
    """

    def __init__(
        self, session: Session, program_ids: dict[str, int], change: Change, batch_id: str
    ) -> None:
        self._session, self._program_ids = session, program_ids
        self._change, self._batch_id = change, batch_id
        self._connection = session.connection()
        self._postgres = self._connection.dialect.name == "postgresql"
        dialect = self._connection.dialect
        # Every row of a chunk has the same time: converted for the driver once.
        created_at = Client.__table__.c.created_at  # type: ignore[attr-defined]
        convert = created_at.type.dialect_impl(dialect).bind_processor(dialect)
        self._at = convert(change.at) if convert else change.at
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        self._clients = _insert("client", _CLIENT_KEYS, mark)
        self._enrolments = _insert("enrolment", _ENROLMENT_KEYS, mark)
        self._next_id = 0
        if not self._postgres:
            last = self._connection.exec_driver_sql("SELECT max(id) FROM client").scalar()
            self._next_id = int(last or 0) + 1

    def insert(self, chunk: Sequence[ClientValues]) -> Sequence[int]:
        """Insert these clients (no more than `lookup.CHUNK`); their ids, in order."""
        ids = self._ids(len(chunk))
        at = self._at
        self._connection.exec_driver_sql(
            self._clients,
            [
                (client_id, email, key, first, last, phone, status, at,
                 at if status == _DEACTIVATED else None)
                for client_id, (email, key, first, last, phone, _, status)
                in zip(ids, chunk, strict=True)
            ],
        )  # fmt: skip
        program_ids = self._program_ids
        enrolments = [
            (client_id, program_ids[values[5].casefold()], at, 0)
            for client_id, values in zip(ids, chunk, strict=True)
            if values[5]
        ]
        if enrolments:
            self._connection.exec_driver_sql(self._enrolments, enrolments)
        change = self._change
        # Not strict: the repeats never end; the ids and statuses are the chunk's, one each.
        statuses = map(itemgetter(6), chunk)
        audit.append(
            self._session,
            zip(repeat(Action.ADD), ids, repeat(None), statuses, repeat(None), strict=False),
            batch_id=self._batch_id,
            actor=change.actor,
            reason=change.reason,
            at=change.at,
        )
        return ids

    def _ids(self, count: int) -> Sequence[int]:
        if self._postgres:
            # One round trip for the chunk; another writer's ids may interleave with them.
            return self._connection.execute(_NEXT_IDS, {"count": count}).scalars().all()
        ids = range(self._next_id, self._next_id + count)
        self._next_id += count
        return ids


_DEACTIVATED = Status.DEACTIVATED.value
_CLIENT_KEYS = ("id", "email", "email_key", "first_name", "last_name", "phone", "status",
                "created_at", "deactivated_at")  # fmt: skip
# A new enrolment has made no progress yet (the model's default, which a driver-level
# INSERT does not apply).
_ENROLMENT_KEYS = ("client_id", "program_id", "enrolled_at", "progress_percent")
_NEXT_IDS = text(
    "SELECT nextval(pg_get_serial_sequence('client', 'id')) FROM generate_series(1, :count)"
)


def _insert(table: str, keys: Sequence[str], mark: str) -> str:
    return f"INSERT INTO {table} ({', '.join(keys)}) VALUES ({', '.join([mark] * len(keys))})"
