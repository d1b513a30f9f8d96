"""`import`: the clients of a file, added however long it is; and `import --update`.

A plain import streams: `Intake` sets the checked rows aside in a temporary file,
`check` previews them a chunk at a time and `add` adds them in one transaction, so
that neither the rows nor their results are ever all in memory (a plain list of
`roster.NewClient` goes through `roster.preview` and `roster.apply` instead).

`import --update` adds the new clients of a file and updates the ones already there.
A row updates a live client when its `id` names one, or else when its e-mail
(case-insensitive) is a live client's; every other row adds a client, as a
plain import does. Updated rows change e-mail, names and a phone given in the
file (an empty or missing phone keeps the one on file; `edit --no-phone`
removes it); their program column is not applied. All rows or none: the adds
and the edits are one transaction and one batch, with an `add` or `edit`
audit event per client.
"""

from __future__ import annotations

import tempfile
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from types import TracebackType
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from pbclients import audit, editing, roster
from pbclients.csvinput import ImportRow as FileRow
from pbclients.db import reading, writing
from pbclients.errors import BadInput
from pbclients.lookup import CHUNK
from pbclients.operation import Action, Batch, Change, Plan, ProgressCallback, carried_out
from pbclients.plan import PlanUsage, ensure_room, usage
from pbclients.policy import Status
from pbclients.results import ChangeResult, Outcome
from pbclients.selection import is_client_id, live_email_owners

T = TypeVar("T")


class Intake:
    """The new clients of a file, set aside in a temporary file as they are read.

    One line a client: its line in the source file, its e-mail, the e-mail
    case-folded, and its other cells, tab-separated (no cell holds a tab or a line
    break: `csvinput` refuses control characters). Every later pass (the checks, the
    insert, the results) reads it again from the start. While it is written, the
    e-mails are hashed (to find any given twice) and the programs named are noted.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.count = 0
        self.programs: dict[str, str] = {}  # as first spelled, by case-folded name
        self.keys = _Keys()
        # Lives as long as the intake (closed by `close`); never named, so never left behind.
        self._spool = tempfile.TemporaryFile("w+", encoding="utf-8", newline="\n")  # noqa: SIM115

    @classmethod
    def of(cls, rows: Iterable[FileRow], source: str) -> Intake:
        """Set `rows` aside; a bad row raises (from the reader) before anything else."""
        intake = cls(source)
        try:
            for chunk in _batches(rows):
                intake._add(chunk)
        except BaseException:
            intake.close()
            raise
        return intake

    def _add(self, chunk: list[FileRow]) -> None:
        keys = [r.email.casefold() for r in chunk]
        self.keys.add(keys)
        for name in [r.program for r in chunk if r.program]:
            self.programs.setdefault(name.casefold(), name)
        self._spool.write(
            "".join(
                f"{r.line}\t{r.email}\t{key}\t{r.first_name}\t{r.last_name}\t{r.phone or ''}\t"
                f"{r.program or ''}\n"
                for r, key in zip(chunk, keys, strict=True)
            )
        )
        self.count += len(chunk)

    def rows(self) -> Iterator[list[str]]:
        """Each client as set aside: line, email, key, first, last, phone, program."""
        self._spool.seek(0)
        for text in self._spool:
            yield text[:-1].split("\t")

    def clients(self) -> Iterator[roster.NewClient]:
        """The clients, in file order."""
        return map(self.client, self.rows())

    def client(self, row: list[str]) -> roster.NewClient:
        line, email, _key, first, last, phone, program = row
        where = f"line {line} of {self.source}"
        return roster.NewClient(email, first, last, phone or None, program or None, where)

    def values(self) -> Iterator[roster.ClientValues]:
        """The clients as `roster.ClientWriter.insert` takes them."""
        active = Status.ACTIVE.value
        for _line, email, key, first, last, phone, program in self.rows():
            yield email, key, first, last, phone or None, program or None, active

    def emails(self) -> Iterator[str]:
        self._spool.seek(0)
        return (text.split("\t", 2)[1] for text in self._spool)

    def email_keys(self) -> Iterator[str]:
        """The case-folded e-mails, in file order."""
        self._spool.seek(0)
        return (text.split("\t", 3)[2] for text in self._spool)

    def close(self) -> None:
        self._spool.close()

    def __enter__(self) -> Intake:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class IntakePlan:
    """What adding an intake would do: the programs it names (and creates), the seats."""

    intake: Intake
    programs: tuple[str, ...]
    new_programs: tuple[str, ...]
    seats: PlanUsage

    def results(self) -> Iterator[ChangeResult]:
        for c in self.intake.clients():
            yield ChangeResult(c.email, None, c.email, None, c.status.value, Outcome.PLANNED)

    def emails_and_ids(self) -> Iterator[tuple[str, int | None]]:
        """Each result's e-mail (its reference too) and id (none yet): all the rest of a
        result is the same for every client of an intake."""
        return ((email, None) for email in self.intake.emails())


@dataclass(frozen=True)
class Added:
    """What `add` did: the clients' ids in file order, as runs of consecutive ids."""

    plan: IntakePlan
    batch_id: str
    id_runs: tuple[range, ...]
    new_programs: tuple[str, ...]

    def results(self) -> Iterator[ChangeResult]:
        ids = chain.from_iterable(self.id_runs)
        for client_id, c in zip(ids, self.plan.intake.clients(), strict=True):
            yield ChangeResult(c.email, client_id, c.email, None, c.status.value, Outcome.CHANGED)

    def emails_and_ids(self) -> Iterator[tuple[str, int | None]]:
        """As `IntakePlan.emails_and_ids`, with the ids given."""
        ids = chain.from_iterable(self.id_runs)
        return zip(self.plan.intake.emails(), ids, strict=True)


def check(engine: Engine, intake: Intake) -> IntakePlan:
    """`roster.preview` for an intake: the same checks and errors, a chunk at a time.

    Refused on an e-mail given twice or one a live client has (exit 3), or past the
    plan limit (exit 6); reads only.
    """
    with reading(engine) as session:
        taken = _first_taken(session, intake)
        _refuse_repeats(intake, intake.keys.repeated())
        if taken is not None:
            raise roster.already_a_client(*taken)
        ensure_room(session, intake.count)
        programs = tuple(intake.programs.values())
        _, missing = roster.known_programs(session, programs)
        seats = usage(session)
    return IntakePlan(intake, programs, tuple(missing.values()), seats)


def add(
    engine: Engine,
    plan: IntakePlan,
    change: Change,
    *,
    on_progress: ProgressCallback | None = None,
) -> Added:
    """Add a checked intake in one transaction; room is checked again, and an e-mail a
    live client took since is refused by the database's unique index (exit 3)."""
    intake = plan.intake
    batch_id = audit.new_batch_id()
    runs: list[range] = []
    try:
        with writing(engine) as session:
            ensure_room(session, intake.count)
            program_ids, created = roster.create_programs(session, plan.programs)
            writer = roster.ClientWriter(session, program_ids, change, batch_id)
            done = 0
            for chunk in _batches(intake.values()):
                runs.extend(_runs(writer.insert(chunk)))
                done += len(chunk)
                if on_progress:
                    on_progress(done, intake.count)
    except IntegrityError:
        _refuse_taken(engine, intake)
        raise
    return Added(plan, batch_id, tuple(runs), tuple(created))


class _Keys:
    """Finds e-mails given twice in a file of any length: 8 bytes a row.

    Keeps the hash of each case-folded e-mail, spread over buckets by its low bits so
    that only one bucket at a time is ever made a set; equal hashes are then checked
    against the e-mails themselves (`_refuse_repeats`).
    """

    _BUCKETS = 256

    def __init__(self) -> None:
        self._buckets = [array("q") for _ in range(self._BUCKETS)]

    def add(self, keys: Iterable[str]) -> None:
        buckets, mask = self._buckets, self._BUCKETS - 1
        for key in keys:
            value = hash(key)
            buckets[value & mask].append(value)

    def repeated(self) -> set[int]:
        """The hashes seen more than once."""
        repeated: set[int] = set()
        for bucket in self._buckets:
            if len(set(bucket)) == len(bucket):
                continue
            seen: set[int] = set()
            for value in bucket:
                if value in seen:
                    repeated.add(value)
                seen.add(value)
        return repeated


def _refuse_repeats(intake: Intake, hashes: set[int]) -> None:
    """Refuse the first e-mail given twice, in file order, among those with these hashes."""
    if not hashes:
        return
    first_seen: dict[str, list[str]] = {}
    for row in intake.rows():
        key = row[2]
        if hash(key) in hashes:
            if key in first_seen:
                raise roster.given_twice(intake.client(first_seen[key]), intake.client(row))
            first_seen[key] = row


def _refuse_taken(engine: Engine, intake: Intake) -> None:
    """Refuse the first client whose e-mail a live client has (taken since `check`)."""
    with reading(engine) as session:
        taken = _first_taken(session, intake)
    if taken is not None:
        raise roster.already_a_client(*taken)


def _first_taken(session: Session, intake: Intake) -> tuple[roster.NewClient, int] | None:
    """The first client of the intake whose e-mail a live client has, and that client's id."""
    for chunk in _batches(intake.email_keys()):
        if owners := _owners(session, chunk):
            row = next(row for row in intake.rows() if row[2] in owners)
            return intake.client(row), owners[row[2]]
    return None


def _owners(session: Session, keys: Sequence[str]) -> dict[str, int]:
    """`selection.live_email_owners` of one chunk, at driver level: SQLAlchemy's compiling
    of an IN of 10,000 values costs more than the query itself."""
    connection = session.connection()
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    query = (
        f"SELECT email_key, id FROM client WHERE status != {mark} "
        f"AND email_key IN ({', '.join([mark] * len(keys))})"
    )
    rows = connection.exec_driver_sql(query, (Status.DELETED.value, *keys))
    return {key: client_id for key, client_id in rows}


def _runs(ids: Sequence[int]) -> Iterator[range]:
    """`ids` as runs of consecutive ids (on SQLite always one)."""
    if isinstance(ids, range):
        yield ids
        return
    start = 0
    for end in range(1, len(ids) + 1):
        if end == len(ids) or ids[end] != ids[end - 1] + 1:
            yield range(ids[start], ids[end - 1] + 1)
            start = end


def _batches(items: Iterable[T]) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, CHUNK)):
        yield chunk


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
            program_ids, _created = roster.create_programs(session, roster.program_names(adding))
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
