"""Helpers shared by the CLI behaviour tests: database snapshots and real subprocesses."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, text
from sqlalchemy import inspect as sql_inspect
from sqlalchemy import select as sql_select
from sqlmodel import SQLModel

from pbclients import models
from pbclients.db import reading

NOW_TEXT = "2026-11-26T09:00:00Z"
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order: equal snapshots mean nothing changed.

    Tables and columns a database does not have yet (an older schema) are left out.
    """
    rows: dict[str, list[tuple[Any, ...]]] = {}
    with reading(engine) as session:
        inspector = sql_inspect(session.connection())
        present = set(inspector.get_table_names())
        for table in SQLModel.metadata.sorted_tables:
            if table.name not in present:
                continue
            names = {column["name"] for column in inspector.get_columns(table.name)}
            columns = [column for column in table.columns if column.name in names]
            order = list(table.primary_key.columns)
            rows[table.name] = [
                tuple(row) for row in session.execute(sql_select(*columns).order_by(*order))
            ]
    return rows


def count(engine: Engine, table: str, where: str = "") -> int:
    with reading(engine) as session:
        return int(session.execute(text(f"SELECT count(*) FROM {table} {where}")).scalar_one())


def statuses(engine: Engine) -> dict[int, str]:
    with reading(engine) as session:
        return dict(session.execute(text("SELECT id, status FROM client ORDER BY id")).all())


def sql(engine: Engine, statement: str, **params: Any) -> None:
    """Raw SQL outside the tool, as a careless script or an attacker would run it."""
    with engine.begin() as connection:
        connection.execute(text(statement), params)


def audit_count(engine: Engine) -> int:
    with reading(engine) as session:
        return int(
            session.execute(sql_select(func.count()).select_from(models.AuditEvent)).scalar_one()
        )


def records(stdout: str) -> Any:
    """The JSON a command printed: a list of rows, or one object (plan, show, ...)."""
    return json.loads(stdout)


def outcomes(stdout: str) -> list[tuple[str, int | None, str | None, str | None, str]]:
    """(reference, id, before, after, outcome) of every result of a changing command."""
    return [
        (r["reference"], r["id"], r["before"], r["after"], r["outcome"]) for r in records(stdout)
    ]


def write(path: Path, data: str | bytes) -> str:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The test's environment (isolated HOME/XDG dirs, actor, clock) for a child process."""
    env = dict(os.environ)
    env.setdefault("PBCLIENTS_NOW", NOW_TEXT)
    env.update(extra)
    return env


def pbclients(
    *args: str, input: bytes | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """Run `python -m pbclients ARGS` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "pbclients", *args],
        input=input,
        capture_output=True,
        env=env or subprocess_env(),
        timeout=timeout,
        check=False,
    )


def run_in_pty(
    args: list[str], answer: str, *, env: dict[str, str], marker: bytes = b"[y/N]"
) -> tuple[int, str, str]:
    """Run pbclients on a real pseudo-terminal, answer its prompt (the output up to `marker`);
    (exit code, prompt, rest)."""
    import pty

    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "pbclients", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    try:
        prompt = _read_until(master, marker, seconds=60)
        os.write(master, answer.encode() + b"\n")
        rest = _read_until(master, None, seconds=60)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return code, _plain(prompt), _plain(rest)


def _read_until(fd: int, marker: bytes | None, *, seconds: float) -> bytes:
    """Read a pty until `marker` appears, or until the child closes it when marker is None."""
    seen = b""
    deadline = time.monotonic() + seconds
    while marker is None or marker not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out waiting for {marker!r}; got {seen!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        if not chunk:
            if marker is None:
                break
            raise AssertionError(f"the process ended before {marker!r}; got {seen!r}")
        seen += chunk
    return seen


def _plain(data: bytes) -> str:
    return ANSI.sub("", data.decode(errors="replace")).replace("\r\n", "\n")
