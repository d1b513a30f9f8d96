"""`pbclients browse` on a 1,000,000-client SQLite practice: time to first screen, memory.

Runs the real command on a pseudo-terminal (120x40), as an admin would, and measures:
the time from starting the process to the first client's row on screen; the time for End
(a jump to the millionth row, which reads that page at an offset) until the last client
is on screen; ten PageDowns from there back at the top; and the process's peak RSS
(VmHWM from /proc, read before Ctrl+Q) after all of it; exit 0 expected. The baseline is
`pbclients list --limit 40` on the same file: the same first rows printed by the CLI,
with no full-screen UI.

    python tests/perf/bench_browse.py                 # 1,000,000 clients
    python tests/perf/bench_browse.py --clients 20000 --repeat 3
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import (
    fill_sqlite,
    init_schema,
    load,
    machine,
    pbclients,
    run_measured,
    table,
    tool_env,
    vm_hwm_kib,
)

_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def _read_until(fd: int, marker: bytes, seen: bytearray, seconds: float = 120) -> float:
    """Read the terminal until `marker` shows; the moment it did (perf_counter)."""
    deadline = time.monotonic() + seconds
    start = len(seen)
    # Textual redraws only the cells that changed, with cursor moves between them: the
    # marker is looked for in the text without its escape sequences.
    while marker not in _ANSI.sub(b"", bytes(seen[start:])):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SystemExit(f"timed out waiting for {marker!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                raise SystemExit(f"browse ended before {marker!r}") from None
    return time.perf_counter()


def browse_once(db: str, env: dict[str, str], clients: int) -> tuple[float, float, float, float]:
    """(first screen s, End s, 10 x PageDown s, peak RSS MiB) of one interactive session."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**env, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    started = time.perf_counter()
    process = subprocess.Popen(
        pbclients("--db", db, "browse"), stdin=slave, stdout=slave, stderr=slave, env=env,
        close_fds=True,
    )  # fmt: skip
    os.close(slave)
    seen = bytearray()
    try:
        first = _read_until(master, b"client0000001@example.org", seen) - started
        _read_until(master, f"{clients:,} matches".encode(), seen)
        time.sleep(0.3)
        pressed = time.perf_counter()
        os.write(master, b"\x1b[F")  # End
        last = _read_until(master, f"client{clients:07d}@example.org".encode(), seen) - pressed
        time.sleep(0.3)
        pressed = time.perf_counter()
        os.write(master, b"\x1b[H")  # Home
        _read_until(master, b"client0000001@example.org", seen)
        for _ in range(10):
            os.write(master, b"\x1b[6~")  # PageDown
        # A page is the table's height less 2 (30 rows here): the cursor ends on row 301,
        # so the row of client 300 is on screen.
        paged = _read_until(master, b"client0000300@example.org", seen) - pressed
        # The peak so far, read while it runs: wait4's ru_maxrss would include what this
        # process held when it forked.
        peak_kib = vm_hwm_kib(process.pid)
        os.write(master, b"\x11")  # Ctrl+Q
        while True:
            ready, _, _ = select.select([master], [], [], 5)
            if not ready:
                break
            try:
                if not os.read(master, 65536):
                    break
            except OSError:
                break
        _, status, _usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    if process.returncode != 0:
        raise SystemExit(f"browse exited {process.returncode}")
    return first, last, paged, max(peak_kib, vm_hwm_kib(process.pid)) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", help="an existing bench practice (skips building one)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-browse-"))
    env = tool_env(work / "home")
    db = args.db
    if db is None:
        db = str(work / "practice.db")
        began = time.perf_counter()
        init_schema(db, env)
        fill_sqlite(Path(db), args.clients)
        print(f"built {args.clients:,} clients in {time.perf_counter() - began:.1f} s")
    print(machine(), load())
    rows = [("run", "first screen s", "End s", "10 x PgDn s", "peak MiB", "list --limit 40 s")]
    for run in range(1, args.repeat + 1):
        first, last, paged, peak = browse_once(db, env, args.clients)
        baseline = run_measured(pbclients("--db", db, "list", "--limit", "40"), env=env)
        rows.append((str(run), f"{first:.2f}", f"{last:.2f}", f"{paged:.2f}", f"{peak:.0f}",
                     f"{baseline.seconds:.2f}"))  # fmt: skip
    print(table(rows))


if __name__ == "__main__":
    main()
