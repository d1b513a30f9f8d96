"""Benchmark: delete of many clients, each backed up and verified first, against raw work.

Builds `pbclients demo --clients N` (default 10,000), then on fresh copies of it times
the real CLI as a subprocess for the first 1,000 clients and for all of them:

    pbclients --db DB delete --ids-from IDS --yes --backup-dir DIR --format json > /dev/null

Next to it, in the same run and on its own copy, a raw baseline as its own process: the
same backups written and verified as `bench_export.py`'s baseline does (`write_backups`:
the same members, fsync of file and folder, read back), then one transaction with the
set-based statements (a temporary table of the ids, one `UPDATE client` to deleted with
`deleted_at` and `purge_after`, the practice's retention), one hash-chained `delete` audit
row per client naming its backup and SHA-256, the chain head, and the same JSON results
written. Both must delete the same clients; `--verify` runs `pbclients audit verify` on
both databases afterwards.

    python tests/perf/bench_delete.py                      # 10,000 demo clients
    python tests/perf/bench_delete.py --clients 2000 --small 1000 --verify
    python tests/perf/bench_delete.py --engine postgres [--url URL]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import _bench as b
import bench_export

ACTOR = "bench"
BATCH = "baseline0001"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10_000, help="demo clients")
    parser.add_argument("--small", type=int, default=1_000, help="clients in the small run")
    b.add_common_options(parser, repeatable=False)
    parser.add_argument("--verify", action="store_true", help="audit verify both databases")
    parser.add_argument(
        "--baseline-run", nargs=3, metavar=("DB", "IDS", "DIR"), help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)


# --- the baseline ---------------------------------------------------------------------------


def baseline(db: str, ids_path: str, folder: str) -> None:
    raw = bench_export._Raw(db)
    ids = [int(line) for line in Path(ids_path).read_text().split()]
    found = {
        row[0]: (row[1], row[2])
        for row in raw.rows(
            f"SELECT id, email, status FROM client WHERE id IN ({', '.join('?' * len(ids))})",
            *ids,
        )[1]
    }
    changing = [i for i in ids if found[i][1] in ("active", "deactivated")]
    Path(folder).mkdir(mode=0o700, parents=True, exist_ok=True)
    written = bench_export.write_backups(raw, changing, Path(folder), b.NOW)
    at = b.NOW
    con = raw.con
    mark = "%s" if raw.pg else "?"
    if raw.pg:
        con.autocommit = False
        cur = con.cursor()
        cur.execute("CREATE TEMPORARY TABLE ids (id BIGINT PRIMARY KEY) ON COMMIT DROP")
        stamp: Any = b.naive(at)
    else:
        con.isolation_level = None
        cur = con.cursor()
        cur.execute("PRAGMA busy_timeout = 60000")
        cur.execute("BEGIN IMMEDIATE")
        cur.execute("CREATE TEMP TABLE ids (id INTEGER PRIMARY KEY)")
        stamp = b.sqlite_time(at)
    cur.executemany(f"INSERT INTO ids (id) VALUES ({mark})", [(i,) for i in changing])
    cur.execute(f"SELECT value FROM setting WHERE key = {mark}", ("retention_days",))
    row = cur.fetchone()
    purge_after = at + timedelta(days=int(row[0]) if row else 30)
    cur.execute(
        f"UPDATE client SET status = 'deleted', deleted_at = {mark}, purge_after = {mark} "
        "WHERE id IN (SELECT id FROM ids) AND status IN ('active', 'deactivated')",
        (stamp, b.naive(purge_after) if raw.pg else b.sqlite_time(purge_after)),
    )
    assert cur.rowcount == len(changing), (cur.rowcount, len(changing))
    if raw.pg:
        cur.execute("SELECT pg_advisory_xact_lock(7310001)")
    cur.execute(f"SELECT value FROM setting WHERE key = {mark}", ("audit_head",))
    head = cur.fetchone()
    last_id, prev_hash = b.parse_head(head[0] if head else None)
    encode = json.JSONEncoder(sort_keys=True).encode
    events = [
        ("delete", i, found[i][1], "deleted",
         encode({"backup": Path(written[i][0]).name, "sha256": written[i][1]}))
        for i in changing
    ]  # fmt: skip
    rows, prev_hash = b.audit_rows(
        last_id + 1, prev_hash, events,
        at=at, actor=ACTOR, batch_id=BATCH, reason=None, at_value=stamp,
    )  # fmt: skip
    cur.executemany(b.AUDIT_INSERT.format(", ".join([mark] * 12)), rows)
    cur.execute(
        f"INSERT INTO setting (key, value) VALUES ('audit_head', {mark}) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (f"{last_id + len(rows)}:{prev_hash}",),
    )
    if raw.pg:
        con.commit()
    else:
        cur.execute("COMMIT")
    _write_results(ids, found, written)


def _write_results(
    ids: list[int], found: dict[int, tuple[str, str]], written: dict[int, tuple[str, str]]
) -> None:
    """The tool's `--format json` results: one object a line in one array."""
    encode = json.JSONEncoder(ensure_ascii=False).encode
    lines = []
    for client_id in ids:
        email, before = found[client_id]
        path, sha256 = written.get(client_id, (None, None))
        lines.append(
            encode({
                "reference": str(client_id), "id": client_id, "email": email,
                "before": before, "after": "deleted",
                "outcome": "changed" if path else "unchanged", "backup": path,
                "sha256": sha256, "note": None, "batch": BATCH,
            })
        )  # fmt: skip
    sys.stdout.write("[\n  " + ",\n  ".join(lines) + "\n]\n")


# --- the run --------------------------------------------------------------------------------


def _deleted(db: str) -> int:
    query = "SELECT count(*) FROM client WHERE status = 'deleted'"
    if db.startswith("postgresql"):
        import psycopg

        with psycopg.connect(db) as con:
            row = con.execute(query).fetchone()
            assert row is not None
            return int(row[0])
    lite = sqlite3.connect(db)
    try:
        return int(lite.execute(query).fetchone()[0])
    finally:
        lite.close()


def measure(
    engine: str,
    url: str,
    clients: int,
    sizes: tuple[int, ...],
    *,
    keep: bool = False,
    verify: bool = False,
) -> dict[int, b.Result]:
    """A demo practice of `clients`; tool and baseline each delete its first N, per size,
    on their own fresh copies."""
    work = Path(tempfile.mkdtemp(prefix="pbbench-delete-"))
    env = b.tool_env(work / "home")
    comparisons: list[b.Comparison] = []
    prepared = b.Comparison(engine, work, url, "pbbench_delete", env)
    print(f"machine: {b.machine()}; engine {engine}; work folder {work}")
    try:
        started = time.perf_counter()
        if engine == "sqlite":
            prepared.prepared = str(work / "prepared.db")
            db = prepared.prepared
        else:
            prepared.prepared = "pbbench_delete_prep"
            prepared.databases.append(prepared.prepared)
            db = b.pg_create(url, prepared.prepared)
        ids = bench_export.demo_ids(db, clients, work, env, started)
        results: dict[int, b.Result] = {}
        for count in sizes:
            count = min(count, len(ids))
            id_file = work / f"ids-{count}.txt"
            id_file.write_text("\n".join(ids[:count]) + "\n")
            comparison = b.Comparison(
                engine, work, url, f"pbbench_delete_{count}", env, prepared=prepared.prepared
            )
            comparisons.append(comparison)
            folders = {label: work / f"{label}-{count}" for label in ("tool", "base")}
            tool_args = [
                "delete", "--ids-from", str(id_file), "--yes", "--backup-dir",
                str(folders["tool"]), "--format", "json",
            ]  # fmt: skip
            base_args = ["--baseline-run", "", str(id_file), str(folders["base"])]
            comparison.run(
                1,
                lambda target, tool_args=tool_args: b.pbclients("--db", target, *tool_args),
                lambda target, base_args=base_args: [
                    sys.executable, __file__, base_args[0], target, *base_args[2:]
                ],
            )  # fmt: skip
            deleted = {
                label: _deleted(target)
                for label, target in (("tool", comparison.tool_db), ("base", comparison.base_db))
            }
            if deleted["tool"] != deleted["base"]:
                sys.exit(f"tool deleted {deleted['tool']} clients, baseline {deleted['base']}")
            written = {label: len(list(folder.iterdir())) for label, folder in folders.items()}
            if written["tool"] != written["base"]:
                sys.exit(f"tool wrote {written['tool']} backups, baseline {written['base']}")
            if verify:
                comparison.verify_trails()
            result = b.Result(comparison.tool_runs, comparison.base_runs)
            result.facts["deleted"] = deleted["tool"]
            result.facts["backups"] = written["tool"]
            results[count] = result
            for folder in folders.values():
                shutil.rmtree(folder)
        return results
    finally:
        if not keep:
            for comparison in comparisons:
                if comparison.databases:
                    b.pg_drop(url, *reversed(comparison.databases))
        prepared.cleanup(keep)


def main() -> None:
    args = parse_args()
    if args.baseline_run:
        baseline(*args.baseline_run)
        return
    results = measure(
        args.engine,
        args.url,
        args.clients,
        (args.small, args.clients),
        keep=args.keep,
        verify=args.verify,
    )
    rows: list[tuple[str, ...]] = [("", "clients", "wall", "CPU", "clients/s", "peak RSS")]
    for count, result in results.items():
        for label, m in (("tool", result.tool_runs[0]), ("base", result.base_runs[0])):
            rows.append(
                (
                    "pbclients delete" if label == "tool" else f"raw {args.engine} + zipfile",
                    f"{count:,}",
                    f"{m.seconds:.2f} s",
                    f"{m.cpu_seconds:.2f} s",
                    f"{count / m.seconds:,.0f}",
                    f"{m.peak_mb:.0f} MB",
                )
            )
    print()
    print(b.table(rows))
    print()
    print(
        "ratio tool/baseline: "
        + ", ".join(
            f"{r.tool_runs[0].seconds / r.base_runs[0].seconds:.2f}x wall, "
            f"{r.tool_runs[0].cpu_seconds / r.base_runs[0].cpu_seconds:.2f}x CPU at {n:,}"
            for n, r in results.items()
        )
    )


if __name__ == "__main__":
    main()
