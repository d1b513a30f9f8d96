"""Read client references and import rows from the files real admins produce.

Spreadsheet exports vary in encoding, delimiter, line endings and header spelling; this
module absorbs that variety and reports anything it cannot read as one sentence naming the
file and the physical line, so the admin can fix the file and try again.
"""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass

from pbclients.errors import BadInput

_DELIMITERS = ",;\t"
_NOTHING_CHANGED = "Nothing was changed."

# Header names are compared after _normalise(), so "Client ID", "client_id" and "CLIENT-ID"
# all land on "clientid".
_ID_NAMES = frozenset({"id", "clientid"})
_EMAIL_NAMES = frozenset({"email", "emailaddress", "mail"})
_FIRST_NAMES = frozenset({"firstname", "givenname"})
_LAST_NAMES = frozenset({"lastname", "surname", "familyname"})
_PHONE_NAMES = frozenset({"phone", "phonenumber", "mobile"})
_PROGRAM_NAMES = frozenset({"program", "programme", "package"})


@dataclass(frozen=True)
class Reference:
    """One client reference (an ID or an e-mail) and where the admin wrote it."""

    text: str
    source: str
    line: int | None

    def where(self) -> str:
        return "" if self.line is None else f"line {self.line} of {self.source}"


@dataclass(frozen=True)
class ImportRow:
    line: int
    email: str
    first_name: str
    last_name: str
    phone: str | None
    program: str | None


def _normalise(name: str) -> str:
    return "".join(name.split()).replace("_", "").replace("-", "").casefold()


def _decode(data: bytes, source: str, encoding: str) -> str:
    try:
        text = data.decode(encoding)
    except LookupError:
        raise BadInput(
            f"{source} cannot be read because {encoding!r} is not an encoding Python knows; "
            f"pass a standard name such as --encoding utf-8 or --encoding cp1252. "
            f"{_NOTHING_CHANGED}"
        ) from None
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        # Count physical lines the way the readers do: \r\n, \n and a lone \r each end one.
        line = before.count(b"\n") + before.count(b"\r") - before.count(b"\r\n") + 1
        name = codecs.lookup(encoding).name
        label = "UTF-8" if name.startswith("utf-8") else encoding
        other = "latin-1" if name == "cp1252" else "cp1252"
        raise BadInput(
            f"{source} is not valid {label} at line {line}; save it as UTF-8 or pass "
            f"--encoding (e.g. --encoding {other}). {_NOTHING_CHANGED}"
        ) from None
    # Excel writes a UTF-8 BOM; without this the first header would be "\ufeffemail".
    return text.removeprefix("\ufeff")


def _delimiter(text: str) -> str:
    header = next((line for line in io.StringIO(text, newline="") if line.strip()), "")
    present = [d for d in _DELIMITERS if d in header]
    # A header naming several columns must contain the delimiter, and header names rarely
    # contain one, so the header settles it unless it holds more than one candidate.
    if len(present) <= 1:
        return present[0] if present else ","
    return max(present, key=lambda d: _fit(text[:65536], d, header.count(d)))


def _fit(sample: str, delimiter: str, in_header: int) -> tuple[int, int, int]:
    """Score a delimiter: fewest rows not as wide as the header, then header width, then use."""
    # csv.Sniffer guesses wrong on small files whose cells hold the other candidates; the
    # right delimiter is the one that gives every row the header's width.
    reader = csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter, skipinitialspace=True)
    try:
        rows = [row for row in reader if any(cell.strip() for cell in row)]
    except csv.Error:
        return (-len(sample), 0, in_header)
    return (-sum(len(row) != len(rows[0]) for row in rows), len(rows[0]), in_header)


def _table(
    data: bytes, source: str, encoding: str
) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Return the header cells and the non-blank data rows with their first physical line."""
    text = _decode(data, source, encoding)
    # strict: an unclosed quote would otherwise swallow every later row without a word.
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=_delimiter(text),
        skipinitialspace=True,
        strict=True,
    )
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for row in reader:
            cells = [cell.strip() for cell in row]
            if any(cells):
                if header is None:
                    header = cells
                else:
                    rows.append((start, cells))
            start = reader.line_num + 1
    except csv.Error:
        raise BadInput(
            f"{source} line {start} has a quote that is not closed properly; put the whole "
            f'cell in double quotes and double any quote inside it (""). {_NOTHING_CHANGED}'
        ) from None
    if header is None:
        raise BadInput(
            f"{source} is empty; it needs a header row naming its columns (e.g. id or email) "
            f"and one row per client. {_NOTHING_CHANGED}"
        )
    return header, rows


def _find(header: list[str], names: frozenset[str]) -> int | None:
    return next((i for i, cell in enumerate(header) if _normalise(cell) in names), None)


def _found(header: list[str]) -> str:
    return ", ".join(f'"{cell}"' for cell in header if cell)


def _cell(cells: list[str], index: int) -> str:
    return cells[index] if index < len(cells) else ""


def _empty_cell(source: str, line: int, column: str) -> BadInput:
    return BadInput(
        f"{source} line {line} has an empty {column} cell; fill it in or remove the row. "
        f"{_NOTHING_CHANGED}"
    )


def _optional(cells: list[str], index: int | None) -> str | None:
    return (_cell(cells, index) or None) if index is not None else None


def read_reference_csv(
    data: bytes, *, source: str, column: str | None = None, encoding: str = "utf-8"
) -> list[Reference]:
    """Read client references from a CSV with a header row, in file order, duplicates kept."""
    header, rows = _table(data, source, encoding)
    if column is not None:
        index = _find(header, frozenset({_normalise(column)}) - {""})
        if index is None:
            raise BadInput(
                f"{source} has no column named {column!r} (found: {_found(header)}); pass one "
                f"of those to --column. {_NOTHING_CHANGED}"
            )
    else:
        index = _find(header, _ID_NAMES)
        if index is None:
            index = _find(header, _EMAIL_NAMES)
        if index is None:
            raise BadInput(
                f"{source} has no ID or e-mail column (found: {_found(header)}); name the "
                f"column that holds them with --column NAME. {_NOTHING_CHANGED}"
            )
    references = []
    for line, cells in rows:
        text = _cell(cells, index)
        if not text:
            raise _empty_cell(source, line, header[index])
        references.append(Reference(text, source, line))
    return references


def read_reference_lines(data: bytes, *, source: str, encoding: str = "utf-8") -> list[Reference]:
    """Read one reference per line, skipping blank lines and whole-line # comments."""
    text = _decode(data, source, encoding)
    references = []
    for line, raw in enumerate(io.StringIO(text, newline=""), start=1):
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            references.append(Reference(stripped, source, line))
    return references


def _is_email(text: str) -> bool:
    local, at, domain = text.partition("@")
    return (
        bool(at and local)
        and "@" not in domain
        and "." in domain
        and all(domain.split("."))  # no empty label: rejects "a@b." and "a@.b"
        and not any(char.isspace() for char in text)
    )


def check_email(text: str, where: str) -> str:
    """Return `text` stripped if it is an e-mail address, else raise BadInput naming `where`."""
    value = text.strip()
    if not _is_email(value):
        raise BadInput(
            f"{where} {value!r} is not an e-mail address; give one like ana@example.org. "
            f"{_NOTHING_CHANGED}"
        )
    return value


def read_import_csv(data: bytes, *, source: str, encoding: str = "utf-8") -> list[ImportRow]:
    """Read new clients (email, first_name, last_name, optional phone and program)."""
    header, rows = _table(data, source, encoding)
    required = {"email": _EMAIL_NAMES, "first_name": _FIRST_NAMES, "last_name": _LAST_NAMES}
    found = {name: _find(header, names) for name, names in required.items()}
    missing = [name for name, index in found.items() if index is None]
    if missing:
        raise BadInput(
            f"{source} has no {' or '.join(missing)} column (found: {_found(header)}); add "
            f"{'it' if len(missing) == 1 else 'them'} to the header row (email, first_name "
            f"and last_name are required). {_NOTHING_CHANGED}"
        )
    columns = {name: index for name, index in found.items() if index is not None}
    phone, program = _find(header, _PHONE_NAMES), _find(header, _PROGRAM_NAMES)
    result = []
    for line, cells in rows:
        values = {}
        for name, index in columns.items():
            values[name] = _cell(cells, index)
            if not values[name]:
                raise _empty_cell(source, line, header[index])
        if not _is_email(values["email"]):
            raise BadInput(
                f"{source} line {line} has {values['email']!r} in the e-mail column, which is "
                f"not an e-mail address; correct it or remove the row. {_NOTHING_CHANGED}"
            )
        phone_cell, program_cell = _optional(cells, phone), _optional(cells, program)
        result.append(ImportRow(line, **values, phone=phone_cell, program=program_cell))
    return result
