"""Output piped to a reader that stops early (`| head -1`) ends quietly.

Real shell pipelines on a practice large enough that every format overflows the pipe
buffer, so the write after `head` exits really meets a closed pipe: nothing on stderr,
exit 0 (or death by SIGPIPE, 141, as `git log | head -1`), and a changing command's
change is whole.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from pbclients.db import make_engine, reading
from tests.helpers import NOW_TEXT

CLIENTS = 3000


@pytest.fixture(scope="module")
def big_practice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A demo practice of 3,000 clients, built once for the module, and the environment
    (home folders inside the test's temporary folder) to run commands in."""
    root = tmp_path_factory.mktemp("pipes")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(root / "home"),
        "XDG_DATA_HOME": str(root / "data"),
        "XDG_STATE_HOME": str(root / "state"),
        "PBCLIENTS_NOW": NOW_TEXT,
        "PBCLIENTS_ACTOR": "tester",
        "LANG": "C.UTF-8",
        "COLUMNS": "200",
    }
    db = root / "practice.db"
    built = subprocess.run(
        [sys.executable, "-m", "pbclients", "--db", str(db), "demo", "--clients", str(CLIENTS)],
        capture_output=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return db, env


def pipeline(
    command: str, env: dict[str, str], reader: str = "head -1"
) -> tuple[str, list[int], str]:
    """Run `pbclients COMMAND | READER` in bash; (what the reader printed, the exit status
    of every pbclients in the pipeline from PIPESTATUS, everything written to stderr)."""
    pbclients = f"{shlex.quote(sys.executable)} -m pbclients {command}"
    script = f'set -o pipefail\n{pbclients} | {reader}\necho "status=${{PIPESTATUS[*]}}"'
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, env=env, timeout=120, check=False
    )
    shown, _, status = done.stdout.decode().rpartition("status=")
    return shown, [int(code) for code in status.split()[:-1]], done.stderr.decode()


@pytest.mark.parametrize(
    ("command", "first"),
    [
        ("list --format ids", "1\n"),
        ("list --format csv", "id,email,first_name,last_name,status,programs,"),
        ("list --format json", "[\n"),
        ("list --status all", "id "),
        ("audit --format json", "[\n"),
        ("audit --format csv", "id,at,actor,action,client_id,"),
        ("audit", "id "),
        ("show 1", ""),
        ("show 1 --format json", "{\n"),
    ],
)
def test_a_reader_that_stops_early_gets_a_quiet_end(
    big_practice: tuple[Path, dict[str, str]], command: str, first: str
) -> None:
    db, env = big_practice
    shown, [status], stderr = pipeline(f"--db {shlex.quote(str(db))} {command}", env)
    assert stderr == ""
    assert status in (0, 141)
    assert shown.startswith(first) and shown.count("\n") == 1


def test_every_byte_arrives_when_the_reader_reads_everything(
    big_practice: tuple[Path, dict[str, str]],
) -> None:
    """The quiet end is only for readers that leave: a whole read is whole."""
    db, env = big_practice
    shown, [status], stderr = pipeline(f"--db {shlex.quote(str(db))} list --format ids", env, "cat")
    assert (status, stderr) == (0, "")
    assert len(shown.split()) == CLIENTS


def test_a_closed_pipe_before_any_output(big_practice: tuple[Path, dict[str, str]]) -> None:
    """`| true` closes the pipe before the first write (most of the time): still quiet."""
    db, env = big_practice
    for fmt in ("ids", "csv", "json", "table"):
        command = f"--db {shlex.quote(str(db))} list --format {fmt}"
        _, [status], stderr = pipeline(command, env, "true")
        assert stderr == ""
        assert status in (0, 141)


def test_a_change_whose_report_is_cut_short_is_still_whole(
    big_practice: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    db, env = big_practice
    copy = tmp_path / "copy.db"
    copy.write_bytes(db.read_bytes())
    engine = make_engine(str(copy))
    try:
        with reading(engine) as session:
            active = session.execute(
                text("SELECT count(*) FROM client WHERE status = 'active'")
            ).scalar_one()
        shown, statuses, stderr = pipeline(
            f"--db {shlex.quote(str(copy))} list --status active --format ids "
            f"| {shlex.quote(sys.executable)} -m pbclients --db {shlex.quote(str(copy))} "
            "deactivate --ids-from - --yes --format json",
            env,
        )
        assert (statuses, stderr) == ([0, 0], "")
        assert shown == "[\n"
        with reading(engine) as session:
            left = session.execute(
                text("SELECT count(*) FROM client WHERE status = 'active'")
            ).scalar_one()
            events = session.execute(
                text("SELECT count(*) FROM audit_event WHERE action = 'deactivate'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert active > 1000
    assert left == 0
    assert events >= active
