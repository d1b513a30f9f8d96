"""What differs between the engines and must not show: the PostgreSQL driver being
optional, a busy database (exit 5, nothing changed), concurrent writers of the audit chain."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import pytest

from pbclients import audit
from pbclients.db import reading, writing
from pbclients.operation import Action
from tests.factory import NOW
from tests.helpers import snapshot

BUSY = (
    "Error: The database is busy (another pbclients run or the portal holds it); "
    "nothing was changed, try again in a moment.\n"
)

# Deliberately not one of `Action`'s values: the audit trail stores any action text.
NOTE = cast(Action, "note")

NO_DRIVER = (
    "Error: PostgreSQL needs the driver: install it with pip install 'pbclients[postgres]'.\n"
)


@pytest.mark.parametrize("how", ["option", "env"])
def test_a_postgresql_url_without_the_driver_is_a_one_sentence_error(how: str) -> None:
    url = "postgresql://practice@127.0.0.1:1/practice"
    args = ["--db", url, "list"] if how == "option" else ["list"]
    code = (
        "import sys\n"
        "sys.modules['psycopg'] = None  # as if pbclients[postgres] were not installed\n"
        "from pbclients.cli.app import main\n"
        f"sys.argv = ['pbclients', *{args!r}]\n"
        "main()\n"
    )
    env = {"PBCLIENTS_DB": url} if how == "env" else {}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (2, "", NO_DRIVER)


@contextmanager
def held_write_lock(db_target: str) -> Iterator[None]:
    """Another connection holds a lock that a writer of client 1 needs, until the block ends."""
    if "://" not in db_target:
        other = sqlite3.connect(db_target, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
            other.close()
        return
    import psycopg

    with psycopg.connect(db_target) as pg:
        pg.execute("SELECT id FROM client WHERE id = 1 FOR UPDATE")
        try:
            yield
        finally:
            pg.rollback()


def test_a_writer_blocked_past_the_lock_timeout_exits_5_and_changes_nothing(
    cli, practice, engine, db_target, monkeypatch
):
    monkeypatch.setenv("PBCLIENTS_LOCK_TIMEOUT", "0.3")
    before = snapshot(engine)
    with held_write_lock(db_target):
        result = cli("deactivate", "1", "--yes")
    assert (result.exit_code, result.stdout, result.stderr) == (5, "", BUSY)
    assert snapshot(engine) == before
    # Once the other transaction ends, the same command goes through.
    assert cli("deactivate", "1", "--yes").exit_code == 0


def test_concurrent_writers_keep_one_unbroken_audit_chain(cli, engine) -> None:
    writers, appends = 3, 12
    start = threading.Barrier(writers)
    failures: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            start.wait(timeout=10)
            for n in range(appends):
                with writing(engine) as session:
                    audit.append(
                        session,
                        [audit.NewEvent(NOTE, writer, None, None, {"n": n}) for _ in range(2)],
                        batch_id=audit.new_batch_id(),
                        actor=f"writer-{writer}",
                        reason=None,
                        at=NOW,
                    )
        except BaseException as error:  # reported below, in the test's thread
            failures.append(error)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    with reading(engine) as session:
        assert audit.count(session) == writers * appends * 2
    verified = cli("audit", "verify")
    assert (verified.exit_code, verified.stdout) == (
        0,
        f"Audit trail intact: {writers * appends * 2} events verified.\n",
    )
