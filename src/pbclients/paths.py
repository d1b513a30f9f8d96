"""Where things live, resolved once: --db > PBCLIENTS_DB > platformdirs default."""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "pbclients"
DEMO_DB_NAME = "demo.db"


def data_dir() -> Path:
    # Imported here: a command given --db (every cron line) never needs the defaults.
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def log_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))


def default_db() -> str:
    return str(data_dir() / "practice.db")


def demo_db() -> str:
    return str(data_dir() / DEMO_DB_NAME)


def default_backup_dir() -> Path:
    return data_dir() / "backups"


def purge_log() -> Path:
    return log_dir() / "purge.log"


# Moves the erasure ledger. Not a database setting: the database is what gets restored
# from old copies, and an old copy must still find the ledger written after it.
LEDGER_ENV = "PBCLIENTS_LEDGER"


def default_ledger() -> Path:
    """In a folder of its own beside backups/, so never beside the default database file."""
    return data_dir() / "ledger" / "erasures.jsonl"


def ledger_file() -> Path:
    chosen = os.environ.get(LEDGER_ENV)
    return Path(chosen).expanduser().absolute() if chosen else default_ledger()


def resolve_db(option: str | None) -> str:
    return option or os.environ.get("PBCLIENTS_DB") or default_db()


def is_url(target: str) -> bool:
    return "://" in target


def shown(target: str) -> str:
    """A database as it may be printed: a URL's password is masked."""
    if not is_url(target):
        return target
    from sqlalchemy.engine import make_url

    return make_url(target).render_as_string(hide_password=True)


def make_private_dir(path: Path) -> None:
    """Create a folder (and any missing parents) readable by the owner only.

    Folders that already exist are left as they are: they may be the user's own.
    """
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)


def touch_private(path: Path) -> None:
    """Create a file with mode 0600 unless it exists: it will hold client data."""
    make_private_dir(path.parent)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return
