"""A progress bar on stderr for long work, only when a person is watching."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# Below this, work finishes before a bar would be worth drawing.
LARGE = 5_000


@contextmanager
def progress(
    total: int, label: str, *, large: int = LARGE
) -> Iterator[Callable[[int, int], None] | None]:
    """`large`: the least work worth a bar (verifying a backup is slow: a few files are)."""
    if total < large or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)

        def advance(done: int, of: int) -> None:
            bar.update(task, completed=done, total=of)

        yield advance
