"""Benchmark: export throughput on a demo practice, and memory that does not grow with it.

Builds `pbclients demo --clients N` (default 10,000) in a temporary database, then
times the real CLI as a subprocess for the first 1,000 clients and for all of them:

    pbclients --db DB export --ids-from IDS --backup-dir DIR --format json > /dev/null

reporting clients/s, MB/s of backup written and the child's peak RSS (which should
be about the same for 1,000 and 10,000 clients: one client at a time). Next to it, in
the same run, a raw baseline as its own process doing comparable work: per client,
a query per record table (plus profile and audit events), one deflated ZIP with JSON
members and the document files, fsync, then read every member back and hash it.

    python tests/perf/bench_export.py                      # 10,000 demo clients
    python tests/perf/bench_export.py --clients 2000 --small 200
    python tests/perf/bench_export.py --engine postgres [--url URL]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import _bench as b

TABLES = (
    "enrolment", "appointment", "journal_entry", "protocol", "session_note", "message",
    "form_request", "document", "payment_method", "payment_plan", "notification",
)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10_000, help="demo clients")
    parser.add_argument("--small", type=int, default=1_000, help="clients in the small run")
    b.add_common_options(parser, repeatable=False)
    parser.add_argument(
        "--baseline-run", nargs=3, metavar=("DB", "IDS", "DIR"), help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)


# --- the baseline ---------------------------------------------------------------------------


class _Raw:
    """The same few statements on sqlite3 or psycopg."""

    def __init__(self, db: str) -> None:
        self.pg = db.startswith("postgresql")
        if self.pg:
            import psycopg

            self.con: Any = psycopg.connect(db, autocommit=True)
        else:
            self.con = sqlite3.connect(db)

    def rows(self, sql: str, *params: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
        cur = self.con.cursor()
        cur.execute(sql.replace("?", "%s") if self.pg else sql, params)
        names = [d[0] for d in cur.description]
        return names, cur.fetchall()


def _jsonable(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def baseline(db: str, ids_path: str, folder: str) -> None:
    raw = _Raw(db)
    ids = [int(line) for line in Path(ids_path).read_text().split()]
    out = Path(folder)
    for client_id in ids:
        members: dict[str, bytes] = {}
        names, rows = raw.rows("SELECT * FROM client WHERE id = ?", client_id)
        members["client.json"] = json.dumps(
            {n: _jsonable(v) for n, v in zip(names, rows[0], strict=True)}, sort_keys=True
        ).encode()
        for table in TABLES:
            names, rows = raw.rows(
                f"SELECT * FROM {table} WHERE client_id = ? ORDER BY id", client_id
            )
            lines = []
            for row in rows:
                record = dict(zip(names, row, strict=True))
                content = record.pop("content", None)
                if content is not None:
                    members[f"documents/{record['id']}-{record['filename']}"] = bytes(content)
                lines.append(json.dumps({n: _jsonable(v) for n, v in record.items()}) + "\n")
            members[f"records/{table}.jsonl"] = "".join(lines).encode()
        names, rows = raw.rows(
            "SELECT * FROM audit_event WHERE client_id = ? ORDER BY id", client_id
        )
        members["audit_events.jsonl"] = "".join(
            json.dumps({n: _jsonable(v) for n, v in zip(names, row, strict=True)}) + "\n"
            for row in rows
        ).encode()
        members["manifest.json"] = json.dumps(
            {name: hashlib.sha256(data).hexdigest() for name, data in members.items()}
        ).encode()
        path = out / f"client-{client_id:06d}.zip"
        with open(path, "wb") as handle:
            with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
                for name, data in members.items():
                    archive.writestr(name, data)
            handle.flush()
            os.fsync(handle.fileno())
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                hashlib.sha256(archive.read(info)).hexdigest()


# --- the run --------------------------------------------------------------------------------


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir()) / 1e6


def measure(
    engine: str, url: str, clients: int, sizes: tuple[int, ...], *, keep: bool = False
) -> dict[int, b.Result]:
    """A demo practice of `clients`; tool and baseline export its first N for each size."""
    work = Path(tempfile.mkdtemp(prefix="pbbench-export-"))
    env = b.tool_env(work / "home")
    pg_name = "pbbench_export"
    print(f"machine: {b.machine()}; engine {engine}; work folder {work}")
    try:
        started = time.perf_counter()
        db = str(work / "demo.db") if engine == "sqlite" else b.pg_create(url, pg_name)
        b.check(
            b.run_measured(b.pbclients("--db", db, "demo", "--clients", str(clients)), env=env),
            "pbclients demo",
        )
        listed = work / "ids.txt"
        with listed.open("wb") as handle:
            b.check(
                b.run_measured(
                    b.pbclients("--db", db, "list", "--format", "ids"), env=env, stdout=handle
                ),
                "pbclients list",
            )
        ids = listed.read_text().split()
        print(
            f"demo practice of {clients:,} clients ({len(ids):,} listed) in "
            f"{time.perf_counter() - started:.1f} s"
        )
        results: dict[int, b.Result] = {}
        for count in sizes:
            count = min(count, len(ids))
            id_file = work / f"ids-{count}.txt"
            id_file.write_text("\n".join(ids[:count]) + "\n")
            result = results.setdefault(count, b.Result([], []))
            for label in ("tool", "base"):
                folder = work / f"{label}-{count}"
                folder.mkdir()
                if label == "tool":
                    command = b.pbclients(
                        "--db", db, "export", "--ids-from", str(id_file), "--backup-dir",
                        str(folder), "--format", "json",
                    )  # fmt: skip
                else:
                    command = [
                        sys.executable, __file__, "--baseline-run", db, str(id_file), str(folder)
                    ]  # fmt: skip
                measured = b.run_measured(command, env=env)
                b.check(measured, f"{label} export of {count}")
                files = len(list(folder.iterdir()))
                if files != count:
                    sys.exit(f"{label} wrote {files} files for {count} clients")
                (result.tool_runs if label == "tool" else result.base_runs).append(measured)
                result.facts[f"{label}_mb_written"] = round(folder_mb(folder), 1)
                print(f"{label} {count:,}: {measured.seconds:.2f} s ({b.load()})")
                shutil.rmtree(folder)
        return results
    finally:
        if keep:
            print(f"kept: {work}" + (f" and database {pg_name}" if engine != "sqlite" else ""))
        else:
            shutil.rmtree(work, ignore_errors=True)
            if engine != "sqlite":
                b.pg_drop(url, pg_name)


def main() -> None:
    args = parse_args()
    if args.baseline_run:
        baseline(*args.baseline_run)
        return
    results = measure(
        args.engine, args.url, args.clients, (args.small, args.clients), keep=args.keep
    )
    rows: list[tuple[str, ...]] = [
        ("", "clients", "wall", "CPU", "clients/s", "MB written", "MB/s", "peak RSS")
    ]
    for count, result in results.items():
        for label, m in (("tool", result.tool_runs[0]), ("base", result.base_runs[0])):
            mb = result.facts[f"{label}_mb_written"]
            rows.append(
                (
                    "pbclients export" if label == "tool" else f"raw {args.engine} + zipfile",
                    f"{count:,}",
                    f"{m.seconds:.2f} s",
                    f"{m.cpu_seconds:.2f} s",
                    f"{count / m.seconds:,.0f}",
                    f"{mb:.1f}",
                    f"{mb / m.seconds:.1f}",
                    f"{m.peak_mb:.0f} MB",
                )
            )
    print()
    print(b.table(rows))
    ordered = list(results.items())
    (small, first), (big, last) = ordered[0], ordered[-1]
    print()
    print(
        f"ratio tool/baseline: {first.tool_runs[0].seconds / first.base_runs[0].seconds:.2f}x "
        f"at {small:,}, {last.tool_runs[0].seconds / last.base_runs[0].seconds:.2f}x at "
        f"{big:,}; tool peak {first.tool_runs[0].peak_mb:.0f} MB -> "
        f"{last.tool_runs[0].peak_mb:.0f} MB for {big / small:.0f}x the clients"
    )


if __name__ == "__main__":
    main()
