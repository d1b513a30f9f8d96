"""Test-only fault injection, read in this one place.

Long operations call `checkpoint(step)` between their steps. Normally that does
nothing. Tests set env `PBCLIENTS_FAULT` in a subprocess to stop it there:

- `kill-after:<step>` SIGKILLs the process when it reaches `<step>`, as a power cut
  or `kill -9` would (no cleanup, no rollback handlers, no finally blocks);
- `wait-after:<step>:<file>` makes it wait at `<step>` until `<file>` exists (at
  most a minute), so a test can hold a run in the middle (e.g. with the purge lock
  taken) while it starts others; `<file>.held` is created once it waits there.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

ENV = "PBCLIENTS_FAULT"
_MAX_WAIT_SECONDS = 60.0


def checkpoint(step: str) -> None:
    fault = os.environ.get(ENV)
    if not fault:
        return
    kind, _, rest = fault.partition(":")
    if kind == "kill-after" and rest == step:
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "wait-after":
        name, _, release = rest.partition(":")
        if name == step and release:
            Path(f"{release}.held").touch()
            deadline = time.monotonic() + _MAX_WAIT_SECONDS
            while not Path(release).exists() and time.monotonic() < deadline:
                time.sleep(0.01)
