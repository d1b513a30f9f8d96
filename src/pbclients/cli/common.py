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

from pbclients.errors import Declined, ExitCode, PbClientsError, UsageError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from pbclients.lifecycle import Change


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
        from pbclients.lifecycle import Change

        return Change(actor=self.actor, reason=reason)

    def engine(self, *, create: bool = False) -> Engine:
        """The practice database; every command but init/demo needs its schema to exist."""
        from sqlalchemy.exc import DBAPIError

        from pbclients.db import make_engine
        from pbclients.paths import is_url
        from pbclients.schema import require_schema

        engine = make_engine(self.db, create=create)
        self.opened.append(engine)
        if not create:
            try:
                require_schema(engine)
            except DBAPIError as error:
                # Not a SQLite file, a server that refuses us: say which, without the URL's secrets.
                where = "the PostgreSQL server" if is_url(self.db) else self.db
                problem = str(error.orig).strip().splitlines()[0]
                raise UsageError(
                    f"Cannot open {where} ({problem}); check --db or PBCLIENTS_DB."
                ) from error
        return engine


def state(ctx: typer.Context) -> AppState:
    found = ctx.find_object(AppState)
    return found if found is not None else AppState(None, None, False)


def err(message: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(message, markup=False)


@contextmanager
def reporting(ctx: typer.Context) -> Iterator[AppState]:
    """Turn domain errors into one sentence on stderr and their exit code."""
    app_state = state(ctx)
    try:
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
    if typed is not None:
        answer = typer.prompt(
            f"{question}\nType {typed} to confirm", default="", show_default=False
        )
        if answer.strip() != str(typed):
            raise Declined("Not confirmed; nothing was changed.")
        return
    if not typer.confirm(question, default=False):
        raise Declined("Not confirmed; nothing was changed.")


def read_input(path: str) -> bytes:
    """A file's bytes, or standard input's for `-`."""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).expanduser().read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file; check the path.") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a folder, not a file; give the file inside it.") from None
    except PermissionError:
        raise UsageError(
            f"{path} cannot be read (permission denied); "
            "check its permissions or copy it somewhere readable."
        ) from None


def source_name(path: str) -> str:
    return "standard input" if path == "-" else path
