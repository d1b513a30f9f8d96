"""TAB completion of client references, for the shell scripts in completions/.

Completion runs on every TAB press, so it reads through the bare driver and never
fails loudly: a missing database, a locked one or anything else completes nothing.
"""

from __future__ import annotations

import typer

# Enough to choose from; a shell shows more as a wall of text.
MAX_CANDIDATES = 50


def client_references(ctx: typer.Context, incomplete: str) -> list[str]:
    """E-mails that start with what was typed (an ID is typed, not completed)."""
    if incomplete.isdigit():
        return []
    try:
        from pbclients.paths import resolve_db
        from pbclients.readdb import open_database
        from pbclients.roster_view import emails_starting

        root = ctx.find_root()
        database = open_database(resolve_db(root.params.get("db")))
        found = emails_starting(database, incomplete, MAX_CANDIDATES)
    except Exception:
        # A completion that fails offers nothing: an error here would garble the prompt.
        return []
    # Stored e-mails are data: one with a space or a control character would split or
    # corrupt the shell's line, so it is not offered. What was typed is kept as typed
    # (references ignore case; the shell keeps only candidates that start with it).
    return [
        incomplete + email[len(incomplete) :]
        for email in found
        if email.isprintable() and not any(c.isspace() for c in email)
    ]
