"""Benchmark: export throughput on a demo practice, and memory that does not grow with it.

Builds `pbclients demo --clients N` (default 10,000) in a temporary database, then
times the real CLI as a subprocess for the first 1,000 clients and for all of them:

    pbclients --db DB export --ids-from IDS --backup-dir DIR --format json > /dev/null

reporting clients/s, MB/s of backup written and the child's peak RSS (which should
be about the same for 1,000 and 10,000 clients: one client at a time). Next to it, in
the same run, a raw baseline as its own process doing the same work (`write_backups`,
also the first half of `bench_delete.py`'s baseline): per client a query per table
(profile, each record kind, programs, audit events), the same members as the tool's
backup (format 2: JSON records, document files, `fhir/<Type>.ndjson` mapped by
pbclients' own pure `pbclients.fhir.mapping`, and a manifest with each member's SHA-256
and size), deflated, the file and its folder fsynced, then read back: every member
hashed and compared, every JSON line parsed, record counts compared with the manifest and
with a fresh count from the database, and the whole file hashed again. The first
client's backups of both sides must hold the same members byte for byte (all but the
audit events and the manifest: the baseline also sees the tool's export events).

    python tests/perf/bench_export.py                      # 10,000 demo clients
    python tests/perf/bench_export.py --clients 2000 --small 200
    python tests/perf/bench_export.py --engine postgres [--url URL]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _bench as b

# Record kind (the member's name) -> table, in the tool's order (`models.RECORD_MODELS`).
KINDS = {
    "enrolments": "enrolment", "appointments": "appointment", "journal_entries": "journal_entry",
    "protocols": "protocol", "session_notes": "session_note", "messages": "message",
    "forms": "form_request", "documents": "document", "payment_methods": "payment_method",
    "payment_plans": "payment_plan", "notifications": "notification",
}  # fmt: skip
TABLES = tuple(KINDS.values())
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


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
    """The same few statements on sqlite3 or psycopg; rows as the tool encodes them (times as
    ISO-8601 UTC with a Z, booleans as booleans), so both write the same members."""

    def __init__(self, db: str) -> None:
        self.pg = db.startswith("postgresql")
        if self.pg:
            import psycopg

            self.con: Any = psycopg.connect(db, autocommit=True)
        else:
            self.con = sqlite3.connect(db)
        self._types: dict[str, dict[str, str]] = {}
        _names, rows = self.rows("SELECT version_num FROM alembic_version")
        self.schema_version = ",".join(sorted(row[0] for row in rows)) or None

    def rows(self, sql: str, *params: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
        cur = self.con.cursor()
        cur.execute(sql.replace("?", "%s") if self.pg else sql, params)
        names = [d[0] for d in cur.description]
        return names, cur.fetchall()

    def records(self, table: str, sql: str, *params: Any) -> list[dict[str, Any]]:
        names, rows = self.rows(sql, *params)
        if self.pg:
            return [
                {
                    n: _iso(v) if isinstance(v, datetime) else v
                    for n, v in zip(names, row, strict=True)
                }
                for row in rows
            ]
        if table not in self._types:
            _names, info = self.rows(f"PRAGMA table_info({table})")
            self._types[table] = {column[1]: column[2] for column in info}
        types = self._types[table]
        out = []
        for row in rows:
            record = {}
            for name, value in zip(names, row, strict=True):
                kind = types.get(name)
                if value is not None and kind == "DATETIME":
                    value = _iso(datetime.fromisoformat(value))
                elif value is not None and kind == "BOOLEAN":
                    value = bool(value)
                record[name] = value
            out.append(record)
        return out


def _iso(moment: datetime) -> str:
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return utc.isoformat().replace("+00:00", "Z")


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, sort_keys=True).encode() + b"\n"


class _HashingSink:
    """Write-only: zipfile streams the archive through it, hashed on the way (as the tool)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.raw.write(data)
        self.digest.update(data)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _members(raw: _Raw, client_id: int, now: datetime) -> dict[str, bytes]:
    """One client's backup members, the manifest last, as the tool's archive holds them."""
    from pbclients import __version__
    from pbclients.fhir import FHIR_VERSION, bulk, mapping

    members: dict[str, bytes] = {}
    [client] = raw.records("client", "SELECT * FROM client WHERE id = ?", client_id)
    members["client.json"] = json.dumps(
        client, ensure_ascii=False, sort_keys=True, indent=1
    ).encode()
    records: dict[str, list[dict[str, Any]]] = {}
    files: dict[int, mapping.FileReference] = {}
    for kind, table in KINDS.items():
        records[kind] = raw.records(
            table, f"SELECT * FROM {table} WHERE client_id = ? ORDER BY id", client_id
        )
        lines = []
        for record in records[kind]:
            content = record.pop("content", None)
            if content is not None:
                data = bytes(content)
                base = _UNSAFE.sub("_", str(record["filename"])).strip("._") or "file"
                member = f"documents/{record['id']}-{base[:100]}"
                members[member] = data
                files[record["id"]] = mapping.FileReference(
                    f"../{member}", len(data), hashlib.sha1(data).digest()
                )
                line = _line(
                    {**record, "content_member": member,
                     "content_sha256": hashlib.sha256(data).hexdigest()}
                )  # fmt: skip
            else:
                line = _line(record)
            lines.append(line)
        members[f"records/{kind}.jsonl"] = b"".join(lines)
    programs = raw.records(
        "program",
        "SELECT * FROM program WHERE id IN (SELECT program_id FROM enrolment WHERE client_id = ?)"
        " ORDER BY id",
        client_id,
    )
    members["programs.json"] = json.dumps(
        programs, ensure_ascii=False, sort_keys=True, indent=1
    ).encode()
    events = raw.records(
        "audit_event", "SELECT * FROM audit_event WHERE client_id = ? ORDER BY id", client_id
    )
    members["audit_events.jsonl"] = b"".join(_line(event) for event in events)
    counts = {kind: len(rows) for kind, rows in records.items()}
    counts["audit_events"] = len(events)
    context = mapping.ClientContext(str(client["status"]), now, {int(p["id"]): p for p in programs})
    fhir: dict[str, int] = {}
    lines_of: dict[str, list[bytes]] = {}
    for resource in mapping.client_resources(
        client, records, context, lambda row: files[int(row["id"])]
    ):
        lines_of.setdefault(resource["resourceType"], []).append(bulk.ndjson_line(resource))
    for resource_type, lines in lines_of.items():
        members[f"fhir/{resource_type}.ndjson"] = b"".join(lines)
        fhir[resource_type] = len(lines)
    members["manifest.json"] = json.dumps(
        {
            "format": "pbclients-backup", "format_version": 2, "pbclients_version": __version__,
            "schema_version": raw.schema_version, "client_id": client_id,
            "created_at": b.iso(now), "counts": counts,
            "fhir": {"version": FHIR_VERSION, "counts": fhir},
            "members": {n: hashlib.sha256(d).hexdigest() for n, d in sorted(members.items())},
            "sizes": {n: len(d) for n, d in sorted(members.items())},
        },
        ensure_ascii=False, sort_keys=True, indent=1,
    ).encode()  # fmt: skip
    return members


_COUNTS = " UNION ALL ".join(
    f"SELECT '{kind}', count(*) FROM {table} WHERE client_id = ?"
    for kind, table in (*KINDS.items(), ("audit_events", "audit_event"))
)


def _verify(raw: _Raw, client_id: int, path: Path, sha256: str) -> None:
    """Read the backup back as the tool does: every member against the manifest, every JSON
    line parsed, counts against the manifest and the database, the file's SHA-256."""
    with open(path, "rb") as handle:
        digest = hashlib.sha256()
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
        assert digest.hexdigest() == sha256, path
        with zipfile.ZipFile(handle) as archive:
            manifest = json.loads(archive.read("manifest.json"))
            for name, expected in manifest["members"].items():
                data = archive.read(name)
                assert hashlib.sha256(data).hexdigest() == expected, (path, name)
                if name.endswith(".jsonl"):
                    lines = [json.loads(line) for line in data.splitlines()]
                    kind = name.removeprefix("records/").removesuffix(".jsonl")
                    assert len(lines) == manifest["counts"][kind], (path, name)
                elif name.endswith(".json"):
                    json.loads(data)
                elif name.startswith("fhir/"):
                    assert all(line.startswith(b'{"resourceType":') for line in data.splitlines())
    _names, rows = raw.rows(_COUNTS, *([client_id] * (len(KINDS) + 1)))
    assert dict(rows) == manifest["counts"], (path, dict(rows), manifest["counts"])


def write_backups(
    raw: _Raw, ids: list[int], folder: Path, now: datetime
) -> dict[int, tuple[str, str]]:
    """Each client's backup written, fsynced (file, folder) and verified: id -> (path, sha256)."""
    written: dict[int, tuple[str, str]] = {}
    for client_id in ids:
        members = _members(raw, client_id, now)
        path = folder / f"client-{client_id:06d}-{now.strftime('%Y%m%dT%H%M%SZ')}.pbbackup.zip"
        with open(path, "xb") as handle:
            sink = _HashingSink(handle)
            with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as archive:  # type: ignore[call-overload]
                for name, data in members.items():
                    archive.writestr(name, data)
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_dir(folder)
        sha256 = sink.digest.hexdigest()
        _verify(raw, client_id, path, sha256)
        written[client_id] = (str(path), sha256)
    return written


def baseline(db: str, ids_path: str, folder: str) -> None:
    raw = _Raw(db)
    ids = [int(line) for line in Path(ids_path).read_text().split()]
    write_backups(raw, ids, Path(folder), b.NOW)


# --- the run --------------------------------------------------------------------------------


def _same_work_members(path: Path) -> dict[str, bytes]:
    """A backup's members that both sides must write byte for byte: all but the audit
    events and the manifest (the baseline runs after the tool's export events)."""
    with zipfile.ZipFile(path) as archive:
        return {
            name: archive.read(name)
            for name in archive.namelist()
            if name not in ("audit_events.jsonl", "manifest.json")
        }


def _differing(written: dict[str, dict[str, bytes]]) -> str:
    tool, base = written["tool"], written["base"]
    return ", ".join(sorted(n for n in tool.keys() | base.keys() if tool.get(n) != base.get(n)))


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir()) / 1e6


def demo_ids(db: str, clients: int, work: Path, env: dict[str, str], started: float) -> list[str]:
    """Fill `db` with `pbclients demo --clients N` and return its client IDs, as listed."""
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
    return ids


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
        ids = demo_ids(db, clients, work, env, started)
        results: dict[int, b.Result] = {}
        for count in sizes:
            count = min(count, len(ids))
            id_file = work / f"ids-{count}.txt"
            id_file.write_text("\n".join(ids[:count]) + "\n")
            result = results.setdefault(count, b.Result([], []))
            written: dict[str, dict[str, bytes]] = {}
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
                written[label] = _same_work_members(min(folder.iterdir()))
                shutil.rmtree(folder)
            if written["tool"] != written["base"]:
                sys.exit(f"tool and baseline backups differ in {_differing(written)}")
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
