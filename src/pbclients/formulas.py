"""Spreadsheet formulas in CSV cells: made inert on the way out, read back exactly.

OWASP's CSV injection guidance: a cell starting with `=`, `+`, `-`, `@`, a tab or a
carriage return is run as a formula by Excel and LibreOffice (`=HYPERLINK(...)` can
send data away), so such a cell is written with a leading `'`, which spreadsheets show
as text. The rule is a bijection so that the tool reads its own output back to the
same values: a cell that already starts with `'` followed by one of those characters
(or another `'`) is prefixed too, and `unneutralise` removes exactly one `'` from such
cells and touches no other.
"""

from __future__ import annotations

FORMULA_START = frozenset("=+-@\t\r")
QUOTE = "'"


def _starts_quoted(cell: str) -> bool:
    return len(cell) > 1 and cell[0] == QUOTE and (cell[1] in FORMULA_START or cell[1] == QUOTE)


def neutralise(cell: str) -> str:
    """The cell as written to CSV: never a formula, and `unneutralise` undoes it."""
    if cell and (cell[0] in FORMULA_START or _starts_quoted(cell)):
        return QUOTE + cell
    return cell


def unneutralise(cell: str) -> str:
    """The value behind a cell `neutralise` wrote; any other cell is returned unchanged."""
    return cell[1:] if _starts_quoted(cell) else cell
