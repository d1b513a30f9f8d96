"""The one way user data reaches a terminal or a spreadsheet: as inert text.

Names, e-mails, references, reasons, actors, program names and file names come from
clients (the portal), files and arguments, and may also reach the database from other
writers, so they are treated as hostile when shown, whatever validation let them in:

- never rich markup: data goes out as `rich.text.Text`, which keeps `[/]` or
  `[link=...]` literal, instead of being interpolated into a markup string;
- never a terminal control: `Text` still passes ESC through, so control characters
  (C0, DEL, C1), format characters (bidi overrides and isolates, zero-width and other
  invisible characters), line/paragraph separators and lone surrogates are replaced by
  a visible escape (`\\x1b`, `\\u202e`) first;
- never a spreadsheet formula: CSV cells that a spreadsheet would evaluate get a
  leading `'` (OWASP CSV injection guidance), and `csvinput` reads the tool's own
  output back to the exact values.

JSON output is left exact: JSON escapes control characters itself.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING, Any

from pbclients.formulas import neutralise

if TYPE_CHECKING:
    from rich.text import Text

# Cc: C0, DEL, C1 (ESC, CSI \x9b, NUL, CR, LF...). Cf: bidi overrides/isolates/marks,
# zero-width and invisible characters, which reorder or hide what an admin reads.
# Zl/Zp: line and paragraph separators, which break a row. Cs: lone surrogates, which
# file names carry (surrogateescape) and which no terminal encoding can write.
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

# Characters below U+00A0 or any non-ASCII one need a closer look; plain ASCII text (the
# common case, and every million-row `list`) is returned after one regex search.
_SUSPECT = re.compile(r"[\x00-\x1f\x7f-\x9f\\]|[^\x00-\x7f]")
_SUSPECT_NO_BACKSLASH = re.compile(r"[\x00-\x1f\x7f-\x9f]|[^\x00-\x7f]")


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _is_hidden(char: str) -> bool:
    return unicodedata.category(char) in _HIDDEN


def visible(value: object) -> str:
    """A value from a client, file or argument, as text safe to show on a terminal.

    Every invisible or controlling character becomes a visible escape, and a backslash
    is doubled so that a name that really contains the four characters `\\x1b` is not
    mistaken for one holding ESC.
    """
    text = "" if value is None else str(value)
    if _SUSPECT.search(text) is None:
        return text
    return _escaped(text, backslash=True)


def message(text: str) -> str:
    """A sentence composed by the tool around user data (errors, summaries), made inert.

    Control and format characters are escaped, including line breaks: an error is one
    line. Backslashes are left alone, because domain messages quote values with
    `repr()`, which has escaped them already.
    """
    if _SUSPECT_NO_BACKSLASH.search(text) is None:
        return text
    return _escaped(text, backslash=False)


# Zero-width (non-)joiners spell Persian and Indic words and emoji sequences correctly;
# after such a letter they are kept. After ASCII they only hide something ("a\u200dna").
_JOINERS = frozenset("\u200c\u200d")


def _escaped(text: str, *, backslash: bool) -> str:
    out = []
    previous = ""
    for char in text:
        if char == "\\" and backslash:
            out.append("\\\\")
        elif char in _JOINERS and previous > "\x7f" and not _is_hidden(previous):
            out.append(char)
        elif _is_hidden(char):
            out.append(_escape(char))
        else:
            out.append(char)
        previous = char
    return "".join(out)


def prompt(text: str) -> str:
    """A confirmation question: like `message`, but its own line breaks are kept.

    Callers pass data through `visible` when composing the question, so a line break
    that is still here was written by the tool.
    """
    return "\n".join(message(line) for line in text.split("\n"))


def literal(value: object, style: str | None = None) -> Text:
    """A value as a rich `Text`: shown literally, never parsed as markup."""
    from rich.text import Text

    return Text(visible(value), style=style or "")


def plain(sentence: str, style: str | None = None) -> Text:
    """A sentence made by the tool (and `message`-safe) as a rich `Text`."""
    from rich.text import Text

    return Text(message(sentence), style=style or "")


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell that neither a spreadsheet nor a terminal (`cat`) runs.

    Numbers stay numbers (an id or a day count is data, not a formula). Text has its
    control characters made visible as in `message` (backslashes are kept as they are,
    so every value without control characters reads back exactly), then goes through
    `formulas.neutralise`. A list (a client's programs) is joined with `;` after
    neutralising each item, because a spreadsheet set to split on `;` would otherwise
    see a formula after the separator. The exact value of anything is in --format json.
    """
    if value is None:
        return ""
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return ";".join(neutralise(message(str(item))) for item in value)
    return neutralise(message(str(value)))


# JSON already escapes C0 controls, quotes and backslashes; these are the rest. Latin-1
# letters skip the per-character check, which keeps a million-row `list` fast. One
# character class: an alternation of two makes the scan three times slower.
_JSON_SUSPECT = re.compile("[\x7f-\xa0\xad\u0300-\U0010ffff]")


def _json_escape(found: re.Match[str]) -> str:
    char = found.group()
    if not _is_hidden(char):
        return char
    code = ord(char)
    if code > 0xFFFF:  # JSON spells a character beyond the BMP as a surrogate pair
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def json_text(encoded: str) -> str:
    """Encoded JSON with C1 controls, DEL and invisible format characters written as
    `\\uXXXX` escapes: the same values for any JSON reader, and nothing a terminal acts
    on when the output is simply looked at."""
    if encoded.isascii() and "\x7f" not in encoded:
        return encoded  # the common case, checked at C speed: nothing to escape
    return _JSON_SUSPECT.sub(_json_escape, encoded)
