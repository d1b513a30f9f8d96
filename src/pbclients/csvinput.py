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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import BinaryIO, NamedTuple

from pbclients.errors import BadInput
from pbclients.formulas import QUOTE, unneutralise

_DELIMITERS = ",;\t"
# Bytes read at a time when a file is streamed, and the start of a file that settles its
# encoding and delimiter (the delimiter's sample is 64K characters of up to 4 bytes).
_READ = 1 << 16
_PREFIX = 1 << 18
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


class ImportRow(NamedTuple):
    line: int
    email: str
    first_name: str
    last_name: str
    phone: str | None
    program: str | None
    client_id: str | None = None  # an `id` column: which client `import --update` updates


def _normalise(name: str) -> str:
    return "".join(name.split()).replace("_", "").replace("-", "").casefold()


def _codec(prefix: bytes, source: str, encoding: str) -> tuple[str, str]:
    """The encoding to decode with and its codec name, settled from the file's first bytes."""
    try:
        name = codecs.lookup(encoding).name
        if not name.startswith(("utf-16", "utf-32")):
            encoding = _utf16(prefix, source, encoding, name)
            name = codecs.lookup(encoding).name
        # Also rot13, base64...: codecs Python knows, but not text encodings.
        io.TextIOWrapper(io.BytesIO(), encoding=encoding)
    except LookupError:
        raise BadInput(
            f"{source} cannot be read because {encoding!r} is not an encoding Python knows; "
            f"pass a standard name such as --encoding utf-8 or --encoding cp1252. "
            f"{_NOTHING_CHANGED}"
        ) from None
    return encoding, name


def _decode_failure(stream: BinaryIO, source: str, encoding: str, name: str) -> BadInput | None:
    """The error for the first byte of the file that does not decode, or None if all do.

    Streams the file from its start, so that finding the line costs no memory.
    """
    stream.seek(0)
    decoder = codecs.getincrementaldecoder(encoding)()
    fed = 0
    position = None
    while position is None:
        chunk = stream.read(_READ)
        # What the decoder still holds of the previous chunk (a split character) comes first.
        pending = len(decoder.getstate()[0])
        try:
            decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            position = fed - pending + exc.start
        if not chunk:
            break
        fed += len(chunk)
    if position is None:
        return None
    wide = name.startswith(("utf-16", "utf-32"))
    if wide:
        # Two or four bytes a character: count the line breaks in what decoded.
        line = _lines(_text_before(stream, position - position % 4, encoding))
        return BadInput(
            f"{source} is not valid {name.upper()[:6]} at line {line} (the file is cut "
            f"short or damaged); save it again, preferably as UTF-8. {_NOTHING_CHANGED}"
        )
    line = _lines(_text_before(stream, position, "latin-1"))
    label = "UTF-8" if name.startswith("utf-8") else encoding
    other = "latin-1" if name == "cp1252" else "cp1252"
    return BadInput(
        f"{source} is not valid {label} at line {line}; save it as UTF-8 or pass "
        f"--encoding (e.g. --encoding {other}). {_NOTHING_CHANGED}"
    )


def _text_before(stream: BinaryIO, end: int, encoding: str) -> Iterator[str]:
    """The file's first `end` bytes as text, a chunk at a time."""
    stream.seek(0)
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    left = end
    while left > 0 and (chunk := stream.read(min(_READ, left))):
        left -= len(chunk)
        yield decoder.decode(chunk)
    yield decoder.decode(b"", final=True)


def _lines(parts: Iterable[str]) -> int:
    """The physical line where some text ends: \r\n, \n and a lone \r each end one, as the
    readers count them (a \r\n split between two parts counts once)."""
    count = 1
    after_cr = False
    for part in parts:
        if not part:
            continue
        count += part.count("\n") + part.count("\r") - part.count("\r\n")
        if after_cr and part[0] == "\n":
            count -= 1
        after_cr = part[-1] == "\r"
    return count


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


def _decode(data: bytes, source: str, encoding: str) -> str:
    """The whole of a small input (a list of references) as text."""
    encoding, name = _codec(data[:_PREFIX], source, encoding)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        raise _decode_failure(io.BytesIO(data), source, encoding, name) or error from None
    # Excel writes a UTF-8 BOM; without this the first header would be "\ufeffemail".
    return text.removeprefix("\ufeff")


def _without_bom(lines: Iterator[str]) -> Iterator[str]:
    """`lines`, the first without a byte-order mark (Excel writes a UTF-8 one; the first
    header would be "\ufeffemail"). Read as lazily as `lines`, and only the first through
    Python: the rest go from the file to the CSV reader without a generator between."""

    def first() -> Iterator[str]:
        for line in lines:
            yield line.removeprefix("\ufeff")
            return

    return chain(first(), lines)


class _Table:
    """A CSV file's header cells and non-blank rows, read as they are iterated.

    A file of any length is read without being held: `stream` is read again only to
    report a fault. Faults are reported as a reading of the whole file finds them:
    a byte that does not decode anywhere in the file first, then the first malformed
    CSV, then (through `fault`) what the caller finds wrong in a row.
    """

    def __init__(self, stream: BinaryIO, source: str, encoding: str) -> None:
        prefix = stream.read(_PREFIX)
        self._stream, self._source = stream, source
        self._encoding, self._name = _codec(prefix, source, encoding)
        sample = codecs.getincrementaldecoder(self._encoding)("replace").decode(prefix)
        stream.seek(0)
        # Detached at the end, so that the caller's stream is neither closed nor lost.
        self._text = io.TextIOWrapper(stream, encoding=self._encoding, newline="")
        # strict: an unclosed quote would otherwise swallow every later row without a word.
        self._reader = csv.reader(
            _without_bom(self._text),
            delimiter=_delimiter(sample.removeprefix("\ufeff")),
            skipinitialspace=True,
            strict=True,
        )
        self._start, self._done = 1, False
        first = next(self.rows(), None)
        if first is None:
            raise BadInput(
                f"{source} is empty; it needs a header row naming its columns (e.g. id or "
                f"email) and one row per client. {_NOTHING_CHANGED}"
            )
        self.header = first[1]

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """The rows not read yet, each with its first physical line."""
        reader, start = self._reader, self._start
        try:
            for row in reader:
                cells = list(map(str.strip, row))
                # unneutralise: a cell our own CSV output prefixed with ' reads back exactly.
                # Looked for in the joined cells first, at C speed: most rows hold no quote.
                if QUOTE in "".join(cells):
                    cells = [unneutralise(cell) if cell[:1] == QUOTE else cell for cell in cells]
                line, start = start, reader.line_num + 1
                self._start = start
                if any(cells):
                    yield line, cells
        except UnicodeDecodeError as error:
            raise self._undecodable() or error from None
        except csv.Error as error:
            self._start = start
            raise self._undecodable() or self._malformed(str(error)) from None
        if not self._done:
            self._done = True
            self._text.detach()

    def fault(self, error: BadInput) -> BadInput:
        """`error`, found in a row, unless the rest of the file holds an earlier kind of fault
        (which `rows` raises)."""
        for _ in self.rows():
            pass
        return error

    def _undecodable(self) -> BadInput | None:
        return _decode_failure(self._stream, self._source, self._encoding, self._name)

    def _malformed(self, error: str) -> BadInput:
        if error.startswith("field larger than field limit"):
            # Not a quote problem as such, though an unclosed quote is the usual cause.
            return BadInput(
                f"{self._source}: the field on line {self._start} is longer than "
                f"{csv.field_size_limit():,} characters; no client reference or name is "
                "that long, so check that this is the right file (a quote that is not "
                f"closed makes a field run on to the end of the file). {_NOTHING_CHANGED}"
            )
        return BadInput(
            f"{self._source} line {self._start} has a quote that is not closed properly; put "
            f'the whole cell in double quotes and double any quote inside it (""). '
            f"{_NOTHING_CHANGED}"
        )


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


def read_reference_csv(
    data: bytes, *, source: str, column: str | None = None, encoding: str = "utf-8"
) -> list[Reference]:
    """Read client references from a CSV with a header row, in file order, duplicates kept."""
    table = _Table(io.BytesIO(data), source, encoding)
    header, rows = table.header, list(table.rows())
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


# One @ with something before it, a domain of dot-separated labels none of which is
# empty (rejects "a@b." and "a@.b"), and no white space (\s is str.isspace's set).
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+")


def _is_email(text: str) -> bool:
    return _EMAIL.fullmatch(text) is not None


def check_text(value: str, where: str, column: str | None = None) -> str:
    """Return `value` if it holds no control character (see _FORBIDDEN), else raise BadInput
    naming `where` (an option, or a file's line) and the character, escaped."""
    found = _FORBIDDEN.search(value)
    if found is None:
        return value
    raise _control_character(found.group(), where, column)


def _control_character(char: str, where: str, column: str | None) -> BadInput:
    code = char.encode("unicode_escape").decode("ascii")
    in_column = f" in the {column} column" if column else ""
    return BadInput(
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
    return list(iter_import_csv(io.BytesIO(data), source=source, encoding=encoding))


def iter_import_csv(
    stream: BinaryIO, *, source: str, encoding: str = "utf-8"
) -> Iterator[ImportRow]:
    """`read_import_csv` a row at a time, from a seekable binary stream of any length.

    A bad row raises when it is reached, with the same error a whole-file reading
    gives (see `_Table`).
    """
    table = _Table(stream, source, encoding)
    header = table.header
    required = {"email": _EMAIL_NAMES, "first_name": _FIRST_NAMES, "last_name": _LAST_NAMES}
    found = {name: _find(header, names) for name, names in required.items()}
    missing = [name for name, index in found.items() if index is None]
    if missing:
        raise table.fault(
            BadInput(
                f"{source} has no {' or '.join(missing)} column (found: {_found(header)}); "
                f"add {'it' if len(missing) == 1 else 'them'} to the header row (email, "
                f"first_name and last_name are required). {_NOTHING_CHANGED}"
            )
        )
    email, first, last = (index for index in found.values() if index is not None)
    phone, program = _find(header, _PHONE_NAMES), _find(header, _PROGRAM_NAMES)
    client_id = _find(header, _ID_NAMES)
    # The id cell too: every cell read is set aside in `importing.Intake`'s tab-separated
    # lines, where a tab or line break would shift or add a row.
    checked = [
        column for column in (email, first, last, phone, program, client_id) if column is not None
    ]
    checked_cells = itemgetter(*checked)  # at least three columns: a tuple of cells
    # Short rows are padded to every column read, so that cells are indexed directly.
    width = max(checked) + 1
    for line, cells in table.rows():
        if len(cells) < width:
            cells += [""] * (width - len(cells))
        address, given, family = cells[email], cells[first], cells[last]
        read = "".join(checked_cells(cells))
        # isprintable() is false for every character _FORBIDDEN finds (and for a few
        # harmless ones): at C speed it clears the usual row without the pattern.
        if not (address and given and family) or (
            not read.isprintable() and _FORBIDDEN.search(read)
        ):
            raise table.fault(_row_fault(source, line, header, cells, checked))
        if _EMAIL.fullmatch(address) is None:
            raise table.fault(
                BadInput(
                    f"{source} line {line} has {address!r} in the e-mail column, which is "
                    f"not an e-mail address; correct it or remove the row. {_NOTHING_CHANGED}"
                )
            )
        yield ImportRow(
            line, address, given, family,
            None if phone is None else cells[phone] or None,
            None if program is None else cells[program] or None,
            None if client_id is None else cells[client_id] or None,
        )  # fmt: skip


def _row_fault(
    source: str, line: int, header: list[str], cells: list[str], checked: list[int]
) -> BadInput:
    """For a row that has one: its first empty required cell, else its first control
    character, in column order."""
    empty = next((index for index in checked[:3] if not cells[index]), None)
    if empty is not None:
        return _empty_cell(source, line, header[empty])
    index, found = next(
        (index, found) for index in checked if (found := _FORBIDDEN.search(cells[index]))
    )
    return _control_character(found.group(), f"{source} line {line}", header[index])
