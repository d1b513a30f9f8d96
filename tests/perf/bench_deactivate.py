"""Benchmark: deactivate 100,000 clients from a CSV in a 1,000,000-client database (issue 2).

Times the real CLI as a subprocess,

    pbclients --db DB deactivate --csv FILE --yes --format json > /dev/null

with its peak memory, then a raw baseline doing the same work on a byte copy of the
same database, also as a subprocess of this interpreter: read the CSV, load the ids
into a temp table, read each selected client's e-mail and status (the results report
them), one UPDATE ... WHERE id IN (SELECT id FROM temp) AND status = 'active', and one
audit row per changed client with the same sha256 hash chain, in one transaction
(SQLite: WAL, synchronous=NORMAL, as the tool; PostgreSQL: psycopg, the same
statements), then the same JSON result lines written to stdout. Aim (issue 12): the tool
within 1.5x of the baseline, under 300 MB.

    python tests/perf/bench_deactivate.py                       # 1,000,000 / 100,000
    python tests/perf/bench_deactivate.py --clients 20000 --change 2000 --verify
    python tests/perf/bench_deactivate.py --engine postgres [--url URL]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import _bench as b

ACTOR = "bench"
AIM_RATIO = 1.5
AIM_MB = 300


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--change", type=int, default=100_000)
    b.add_common_options(parser)
    # Internal: the baseline runs as its own process so both sides pay an interpreter start.
    parser.add_argument("--baseline-run", nargs=2, metavar=("DB", "CSV"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- the baseline ---------------------------------------------------------------------------


def read_ids(path: str) -> dict[int, str]:
    """Each id once, in file order, with its reference as given (the results echo it)."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        refs: dict[int, str] = {}
        for row in reader:
            if row:
                refs.setdefault(int(row[0]), row[0])
        return refs


def write_results(refs: dict[int, str], found: dict[int, tuple[str, str]], batch_id: str) -> None:
    """The tool's `--format json` results: one object a line in one array, batched writes."""
    encode = json.JSONEncoder(ensure_ascii=False).encode
    out = sys.stdout
    pending = ["["]
    separator = "\n  "
    for client_id, reference in refs.items():
        email, before = found[client_id]
        record = {
            "reference": reference, "id": client_id, "email": email, "before": before,
            "after": "deactivated",
            "outcome": "changed" if before == "active" else "unchanged",
            "backup": None, "sha256": None, "note": None, "batch": batch_id,
        }  # fmt: skip
        pending.append(separator + encode(record))
        separator = ",\n  "
        if len(pending) >= 2048:
            out.write("".join(pending))
            pending.clear()
    pending.append("\n]\n" if separator == ",\n  " else "]\n")
    out.write("".join(pending))


def baseline_sqlite(db: str, csv_path: str) -> int:
    refs = read_ids(csv_path)
    at = b.NOW
    con = sqlite3.connect(db, isolation_level=None)
    for pragma in ("busy_timeout = 60000", "foreign_keys = ON", "journal_mode = WAL"):
        con.execute(f"PRAGMA {pragma}")
    con.execute("PRAGMA synchronous = NORMAL")
    con.execute("BEGIN IMMEDIATE")
    con.execute("CREATE TEMP TABLE ids (id INTEGER PRIMARY KEY)")
    con.executemany("INSERT OR IGNORE INTO ids (id) VALUES (?)", ((i,) for i in refs))
    found = {
        row[0]: (row[1], row[2])
        for row in con.execute(
            "SELECT client.id, email, status FROM client JOIN temp.ids ON ids.id = client.id"
        )
    }
    changing = [cid for cid in refs if found[cid][1] == "active"]
    updated = con.execute(
        "UPDATE client SET status = 'deactivated', deactivated_at = ? "
        "WHERE id IN (SELECT id FROM temp.ids) AND status = 'active'",
        (b.sqlite_time(at),),
    ).rowcount
    assert updated == len(changing), (updated, len(changing))
    head = con.execute("SELECT value FROM setting WHERE key = 'audit_head'").fetchone()
    last_id, prev_hash = b.parse_head(head[0] if head else None)
    rows, prev_hash = b.audit_rows(
        last_id + 1,
        prev_hash,
        [("deactivate", cid, "active", "deactivated", None) for cid in changing],
        at=at, actor=ACTOR, batch_id="baseline0001", reason=None, at_value=b.sqlite_time(at),
    )  # fmt: skip
    con.executemany(b.AUDIT_INSERT.format(", ".join("?" * 12)), rows)
    con.execute(
        "INSERT INTO setting (key, value) VALUES ('audit_head', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (f"{last_id + len(rows)}:{prev_hash}",),
    )
    con.execute("COMMIT")
    con.close()
    write_results(refs, found, "baseline0001")
    return updated


def baseline_postgres(url: str, csv_path: str) -> int:
    import psycopg

    refs = read_ids(csv_path)
    at = b.NOW
    with psycopg.connect(url) as con, con.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE ids (id BIGINT PRIMARY KEY) ON COMMIT DROP")
        cur.executemany(
            "INSERT INTO ids (id) VALUES (%s) ON CONFLICT DO NOTHING", [(i,) for i in refs]
        )
        cur.execute("SELECT client.id, email, status FROM client JOIN ids ON ids.id = client.id")
        found = {row[0]: (row[1], row[2]) for row in cur.fetchall()}
        changing = [cid for cid in refs if found[cid][1] == "active"]
        cur.execute(
            "UPDATE client SET status = 'deactivated', deactivated_at = %s "
            "WHERE id IN (SELECT id FROM ids) AND status = 'active'",
            (b.naive(at),),
        )
        updated = cur.rowcount
        assert updated == len(changing), (updated, len(changing))
        cur.execute("SELECT value FROM setting WHERE key = 'audit_head'")
        head = cur.fetchone()
        last_id, prev_hash = b.parse_head(head[0] if head else None)
        rows, prev_hash = b.audit_rows(
            last_id + 1,
            prev_hash,
            [("deactivate", cid, "active", "deactivated", None) for cid in changing],
            at=at, actor=ACTOR, batch_id="baseline0001", reason=None, at_value=b.naive(at),
        )  # fmt: skip
        cur.executemany(b.AUDIT_INSERT.format(", ".join(["%s"] * 12)), rows)
        cur.execute(
            "INSERT INTO setting (key, value) VALUES ('audit_head', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (f"{last_id + len(rows)}:{prev_hash}",),
        )
    write_results(refs, found, "baseline0001")
    return updated


# --- the run --------------------------------------------------------------------------------


def write_csv(path: Path, clients: int, change: int) -> None:
    ids = random.Random(2).sample(range(1, clients + 1), change)
    with path.open("w", newline="", encoding="utf-8") as handle:
        handle.write("id\n")
        handle.writelines(f"{client_id}\n" for client_id in ids)


def counts(db: str, engine: str) -> tuple[int, int]:
    query = (
        "SELECT (SELECT count(*) FROM client WHERE status = 'deactivated'), "
        "(SELECT count(*) FROM audit_event)"
    )
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
        deactivated, events = row
        return deactivated, events


def measure(
    engine: str,
    url: str,
    clients: int,
    change: int,
    *,
    repeat: int = 1,
    verify: bool = False,
    keep: bool = False,
) -> b.Result:
    """Prepare, run tool and baseline `repeat` times on fresh copies, check they agree."""
    work = Path(tempfile.mkdtemp(prefix="pbbench-deactivate-"))
    csv_path = work / "change.csv"
    runs = b.Comparison(engine, work, url, "pbbench_deact", b.tool_env(work / "home"))
    print(f"machine: {b.machine()}; engine {engine}; work folder {work}")
    try:
        started = time.perf_counter()
        prepared = runs.prepare()
        if engine == "sqlite":
            b.fill_sqlite(Path(prepared), clients)
        else:
            b.fill_postgres(prepared, clients)
            b.pg_vacuum(prepared)
        write_csv(csv_path, clients, change)
        print(
            f"prepared {clients:,} clients, CSV of {change:,} ids "
            f"in {time.perf_counter() - started:.1f} s"
        )
        runs.run(
            repeat,
            lambda db: b.pbclients(
                "--db", db, "deactivate", "--csv", str(csv_path), "--yes", "--format", "json"
            ),
            lambda db: [sys.executable, __file__, "--baseline-run", db, str(csv_path)],
        )
        tool_counts = counts(runs.tool_db, engine)
        base_counts = counts(runs.base_db, engine)
        if tool_counts != base_counts:
            sys.exit(f"tool and baseline disagree: {tool_counts} vs {base_counts}")
        if verify:
            runs.verify_trails()
        return b.Result(runs.tool_runs, runs.base_runs, {"changed": tool_counts[0]})
    finally:
        runs.cleanup(keep)


def main() -> None:
    args = parse_args()
    if args.baseline_run:
        db, csv_path = args.baseline_run
        run = baseline_postgres if db.startswith("postgresql") else baseline_sqlite
        run(db, csv_path)
        return
    result = measure(
        args.engine, args.url, args.clients, args.change,
        repeat=args.repeat, verify=args.verify, keep=args.keep,
    )  # fmt: skip
    tool, base = b.report("deactivate", args.engine, result)
    ratio = tool.seconds / base.seconds
    print(
        f"clients {args.clients:,}, changed {result.facts['changed']:,}; "
        f"ratio tool/baseline {ratio:.2f}x wall, {tool.cpu_seconds / base.cpu_seconds:.2f}x "
        f"CPU (aim <= {AIM_RATIO:g}x: {'met' if ratio <= AIM_RATIO else 'NOT met'}); "
        f"tool peak {tool.peak_mb:.0f} MB (aim < {AIM_MB} MB: "
        f"{'met' if tool.peak_mb < AIM_MB else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
