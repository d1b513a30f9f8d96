"""State shared by every command, error translation, confirmation and input files."""

from __future__ import annotations

import getpass
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from pbclients.cli.output import stdout_closed
from pbclients.cli.render import plain, prompt, visible
from pbclients.errors import Declined, ExitCode, PbClientsError, UsageError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from pbclients.operation import Change
    from pbclients.readdb import Database


@dataclass(frozen=True)
class AppState:
    db_option: str | None
    actor_option: str | None
    debug: bool
    # Engines opened by the command, closed when it ends (pooled connections otherwise leak).
    opened: list[Engine] = field(default_factory=list, compare=False, repr=False)

    @property
    def db(self) -> str:
        from pbclients.paths import resolve_db

        return resolve_db(self.db_option)

    @property
    def actor(self) -> str:
        chosen = self.actor_option or os.environ.get("PBCLIENTS_ACTOR")
        if chosen:
            return chosen
        try:
            return getpass.getuser()
        except (KeyError, OSError):
            return f"uid:{os.getuid()}"

    def change(self, reason: str | None) -> Change:
        from pbclients.operation import Change

        return Change(actor=self.actor, reason=reason)

    def engine(self, *, create: bool = False) -> Engine:
        """The practice database; every command but init/demo needs its schema to exist.

        Whatever --db names is checked before anything is written to it (read-only on
        SQLite): another application's database, an empty or a text file is refused
        and left byte-for-byte as it was; `create` (init) refuses those with exit 3.
        """
        from pbclients.schema import open_for_init, open_practice

        with self._opening():
            engine = open_for_init(self.db) if create else open_practice(self.db)
        self.opened.append(engine)
        return engine

    def database(self) -> Database:
        """The practice for a read-only command: the same checks as `engine`, then reads
        through the bare driver (pbclients.readdb), which spares SQLAlchemy's start-up."""
        from pbclients.readdb import open_database

        with self._opening():
            database = open_database(self.db)
        if database.engine is not None:
            self.opened.append(database.engine)
        return database

    @contextmanager
    def _opening(self) -> Iterator[None]:
        from pbclients.paths import is_url
        from pbclients.readdb import is_driver_error

        try:
            yield
        except Exception as error:
            if not is_driver_error(error):
                raise
            # A file SQLite cannot open, a server that refuses us: say which, without the
            # URL's secrets.
            where = "the PostgreSQL server" if is_url(self.db) else self.db
            problem = str(error.orig).strip().splitlines()[0]  # type: ignore[attr-defined]
            raise UsageError(
                f"Cannot open {where} ({problem}); check --db or PBCLIENTS_DB."
            ) from error


def state(ctx: typer.Context) -> AppState:
    found = ctx.find_object(AppState)
    return found if found is not None else AppState(None, None, False)


def err(message: str) -> None:
    """One sentence on stderr. Domain errors quote references and file names as typed,
    so the whole sentence is made inert here, at the edge."""
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False).print(
        plain(message)
    )


@contextmanager
def reporting(ctx: typer.Context) -> Iterator[AppState]:
    """Turn domain errors into one sentence on stderr and their exit code."""
    app_state = state(ctx)
    try:
        # Every command checks the clock first, read-only ones too: a PBCLIENTS_NOW out of
        # range is reported the same way everywhere, not only where a timestamp is written.
        from pbclients.clock import now

        now()
        yield app_state
    except PbClientsError as error:
        if app_state.debug:
            traceback.print_exc()
        err(f"Error: {error}")
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        err("Interrupted; the current transaction was rolled back, nothing from it was saved.")
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort):
        raise
    except BrokenPipeError:
        # Commands print their report after the work is committed (a prompt that meets
        # a closed pipe is a refusal, see confirm), so this only cuts the report short.
        stdout_closed()
    except Exception as error:
        if app_state.debug:
            raise
        # One line: SQLAlchemy appends "(Background on this error at: ...)" on a new line.
        first_line = next(iter(str(error).splitlines()), "").rstrip(". ")
        err(
            f"Unexpected error: {type(error).__name__}: {first_line}. "
            "Run the command again with --debug for details."
        )
        raise typer.Exit(ExitCode.ERROR) from None
    finally:
        while app_state.opened:
            app_state.opened.pop().dispose()


def interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def confirm(
    question: str, *, yes: bool, stdin_used: bool = False, typed: int | None = None
) -> None:
    """Ask a terminal to confirm; refuse (exit 2) without one unless --yes.

    `typed`: the admin must type this number instead of y (large deletions).
    """
    if yes:
        return
    if stdin_used or not interactive():
        raise UsageError(
            "This command changes data and there is no terminal to confirm on; "
            "pass --yes to go ahead, or --dry-run to see what would change."
        )
    # click echoes the question as is: no markup, but control characters would reach the
    # terminal. Callers pass data through `visible`; this catches anything they missed.
    question = prompt(question)
    try:
        if typed is not None:
            answer = typer.prompt(
                f"{question}\nType {typed} to confirm", default="", show_default=False
            )
            agreed = answer.strip() == str(typed)
        else:
            agreed = typer.confirm(question, default=False)
    except BrokenPipeError:
        # The question went to a closed pipe: nobody saw it, so nobody agreed.
        agreed = False
    if not agreed:
        raise Declined("Not confirmed; nothing was changed.")


def read_input(path: str) -> bytes:
    """A file's bytes, or standard input's for `-`."""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).expanduser().read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{visible(path)}: no such file; check the path.") from None
    except IsADirectoryError:
        raise UsageError(
            f"{visible(path)} is a folder, not a file; give the file inside it."
        ) from None
    except PermissionError:
        raise UsageError(
            f"{visible(path)} cannot be read (permission denied); "
            "check its permissions or copy it somewhere readable."
        ) from None


def source_name(path: str) -> str:
    return "standard input" if path == "-" else path
