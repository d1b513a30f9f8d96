"""Benchmark: import 1,000,000 clients from a CSV into an empty practice, with peak memory.

Times the real CLI as a subprocess,

    pbclients --db DB import FILE --yes --format json > /dev/null

with its peak memory, then a raw baseline on a byte copy of the same empty database,
also as a subprocess of this interpreter, streaming the file: read the CSV a chunk of
10,000 rows at a time, INSERT the clients with their ids, and one `add` audit row per
client with the same SHA-256 chain, all in one transaction (SQLite: WAL,
synchronous=NORMAL, as the tool; PostgreSQL: psycopg, the same statements). Aim
(issue 12): the tool within 1.5x of the baseline, under 200 MB whatever the size.

    python tests/perf/bench_import.py                       # 1,000,000 rows
    python tests/perf/bench_import.py --rows 20000 --verify
    python tests/perf/bench_import.py --engine postgres [--url URL]
"""

from __future__ import annotations

import argparse
import csv
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import _bench as b

ACTOR = "bench"
CHUNK = 10_000
AIM_RATIO = 1.5
AIM_MB = 200


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    b.add_common_options(parser)
    # Internal: the baseline runs as its own process so both sides pay an interpreter start.
    parser.add_argument("--baseline-run", nargs=2, metavar=("DB", "CSV"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        handle.write("email,first_name,last_name\n")
        handle.writelines(
            f"new{n:07d}@example.org,First{n % 997},Last{n % 991}\n" for n in range(1, rows + 1)
        )


# --- the baseline ---------------------------------------------------------------------------


def read_chunks(path: str) -> Iterator[list[tuple[str, str, str]]]:
    """The file's rows (email, first, last), CHUNK at a time: never the whole file in memory."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        rows = ((r[0].strip(), r[1].strip(), r[2].strip()) for r in reader if r)
        while chunk := list(islice(rows, CHUNK)):
            yield chunk


class _Raw:
    """The same statements on sqlite3 (qmark) or psycopg (format)."""

    def __init__(self, db: str) -> None:
        self.pg = db.startswith("postgresql")
        if self.pg:
            import psycopg

            self.con: Any = psycopg.connect(db)
            self.cur = self.con.cursor()
            self.at: Any = b.naive(b.NOW)
        else:
            self.con = sqlite3.connect(db, isolation_level=None)
            for pragma in ("busy_timeout = 60000", "foreign_keys = ON", "journal_mode = WAL"):
                self.con.execute(f"PRAGMA {pragma}")
            self.con.execute("PRAGMA synchronous = NORMAL")
            self.con.execute("BEGIN IMMEDIATE")
            self.cur = self.con.cursor()
            self.at = b.sqlite_time(b.NOW)

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.pg else statement

    def one(self, statement: str, *params: Any) -> Any:
        self.cur.execute(self.sql(statement), params)
        return self.cur.fetchone()

    def many(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        self.cur.executemany(self.sql(statement), rows)

    def commit(self) -> None:
        if self.pg:
            self.con.commit()
        else:
            self.con.execute("COMMIT")
        self.con.close()


def baseline(db: str, csv_path: str) -> int:
    raw = _Raw(db)
    if raw.pg:
        # The tool serialises writers on PostgreSQL with this advisory lock too.
        raw.one("SELECT pg_advisory_xact_lock(7310001)")
    next_id = int(raw.one("SELECT coalesce(max(id), 0) FROM client")[0]) + 1
    head = raw.one("SELECT value FROM setting WHERE key = 'audit_head'")
    last_id, prev_hash = b.parse_head(head[0] if head else None)
    columns = "id, email, email_key, first_name, last_name, status, created_at"
    added = 0
    for chunk in read_chunks(csv_path):
        ids = range(next_id, next_id + len(chunk))
        raw.many(
            f"INSERT INTO client ({columns}) VALUES (?, ?, ?, ?, ?, 'active', ?)",
            [
                (cid, email, email.casefold(), first, last, raw.at)
                for cid, (email, first, last) in zip(ids, chunk, strict=True)
            ],
        )
        rows, prev_hash = b.audit_rows(
            last_id + 1,
            prev_hash,
            [("add", cid, None, "active", None) for cid in ids],
            at=b.NOW, actor=ACTOR, batch_id="baseline0001", reason=None, at_value=raw.at,
        )  # fmt: skip
        raw.many(b.AUDIT_INSERT.format(", ".join("?" * 12)), rows)
        next_id += len(chunk)
        last_id += len(rows)
        added += len(chunk)
    if raw.pg:
        raw.one("SELECT setval(pg_get_serial_sequence('client', 'id'), ?)", next_id - 1)
        raw.one("SELECT setval(pg_get_serial_sequence('audit_event', 'id'), ?)", last_id)
    raw.many(
        "INSERT INTO setting (key, value) VALUES ('audit_head', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [(f"{last_id}:{prev_hash}",)],
    )
    raw.commit()
    return added


# --- the run --------------------------------------------------------------------------------


def counts(db: str, engine: str) -> tuple[int, int]:
    query = "SELECT (SELECT count(*) FROM client), (SELECT count(*) FROM audit_event)"
    if engine == "sqlite":
        con = sqlite3.connect(db)
        try:
            return con.execute(query).fetchone()
        finally:
            con.close()
    import psycopg

    with psycopg.connect(db) as pg:
        row = pg.execute(query).fetchone()
        assert row is not None  # counts always return one row
        return row[0], row[1]


def measure(
    engine: str, url: str, rows: int, *, repeat: int = 1, verify: bool = False, keep: bool = False
) -> b.Result:
    """An empty practice; tool and baseline import the same CSV `repeat` times on copies."""
    work = Path(tempfile.mkdtemp(prefix="pbbench-import-"))
    csv_path = work / "new-clients.csv"
    runs = b.Comparison(engine, work, url, "pbbench_import", b.tool_env(work / "home"))
    print(f"machine: {b.machine()}; engine {engine}; work folder {work}")
    try:
        runs.prepare()
        write_csv(csv_path, rows)
        print(f"CSV of {rows:,} rows: {csv_path.stat().st_size / 1e6:.1f} MB")
        runs.run(
            repeat,
            lambda db: b.pbclients(
                "--db", db, "import", str(csv_path), "--yes", "--format", "json"
            ),
            lambda db: [sys.executable, __file__, "--baseline-run", db, str(csv_path)],
        )
        tool_counts = counts(runs.tool_db, engine)
        base_counts = counts(runs.base_db, engine)
        if tool_counts != base_counts or tool_counts[0] != rows:
            sys.exit(f"tool and baseline disagree: {tool_counts} vs {base_counts}")
        if verify:
            runs.verify_trails()
        return b.Result(runs.tool_runs, runs.base_runs, {"imported": tool_counts[0]})
    finally:
        runs.cleanup(keep)


def main() -> None:
    args = parse_args()
    if args.baseline_run:
        baseline(*args.baseline_run)
        return
    result = measure(
        args.engine, args.url, args.rows, repeat=args.repeat, verify=args.verify, keep=args.keep
    )
    tool, base = b.report("import", args.engine, result)
    ratio = tool.seconds / base.seconds
    print(
        f"imported {result.facts['imported']:,}; ratio tool/baseline {ratio:.2f}x wall, "
        f"{tool.cpu_seconds / base.cpu_seconds:.2f}x CPU (aim <= {AIM_RATIO}x: "
        f"{'met' if ratio <= AIM_RATIO else 'NOT met'}); tool peak {tool.peak_mb:.0f} MB, "
        f"baseline {base.peak_mb:.0f} MB (aim < {AIM_MB} MB: "
        f"{'met' if tool.peak_mb < AIM_MB else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
