"""Shared helpers for the benchmarks in tests/perf: measured subprocesses, fast bulk data.

The benchmarks are scripts that print figures, not timed tests: the machine they
run on is shared and noisy, so every benchmark measures the tool and a raw
baseline doing the same work in the same run and reports the ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
NOW = datetime(2026, 11, 26, 9, 0, 0, tzinfo=UTC)
# How SQLAlchemy's SQLite DateTime stores a naive UTC timestamp.
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
PG_DEFAULT_URL = "postgresql://postgres@127.0.0.1:54329/postgres"


@dataclass(frozen=True)
class Measured:
    seconds: float
    cpu_seconds: float
    peak_mb: float
    returncode: int
    stderr: str


def run_measured(
    args: Sequence[str], *, env: dict[str, str], stdout: Any = subprocess.DEVNULL
) -> Measured:
    """Run a child process; its wall time, CPU time and its own peak RSS.

    Peak RSS is the child's VmHWM from /proc, read while it runs: the ru_maxrss that
    wait4 reports is carried over exec from the forked copy of this process, so a
    parent that holds a big data set inflates it. VmHWM only grows, so reading it
    often enough misses at most what the child adds in its last few milliseconds.
    """
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(args), env=env, stdout=stdout, stderr=err)
        peak_kib = 0
        pause = 0.002
        while True:
            peak_kib = max(peak_kib, vm_hwm_kib(proc.pid))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(pause)
            # Short commands are sampled finely; long ones need no 500 reads a second.
            pause = min(pause * 1.2, 0.02)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        message = err.read().decode(errors="replace")
    cpu = usage.ru_utime + usage.ru_stime
    # Linux reports ru_maxrss in KiB; only a child too short to be sampled falls back to it.
    peak = peak_kib or usage.ru_maxrss
    return Measured(seconds, cpu, peak / 1024, proc.returncode, message)


def vm_hwm_kib(pid: int) -> int:
    """A running process's peak resident set (KiB), or 0 once it has exited."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def tool_env(home: Path) -> dict[str, str]:
    """The tool's environment: its own homes (logs, backups) and a fixed actor and clock."""
    env = dict(os.environ)
    env["HOME"] = str(home)
    for name in ("XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        env[name] = str(home / name.lower())
    env.pop("PBCLIENTS_DB", None)
    # Unbuffered stdout turns every chunk of JSON output into a write(2): measure the tool as
    # a shell or cron runs it (PBBENCH_UNBUFFERED=1 keeps it, to see that cost too).
    if os.environ.get("PBBENCH_UNBUFFERED") != "1":
        env.pop("PYTHONUNBUFFERED", None)
    env["PBCLIENTS_ACTOR"] = "bench"
    env["PBCLIENTS_NOW"] = NOW.isoformat().replace("+00:00", "Z")
    env["PBCLIENTS_LOCK_TIMEOUT"] = "60"
    return env


def pbclients(*args: str) -> list[str]:
    """The real CLI, run by this interpreter (the venv's installed package)."""
    return [sys.executable, "-m", "pbclients", *args]


def check(measured: Measured, what: str) -> None:
    if measured.returncode != 0:
        sys.exit(f"{what} failed with exit {measured.returncode}:\n{measured.stderr}")


def init_schema(db: str, env: dict[str, str]) -> None:
    check(run_measured(pbclients("--db", db, "init"), env=env), "pbclients init")


# --- audit chain, exactly as pbclients.audit computes it ------------------------------------


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_hash(prev_hash: str, content: Sequence[Any]) -> str:
    payload = json.dumps([prev_hash, *content], separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def audit_rows(
    start_id: int,
    prev_hash: str,
    events: Sequence[tuple[str, int | None, str | None, str | None, str | None]],
    *,
    at: datetime,
    actor: str,
    batch_id: str,
    reason: str | None,
    at_value: Any,
) -> tuple[list[tuple[Any, ...]], str]:
    """Rows for audit_event (action, client_id, before, after, detail-json) and the new head."""
    rows = []
    stamp = iso(at)
    for offset, (action, client_id, before, after, detail) in enumerate(events):
        event_id = start_id + offset
        content = [
            event_id,
            stamp,
            actor,
            action,
            client_id,
            before,
            after,
            batch_id,
            reason,
            detail,
        ]
        digest = event_hash(prev_hash, content)
        rows.append(
            (event_id, at_value, actor, action, client_id, before, after, batch_id, reason,
             detail, prev_hash, digest)
        )  # fmt: skip
        prev_hash = digest
    return rows, prev_hash


def parse_head(value: str | None) -> tuple[int, str]:
    """The audit chain's head as kept in settings ("id:hash"), or the genesis."""
    if value is None:
        return 0, GENESIS
    last_id, last_hash = value.split(":", 1)
    return int(last_id), last_hash


AUDIT_INSERT = (
    "INSERT INTO audit_event (id, at, actor, action, client_id, before, after, batch_id, "
    "reason, detail, prev_hash, hash) VALUES ({})"
)


# --- bulk data ------------------------------------------------------------------------------

CLIENT_COLUMNS = (
    "id", "email", "email_key", "first_name", "last_name", "phone", "status",
    "portal_password_hash", "created_at", "deactivated_at", "deleted_at", "purge_after",
)  # fmt: skip
PROGRAMS = ("Spring Reset", "Sleep Foundations", "Strength Basics")


def client_rows(count: int, created: Any) -> Iterator[tuple[Any, ...]]:
    for client_id in range(1, count + 1):
        email = f"client{client_id:07d}@example.org"
        yield (
            client_id, email, email, f"First{client_id % 997}", f"Last{client_id % 991}",
            None, "active", "pbkdf2$bench", created, None, None, None,
        )  # fmt: skip


def side_rows(count: int, seed: int = 1) -> dict[str, list[tuple[Any, ...]]]:
    """A few programs and records so consequences() has something to count (~15% of clients)."""
    rng = random.Random(seed)
    later = NOW + timedelta(days=3)
    enrolments: list[tuple[Any, ...]] = []
    appointments: list[tuple[Any, ...]] = []
    methods: list[tuple[Any, ...]] = []
    plans: list[tuple[Any, ...]] = []
    for client_id in range(1, count + 1):
        roll = rng.random()
        if roll < 0.10:
            enrolments.append((len(enrolments) + 1, client_id, 1 + client_id % 3, NOW, 40, None))
        if roll < 0.03:
            appointments.append((len(appointments) + 1, client_id, later, 50, True, "Session"))
        if roll < 0.01:
            methods.append((len(methods) + 1, client_id, "visa", "4242", "12/29"))
            plans.append(
                (len(plans) + 1, client_id, len(methods), "Monthly", 9900, "monthly", later, True)
            )
    return {
        "enrolment": enrolments,
        "appointment": appointments,
        "payment_method": methods,
        "payment_plan": plans,
    }


SIDE_COLUMNS = {
    "enrolment": "id, client_id, program_id, enrolled_at, progress_percent, completed_at",
    "appointment": "id, client_id, starts_at, duration_minutes, telehealth, title",
    "payment_method": "id, client_id, brand, last4, expires",
    "payment_plan": (
        "id, client_id, payment_method_id, description, amount_cents, interval, "
        "next_charge_at, active"
    ),
}


def sqlite_time(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).strftime(SQLITE_TIME)


def _sqlite_value(value: Any) -> Any:
    return sqlite_time(value) if isinstance(value, datetime) else value


def fill_sqlite(path: Path, clients: int) -> None:
    """Bulk-insert clients (and a few programs and records) into a pbclients schema."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA synchronous = OFF")
    con.execute("BEGIN")
    con.executemany(
        "INSERT INTO program (id, name, kind) VALUES (?, ?, 'program')",
        list(enumerate(PROGRAMS, start=1)),
    )
    marks = ", ".join("?" * len(CLIENT_COLUMNS))
    con.executemany(
        f"INSERT INTO client ({', '.join(CLIENT_COLUMNS)}) VALUES ({marks})",
        client_rows(clients, sqlite_time(NOW - timedelta(days=400))),
    )
    for table, rows in side_rows(clients).items():
        columns = SIDE_COLUMNS[table]
        marks = ", ".join("?" * len(columns.split(",")))
        con.executemany(
            f"INSERT INTO {table} ({columns}) VALUES ({marks})",
            ([_sqlite_value(v) for v in row] for row in rows),
        )
    con.execute("COMMIT")
    con.execute("ANALYZE")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def copy_sqlite(source: Path, target: Path) -> None:
    """A byte copy of a checkpointed database (its -wal is empty or absent)."""
    shutil.copyfile(source, target)


def naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def fill_postgres(url: str, clients: int) -> None:
    import psycopg

    def plain(row: Sequence[Any]) -> list[Any]:
        return [naive(v) if isinstance(v, datetime) else v for v in row]

    with psycopg.connect(url) as con, con.cursor() as cur:
        cur.executemany(
            "INSERT INTO program (id, name, kind) VALUES (%s, %s, 'program')",
            list(enumerate(PROGRAMS, start=1)),
        )
        created = naive(NOW - timedelta(days=400))
        with cur.copy(f"COPY client ({', '.join(CLIENT_COLUMNS)}) FROM STDIN") as copy:
            for row in client_rows(clients, created):
                copy.write_row(row)
        for table, rows in side_rows(clients).items():
            with cur.copy(f"COPY {table} ({SIDE_COLUMNS[table]}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(plain(row))
        for table in ("program", "client", *SIDE_COLUMNS):
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 1) FROM {table}))"
            )
        cur.execute("ANALYZE")


def pg_url(admin_url: str, name: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


def pg_create(admin_url: str, name: str, template: str | None = None) -> str:
    """A fresh database (optionally a copy of `template`); returns its URL."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if template:
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            admin.execute(f'CREATE DATABASE "{name}"')
    return pg_url(admin_url, name)


def pg_drop(admin_url: str, *names: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as admin:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_vacuum(url: str) -> None:
    """Settle a freshly bulk-loaded database (hint bits, visibility map) before timing on it."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        con.execute("VACUUM ANALYZE")


# --- options every benchmark takes ----------------------------------------------------------


def add_common_options(parser: argparse.ArgumentParser, *, repeatable: bool = True) -> None:
    parser.add_argument("--engine", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--url", default=PG_DEFAULT_URL, help="PostgreSQL admin URL")
    parser.add_argument("--keep", action="store_true", help="keep the work folder / databases")
    if repeatable:
        parser.add_argument("--repeat", type=int, default=1, help="runs of each, alternating")
        parser.add_argument(
            "--verify",
            action="store_true",
            help="check both audit trails with `pbclients audit verify`",
        )


# --- one side-by-side comparison -----------------------------------------------------------


@dataclass
class Comparison:
    """Tool and baseline runs on fresh copies of one prepared database, alternating.

    `prepared` is a SQLite path, or for PostgreSQL the name of a template database on
    `admin_url`; every database made here is listed in `databases` for `cleanup`.
    """

    engine: str
    work: Path
    admin_url: str
    prefix: str
    env: dict[str, str]
    prepared: str = ""
    databases: list[str] = field(default_factory=list)
    tool_runs: list[Measured] = field(default_factory=list)
    base_runs: list[Measured] = field(default_factory=list)
    tool_db: str = ""
    base_db: str = ""

    def prepare(self) -> str:
        """An empty database with pbclients' schema to fill; returns its path or URL."""
        if self.engine == "sqlite":
            self.prepared = str(self.work / "prepared.db")
            init_schema(self.prepared, self.env)
            return self.prepared
        self.prepared = f"{self.prefix}_prep"
        self.databases.append(self.prepared)
        url = pg_create(self.admin_url, self.prepared)
        init_schema(url, self.env)
        return url

    def fresh(self, label: str) -> str:
        if self.engine == "sqlite":
            target = self.work / f"{label}{len(self.tool_runs)}.db"
            copy_sqlite(Path(self.prepared), target)
            return str(target)
        name = f"{self.prefix}_{label}{len(self.tool_runs)}"
        self.databases.append(name)
        return pg_create(self.admin_url, name, template=self.prepared)

    def run(
        self,
        repeat: int,
        tool: Callable[[str], list[str]],
        baseline: Callable[[str], list[str]],
        *,
        tool_stdout: Any = subprocess.DEVNULL,
    ) -> None:
        for n in range(repeat):
            self.tool_db = self.fresh("tool")
            measured = run_measured(tool(self.tool_db), env=self.env, stdout=tool_stdout)
            check(measured, "pbclients")
            self.base_db = self.fresh("base")
            baseline_measured = run_measured(baseline(self.base_db), env=self.env)
            check(baseline_measured, "baseline")
            self.tool_runs.append(measured)
            self.base_runs.append(baseline_measured)
            print(
                f"run {n + 1}: tool {measured.seconds:.2f} s, "
                f"baseline {baseline_measured.seconds:.2f} s ({load()})"
            )

    def verify_trails(self) -> None:
        for db in (self.tool_db, self.base_db):
            check(run_measured(pbclients("--db", db, "audit", "verify"), env=self.env), db)
        print("audit verify: both trails intact")

    def cleanup(self, keep: bool) -> None:
        if keep:
            kept = f" and databases {', '.join(self.databases)}" if self.databases else ""
            print(f"kept: {self.work}{kept}")
            return
        shutil.rmtree(self.work, ignore_errors=True)
        if self.databases:
            pg_drop(self.admin_url, *reversed(self.databases))


@dataclass
class Result:
    """One scenario's runs, tool and baseline alternating, and what it counted."""

    tool_runs: list[Measured]
    base_runs: list[Measured]
    facts: dict[str, Any] = field(default_factory=dict)


def report(command: str, engine: str, result: Result) -> tuple[Measured, Measured]:
    """Print the best runs side by side; returns them (tool, baseline)."""
    tool = min(result.tool_runs, key=lambda m: m.seconds)
    base = min(result.base_runs, key=lambda m: m.seconds)
    print()
    print(
        table(
            [
                ("", "wall (best)", "CPU", "peak RSS"),
                row(f"pbclients {command}", tool),
                row(f"raw {engine} baseline", base),
            ]
        )
    )
    print()
    return tool, base


# --- printing -------------------------------------------------------------------------------


def table(rows: Sequence[Sequence[Any]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        )
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def row(label: str, measured: Measured) -> tuple[str, str, str, str]:
    return (
        label,
        f"{measured.seconds:.2f} s",
        f"{measured.cpu_seconds:.2f} s",
        f"{measured.peak_mb:.0f} MB",
    )


def load() -> str:
    """The machine's 1-minute load average: how much the neighbours were disturbing a run."""
    return f"load {os.getloadavg()[0]:.1f}"


def machine() -> str:
    return f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
