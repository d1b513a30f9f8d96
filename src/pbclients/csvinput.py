"""Read client references and import rows from the files real admins produce.

Spreadsheet exports vary in encoding, delimiter, line endings and header spelling; this
module absorbs that variety and reports anything it cannot read as one sentence naming the
file and the physical line, so the admin can fix the file and try again.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass

from pbclients.errors import BadInput
from pbclients.formulas import unneutralise

_DELIMITERS = ",;\t"
_NOTHING_CHANGED = "Nothing was changed."

# Characters no name, e-mail, phone or program name holds, refused on the way in: C0
# controls (NUL, ESC, line breaks, tab), DEL and C1 controls, line/paragraph separators,
# the bidi embeddings, overrides and isolates that reorder what an admin reads (U+202A-
# U+202E, U+2066-U+2069) and lone surrogates (undecodable bytes in an argument, which no
# database encoding can store). Bidi *marks* (U+200E/F, U+061C) and zero-width joiners
# stay allowed: real names in Arabic, Hebrew, Persian or Indic scripts use them.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")

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
    client_id: str | None = None  # an `id` column: which client `import --update` updates


def _normalise(name: str) -> str:
    return "".join(name.split()).replace("_", "").replace("-", "").casefold()


def _decode(data: bytes, source: str, encoding: str) -> str:
    try:
        name = codecs.lookup(encoding).name
        if not name.startswith(("utf-16", "utf-32")):
            encoding = _utf16(data, source, encoding, name)
            name = codecs.lookup(encoding).name
        text = data.decode(encoding)
    except LookupError:
        # Also rot13, base64...: codecs Python knows, but not text encodings.
        raise BadInput(
            f"{source} cannot be read because {encoding!r} is not an encoding Python knows; "
            f"pass a standard name such as --encoding utf-8 or --encoding cp1252. "
            f"{_NOTHING_CHANGED}"
        ) from None
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        if name.startswith(("utf-16", "utf-32")):
            # Two or four bytes a character: count the line breaks in what decoded.
            before_text = before[: len(before) - len(before) % 4].decode(encoding, "replace")
            line = _lines(before_text)
        else:
            line = _lines(before)
        if name.startswith(("utf-16", "utf-32")):
            raise BadInput(
                f"{source} is not valid {name.upper()[:6]} at line {line} (the file is cut "
                f"short or damaged); save it again, preferably as UTF-8. {_NOTHING_CHANGED}"
            ) from None
        label = "UTF-8" if name.startswith("utf-8") else encoding
        other = "latin-1" if name == "cp1252" else "cp1252"
        raise BadInput(
            f"{source} is not valid {label} at line {line}; save it as UTF-8 or pass "
            f"--encoding (e.g. --encoding {other}). {_NOTHING_CHANGED}"
        ) from None
    # Excel writes a UTF-8 BOM; without this the first header would be "\ufeffemail".
    return text.removeprefix("\ufeff")


def _lines(before: bytes | str) -> int:
    """The physical line of a position: \r\n, \n and a lone \r each end one, as the readers
    count them."""
    text = before if isinstance(before, str) else before.decode("latin-1")
    return text.count("\n") + text.count("\r") - text.count("\r\n") + 1


def _utf16(data: bytes, source: str, encoding: str, name: str) -> str:
    """The encoding to decode with, when the bytes say UTF-16 (or UTF-32) louder than
    --encoding does.

    Excel's "Unicode text" and many Windows tools write UTF-16 with a byte-order mark.
    A BOM's bytes FF FE / FE FF never occur in UTF-8, so under the default UTF-8 such a
    file is decoded as what its BOM says; under another --encoding it would decode into
    text with a NUL between letters, so it is refused with the encoding to pass. Without
    a BOM, ASCII text in UTF-16 has a 0 byte in every other place: said so, not guessed.
    """
    utf8 = name.startswith("utf-8")
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        found = "utf-32"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        found = "utf-16"
    else:
        sample = data[:256]
        if len(sample) < 4 or b"\x00" not in sample:
            return encoding
        half = len(sample) // 2
        if sample[1::2].count(0) >= half * 0.9:
            order = "utf-16-le"
        elif sample[0::2].count(0) >= half * 0.9:
            order = "utf-16-be"
        else:
            return encoding
        raise BadInput(
            f"{source} looks like UTF-16 without a byte-order mark (a 0 byte between "
            f"letters); pass --encoding {order}, or save it as UTF-8. {_NOTHING_CHANGED}"
        )
    if utf8:
        return found
    raise BadInput(
        f"{source} starts with a {found.upper()} byte-order mark, so it is not {encoding}; "
        f"pass --encoding {found}, or leave --encoding out. {_NOTHING_CHANGED}"
    )


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
            # unneutralise: a cell our own CSV output prefixed with ' reads back exactly.
            cells = [unneutralise(cell.strip()) for cell in row]
            if any(cells):
                if header is None:
                    header = cells
                else:
                    rows.append((start, cells))
            start = reader.line_num + 1
    except csv.Error as error:
        if str(error).startswith("field larger than field limit"):
            # Not a quote problem as such, though an unclosed quote is the usual cause.
            raise BadInput(
                f"{source}: the field on line {start} is longer than "
                f"{csv.field_size_limit():,} characters; no client reference or name is "
                "that long, so check that this is the right file (a quote that is not "
                f"closed makes a field run on to the end of the file). {_NOTHING_CHANGED}"
            ) from None
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


def check_text(value: str, where: str, column: str | None = None) -> str:
    """Return `value` if it holds no control character (see _FORBIDDEN), else raise BadInput
    naming `where` (an option, or a file's line) and the character, escaped."""
    found = _FORBIDDEN.search(value)
    if found is None:
        return value
    code = found.group().encode("unicode_escape").decode("ascii")
    in_column = f" in the {column} column" if column else ""
    raise BadInput(
        f"{where} has a control character ({code}){in_column}, which no name, e-mail, phone "
        f"or program holds; remove it and try again. {_NOTHING_CHANGED}"
    )


def check_email(text: str, where: str) -> str:
    """Return `text` stripped if it is an e-mail address, else raise BadInput naming `where`."""
    value = check_text(text.strip(), where)
    if not _is_email(value):
        raise BadInput(
            f"{where} {value!r} is not an e-mail address; give one like ana@example.org. "
            f"{_NOTHING_CHANGED}"
        )
    return value


def read_import_csv(data: bytes, *, source: str, encoding: str = "utf-8") -> list[ImportRow]:
    """Read clients (email, first_name, last_name, optional phone, program and id)."""
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
    client_id = _find(header, _ID_NAMES)
    result = []
    for line, cells in rows:
        values = {}
        for name, index in columns.items():
            values[name] = _cell(cells, index)
            if not values[name]:
                raise _empty_cell(source, line, header[index])
        for column in (*columns.values(), phone, program):
            if column is not None:
                check_text(_cell(cells, column), f"{source} line {line}", header[column])
        if not _is_email(values["email"]):
            raise BadInput(
                f"{source} line {line} has {values['email']!r} in the e-mail column, which is "
                f"not an e-mail address; correct it or remove the row. {_NOTHING_CHANGED}"
            )
        phone_cell, program_cell = _optional(cells, phone), _optional(cells, program)
        result.append(
            ImportRow(line, **values, phone=phone_cell, program=program_cell,
                      client_id=_optional(cells, client_id))
        )  # fmt: skip
    return result
