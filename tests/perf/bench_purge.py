"""Benchmark: purge 100,000 deleted clients (~10 records each) from a 1,000,000-client database.

Times the real CLI as a subprocess, `pbclients --db DB purge --yes` (silent, as
cron runs it), with its peak memory, then a raw baseline on a byte copy of the same
database doing the same work as its own process: the same chunks of 1,000 due
clients, one transaction each, DELETE per record table (and the undo values and
ended holds) and then the clients, the reason text of their audit events erased, one
hash-chained `purge` audit event per client carrying the backup SHA-256 read from
its `delete` event, and one hash-chained line per client appended to an erasure
ledger file and fsynced before the commit (as pbclients.ledger does); SQLite with
secure_delete and a final wal_checkpoint(TRUNCATE), PostgreSQL (psycopg, same
statements) with a final VACUUM of the touched tables.

    python tests/perf/bench_purge.py                          # 1,000,000 / 100,000
    python tests/perf/bench_purge.py --clients 20000 --deleted 2000 --verify
    python tests/perf/bench_purge.py --engine postgres [--url URL]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import _bench as b

CHUNK = 1_000  # pbclients.purge.CHUNK
ACTOR = "bench"
# Every per-client record table, children before parents (payment_plan -> payment_method).
RECORD_TABLES = (
    "notification", "payment_plan", "payment_method", "document", "form_request", "message",
    "session_note", "protocol", "journal_entry", "appointment", "enrolment",
)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--deleted", type=int, default=100_000, help="clients due for purge")
    b.add_common_options(parser)
    parser.add_argument("--baseline-run", metavar="DB", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- the prepared database: deleted clients, their records, their delete events -------------

DELETED_AT = b.NOW - timedelta(days=40)
PURGE_AFTER = b.NOW - timedelta(days=10)


def record_rows(ids: list[int]) -> Iterator[tuple[str, str, tuple[Any, ...]]]:
    """Ten records per client: (table, columns, values); ids come from the database."""
    body = "Felt calmer after the breathing practice; slept seven hours. " * 3
    content = bytes(range(256)) * 2
    when = b.NOW - timedelta(days=60)
    for cid in ids:
        for n in range(2):
            yield "journal_entry", "client_id, written_at, body", (cid, when, f"{n} {body}")
            yield "message", "client_id, sent_at, sender, body", (cid, when, "client", body)
        yield "session_note", "client_id, written_at, shared_with_client, body", (
            cid, when, False, body,
        )  # fmt: skip
        yield "protocol", "client_id, assigned_at, title, body", (cid, when, "Sleep", body)
        yield "appointment", "client_id, starts_at, duration_minutes, telehealth, title", (
            cid, when, 50, True, "Session",
        )  # fmt: skip
        yield "form_request", "client_id, form_name, sent_at, completed_at, response_json", (
            cid, "Intake", when, when, '{"goal": "sleep"}',
        )  # fmt: skip
        yield "document", "client_id, filename, content_type, uploaded_at, content", (
            cid, "plan.pdf", "application/pdf", when, content,
        )  # fmt: skip
        yield "notification", "client_id, kind, created_at, sent_at", (cid, "reminder", when, when)


def delete_events(ids: list[int], start_id: int, prev_hash: str, at_value: Any) -> tuple:
    events = [
        (
            "delete", cid, "deactivated", "deleted",
            json.dumps({"backup": f"client-{cid:06d}-20261017T090000Z.pbbackup.zip",
                        "sha256": f"{cid:064x}"}, sort_keys=True),
        )
        for cid in ids
    ]  # fmt: skip
    return b.audit_rows(
        start_id, prev_hash, events, at=DELETED_AT, actor=ACTOR, batch_id="prepdelete01",
        reason=None, at_value=at_value,
    )  # fmt: skip


def _grouped(ids: list[int], convert: Any) -> dict[tuple[str, str], list[tuple[Any, ...]]]:
    grouped: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for table, columns, values in record_rows(ids):
        grouped.setdefault((table, columns), []).append(tuple(convert(v) for v in values))
    return grouped


def prepare_sqlite(path: Path, deleted: list[int]) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA synchronous = OFF")
    con.execute("BEGIN")
    con.executemany(
        "UPDATE client SET status = 'deleted', deactivated_at = ?, deleted_at = ?, "
        "purge_after = ? WHERE id = ?",
        [(b.sqlite_time(DELETED_AT), b.sqlite_time(DELETED_AT), b.sqlite_time(PURGE_AFTER), c)
         for c in deleted],
    )  # fmt: skip
    for chunk_start in range(0, len(deleted), 20_000):
        ids = deleted[chunk_start : chunk_start + 20_000]
        for (table, columns), rows in _grouped(ids, b._sqlite_value).items():
            marks = ", ".join("?" * len(columns.split(",")))
            con.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
    rows, head = delete_events(deleted, 1, b.GENESIS, b.sqlite_time(DELETED_AT))
    con.executemany(b.AUDIT_INSERT.format(", ".join("?" * 12)), rows)
    con.execute(
        "INSERT INTO setting (key, value) VALUES ('audit_head', ?)", (f"{len(rows)}:{head}",)
    )
    con.execute("COMMIT")
    con.execute("ANALYZE")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def prepare_postgres(url: str, deleted: list[int]) -> None:
    import psycopg

    def plain(value: Any) -> Any:
        return b.naive(value) if hasattr(value, "tzinfo") else value

    with psycopg.connect(url) as con, con.cursor() as cur:
        cur.execute("CREATE TEMP TABLE gone (id BIGINT PRIMARY KEY)")
        with cur.copy("COPY gone (id) FROM STDIN") as copy:
            for cid in deleted:
                copy.write_row((cid,))
        cur.execute(
            "UPDATE client SET status = 'deleted', deactivated_at = %(at)s, deleted_at = %(at)s, "
            "purge_after = %(after)s WHERE id IN (SELECT id FROM gone)",
            {"at": b.naive(DELETED_AT), "after": b.naive(PURGE_AFTER)},
        )
        for chunk_start in range(0, len(deleted), 20_000):
            ids = deleted[chunk_start : chunk_start + 20_000]
            for (table, columns), rows in _grouped(ids, plain).items():
                with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
        rows, head = delete_events(deleted, 1, b.GENESIS, b.naive(DELETED_AT))
        columns = "id, at, actor, action, client_id, before, after, batch_id, reason, detail, "
        with cur.copy(f"COPY audit_event ({columns}prev_hash, hash) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(
            "INSERT INTO setting (key, value) VALUES ('audit_head', %s)", (f"{len(rows)}:{head}",)
        )
        for table in (*RECORD_TABLES, "audit_event"):
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 1) FROM {table}))"
            )


# --- the baseline ---------------------------------------------------------------------------

_LEDGER_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


class Ledger:
    """The erasure ledger the tool keeps (pbclients.ledger): one hash-chained JSON line per
    purged client, appended and fsynced in each chunk before its commit."""

    def __init__(self, practice: str) -> None:
        descriptor, self.path = tempfile.mkstemp(prefix="pbbench-ledger-")
        self.descriptor = descriptor
        self.practice = practice
        self.number = 0
        self.prev = b.GENESIS

    def append(self, purged: list[tuple[int, Any, str | None]]) -> str:
        """Lines for (client id, created_at, backup sha256); returns the head "number:hash"."""
        at = b.iso(b.NOW)
        lines = []
        for client_id, created, sha256 in purged:
            self.number += 1
            moment = datetime.fromisoformat(created) if isinstance(created, str) else created
            stamp = moment.isoformat(timespec="microseconds").replace("+00:00", "") + "Z"
            fields = [self.number, at, "purged", self.practice, client_id, stamp, sha256]
            digest = hashlib.sha256(_LEDGER_JSON.encode([self.prev, *fields]).encode()).hexdigest()
            keys = ("line", "at", "event", "practice", "client", "created", "sha256")
            line = dict(zip(keys, fields, strict=True), prev=self.prev, hash=digest)
            lines.append(_LEDGER_JSON.encode(line) + "\n")
            self.prev = digest
        os.write(self.descriptor, "".join(lines).encode())
        os.fsync(self.descriptor)
        return f"{self.number}:{self.prev}"

    def close(self) -> None:
        os.close(self.descriptor)
        os.unlink(self.path)


def _checksums(rows: list[tuple[int, str | None]]) -> dict[int, str | None]:
    found: dict[int, str | None] = {}
    for client_id, detail in rows:
        found[client_id] = json.loads(detail).get("sha256") if detail else None
    return found


def baseline_sqlite(db: str) -> int:
    con = sqlite3.connect(db, isolation_level=None)
    for pragma in ("busy_timeout = 60000", "foreign_keys = ON", "journal_mode = WAL"):
        con.execute(f"PRAGMA {pragma}")
    con.execute("PRAGMA synchronous = NORMAL")
    con.execute("PRAGMA secure_delete = ON")
    con.execute("CREATE TEMP TABLE ids (id INTEGER PRIMARY KEY)")
    now = b.sqlite_time(b.NOW)
    practice = con.execute("SELECT hash FROM audit_event ORDER BY id LIMIT 1").fetchone()[0]
    ledger = Ledger(practice)
    purged = 0
    while True:
        con.execute("BEGIN IMMEDIATE")
        created = dict(
            con.execute(
                "SELECT id, created_at FROM client WHERE status = 'deleted' AND purge_after <= ? "
                "ORDER BY id LIMIT ?",
                (now, CHUNK),
            ).fetchall()
        )
        ids = list(created)
        if not ids:
            con.execute("COMMIT")
            break
        con.execute("DELETE FROM temp.ids")
        con.executemany("INSERT INTO temp.ids (id) VALUES (?)", [(i,) for i in ids])
        sums = _checksums(
            con.execute(
                "SELECT client_id, detail FROM audit_event WHERE action = 'delete' "
                "AND client_id IN (SELECT id FROM temp.ids) ORDER BY id"
            ).fetchall()
        )
        con.execute(
            "UPDATE audit_event SET reason = NULL "
            "WHERE client_id IN (SELECT id FROM temp.ids) AND reason IS NOT NULL"
        )
        for table in (*RECORD_TABLES, "undo_record", "legal_hold"):
            con.execute(f"DELETE FROM {table} WHERE client_id IN (SELECT id FROM temp.ids)")
        removed = con.execute(
            "DELETE FROM client WHERE id IN (SELECT id FROM temp.ids) AND status = 'deleted'"
        ).rowcount
        assert removed == len(ids)
        head = con.execute("SELECT value FROM setting WHERE key = 'audit_head'").fetchone()
        last_id, prev_hash = b.parse_head(head[0] if head else None)
        rows, prev_hash = b.audit_rows(
            last_id + 1, prev_hash,
            [("purge", cid, "deleted", "purged", json.dumps({"sha256": sums.get(cid)}))
             for cid in ids],
            at=b.NOW, actor=ACTOR, batch_id="baseline0001", reason=None, at_value=now,
        )  # fmt: skip
        con.executemany(b.AUDIT_INSERT.format(", ".join("?" * 12)), rows)
        con.execute(
            "INSERT INTO setting (key, value) VALUES ('audit_head', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (f"{last_id + len(rows)}:{prev_hash}",),
        )
        head = ledger.append([(cid, created[cid], sums.get(cid)) for cid in ids])
        con.execute(
            "INSERT INTO setting (key, value) VALUES ('ledger_head', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (head,),
        )
        con.execute("COMMIT")
        purged += len(ids)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    ledger.close()
    return purged


def baseline_postgres(url: str) -> int:
    import psycopg

    now = b.naive(b.NOW)
    purged = 0
    with psycopg.connect(url) as con:
        con.execute("CREATE TEMP TABLE ids (id BIGINT PRIMARY KEY)")
        first = con.execute("SELECT hash FROM audit_event ORDER BY id LIMIT 1").fetchone()
        assert first is not None  # the prepared trail holds the delete events
        ledger = Ledger(first[0])
        con.commit()
        while True:
            with con.transaction(), con.cursor() as cur:
                cur.execute(
                    "SELECT id, created_at FROM client WHERE status = 'deleted' "
                    "AND purge_after <= %s ORDER BY id LIMIT %s FOR UPDATE",
                    (now, CHUNK),
                )
                created: dict[int, Any] = dict(cur.fetchall())
                ids = list(created)
                if not ids:
                    break
                cur.execute("DELETE FROM ids")
                cur.execute("INSERT INTO ids (id) SELECT unnest(%s::bigint[])", (ids,))
                cur.execute(
                    "SELECT client_id, detail FROM audit_event WHERE action = 'delete' "
                    "AND client_id IN (SELECT id FROM ids) ORDER BY id"
                )
                sums = _checksums(cur.fetchall())
                cur.execute(
                    "UPDATE audit_event SET reason = NULL "
                    "WHERE client_id IN (SELECT id FROM ids) AND reason IS NOT NULL"
                )
                for table in (*RECORD_TABLES, "undo_record", "legal_hold"):
                    cur.execute(f"DELETE FROM {table} WHERE client_id IN (SELECT id FROM ids)")
                cur.execute(
                    "DELETE FROM client WHERE id IN (SELECT id FROM ids) AND status = 'deleted'"
                )
                assert cur.rowcount == len(ids)
                cur.execute("SELECT pg_advisory_xact_lock(7310001)")
                cur.execute("SELECT value FROM setting WHERE key = 'audit_head'")
                head = cur.fetchone()
                last_id, prev_hash = b.parse_head(head[0] if head else None)
                rows, prev_hash = b.audit_rows(
                    last_id + 1, prev_hash,
                    [("purge", cid, "deleted", "purged", json.dumps({"sha256": sums.get(cid)}))
                     for cid in ids],
                    at=b.NOW, actor=ACTOR, batch_id="baseline0001", reason=None, at_value=now,
                )  # fmt: skip
                cur.executemany(b.AUDIT_INSERT.format(", ".join(["%s"] * 12)), rows)
                cur.execute(
                    "INSERT INTO setting (key, value) VALUES ('audit_head', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (f"{last_id + len(rows)}:{prev_hash}",),
                )
                ledger_head = ledger.append([(cid, created[cid], sums.get(cid)) for cid in ids])
                cur.execute(
                    "INSERT INTO setting (key, value) VALUES ('ledger_head', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (ledger_head,),
                )
                purged += len(ids)
    ledger.close()
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f"VACUUM {', '.join((*RECORD_TABLES, 'client', 'audit_event'))}")
    return purged


# --- the run --------------------------------------------------------------------------------


def counts(db: str, engine: str) -> tuple[int, ...]:
    query = (
        "SELECT (SELECT count(*) FROM client), (SELECT count(*) FROM journal_entry), "
        "(SELECT count(*) FROM document), (SELECT count(*) FROM audit_event WHERE action = "
        "'purge')"
    )
    if engine == "sqlite":
        con = sqlite3.connect(db)
        try:
            return tuple(con.execute(query).fetchone())
        finally:
            con.close()
    import psycopg

    with psycopg.connect(db) as pg:
        return tuple(pg.execute(query).fetchone() or ())


def measure(
    engine: str,
    url: str,
    clients: int,
    deleted_count: int,
    *,
    repeat: int = 1,
    verify: bool = False,
    keep: bool = False,
) -> b.Result:
    """Prepare, run tool and baseline `repeat` times on fresh copies, check they agree."""
    work = Path(tempfile.mkdtemp(prefix="pbbench-purge-"))
    runs = b.Comparison(engine, work, url, "pbbench_purge", b.tool_env(work / "home"))
    deleted = sorted(random.Random(3).sample(range(1, clients + 1), deleted_count))
    print(f"machine: {b.machine()}; engine {engine}; work folder {work}")
    try:
        started = time.perf_counter()
        prepared = runs.prepare()
        if engine == "sqlite":
            b.fill_sqlite(Path(prepared), clients)
            prepare_sqlite(Path(prepared), deleted)
        else:
            b.fill_postgres(prepared, clients)
            prepare_postgres(prepared, deleted)
            b.pg_vacuum(prepared)
        before = counts(prepared, engine)
        print(
            f"prepared {clients:,} clients, {deleted_count:,} due for purge with "
            f"{before[1] // 2 * 10 // max(1, deleted_count):,} records each "
            f"in {time.perf_counter() - started:.1f} s"
        )
        runs.run(
            repeat,
            lambda db: b.pbclients("--db", db, "purge", "--yes"),
            lambda db: [sys.executable, __file__, "--baseline-run", db],
            tool_stdout=None,
        )
        tool_counts = counts(runs.tool_db, engine)
        base_counts = counts(runs.base_db, engine)
        if tool_counts != base_counts or tool_counts[3] != deleted_count:
            sys.exit(f"tool and baseline disagree: {tool_counts} vs {base_counts}")
        if verify:
            runs.verify_trails()
        # Two journal entries of ten records per client.
        return b.Result(runs.tool_runs, runs.base_runs, {"records": before[1] // 2 * 10})
    finally:
        runs.cleanup(keep)


def main() -> None:
    args = parse_args()
    if args.baseline_run:
        db = args.baseline_run
        (baseline_postgres if db.startswith("postgresql") else baseline_sqlite)(db)
        return
    result = measure(
        args.engine, args.url, args.clients, args.deleted,
        repeat=args.repeat, verify=args.verify, keep=args.keep,
    )  # fmt: skip
    tool, base = b.report("purge", args.engine, result)
    print(
        f"clients {args.clients:,}, purged {args.deleted:,} with ~{result.facts['records']:,} "
        f"records ({args.deleted / tool.seconds:,.0f} clients/s); ratio tool/baseline "
        f"{tool.seconds / base.seconds:.2f}x wall, "
        f"{tool.cpu_seconds / base.cpu_seconds:.2f}x CPU; tool peak {tool.peak_mb:.0f} MB"
    )


if __name__ == "__main__":
    main()
