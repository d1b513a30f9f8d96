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
audit event per client. It streams too: `check_update` sets each row's edit
aside beside the intake (`UpdatePlan`) and `update` carries them out.
"""

from __future__ import annotations

import json
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from types import TracebackType
from typing import IO, NamedTuple, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from pbclients import audit, editing, roster
from pbclients.csvinput import ImportRow as FileRow
from pbclients.db import reading, writing
from pbclients.errors import BadInput
from pbclients.lookup import CHUNK
from pbclients.operation import Change, ProgressCallback
from pbclients.plan import PlanUsage, ensure_room, usage
from pbclients.policy import Status
from pbclients.results import ChangeResult, Outcome
from pbclients.selection import is_client_id

T = TypeVar("T")


class Intake:
    """The new clients of a file, set aside in a temporary file as they are read.

    One line a client: its line in the source file, its e-mail, the e-mail
    case-folded, and its other cells (the id cell last, which only `import --update`
    reads), tab-separated (no cell holds a tab or a line break: `csvinput` refuses
    control characters). Every later pass (the checks, the
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
                f"{r.program or ''}\t{r.client_id or ''}\n"
                for r, key in zip(chunk, keys, strict=True)
            )
        )
        self.count += len(chunk)

    def rows(self) -> Iterator[list[str]]:
        """Each client as set aside: line, email, key, first, last, phone, program, id cell."""
        self._spool.seek(0)
        for text in self._spool:
            yield text[:-1].split("\t")

    def clients(self) -> Iterator[roster.NewClient]:
        """The clients, in file order."""
        return map(self.client, self.rows())

    def client(self, row: list[str]) -> roster.NewClient:
        _line, email, _key, first, last, phone, program, _id = row
        return roster.NewClient(email, first, last, phone or None, program or None, self.where(row))

    def where(self, row: list[str]) -> str:
        return f"line {row[0]} of {self.source}"

    def values(self) -> Iterator[roster.ClientValues]:
        """The clients as `roster.ClientWriter.insert` takes them."""
        active = Status.ACTIVE.value
        for _line, email, key, first, last, phone, program, _id in self.rows():
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
        _refuse_repeats(intake, intake.rows(), intake.keys.repeated())
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

    def common(self, other: _Keys) -> set[int]:
        """The hashes seen here and in `other`."""
        common: set[int] = set()
        for mine, theirs in zip(self._buckets, other._buckets, strict=True):
            if mine and theirs:
                common.update(set(mine).intersection(theirs))
        return common

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


def _refuse_repeats(intake: Intake, rows: Iterable[list[str]], hashes: set[int]) -> None:
    """Refuse the first e-mail given twice among `rows` of the intake, in file order, among
    those with these hashes."""
    if not hashes:
        return
    first_seen: dict[str, list[str]] = {}
    for row in rows:
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
    if not keys:
        return {}
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


# --- import --update ------------------------------------------------------------------------

ADDED = "added"


class _Edit(NamedTuple):
    """How `import --update` changes the client a row names, as set aside in the plan."""

    reference: str
    client_id: int
    status: str
    email: str  # before the edit, as results show it
    changed: tuple[str, ...] = ()  # none: the row is the client's file already
    before: editing.Values | None = None
    after: editing.Values | None = None

    def line(self) -> str:
        return json.dumps(self[:4] if not self.changed else self, ensure_ascii=False) + "\n"

    @classmethod
    def read(cls, line: str) -> _Edit | None:
        """The edit of a line `line` wrote (None: the row adds a client)."""
        fields = json.loads(line)
        if fields is None:
            return None
        reference, client_id, status, email, *change = fields
        if not change:
            return cls(reference, client_id, status, email)
        changed, before, after = change
        return cls(reference, client_id, status, email, tuple(changed), before, after)

    def result(self, done: bool) -> ChangeResult:
        if not self.changed:
            outcome, note = Outcome.UNCHANGED, "unchanged"
        else:
            outcome = Outcome.CHANGED if done else Outcome.PLANNED
            note = f"updated: {', '.join(self.changed)}"
        return ChangeResult(
            self.reference, self.client_id, self.email, self.status, self.status, outcome,
            note=note,
        )  # fmt: skip

    def field_changes(self) -> editing.FieldChanges:
        assert self.before is not None and self.after is not None
        return editing.FieldChanges(self.client_id, self.changed, self.before, self.after)


_ADDS = "null\n"


@dataclass(frozen=True)
class UpdatePlan:
    """What `import --update` would do, set aside beside its intake.

    `edits` holds a line for each row of the intake, in the same order: how the row
    edits the client it names (`_Edit`), or JSON null for a row that adds a client.
    """

    intake: Intake
    edits: IO[str]
    adding: int
    updating: int
    programs: tuple[str, ...]  # named by the rows that add
    new_programs: tuple[str, ...]

    @property
    def unchanged(self) -> int:
        return self.intake.count - self.adding - self.updating

    @property
    def changing(self) -> int:
        return self.adding + self.updating

    def results(self) -> Iterator[ChangeResult]:
        for row, edit in self.rows():
            yield _added(row, None, Outcome.PLANNED) if edit is None else edit.result(False)

    def rows(self) -> Iterator[tuple[list[str], _Edit | None]]:
        """Each row of the intake with its edit (None for a row that adds)."""
        self.edits.seek(0)
        return zip(self.intake.rows(), map(_Edit.read, self.edits), strict=True)

    def added_values(self) -> Iterator[roster.ClientValues]:
        self.edits.seek(0)
        return (
            values
            for values, line in zip(self.intake.values(), self.edits, strict=True)
            if line == _ADDS
        )

    def field_changes(self) -> Iterator[editing.FieldChanges]:
        self.edits.seek(0)
        for line in self.edits:
            edit = _Edit.read(line)
            if edit is not None and edit.changed:
                yield edit.field_changes()

    def close(self) -> None:
        """Remove the plan's temporary file (`contextlib.closing` does it after a block)."""
        self.edits.close()


@dataclass(frozen=True)
class Updated:
    """What `update` did: the added clients' ids in file order, as runs of consecutive ids."""

    plan: UpdatePlan
    batch_id: str
    id_runs: tuple[range, ...]

    def results(self) -> Iterator[ChangeResult]:
        ids = chain.from_iterable(self.id_runs)
        for row, edit in self.plan.rows():
            yield _added(row, next(ids), Outcome.CHANGED) if edit is None else edit.result(True)


def check_update(engine: Engine, intake: Intake) -> UpdatePlan:
    """`import --update`'s preview: each row sorted into an add or an edit; reads only.

    A row edits the live client its id cell names, or else the live client with its
    e-mail (case-insensitive); every other row adds a client. The rows are read a
    chunk at a time and set aside, so a file of any length takes flat memory.
    Refused (exit 3), in this order: the first id cell that is not a client ID; the
    first row naming a client unknown, deleted or named before; a new e-mail that two
    rows give, then one another live client has; an e-mail one row adds and another
    gives; an added e-mail given twice. Past the plan limit: exit 6.
    """
    _refuse_bad_ids(intake)
    # Lives as long as the plan (closed by `close`); never named, so never left behind.
    edits = tempfile.TemporaryFile("w+", encoding="utf-8", newline="\n")  # noqa: SIM115
    try:
        with reading(engine) as session:
            sorting = _Sorting(session, intake)
            for chunk in _batches(intake.rows()):
                edits.write(sorting.sort(chunk))
            edits.flush()
            programs = tuple(sorting.programs.values())
            _, missing = roster.known_programs(session, programs)
            plan = UpdatePlan(
                intake, edits, sorting.adding, sorting.updating, programs,
                tuple(missing.values()),
            )  # fmt: skip
            _refuse_repeated_emails(plan, sorting.new_emails.repeated())
            for changes in _batches(plan.field_changes()):
                editing.refuse_taken_emails(session, changes)
            _refuse_added_and_given(plan, sorting.added_keys.common(sorting.new_emails))
            added = (row for row, edit in plan.rows() if edit is None)
            _refuse_repeats(intake, added, sorting.added_keys.repeated())
            if sorting.adding:
                ensure_room(session, sorting.adding)
    except BaseException:
        edits.close()
        raise
    return plan


def update(
    engine: Engine,
    plan: UpdatePlan,
    change: Change,
    *,
    on_progress: ProgressCallback | None = None,
) -> Updated:
    """Add and edit as planned in one transaction, a chunk at a time: room, e-mails and
    each edited client's values are checked again first (a client changed since the plan
    is exit 5)."""
    batch_id = audit.new_batch_id()
    runs: list[range] = []
    done = 0
    with writing(engine) as session:
        if plan.adding:
            ensure_room(session, plan.adding)
            program_ids, _created = roster.create_programs(session, plan.programs)
            writer = roster.ClientWriter(session, program_ids, change, batch_id)
            for chunk in _batches(plan.added_values()):
                _refuse_taken_since(session, plan, chunk)
                runs.extend(_runs(writer.insert(chunk)))
                done += len(chunk)
                if on_progress:
                    on_progress(done, plan.changing)
        for edits in _batches(plan.field_changes()):
            events = editing.write_edits(session, edits, batch_id)
            audit.append(session, events, batch_id=batch_id, actor=change.actor,
                         reason=change.reason, at=change.at)  # fmt: skip
            done += len(edits)
            if on_progress:
                on_progress(done, plan.changing)
    return Updated(plan, batch_id, tuple(runs))


class _Sorting:
    """Sorts the rows of an intake into adds and edits, a chunk at a time, keeping what
    the checks across chunks need: the clients named (a bit each) and the hashes of the
    e-mails added and of the new e-mails edits give (8 bytes each)."""

    def __init__(self, session: Session, intake: Intake) -> None:
        self.session, self.intake = session, intake
        self.named = editing.ClientIds()
        self.added_keys = _Keys()
        self.new_emails = _Keys()
        self.programs: dict[str, str] = {}  # as first spelled, by case-folded name
        self.adding = self.updating = 0

    def sort(self, chunk: list[list[str]]) -> str:
        """The plan's lines for these rows; raises on the first bad one."""
        owners = _owners(self.session, [row[2] for row in chunk if not row[7]])
        targets = [self._target(row, owners) for row in chunk]
        found = editing.clients_named(self.session, [t for t in targets if t is not None])
        lines: list[str] = []
        changes: list[editing.FieldChanges] = []
        for row, target in zip(chunk, targets, strict=True):
            if target is None:
                self._add(row)
                lines.append(_ADDS)
                continue
            edit = editing.ClientEdit(target, _values(row), self.intake.where(row))
            result, change = editing.planned_edit(edit, found[target], self.named)
            # Set by `planned_edit` for every client it finds.
            assert result.client_id is not None and result.before and result.email
            planned = _Edit(target, result.client_id, result.before, result.email)
            if change is not None:
                self.updating += 1
                changes.append(change)
                planned = planned._replace(
                    changed=change.changed, before=change.before, after=change.after
                )
            lines.append(planned.line())
        self.new_emails.add(_new_email_keys(changes))
        return "".join(lines)

    def _add(self, row: list[str]) -> None:
        self.adding += 1
        self.added_keys.add([row[2]])
        if program := row[6]:
            self.programs.setdefault(program.casefold(), program)

    def _target(self, row: list[str], owners: dict[str, int]) -> str | None:
        """The live client a row edits (as a reference), or None for a new client."""
        if cell := row[7].strip():
            return cell
        owner = owners.get(row[2])
        return None if owner is None else str(owner)


def _refuse_bad_ids(intake: Intake) -> None:
    """Refuse the first id cell that is not a client ID, before any row is looked up."""
    for row in intake.rows():
        if (cell := row[7].strip()) and not is_client_id(cell):
            raise BadInput(
                f"The id {cell!r} ({intake.where(row)}) is not a client ID; correct it or "
                "empty the cell to add the row as a new client. Nothing was changed."
            )


def _values(row: list[str]) -> editing.Values:
    """The fields a row sets: an empty phone keeps the one on file."""
    _line, email, _key, first, last, phone, _program, _id = row
    values: editing.Values = {"email": email, "first_name": first, "last_name": last}
    if phone:
        values["phone"] = phone
    return values


def _new_email_keys(changes: Iterable[editing.FieldChanges]) -> Iterator[str]:
    return (str(c.after["email"]).casefold() for c in changes if "email" in c.changed)


def _refuse_repeated_emails(plan: UpdatePlan, hashes: set[int]) -> None:
    """Refuse the first new e-mail that two edits give, in file order, among those with
    these hashes."""
    if not hashes:
        return
    first: dict[str, editing.FieldChanges] = {}
    for change in plan.field_changes():
        for key in _new_email_keys([change]):
            if hash(key) in hashes:
                if key in first:
                    raise editing.given_to_both(first[key], change)
                first[key] = change


def _refuse_added_and_given(plan: UpdatePlan, hashes: set[int]) -> None:
    """Refuse a row that adds an e-mail another row gives a client it edits: the first
    such pair in file order, among the e-mails with these hashes."""
    if not hashes:
        return
    added: dict[str, list[str]] = {}
    given: dict[str, tuple[list[str], _Edit]] = {}
    for row, edit in plan.rows():
        if edit is None:
            key = row[2]
            if hash(key) in hashes:
                added.setdefault(key, row)
        elif "email" in edit.changed and edit.after is not None:
            key = str(edit.after["email"]).casefold()
            if hash(key) in hashes:
                given.setdefault(key, (row, edit))
        else:
            continue
        if key in added and key in given:
            where = plan.intake.where
            (row, edit), adding = given[key], added[key]
            raise BadInput(
                f"'{adding[1]}' is added ({where(adding)}) and given to client "
                f"{edit.client_id} ({where(row)}); nothing was changed. Keep one row per client."
            )


def _refuse_taken_since(
    session: Session, plan: UpdatePlan, chunk: Sequence[roster.ClientValues]
) -> None:
    """Refuse an added e-mail that a live client took since the plan (checked in the
    writing transaction, so nobody takes one in between)."""
    if owners := _owners(session, [values[1] for values in chunk]):
        key = next(values[1] for values in chunk if values[1] in owners)
        row = next(row for row, edit in plan.rows() if edit is None and row[2] == key)
        raise roster.already_a_client(plan.intake.client(row), owners[key])


def _added(row: list[str], client_id: int | None, outcome: Outcome) -> ChangeResult:
    email = row[1]
    return ChangeResult(email, client_id, email, None, _ACTIVE, outcome, note=ADDED)


_ACTIVE = Status.ACTIVE.value
