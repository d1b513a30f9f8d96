"""Client references as admins type them (an ID, an e-mail) and lookups in chunks.

Pure functions, shared by the write paths (pbclients.selection) and the read
commands (pbclients.roster_view), which import no SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from pbclients.settings import whole_number

T = TypeVar("T")

# Well under SQLite's and PostgreSQL's limits on bound parameters per statement.
CHUNK = 10_000

# Client ids are INTEGER columns: 32 bits on PostgreSQL (64 on SQLite, but a backup or a
# `db copy` holds no larger id either), so a larger number names no client on any engine.
# Binding one would fail instead (PostgreSQL: a DataError; SQLite past 64 bits: an
# OverflowError), so it is an unknown reference before any query.
MAX_CLIENT_ID = 2**31 - 1


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def parse_client_id(text: str) -> int | None:
    """The client ID `text` spells with the digits 0-9 (`007` is 7), or None.

    Not int(), which also reads Arabic-Indic digits, `+5` and `1_000` (no admin means an
    ID by them) and fails on 4,300+ digits; and a value past MAX_CLIENT_ID names no
    client.
    """
    return whole_number(text, 0, MAX_CLIENT_ID)


def can_match(text: str) -> bool:
    """Whether a stored value could equal `text`: PostgreSQL text cannot hold NUL (binding it
    raises a DataError) and no pbclients writer stores one, so such a lookup finds nothing."""
    return "\x00" not in text


def shorten(text: str, keep: int = 60) -> str:
    """A reference as quoted in a message: a 5,000-digit one would bury the sentence."""
    if len(text) <= keep:
        return text
    return f"{text[:keep]}... ({len(text):,} characters)"
