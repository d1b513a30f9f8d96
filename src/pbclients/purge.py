"""Purge: permanently remove deleted clients whose retention period has passed.

A client is due when `status = 'deleted'` and `now >= purge_after`:
`purge_after` is the moment from which the client may go, so a purge running
exactly at that second removes it, and one running a second earlier does not.
A client under legal hold (`pbclients.holds`) is never due: the run keeps it,
reports it as skipped ("legal hold") and counts it (`PurgeDetail.held`, and
`held=N` in its log line), and the first run after its release purges it.

Work happens in chunks of `CHUNK` clients; each chunk is one transaction that
removes the clients' records (every `RECORD_MODELS` table, in reverse insert
order, and the old values kept for undo), the clients themselves, and appends
one `purge` audit event per client holding only its id, the time and its
backup's SHA-256 (taken from the delete event). A run killed at any point
leaves every client either untouched or completely purged, and the next run
picks up where it stopped: purge is idempotent.

Runs never overlap. The lock dies with its process, so a crashed run never
blocks the next one:
- SQLite: `fcntl.flock` on `<database>.purge.lock` (mode 0600), held for the run;
- PostgreSQL: `pg_try_advisory_lock` on a dedicated connection, held for the run.
A second run finds the lock taken and stops at once with `DatabaseBusy` (exit 5)
before reading or writing anything.

A PostgreSQL session lock dies with its connection: a server restart, or an
operator's `pg_terminate_backend`, frees it while this run goes on, and another
purge could then take it. So each chunk's transaction first checks that the
lock's own session (its pid and start time) still holds it, and the run stops
with `PurgeStopped` (exit 5, saying how much it committed) as soon as it does
not; a lost connection during a chunk is reported the same way. Two chunks of
different runs can never interleave either: both lock the rows they purge.

Purged data must not linger in the database files. On SQLite the purge
transactions run with `PRAGMA secure_delete = ON` (freed space is zeroed) and
the run ends with `PRAGMA wal_checkpoint(TRUNCATE)`, which copies the zeroed
pages into the database and empties the `-wal` file; if a reader keeps the
checkpoint from finishing, `PurgeDetail.wal` says "busy" (the purge itself is
done; the next run checkpoints again). On PostgreSQL the run ends with a plain
`VACUUM` of the affected tables, outside any transaction, so the dead rows'
space is reclaimed for reuse (it does not scrub the bytes the way `VACUUM FULL`
would; that needs an exclusive lock and is left to the database operator).

Every purged client is also appended to the erasure ledger (pbclients.ledger), a
file outside the database, in the chunk's transaction just before it commits (a
ledger that cannot be written rolls the chunk back, exit 4). And every run, before
anything else, purges again the clients the ledger lists who are back in the
database (restored from an older copy of it): whatever their state or hold, with a
`purge` event whose detail names the ledger line. Purging erases the reason text of
the client's audit events too, keeping its digest (pbclients.audit).

Purge is an operation (see pbclients.operation) with one addition: every run
appends one line to the private purge log (`RunLog`), whoever calls it and
however it ends (refused, busy, a lost lock, an error), with what it committed.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import ColumnElement, Engine, Select, delete, func, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from pbclients import audit, clock, faults, ledger, paths, schedules
from pbclients.db import is_sqlite, load_ids, reading, writing
from pbclients.errors import DatabaseBusy, ExitCode, PbClientsError
from pbclients.holds import held_clause
from pbclients.lookup import chunks
from pbclients.models import RECORD_MODELS, AuditEvent, Client, LegalHold, UndoRecord
from pbclients.operation import Action, Batch, Change, Plan, ProgressCallback
from pbclients.policy import Status
from pbclients.results import ChangeResult, Outcome

CHUNK = 1_000
PURGED = "purged"
# Session-level advisory lock key of `purge` on PostgreSQL (audit uses 7310001, init 7310002).
_PG_LOCK = 7310003


@dataclass(frozen=True)
class PurgeDetail:
    """How a run went beyond its count: the chunks it committed and how it cleaned up.

    `wal` (SQLite): "ok", or "busy" when a reader kept the checkpoint from finishing.
    `vacuum` (PostgreSQL, when something was purged): "ok" or "skipped". A plan has
    none of these yet.
    """

    chunks: int = 0
    wal: str | None = None
    vacuum: str | None = None
    # Deleted clients past their purge_after kept because they are under legal hold.
    held: int = 0
    # Clients the erasure ledger says were purged who are back: purged again, first.
    again: tuple[ledger.Erased, ...] = ()


Confirm = Callable[[Plan[PurgeDetail]], None]
# Hears of a purge log line that could not be written; the purge itself stands.
LogError = Callable[[OSError], None]

_BUSY = (
    "Another purge or run-due is running on this database; nothing was changed. "
    "It will finish on its own: run it again later if you need to."
)


class PurgeStopped(DatabaseBusy):
    """The run lost its lock (or its connection) part-way; what it committed is kept."""

    def __init__(self, purged: int, chunks: int, batch_id: str | None) -> None:
        done = (
            f"the {purged} client(s) of its first {chunks} chunk(s) (batch {batch_id}) are purged"
            if purged
            else "nothing was purged"
        )
        super().__init__(
            "The purge lost its database lock (the PostgreSQL server restarted or closed the "
            f"lock's connection), so it stopped before its next chunk to never overlap another "
            f"purge; {done}, run purge again to finish."
        )
        self.purged = purged
        self.chunks = chunks
        self.batch_id = batch_id


class _LockLost(Exception):
    """Raised inside a chunk's transaction (rolling it back) when the lock is gone."""


@dataclass(frozen=True)
class _Held:
    """Who holds the purge lock: on PostgreSQL the lock session's pid and start time.

    Together they name one session: a pid alone may be reused after a restart.
    """

    pid: int | None = None
    backend_start: datetime | None = None

    def verify(self, session: Session) -> None:
        """Raise `_LockLost` unless the lock's session still holds the lock (one query)."""
        if self.pid is None:
            return  # SQLite: the flock lives as long as this process
        held = session.execute(_STILL_HELD, {"key": _PG_LOCK, "pid": self.pid,
                                             "start": self.backend_start}).first()  # fmt: skip
        if held is None:
            raise _LockLost


# A session-level pg_advisory_lock(bigint) shows in pg_locks as classid = high 32 bits,
# objid = low 32 bits, objsubid = 1.
_STILL_HELD = text(
    "SELECT 1 FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = :key "
    "AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database "
    "WHERE datname = current_database()) AND l.pid = :pid AND a.backend_start = :start"
)


def _is_due(now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (*_is_past(now), ~held_clause(Client.id, now))


def _is_past(now: datetime) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """Deleted and past purge_after, held or not (a held one is kept and counted)."""
    return col(Client.status) == Status.DELETED.value, col(Client.purge_after) <= now


def due_query(now: datetime) -> SelectOfScalar[int | None]:
    """Deleted clients whose `purge_after` has come (`now >= purge_after`), oldest id first."""
    return select(col(Client.id)).where(*_is_due(now)).order_by(col(Client.id))


class _Due(NamedTuple):
    id: int
    email: str
    deleted_at: datetime | None
    purge_after: datetime | None


def preview(engine: Engine, now: datetime | None = None) -> Plan[PurgeDetail]:
    """Every client a purge at `now` would remove (outcome planned); reads only, no lock."""
    moment = now or clock.now()
    with reading(engine) as session:
        return _preview(session, moment)


def _preview(session: Session, now: datetime) -> Plan[PurgeDetail]:
    query = (
        select(Client.id, Client.email, Client.deleted_at, Client.purge_after)
        .where(*_is_due(now))
        .order_by(col(Client.id))
    )
    back = ledger.returning(session, ledger.location(session.get_bind()))
    again = {entry.client_id for entry, _status in back}
    rows = [_Due(*row) for row in session.execute(query) if row[0] not in again]
    held = [
        int(client_id)
        for client_id in session.execute(
            select(col(Client.id))
            .where(*_is_past(now), held_clause(Client.id, now))
            .order_by(col(Client.id))
        ).scalars()
    ]
    # Clients deleted in one batch share their times: each one is formatted once.
    iso = functools.cache(clock.iso)
    results = [
        ChangeResult(
            str(row.id),
            row.id,
            row.email,
            Status.DELETED.value,
            PURGED,
            Outcome.PLANNED,
            note=f"deleted {iso(row.deleted_at)}, purge after {iso(row.purge_after)}",
        )
        for row in rows
    ]
    held = [client_id for client_id in held if client_id not in again]
    results[:0] = _again_results(back)
    # Ids only, like every purge result: this output may end up in cron mail or a log.
    results.extend(
        ChangeResult(str(client_id), client_id, None, Status.DELETED.value, Status.DELETED.value,
                     Outcome.SKIPPED, note="legal hold")
        for client_id in held
    )  # fmt: skip
    return Plan(Action.PURGE, results, PurgeDetail(held=len(held), again=tuple(e for e, _ in back)))


def _again_results(back: Sequence[tuple[ledger.Erased, str]]) -> list[ChangeResult]:
    return [
        ChangeResult(str(entry.client_id), entry.client_id, None, status, PURGED,
                     Outcome.PLANNED, note=f"purged before (erasure ledger line {entry.line})")
        for entry, status in back
    ]  # fmt: skip


def apply(
    engine: Engine,
    plan: Plan[PurgeDetail],
    change: Change,
    *,
    on_progress: ProgressCallback | None = None,
    chunk_size: int = CHUNK,
    on_log_error: LogError | None = None,
) -> Batch[PurgeDetail]:
    """Take the purge lock, then remove the planned clients still due at `change.at`.

    A planned client brought back or purged by another run in between is left
    out. Results carry client ids only: what is purged is gone, and this output
    may end up in cron mail or a log.
    """
    with _logged(engine, change, on_log_error) as run, purge_lock(engine) as held:
        faults.checkpoint("purge.locked")
        return _apply_locked(engine, plan, change, held, run, chunk_size, on_progress)


def purge(
    engine: Engine,
    change: Change,
    *,
    confirm: Confirm | None = None,
    chunk_size: int = CHUNK,
    on_progress: ProgressCallback | None = None,
    on_log_error: LogError | None = None,
) -> Batch[PurgeDetail]:
    """A whole run, as cron and the CLI do it: lock, preview, confirm, apply.

    The preview is made under the lock, so the count the admin confirms is
    exactly what this run removes: no other purge can take some of them in
    between. `confirm(plan)` is called only when there is something to purge;
    it may raise (declined, no terminal) to stop before anything changes, and
    that run is logged with its exit code too.
    """
    with _logged(engine, change, on_log_error) as run, purge_lock(engine) as held:
        faults.checkpoint("purge.locked")
        with reading(engine) as session:
            plan = _preview(session, change.at)
        if confirm is not None and plan.changing:
            confirm(plan)
        return _apply_locked(engine, plan, change, held, run, chunk_size, on_progress)


@contextmanager
def exclusive_run(
    engine: Engine, change: Change, on_log_error: LogError | None = None
) -> Iterator[tuple[_Held, RunLog]]:
    """The purge lock and the run-log line, for a run that purges last (`run-due`).

    The line is written however the block ends, with the exit code of the error
    that ended it; `RunLog.notes` carries the run's own counts.
    """
    with _logged(engine, change, on_log_error) as run, purge_lock(engine) as held:
        faults.checkpoint("purge.locked")
        # First of all: a scheduled change or a rule must never act on an erased client.
        with reading(engine) as session:
            back = ledger.returning(session, ledger.location(engine))
        if back:
            again = PurgeDetail(again=tuple(entry for entry, _status in back))
            plan = Plan(Action.PURGE, _again_results(back), again)
            _apply_locked(engine, plan, change, held, run, CHUNK, None)
        yield held, run


def purge_locked(engine: Engine, change: Change, held: _Held, run: RunLog) -> Batch[PurgeDetail]:
    """Purge everything due at `change.at`, inside an `exclusive_run`."""
    with reading(engine) as session:
        plan = _preview(session, change.at)
    return _apply_locked(engine, plan, change, held, run, CHUNK, None)


def _apply_locked(
    engine: Engine,
    plan: Plan[PurgeDetail],
    change: Change,
    held: _Held,
    run: RunLog,
    chunk_size: int,
    on_progress: ProgressCallback | None,
) -> Batch[PurgeDetail]:
    """The purge proper, chunk by chunk, keeping `run` up to date with what is committed."""
    again = {entry.client_id: entry for entry in plan.detail.again}
    planned = [
        r.client_id
        for r in plan.results
        if r.outcome is Outcome.PLANNED and r.client_id and r.client_id not in again
    ]
    batch_id = audit.new_batch_id()
    results: list[ChangeResult] = []
    committed = 0
    kept_held = [r for r in plan.results if r.outcome is Outcome.SKIPPED]
    if plan.detail.held:
        # Only when there are any: a plain run's line keeps its long-standing shape.
        run.notes["held"] = str(plan.detail.held)
    if again:
        run.notes["repurged"] = str(len(again))
    work: list[tuple[Sequence[int], Mapping[int, ledger.Erased] | None]] = [
        *((ids, again) for ids in chunks(sorted(again), chunk_size)),
        *((ids, None) for ids in chunks(planned, chunk_size)),
    ]
    # With nothing planned, one empty chunk still checks the lock: a run that lost it
    # says so (exit 5) instead of reporting a success it did not hold the lock for.
    for ids, listed in work or [([], None)]:
        try:
            purged = _purge_chunk(engine, change, batch_id, ids, held, listed)
        except _LockLost:
            raise PurgeStopped(len(results), committed, batch_id if results else None) from None
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
            # The server went away mid-chunk: that chunk rolled back, the lock is gone.
            raise PurgeStopped(len(results), committed, batch_id if results else None) from error
        if not purged:
            continue
        committed += 1
        note = "purged again: listed in the erasure ledger" if listed else None
        results.extend(
            ChangeResult(str(client_id), client_id, None, before, PURGED, Outcome.CHANGED,
                         sha256=sha256, note=note)
            for client_id, before, sha256 in purged
        )  # fmt: skip
        run.purged, run.chunks = len(results), committed
        faults.checkpoint("purge.committed")
        if on_progress:
            on_progress(len(results), max(plan.changing, len(results)))
    detail = PurgeDetail(committed, held=plan.detail.held)
    if is_sqlite(engine):
        detail = PurgeDetail(committed, wal=_checkpoint_wal(engine), held=plan.detail.held)
    elif results:
        detail = PurgeDetail(committed, vacuum=_vacuum(engine), held=plan.detail.held)
    for key, value in (("wal", detail.wal), ("vacuum", detail.vacuum)):
        if value is not None:
            run.notes[key] = value
    faults.checkpoint("purge.cleaned")
    return Batch(Action.PURGE, results + kept_held, detail, batch_id if results else None)


def _purge_chunk(
    engine: Engine,
    change: Change,
    batch_id: str,
    planned: Sequence[int],
    held: _Held,
    again: Mapping[int, ledger.Erased] | None = None,
) -> list[tuple[int, str, str | None]]:
    """One transaction: those planned clients still due (or, `again`, still back), their
    records and audit events; (id, status before, backup SHA-256) of each."""
    with writing(engine) as session:
        held.verify(session)
        if not planned:
            return []
        if is_sqlite(session):
            session.execute(text("PRAGMA secure_delete = ON"))
        # PostgreSQL: lock the rows, so an undo or restore cannot bring a client back (and a
        # new delete give it a later purge_after) between this select and the deletes below.
        found = select(Client.id, Client.status, Client.created_at).where(
            col(Client.id).in_(planned)
        )
        if again is None:
            found = found.where(*_is_due(change.at))
        rows = session.execute(found.order_by(col(Client.id)).with_for_update()).all()
        if again is not None:
            rows = [row for row in rows if ledger.stamp(row[2]) == again[row[0]].created]
        ids = [int(row[0]) for row in rows]
        before = {int(row[0]): str(row[1]) for row in rows}
        created = {int(row[0]): row[2] for row in rows}
        faults.checkpoint("purge.selected")
        if not ids:
            return []
        selected = load_ids(session, ids)
        in_chunk = select(selected.c.id)
        if again is None:
            checksums = _backup_checksums(session, in_chunk)
        else:
            checksums = {client_id: again[client_id].sha256 for client_id in ids}
        # The reasons admins gave may name the client; the digests keep the trail verifiable.
        audit.erase_reasons(session, in_chunk)
        schedules.erase_reasons(session, ids)
        # Nothing of these tables is loaded in the session: without synchronize_session=False
        # the ORM would fetch back the id of every deleted record (ten or so per client).
        for model in reversed(RECORD_MODELS.values()):
            session.execute(
                delete(model)
                .where(model.client_id.in_(in_chunk))  # type: ignore[attr-defined]
                .execution_options(synchronize_session=False)
            )
        # The values an edit replaced are personal data too: they go with the client.
        session.execute(
            delete(UndoRecord)
            .where(col(UndoRecord.client_id).in_(in_chunk))
            .execution_options(synchronize_session=False)
        )
        # Only a hold that ended by itself is left on a due client; its reason goes too.
        session.execute(
            delete(LegalHold)
            .where(col(LegalHold.client_id).in_(in_chunk))
            .execution_options(synchronize_session=False)
        )
        faults.checkpoint("purge.records-deleted")
        removed = session.execute(
            delete(Client)
            .where(col(Client.id).in_(in_chunk), *(_is_due(change.at) if again is None else ()))
            .execution_options(synchronize_session=False)
        )
        if removed.rowcount != len(ids):  # type: ignore[attr-defined]
            raise DatabaseBusy(
                "Some clients were restored while purge ran; this chunk was not purged, "
                "run purge again."
            )
        faults.checkpoint("purge.clients-deleted")
        audit.append(
            session,
            (
                audit.NewEvent(
                    Action.PURGE,
                    client_id,
                    before[client_id],
                    PURGED,
                    {"sha256": checksums.get(client_id)}
                    if again is None
                    else {"sha256": checksums.get(client_id), "ledger_line": again[client_id].line},
                )
                for client_id in ids
            ),
            batch_id=batch_id,
            actor=change.actor,
            reason=None,
            at=change.at,
        )
        faults.checkpoint("purge.audited")
        if again is None:
            # Last, so that everything else of the chunk has succeeded: a ledger that
            # cannot be written rolls the chunk back, never a purge it does not record.
            ledger.append(
                session,
                ledger.location(engine),
                [ledger.NewEntry(ledger.PURGED, i, created[i], checksums.get(i)) for i in ids],
                change.at,
            )
    return [(client_id, before[client_id], checksums.get(client_id)) for client_id in ids]


def _backup_checksums(session: Session, in_chunk: Select[tuple[int]]) -> dict[int, str | None]:
    """Each client's backup SHA-256 from its newest delete event (restore and re-delete happen)."""
    found: dict[int, str | None] = {}
    query = (
        select(AuditEvent.client_id, AuditEvent.detail)
        .where(col(AuditEvent.action) == Action.DELETE, col(AuditEvent.client_id).in_(in_chunk))
        .order_by(col(AuditEvent.id))
    )
    for client_id, detail in session.exec(query):
        if client_id is not None:
            found[client_id] = json.loads(detail).get("sha256") if detail else None
    return found


def _checkpoint_wal(engine: Engine) -> str:
    """Copy every page into the database file and empty the -wal file: "ok" or "busy"."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        busy, _log, _done = cursor.fetchone() or (1, 0, 0)
        cursor.close()
    finally:
        raw.close()
    return "busy" if busy else "ok"


def _vacuum(engine: Engine) -> str:
    tables = ", ".join(
        [str(model.__tablename__) for model in RECORD_MODELS.values()]
        + ["undo_record", "client", "audit_event"]
    )
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql(f"VACUUM {tables}")
    except DBAPIError:
        return "skipped"
    return "ok"


@contextmanager
def purge_lock(engine: Engine) -> Iterator[_Held]:
    """Hold the one-purge-at-a-time lock for the block, or raise DatabaseBusy at once."""
    if is_sqlite(engine):
        with _file_lock(lock_path(engine)):
            yield _Held()
        return
    connection = engine.connect()
    try:
        try:
            got, pid, started = connection.execute(
                text(
                    "SELECT pg_try_advisory_lock(:key), pg_backend_pid(), "
                    "(SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())"
                ),
                {"key": _PG_LOCK},
            ).one()
            connection.commit()
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
            # The server went away as the lock was taken: whatever was taken died with it.
            raise PurgeStopped(0, 0, None) from error
        if not got:
            raise DatabaseBusy(_BUSY)
        try:
            yield _Held(pid, started)
        finally:
            # A connection the server closed took the lock with it: nothing to unlock.
            with suppress(DBAPIError):
                connection.execute(select(func.pg_advisory_unlock(_PG_LOCK)))
                connection.commit()
    finally:
        with suppress(DBAPIError):
            connection.close()


def lock_path(engine: Engine) -> Path:
    database = engine.url.database
    if not database or database == ":memory:":
        return paths.data_dir() / "memory.purge.lock"
    return Path(f"{database}.purge.lock")


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatabaseBusy(_BUSY) from None
        yield
    finally:
        # Closing the descriptor releases the lock; so does the process dying.
        os.close(descriptor)


@dataclass
class RunLog:
    """One summary line per purge run, appended to the private purge log.

    The line holds times, counts, the exit code and which database (a path, or
    a URL without its password): never client data.
    """

    target: str
    start: datetime = field(default_factory=clock.now)
    purged: int = 0
    chunks: int = 0
    notes: dict[str, str] = field(default_factory=dict)

    def line(self, exit_code: int) -> str:
        wall = datetime.now(UTC).replace(microsecond=0)
        fields = [
            str(clock.iso(wall)),
            f"start={clock.iso(self.start)}",
            f"end={clock.iso(clock.now())}",
            f"purged={self.purged}",
            f"chunks={self.chunks}",
            *(f"{key}={value}" for key, value in self.notes.items()),
            f"exit={exit_code}",
            f"db={_describe(self.target)}",
        ]
        return " ".join(fields)

    def write(self, exit_code: int) -> Path:
        log = paths.purge_log()
        paths.touch_private(log)
        descriptor = os.open(log, os.O_WRONLY | os.O_APPEND, 0o600)
        try:
            # One write per line: concurrent runs append whole lines.
            os.write(descriptor, (self.line(exit_code) + "\n").encode())
        finally:
            os.close(descriptor)
        return log


@contextmanager
def _logged(engine: Engine, change: Change, on_log_error: LogError | None) -> Iterator[RunLog]:
    """Append the run's line however it ends, with what it committed (kept in the RunLog)."""
    run = RunLog(_target(engine), change.at)
    exit_code: int = ExitCode.ERROR
    try:
        yield run
        exit_code = ExitCode.OK
    except PbClientsError as error:
        exit_code = error.exit_code
        if isinstance(error, PurgeStopped):
            run.notes["stopped"] = "lock-lost"
        raise
    except KeyboardInterrupt:
        exit_code = 130  # what the shell reports for Ctrl-C, and what the CLI exits with
        raise
    finally:
        try:
            run.write(exit_code)
        except OSError as error:
            if on_log_error is not None:
                on_log_error(error)


def _target(engine: Engine) -> str:
    """The database as the log names it: a file path, or the URL without its driver."""
    url = engine.url
    if is_sqlite(engine):
        return url.database or ":memory:"
    return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=False)


def _describe(target: str) -> str:
    if not paths.is_url(target):
        return str(Path(target).expanduser().resolve())
    try:
        url = make_url(target)
        bare = URL.create(url.drivername, url.username, None, url.host, url.port, url.database)
        return bare.render_as_string(hide_password=False)
    except Exception:  # an unparsable URL is reported by the command itself
        return target.split("://", 1)[0] + "://?"
