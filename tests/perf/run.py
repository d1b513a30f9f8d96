"""Every benchmark of issue 12 at one size, tool next to baseline, as one table and JSON.

    python tests/perf/run.py --size 100000 --engine both --json before.json
    python tests/perf/run.py --size 1000000 --export 1000,10000 --engine both   # full size

Scenarios, with N = --size:

- start-up: `list --limit 50`, `show 1`, `plan`, `audit --limit 20` and TAB completion
  of a client reference, whole process, on N clients; baseline `python -c "import typer,
  rich.table, sqlite3"` (psycopg on PostgreSQL) plus the same query; median of
  --startup-repeat runs each, alternating; `-X importtime` of `list --limit 50` in the JSON
- import of N rows (bench_import.py)
- deactivate N/10 of N from a CSV, `--format json` (bench_deactivate.py)
- export of the first 1,000 clients of a demo practice (bench_export.py; --export)
- delete of the same clients, each backed up and verified first (bench_delete.py; --export)
- purge N/10 of N (bench_purge.py)
- the inactivity selection on N clients (bench_inactivity.py)

Each bulk scenario runs on fresh copies of one prepared database (PostgreSQL: fresh
databases on the --url server, dropped afterwards) and checks that tool and baseline
did the same work. Read the ratios, not the seconds: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import _bench as b
import bench_deactivate
import bench_delete
import bench_export
import bench_import
import bench_inactivity
import bench_purge

TARGETS = {
    "start-up": (2.0, None),
    "import": (1.5, 200),
    "deactivate": (1.5, None),
    "export": (1.5, None),
    "delete": (1.5, None),
    "purge": (1.3, None),
    "inactivity": (1.5, None),
    # Not a target of the issue: how far `list` is from any Typer command doing its query.
    "typer floor": (None, None),
}
SCENARIOS = ("start-up", "import", "deactivate", "export", "delete", "purge", "inactivity")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000, help="clients (N)")
    parser.add_argument("--engine", choices=("sqlite", "postgres", "both"), default="sqlite")
    parser.add_argument("--url", default=b.PG_DEFAULT_URL, help="PostgreSQL admin URL")
    parser.add_argument("--json", metavar="OUT", help="write the table and the runs here")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each bulk scenario")
    parser.add_argument("--startup-repeat", type=int, default=5, help="runs of each start-up")
    parser.add_argument(
        "--export", default="1000", help="comma-separated client counts to export (demo size: max)"
    )
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"comma-separated of {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--verify", action="store_true", help="audit verify after bulk runs")
    parser.add_argument(
        "--show",
        nargs="+",
        metavar="JSON",
        help="run nothing: print a saved table, or compare two (before, after)",
    )
    parser.add_argument("--markdown", action="store_true", help="with --show: a README table")
    args = parser.parse_args(argv)
    if args.show and len(args.show) > 2:
        parser.error("--show takes one saved run, or two to compare")
    unknown = set(args.only.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


# --- start-up of read commands ----------------------------------------------------------------

# What each read command asks, by hand, for the baseline: the rows it shows. {p} is the
# driver's placeholder. The tool does somewhat more (programs per row, capabilities); the
# baseline is the floor the issue compares against, not a copy of the tool.
STARTUP_QUERIES: dict[str, list[str]] = {
    "list --limit 50": [
        "SELECT id, first_name, last_name, email, status, created_at FROM client "
        "WHERE status <> 'deleted' ORDER BY id LIMIT 50",
        "SELECT e.client_id, p.name FROM enrolment AS e JOIN program AS p ON p.id = e.program_id "
        "WHERE e.client_id IN (SELECT id FROM client WHERE status <> 'deleted' "
        "ORDER BY id LIMIT 50)",
    ],
    "show 1": [
        "SELECT * FROM client WHERE id = 1",
        "SELECT * FROM appointment WHERE client_id = 1 ORDER BY starts_at",
        "SELECT p.name, e.progress_percent FROM enrolment AS e "
        "JOIN program AS p ON p.id = e.program_id WHERE e.client_id = 1",
        " UNION ALL ".join(
            f"SELECT '{t}', count(*) FROM {t} WHERE client_id = 1" for t in bench_export.TABLES
        ),
    ],
    "plan": [
        "SELECT status, count(*) FROM client GROUP BY status",
        "SELECT key, value FROM setting",
    ],
    "audit --limit 20": ["SELECT * FROM audit_event ORDER BY id DESC LIMIT 20"],
    "TAB completion": [
        "SELECT id, email FROM client WHERE email_key >= 'client00001' "
        "AND email_key < 'client00002' ORDER BY email_key LIMIT 50",
    ],
}
COMPLETING = ["show", "client00001"]
FLOOR_WORK = "list --limit 50 vs a bare Typer command"


def baseline_code(db: str, queries: list[str]) -> str:
    """A `python -c` program: the issue's imports, then the queries, rows printed."""
    if db.startswith("postgresql"):
        connect = f"import typer, rich.table, psycopg\ncon = psycopg.connect({db!r})\n"
    else:
        connect = f"import typer, rich.table, sqlite3\ncon = sqlite3.connect({db!r})\n"
    body = "".join(
        f"for row in con.execute({query!r}).fetchall():\n    print(*row, sep='  ')\n"
        for query in queries
    )
    return connect + body + "con.close()\n"


def floor_code(db: str, queries: list[str]) -> str:
    """A `python -c` program: the smallest Typer CLI (a callback with --db, two commands)
    that runs the queries and prints the rows as a rich table, like `list` does.

    Since Typer 0.26 invoking any command builds pydantic adapters for its parameters,
    which `import typer` alone does not pay: this is the floor of a Typer command.
    """
    driver = "psycopg" if db.startswith("postgresql") else "sqlite3"
    body = "".join(
        f"    for row in con.execute({query!r}).fetchall():\n"
        "        table.add_row(*map(str, row))\n"
        for query in queries
    )
    return (
        f"import {driver}\nfrom typing import Annotated\nimport typer\n"
        "app = typer.Typer()\n"
        "@app.callback()\n"
        "def main(db: Annotated[str, typer.Option('--db')] = '') -> None:\n    pass\n"
        "@app.command('list')\n"
        "def list_(limit: Annotated[int, typer.Option('--limit')] = 50) -> None:\n"
        "    from rich.console import Console\n    from rich.table import Table\n"
        f"    con = {driver}.connect({db!r})\n    table = Table()\n"
        "    for name in ('id', 'first', 'last', 'email', 'status', 'since'):\n"
        "        table.add_column(name)\n"
        f"{body}"
        "    Console().print(table)\n"
        "@app.command()\ndef other() -> None:\n    pass\n"
        f"app(['--db', {db!r}, 'list', '--limit', '50'])\n"
    )


def tool_command(db: str, work: str) -> list[str]:
    return b.pbclients("--db", db, *work.split())


def completion(db: str, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """Bash completion as the shell asks it: the console script with click's variables."""
    script = str(Path(sys.executable).with_name("pbclients"))
    words = ["pbclients", "--db", db, *COMPLETING]
    env = {
        **env,
        "_PBCLIENTS_COMPLETE": "complete_bash",
        "COMP_WORDS": " ".join(words),
        "COMP_CWORD": str(len(words) - 1),
    }
    return [script], env


def add_audit_events(db: str, engine: str, count: int) -> None:
    """`count` hash-chained deactivate events, so `audit --limit 20` has a trail to read."""
    at = b.NOW - timedelta(days=1)
    events = [("deactivate", cid, "active", "deactivated", None) for cid in range(1, count + 1)]
    if engine == "sqlite":
        rows, head = b.audit_rows(
            1, b.GENESIS, events, at=at, actor="bench", batch_id="prepaudit001", reason=None,
            at_value=b.sqlite_time(at),
        )  # fmt: skip
        lite = sqlite3.connect(db, isolation_level=None)
        lite.execute("BEGIN")
        lite.executemany(b.AUDIT_INSERT.format(", ".join("?" * 12)), rows)
        lite.execute(
            "INSERT INTO setting (key, value) VALUES ('audit_head', ?)", (f"{count}:{head}",)
        )
        lite.execute("COMMIT")
        lite.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        lite.close()
        return
    import psycopg

    rows, head = b.audit_rows(
        1, b.GENESIS, events, at=at, actor="bench", batch_id="prepaudit001", reason=None,
        at_value=b.naive(at),
    )  # fmt: skip
    columns = "id, at, actor, action, client_id, before, after, batch_id, reason, detail"
    with psycopg.connect(db) as con, con.cursor() as cur:
        with cur.copy(f"COPY audit_event ({columns}, prev_hash, hash) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(
            "INSERT INTO setting (key, value) VALUES ('audit_head', %s)", (f"{count}:{head}",)
        )
        cur.execute("SELECT setval(pg_get_serial_sequence('audit_event', 'id'), %s)", (count,))


def import_breakdown(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """`-X importtime` of one run: the total and the ten costliest imports (cumulative)."""
    found = subprocess.run(
        [sys.executable, "-X", "importtime", *command[1:]],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
    ).stderr
    entries: list[dict[str, Any]] = []
    for line in found.splitlines():
        # "import time: <self us> | <cumulative us> | <two spaces a level>module"
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative_us, module = line.removeprefix("import time:").split("|", 2)
        entries.append(
            {
                "module": module.strip(),
                "depth": (len(module) - len(module.lstrip()) - 1) // 2,
                "self_ms": round(int(self_us) / 1000, 1),
                "cumulative_ms": round(int(cumulative_us) / 1000, 1),
            }
        )
    top_level = sum(e["cumulative_ms"] for e in entries if e["depth"] == 0)
    top = sorted(entries, key=lambda e: e["cumulative_ms"], reverse=True)[:10]
    return {"total_ms": round(top_level, 1), "top10": top}


def measure_startup(
    engine: str, url: str, clients: int, repeat: int
) -> tuple[dict[str, b.Result], dict[str, Any]]:
    """Each read command and its baseline, alternating, on one prepared practice."""
    work = Path(tempfile.mkdtemp(prefix="pbbench-startup-"))
    runs = b.Comparison(engine, work, url, "pbbench_startup", b.tool_env(work / "home"))
    try:
        started = time.perf_counter()
        db = runs.prepare()
        if engine == "sqlite":
            b.fill_sqlite(Path(db), clients)
        else:
            b.fill_postgres(db, clients)
        add_audit_events(db, engine, max(20, clients // 10))
        if engine != "sqlite":
            b.pg_vacuum(db)
        print(f"start-up: prepared {clients:,} clients in {time.perf_counter() - started:.1f} s")
        results: dict[str, b.Result] = {}
        queries = {
            work: [q if engine == "sqlite" else q.replace("?", "%s") for q in qs]
            for work, qs in STARTUP_QUERIES.items()
        }
        for n in range(repeat):
            for work_name, qs in queries.items():
                if work_name == "TAB completion":
                    command, env = completion(db, runs.env)
                else:
                    command, env = tool_command(db, work_name), runs.env
                tool = b.run_measured(command, env=env)
                b.check(tool, work_name)
                base = b.run_measured([sys.executable, "-c", baseline_code(db, qs)], env=runs.env)
                b.check(base, f"baseline of {work_name}")
                result = results.setdefault(work_name, b.Result([], []))
                result.tool_runs.append(tool)
                result.base_runs.append(base)
                if work_name == "list --limit 50":
                    floor = b.run_measured([sys.executable, "-c", floor_code(db, qs)], env=runs.env)
                    b.check(floor, "the Typer floor")
                    reference = results.setdefault(FLOOR_WORK, b.Result([], []))
                    reference.tool_runs.append(tool)
                    reference.base_runs.append(floor)
            print(f"start-up run {n + 1} of {repeat} ({b.load()})")
        breakdown = import_breakdown(tool_command(db, "list --limit 50"), runs.env)
        return results, breakdown
    finally:
        runs.cleanup(keep=False)


# --- the table ----------------------------------------------------------------------------------

MET = {True: "yes", False: "no", None: "-"}


def median_run(runs: list[b.Measured]) -> b.Measured:
    """The run of median wall time (the lower middle one of an even count)."""
    return sorted(runs, key=lambda m: m.seconds)[(len(runs) - 1) // 2]


def entry(work: str, engine: str, scenario: str, result: b.Result) -> dict[str, Any]:
    tool, base = median_run(result.tool_runs), median_run(result.base_runs)
    ratio_aim, mb_aim = TARGETS[scenario]
    ratio = tool.seconds / base.seconds
    target = "(reference)" if ratio_aim is None else f"<= {ratio_aim}x"
    target += f", < {mb_aim} MB" if mb_aim else ""
    met = (
        None
        if ratio_aim is None
        else ratio <= ratio_aim and (mb_aim is None or tool.peak_mb < mb_aim)
    )
    return {
        "work": work,
        "engine": engine,
        "scenario": scenario,
        "tool_s": round(tool.seconds, 3),
        "baseline_s": round(base.seconds, 3),
        "ratio": round(ratio, 2),
        "tool_cpu_s": round(tool.cpu_seconds, 3),
        "baseline_cpu_s": round(base.cpu_seconds, 3),
        "tool_peak_mb": round(tool.peak_mb, 1),
        "baseline_peak_mb": round(base.peak_mb, 1),
        "target": target,
        "met": met,
        "runs": len(result.tool_runs),
        "tool_runs_s": [round(m.seconds, 3) for m in result.tool_runs],
        "baseline_runs_s": [round(m.seconds, 3) for m in result.base_runs],
        **{key: value for key, value in result.facts.items()},
    }


def render(entries: list[dict[str, Any]]) -> str:
    rows: list[tuple[str, ...]] = [
        ("work", "engine", "tool s", "baseline s", "ratio", "CPU ratio", "tool peak MB",
         "target", "met")
    ]  # fmt: skip
    for e in entries:
        rows.append(
            (
                e["work"], e["engine"], f"{e['tool_s']:.2f}", f"{e['baseline_s']:.2f}",
                f"{e['ratio']:.2f}x", f"{e['tool_cpu_s'] / e['baseline_cpu_s']:.2f}x",
                f"{e['tool_peak_mb']:.0f}", e["target"], MET[e["met"]],
            )
        )  # fmt: skip
    return b.table(rows)


def markdown(entries: list[dict[str, Any]]) -> str:
    """The same table as `render`, for a README."""
    lines = [
        "| work | engine | tool s | baseline s | ratio wall | ratio CPU | tool peak MB | target "
        "| met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        lines.append(
            f"| {e['work']} | {e['engine']} | {e['tool_s']:.2f} | {e['baseline_s']:.2f} | "
            f"{e['ratio']:.2f}x | {e['tool_cpu_s'] / e['baseline_cpu_s']:.2f}x | "
            f"{e['tool_peak_mb']:.0f} | {e['target']} | {MET[e['met']]} |"
        )
    return "\n".join(lines)


def compare(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Two saved runs side by side: the ratio of each work before and after."""
    old = {(e["work"], e["engine"]): e for e in before["entries"]}
    rows: list[tuple[str, ...]] = [
        ("work", "engine", f"ratio {before['commit']}", f"ratio {after['commit']}",
         "tool s before", "tool s after", "peak MB before", "peak MB after", "target", "met")
    ]  # fmt: skip
    for e in after["entries"]:
        was = old.get((e["work"], e["engine"]))
        rows.append(
            (
                e["work"], e["engine"], f"{was['ratio']:.2f}x" if was else "-",
                f"{e['ratio']:.2f}x", f"{was['tool_s']:.2f}" if was else "-", f"{e['tool_s']:.2f}",
                f"{was['tool_peak_mb']:.0f}" if was else "-", f"{e['tool_peak_mb']:.0f}",
                e["target"], MET[e["met"]],
            )
        )  # fmt: skip
    return b.table(rows)


def show(paths: list[str], as_markdown: bool) -> None:
    """Print a saved run's table, or with two files the second against the first."""
    saved = [json.loads(Path(path).read_text()) for path in paths]
    for record in saved:
        print(
            f"{record['date']}, commit {record['commit']}, {record['machine']}, "
            f"size {record['size']:,}, load {record['load_before'][0]:.1f} -> "
            f"{record['load_after'][0]:.1f}"
        )
    if len(saved) == 2:
        print(compare(saved[0], saved[1]))
    else:
        print(markdown(saved[0]["entries"]) if as_markdown else render(saved[0]["entries"]))


def git_commit() -> str:
    found = subprocess.run(
        ["git", "-C", str(Path(__file__).resolve().parents[2]), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.strip() or "unknown"


def run_engine(engine: str, args: argparse.Namespace, record: dict[str, Any]) -> None:
    only = args.only.split(",")
    n = args.size
    entries: list[dict[str, Any]] = record["entries"]
    bulk: list[tuple[str, str, Callable[[], b.Result]]] = [
        ("import", f"import {n:,} rows", lambda: bench_import.measure(
            engine, args.url, n, repeat=args.repeat, verify=args.verify)),
        ("deactivate", f"deactivate {n // 10:,} of {n:,} (CSV, json)", lambda: (
            bench_deactivate.measure(engine, args.url, n, n // 10, repeat=args.repeat,
                                     verify=args.verify))),
        ("purge", f"purge {n // 10:,} of {n:,}", lambda: bench_purge.measure(
            engine, args.url, n, n // 10, repeat=args.repeat, verify=args.verify)),
        ("inactivity", f"inactive 180d of {n:,} (ids)", lambda: bench_inactivity.measure(
            engine, args.url, n, repeat=args.repeat)),
    ]  # fmt: skip
    if "start-up" in only:
        results, breakdown = measure_startup(engine, args.url, n, args.startup_repeat)
        for work, result in results.items():
            scenario = "typer floor" if work == FLOOR_WORK else "start-up"
            entries.append(entry(f"{work} ({n:,} clients)", engine, scenario, result))
        record["importtime"][engine] = breakdown
        print(render(entries))
    for scenario, work, measure in bulk[:1]:
        if scenario in only:
            entries.append(entry(work, engine, scenario, measure()))
            print(render(entries))
    if "export" in only:
        sizes = tuple(int(s) for s in args.export.split(","))
        for count, result in bench_export.measure(engine, args.url, max(sizes), sizes).items():
            entries.append(entry(f"export {count:,} clients", engine, "export", result))
        print(render(entries))
    if "delete" in only:
        sizes = tuple(int(s) for s in args.export.split(","))
        for count, result in bench_delete.measure(
            engine, args.url, max(sizes), sizes, verify=args.verify
        ).items():
            entries.append(entry(f"delete {count:,} clients", engine, "delete", result))
        print(render(entries))
    for scenario, work, measure in bulk[1:]:
        if scenario in only:
            entries.append(entry(work, engine, scenario, measure()))
            print(render(entries))


def main() -> None:
    args = parse_args()
    if args.show:
        show(args.show, args.markdown)
        return
    engines = ("sqlite", "postgres") if args.engine == "both" else (args.engine,)
    load_before = os.getloadavg()
    record: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": b.machine(),
        "size": args.size,
        "load_before": [round(x, 2) for x in load_before],
        "entries": [],
        "importtime": {},
    }
    began = time.perf_counter()
    for engine in engines:
        run_engine(engine, args, record)
    record["load_after"] = [round(x, 2) for x in os.getloadavg()]
    record["elapsed_s"] = round(time.perf_counter() - began, 1)
    print()
    print(
        f"{record['date']}, commit {record['commit']}, {record['machine']}, size {args.size:,}, "
        f"load {load_before[0]:.1f} -> {record['load_after'][0]:.1f}, "
        f"{record['elapsed_s']:.0f} s"
    )
    print(render(record["entries"]))
    for engine, breakdown in record["importtime"].items():
        print(f"\n-X importtime of `list --limit 50` ({engine}): {breakdown['total_ms']:.0f} ms")
        for item in breakdown["top10"]:
            print(f"  {item['cumulative_ms']:8.1f} ms  {'  ' * item['depth']}{item['module']}")
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
        print(f"\nwritten: {args.json}")


if __name__ == "__main__":
    main()
