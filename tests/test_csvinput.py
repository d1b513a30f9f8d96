"""CSV and ids-file reading: the file variants real admins produce, and every error."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbclients.csvinput import (
    ImportRow,
    Reference,
    check_email,
    iter_import_csv,
    read_import_csv,
    read_reference_csv,
    read_reference_lines,
)
from pbclients.errors import BadInput, ExitCode

ID_ALIASES = ["id", "client_id", "client id", "clientid"]
EMAIL_ALIASES = ["email", "e-mail", "email address", "e_mail", "mail"]


def texts(refs: list[Reference]) -> list[str]:
    return [ref.text for ref in refs]


def lines(refs: list[Reference]) -> list[int | None]:
    return [ref.line for ref in refs]


def message(exc: pytest.ExceptionInfo[BadInput]) -> str:
    assert exc.value.exit_code == ExitCode.BAD_INPUT
    return str(exc.value)


# --- Reference -----------------------------------------------------------------------------


def test_where_is_empty_for_arguments_and_names_line_and_file_otherwise() -> None:
    assert Reference("42", "argument", None).where() == ""
    assert Reference("42", "ended.csv", 14).where() == "line 14 of ended.csv"
    assert Reference("42", "standard input", 2).where() == "line 2 of standard input"


# --- read_reference_csv: dialects ----------------------------------------------------------


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_every_dialect_reads_the_same(bom: bytes, newline: str, delimiter: str) -> None:
    rows = [["name", "id", "email"], ["Ann", "42", "ann@example.org"], ["Bob", "7", "b@x.io"]]
    text = newline.join(delimiter.join(row) for row in rows) + newline
    refs = read_reference_csv(bom + text.encode(), source="ended.csv")
    assert refs == [Reference("42", "ended.csv", 2), Reference("7", "ended.csv", 3)]


def test_bom_is_stripped_so_the_first_header_still_matches() -> None:
    data = b"\xef\xbb\xbfemail\r\nann@example.org\r\n"
    assert read_reference_csv(data, source="s.csv") == [Reference("ann@example.org", "s.csv", 2)]


def test_last_line_without_newline_is_read() -> None:
    assert texts(read_reference_csv(b"id\n1\n2", source="s.csv")) == ["1", "2"]


def test_quoted_fields_with_delimiters_and_newlines_keep_physical_line_numbers() -> None:
    data = (
        b'name,id,notes\n"Smith, Ann",1,"moved; see\nnew address"\n"Lee, Bo",2,plain\n'
        b'"Ng, Cy","3","a ""quoted"" word"\n'
    )
    refs = read_reference_csv(data, source="s.csv")
    # The first data row starts on line 2 and spans 2-3, so the next row is on line 4.
    assert [(r.text, r.line) for r in refs] == [("1", 2), ("2", 4), ("3", 5)]


def test_semicolon_file_with_commas_in_unquoted_cells() -> None:
    data = b"id;name\n1;Smith, Ann\n2;Lee, Bo\n"
    assert texts(read_reference_csv(data, source="s.csv")) == ["1", "2"]


def test_space_after_delimiter_before_a_quoted_cell() -> None:
    data = b'name, email\n"Smith, Ann", "ann@example.org"\n'
    assert texts(read_reference_csv(data, source="s.csv")) == ["ann@example.org"]


def test_header_with_several_candidates_picks_the_one_that_fits_every_row() -> None:
    # The quoted header name contains a comma, but the file is semicolon-separated.
    data = b'"Name, full";id;email\n"Smith, Ann";1;a@x.org\n"Lee, Bo";2;b@x.org\n'
    assert texts(read_reference_csv(data, source="s.csv")) == ["1", "2"]


def test_header_with_several_candidates_and_no_rows_picks_the_widest_split() -> None:
    # Tabs split the header into three columns, the comma only into two.
    assert read_reference_csv(b"a,b\tid\temail\n", source="s.csv") == []
    assert read_reference_csv(b"a,b\tid\temail\n", source="s.csv", column="email") == []


def test_header_with_several_candidates_and_irregular_rows_picks_the_widest_split() -> None:
    data = b"id;email;a,b\n1\n2,3,4,5,6;7\n"
    assert texts(read_reference_csv(data, source="s.csv")) == ["1", "2,3,4,5,6"]


def test_single_column_file_has_no_delimiter() -> None:
    data = b"Email\nann@example.org\nBOB@Example.org\n"
    assert texts(read_reference_csv(data, source="s.csv")) == ["ann@example.org", "BOB@Example.org"]


def test_cells_are_stripped_including_non_breaking_spaces() -> None:
    data = "id , email\n  42 ,\u00a0a@x.org\u00a0\n".encode()
    assert texts(read_reference_csv(data, source="s.csv")) == ["42"]
    assert texts(read_reference_csv(data, source="s.csv", column="email")) == ["a@x.org"]


# --- read_reference_csv: headers and --column ----------------------------------------------


@pytest.mark.parametrize("alias", ID_ALIASES)
@pytest.mark.parametrize("spelling", [str.lower, str.upper, str.title, lambda s: f"  {s} "])
def test_every_id_header_alias(alias: str, spelling: Callable[[str], str]) -> None:
    header = spelling(alias)
    data = f"name,{header},notes\nAnn,42,x\n".encode()
    assert texts(read_reference_csv(data, source="s.csv")) == ["42"]


@pytest.mark.parametrize("alias", EMAIL_ALIASES)
@pytest.mark.parametrize("spelling", [str.lower, str.upper, str.title, lambda s: f"  {s} "])
def test_every_email_header_alias(alias: str, spelling: Callable[[str], str]) -> None:
    header = spelling(alias)
    data = f"name,{header}\nAnn,Ann@Example.org\n".encode()
    assert texts(read_reference_csv(data, source="s.csv")) == ["Ann@Example.org"]


@pytest.mark.parametrize(
    "header", ["Client-ID", "CLIENT_ID", "client  id", "E-Mail", "EMAIL_ADDRESS"]
)
def test_inner_spaces_underscores_and_hyphens_are_ignored(header: str) -> None:
    data = f"name;{header}\nAnn;x\n".encode()
    assert texts(read_reference_csv(data, source="s.csv")) == ["x"]


def test_id_column_is_preferred_over_email_column_wherever_it_is() -> None:
    data = b"email,name,id\na@x.org,Ann,42\n"
    assert texts(read_reference_csv(data, source="s.csv")) == ["42"]


@pytest.mark.parametrize("column", ["Reference", "reference", " REFERENCE ", "refer-ence"])
def test_column_option_picks_the_named_column(column: str) -> None:
    data = b"id,Reference,email\n1,ann@x.org,z@x.org\n2,77,y@x.org\n"
    refs = read_reference_csv(data, source="s.csv", column=column)
    assert refs == [Reference("ann@x.org", "s.csv", 2), Reference("77", "s.csv", 3)]


def test_column_option_overrides_the_id_preference() -> None:
    data = b"id,email\n1,a@x.org\n"
    assert texts(read_reference_csv(data, source="s.csv", column="E-mail")) == ["a@x.org"]


def test_column_option_naming_an_absent_column_lists_the_headers() -> None:
    with pytest.raises(BadInput) as exc:
        read_reference_csv(b"id,Name\n1,Ann\n", source="s.csv", column="email")
    assert message(exc) == (
        's.csv has no column named \'email\' (found: "id", "Name"); pass one of those to '
        "--column. Nothing was changed."
    )


def test_empty_column_option_matches_no_blank_header() -> None:
    with pytest.raises(BadInput, match="no column named ''"):
        read_reference_csv(b"id,,x\n1,2,3\n", source="s.csv", column="")


def test_no_reference_column_lists_headers_and_suggests_column() -> None:
    with pytest.raises(BadInput) as exc:
        read_reference_csv(b"Name;Phone\nAnn;123\n", source="ended.csv")
    assert message(exc) == (
        'ended.csv has no ID or e-mail column (found: "Name", "Phone"); name the column that '
        "holds them with --column NAME. Nothing was changed."
    )


# --- read_reference_csv: rows --------------------------------------------------------------


def test_blank_lines_and_blank_rows_are_skipped_with_physical_line_numbers() -> None:
    data = b"\n\nid,name\r\n\r\n1,Ann\r\n , \r\n,,,\r\n2,Bob\r\n\r\n"
    assert [(r.text, r.line) for r in read_reference_csv(data, source="s.csv")] == [
        ("1", 5),
        ("2", 8),
    ]


def test_duplicates_are_kept_in_order() -> None:
    data = b"email\nb@x.org\na@x.org\nb@x.org\nB@X.org\n"
    refs = read_reference_csv(data, source="s.csv")
    assert texts(refs) == ["b@x.org", "a@x.org", "b@x.org", "B@X.org"]
    assert lines(refs) == [2, 3, 4, 5]


def test_empty_reference_cell_names_the_line() -> None:
    data = b"id,email\n1,a@x.org\n2,b@x.org\n\n,c@x.org\n"
    with pytest.raises(BadInput) as exc:
        read_reference_csv(data, source="ended.csv")
    assert message(exc) == (
        "ended.csv line 5 has an empty id cell; fill it in or remove the row. Nothing was changed."
    )


def test_short_row_counts_as_an_empty_reference_cell() -> None:
    data = b"name,email\nAnn,a@x.org\nBob\n"
    with pytest.raises(BadInput, match=r"^s\.csv line 3 has an empty email cell"):
        read_reference_csv(data, source="s.csv")


def test_whitespace_only_reference_cell_is_empty() -> None:
    with pytest.raises(BadInput, match=r"line 2 has an empty Client ID cell"):
        read_reference_csv(b"Client ID,name\n   ,Ann\n", source="s.csv")


def test_header_without_data_rows_returns_nothing() -> None:
    assert read_reference_csv(b"id,email\r\n\r\n", source="s.csv") == []


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\n\r\n  \n", b" , \n"])
def test_empty_file_needs_a_header_row(data: bytes) -> None:
    with pytest.raises(BadInput) as exc:
        read_reference_csv(data, source="standard input")
    assert message(exc) == (
        "standard input is empty; it needs a header row naming its columns (e.g. id or email) "
        "and one row per client. Nothing was changed."
    )


def test_unclosed_quote_names_the_row_where_it_opens_instead_of_swallowing_rows() -> None:
    data = b'id,name\n1,Ann\n2,"Bob\n3,Cy\n4,Di\n'
    with pytest.raises(BadInput) as exc:
        read_reference_csv(data, source="s.csv")
    assert message(exc) == (
        "s.csv line 3 has a quote that is not closed properly; put the whole cell in double "
        'quotes and double any quote inside it (""). Nothing was changed.'
    )


def test_text_after_a_closing_quote_is_bad_input() -> None:
    with pytest.raises(BadInput, match=r"^s\.csv line 2 has a quote"):
        read_reference_csv(b'id,name\n1,"Ann"x\n', source="s.csv")


# --- decoding ------------------------------------------------------------------------------


def test_non_utf8_bytes_name_the_line_and_suggest_cp1252() -> None:
    data = b"id,name\r\n1,Ann\r\n2,caf\xe9\r\n"
    with pytest.raises(BadInput) as exc:
        read_reference_csv(data, source="ended.csv")
    assert message(exc) == (
        "ended.csv is not valid UTF-8 at line 3; save it as UTF-8 or pass --encoding "
        "(e.g. --encoding cp1252). Nothing was changed."
    )


def test_decode_error_line_counts_lone_carriage_returns() -> None:
    with pytest.raises(BadInput, match="at line 4;"):
        read_reference_lines(b"1\r2\r\n3\n\xff\n", source="ids.txt")


def test_same_bytes_parse_with_cp1252() -> None:
    data = b"id,name\r\n1,Ann\r\n2,caf\xe9\r\n"
    refs = read_reference_csv(data, source="s.csv", column="name", encoding="cp1252")
    assert texts(refs) == ["Ann", "caf\u00e9"]


def test_cp1252_email_column() -> None:
    data = b"E-mail;Nom\nren\xe9@example.fr;Ren\xe9\n"
    assert texts(read_reference_csv(data, source="s.csv", encoding="cp1252")) == [
        "ren\u00e9@example.fr"
    ]


def test_failing_cp1252_suggests_latin1() -> None:
    with pytest.raises(BadInput, match=r"not valid cp1252 at line 2;.*--encoding latin-1"):
        read_reference_lines(b"1\n\x81\n", source="ids.txt", encoding="cp1252")


def test_utf8_sig_encoding_is_accepted() -> None:
    data = "\ufeffid\n1\n".encode()
    assert texts(read_reference_csv(data, source="s.csv", encoding="utf-8-sig")) == ["1"]


@pytest.mark.parametrize("encoding", ["klingon", "rot13", "base64"])
def test_unknown_encoding_is_bad_input(encoding: str) -> None:
    with pytest.raises(BadInput) as exc:
        read_reference_csv(b"id\n1\n", source="s.csv", encoding=encoding)
    assert message(exc) == (
        f"s.csv cannot be read because {encoding!r} is not an encoding Python knows; pass a "
        "standard name such as --encoding utf-8 or --encoding cp1252. Nothing was changed."
    )


# --- read_reference_lines ------------------------------------------------------------------


def test_lines_skip_blanks_and_whole_line_comments() -> None:
    data = b"# ended in March\n42\n\n  # indented comment\n  ann@example.org  \n\t\n42\n"
    assert read_reference_lines(data, source="ids.txt") == [
        Reference("42", "ids.txt", 2),
        Reference("ann@example.org", "ids.txt", 5),
        Reference("42", "ids.txt", 7),
    ]


def test_lines_keep_trailing_text_that_looks_like_a_comment() -> None:
    refs = read_reference_lines(b"42 # Ann\n", source="ids.txt")
    assert texts(refs) == ["42 # Ann"]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_lines_with_any_line_ending_and_bom(newline: bytes, bom: bytes) -> None:
    data = bom + newline.join([b"1", b"", b"#x", b"two@x.org"])
    refs = read_reference_lines(data, source="standard input")
    assert [(r.text, r.line) for r in refs] == [("1", 1), ("two@x.org", 4)]


def test_lines_do_not_split_on_other_unicode_line_breaks() -> None:
    # str.splitlines() would split on form feed and U+2028; a text file's lines do not.
    data = "1\x0c\n2\u20283\n".encode()
    assert texts(read_reference_lines(data, source="ids.txt")) == ["1", "2\u20283"]


def test_empty_ids_file_returns_nothing() -> None:
    assert read_reference_lines(b"", source="ids.txt") == []
    assert read_reference_lines(b"\n# only a comment\n", source="ids.txt") == []


def test_lines_decode_error_names_the_line() -> None:
    with pytest.raises(BadInput) as exc:
        read_reference_lines(b"1\n2\ncaf\xe9@x.org\n", source="standard input")
    assert message(exc) == (
        "standard input is not valid UTF-8 at line 3; save it as UTF-8 or pass --encoding "
        "(e.g. --encoding cp1252). Nothing was changed."
    )


def test_lines_with_cp1252() -> None:
    refs = read_reference_lines(b"caf\xe9@x.org\n", source="ids.txt", encoding="cp1252")
    assert texts(refs) == ["caf\u00e9@x.org"]


# --- read_import_csv -----------------------------------------------------------------------


def test_import_happy_path_with_optional_columns() -> None:
    data = (
        b"\xef\xbb\xbfEmail;First Name;Last Name;Phone;Program\r\n"
        b" ann@example.org ; Ann ; Lee ; +1 555 0100 ; Gold \r\n"
        b"\r\n"
        b"bo@example.org;Bo;Ng;;\r\n"
        b'"cy@example.org";"Cy";"O\'Neil; Jr";"";Silver\r\n'
    )
    assert read_import_csv(data, source="new.csv") == [
        ImportRow(2, "ann@example.org", "Ann", "Lee", "+1 555 0100", "Gold"),
        ImportRow(4, "bo@example.org", "Bo", "Ng", None, None),
        ImportRow(5, "cy@example.org", "Cy", "O'Neil; Jr", None, "Silver"),
    ]


def test_import_without_optional_columns_gives_none() -> None:
    data = b"email,first_name,last_name\na@x.org,A,B\n"
    assert read_import_csv(data, source="new.csv") == [
        ImportRow(2, "a@x.org", "A", "B", None, None)
    ]


def test_import_short_row_leaves_optional_cells_none() -> None:
    data = b"email,first_name,last_name,phone,program\na@x.org,A,B\n"
    assert read_import_csv(data, source="new.csv") == [
        ImportRow(2, "a@x.org", "A", "B", None, None)
    ]


@pytest.mark.parametrize("email", EMAIL_ALIASES)
@pytest.mark.parametrize("first", ["first_name", "first name", "firstname", "given name"])
@pytest.mark.parametrize("last", ["last_name", "last name", "lastname", "surname", "family name"])
def test_import_required_aliases(email: str, first: str, last: str) -> None:
    data = f"{last.upper()}\t{email.title()}\t{first}\nLee\ta@x.org\tAnn\n".encode()
    assert read_import_csv(data, source="new.csv") == [
        ImportRow(2, "a@x.org", "Ann", "Lee", None, None)
    ]


@pytest.mark.parametrize("phone", ["phone", "Phone Number", "MOBILE", "phone_number"])
@pytest.mark.parametrize("program", ["program", "Programme", "package"])
def test_import_optional_aliases(phone: str, program: str) -> None:
    data = f"email,first_name,last_name,{phone},{program}\na@x.org,A,B,123,Gold\n".encode()
    assert read_import_csv(data, source="new.csv") == [
        ImportRow(2, "a@x.org", "A", "B", "123", "Gold")
    ]


def test_import_duplicates_are_kept() -> None:
    data = b"email,first_name,last_name\na@x.org,A,B\nA@x.org,A,B\n"
    assert [r.email for r in read_import_csv(data, source="new.csv")] == ["a@x.org", "A@x.org"]


def test_import_header_only_returns_nothing() -> None:
    assert read_import_csv(b"email,first_name,last_name\n", source="new.csv") == []


def test_import_missing_one_required_column() -> None:
    with pytest.raises(BadInput) as exc:
        read_import_csv(b"email,first_name,name\na@x.org,A,B\n", source="new.csv")
    assert message(exc) == (
        'new.csv has no last_name column (found: "email", "first_name", "name"); add it to the '
        "header row (email, first_name and last_name are required). Nothing was changed."
    )


def test_import_missing_several_required_columns() -> None:
    with pytest.raises(BadInput) as exc:
        read_import_csv(b"Name,Phone\nAnn,1\n", source="new.csv")
    assert message(exc) == (
        'new.csv has no email or first_name or last_name column (found: "Name", "Phone"); add '
        "them to the header row (email, first_name and last_name are required). "
        "Nothing was changed."
    )


@pytest.mark.parametrize(
    ("row", "column"),
    [(b",Ann,Lee", "E-mail"), (b"a@x.org, ,Lee", "Given Name"), (b"a@x.org,Ann", "Surname")],
)
def test_import_empty_required_cell_names_line_and_column(row: bytes, column: str) -> None:
    data = b"E-mail,Given Name,Surname\nz@x.org,Z,Z\n\n" + row + b"\n"
    with pytest.raises(BadInput) as exc:
        read_import_csv(data, source="new.csv")
    assert message(exc) == (
        f"new.csv line 4 has an empty {column} cell; fill it in or remove the row. "
        "Nothing was changed."
    )


@pytest.mark.parametrize(
    "email",
    ["ann", "ann@", "@x.org", "ann@x", "a@b@x.org", "ann @x.org", "ann@x .org", "a@x.", "a@.x"],
)
def test_import_rejects_malformed_emails_naming_the_line(email: str) -> None:
    data = f'email,first_name,last_name\nz@x.org,Z,Z\n"{email}",Ann,Lee\n'.encode()
    with pytest.raises(BadInput) as exc:
        read_import_csv(data, source="new.csv")
    assert message(exc) == (
        f"new.csv line 3 has {email!r} in the e-mail column, which is not an e-mail address; "
        "correct it or remove the row. Nothing was changed."
    )


@pytest.mark.parametrize("email", ["a@x.org", "First.Last+tag@Sub.Example.co.uk", "o'neil@x.ie"])
def test_import_accepts_plausible_emails(email: str) -> None:
    data = f"email,first_name,last_name\n{email},Ann,Lee\n".encode()
    assert [r.email for r in read_import_csv(data, source="new.csv")] == [email]


def test_check_email_returns_a_plausible_address_stripped() -> None:
    assert check_email(" Ann.Lee@Example.org\t", "--email") == "Ann.Lee@Example.org"


@pytest.mark.parametrize("email", ["", "ann", "ann@x", "a b@x.org", "a@@x.org"])
def test_check_email_names_where_the_bad_address_came_from(email: str) -> None:
    with pytest.raises(BadInput) as exc:
        check_email(email, "--email")
    assert message(exc) == (
        f"--email {email!r} is not an e-mail address; give one like ana@example.org. "
        "Nothing was changed."
    )


def test_import_decode_error_names_the_line() -> None:
    data = b"email,first_name,last_name\na@x.org,Ren\xe9,Lee\n"
    with pytest.raises(BadInput, match=r"^new\.csv is not valid UTF-8 at line 2;"):
        read_import_csv(data, source="new.csv")
    rows = read_import_csv(data, source="new.csv", encoding="cp1252")
    assert rows == [ImportRow(2, "a@x.org", "Ren\u00e9", "Lee", None, None)]


def test_import_empty_file() -> None:
    with pytest.raises(BadInput, match=r"^new\.csv is empty; it needs a header row"):
        read_import_csv(b"", source="new.csv")


def test_import_rows_are_read_as_they_are_iterated() -> None:
    """A file of any length is streamed: its first row comes before the rest is read."""
    rows = b"".join(b"c%d@x.org,C,D\n" % n for n in range(200_000))
    stream = io.BytesIO(b"email,first_name,last_name\n" + rows)
    reader = iter_import_csv(stream, source="big.csv")
    assert next(reader) == ImportRow(2, "c0@x.org", "C", "D", None, None)
    assert stream.tell() < len(rows) // 4
    assert sum(1 for _ in reader) == 199_999


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_a_long_file_decodes_across_read_boundaries_and_counts_lines(newline: bytes) -> None:
    # Rows of 21 bytes with \r\n, so that some line break and some two-byte character
    # fall across every 64 KiB boundary the file is read by.
    row = "r\u00e9@x.org,Ren\u00e9,Lee".encode() + newline
    data = b"email,first_name,last_name" + newline + row * 10_000
    assert len(read_import_csv(data, source="big.csv")) == 10_000
    with pytest.raises(BadInput) as exc:
        read_import_csv(data + b"z@x.org,\xff,B" + newline, source="big.csv")
    assert message(exc).startswith("big.csv is not valid UTF-8 at line 10002;")


def test_import_reports_a_bad_byte_anywhere_before_a_bad_row() -> None:
    data = b"email,first_name,last_name\na@x.org,,Lee\n" + b"b@x.org,B,C\n" * 5000 + b"\xff\n"
    with pytest.raises(BadInput) as exc:
        read_import_csv(data, source="new.csv")
    assert message(exc).startswith("new.csv is not valid UTF-8 at line 5003;")


def test_import_reports_an_unclosed_quote_anywhere_before_a_bad_row() -> None:
    data = b'email,first_name,last_name\nnot-an-email,A,B\nb@x.org,B,C\n"c@x.org,C,D\n'
    with pytest.raises(BadInput) as exc:
        read_import_csv(data, source="new.csv")
    assert message(exc).startswith("new.csv line 4 has a quote that is not closed properly;")


def test_import_reports_an_unclosed_quote_before_a_missing_column() -> None:
    data = b'email,first_name\na@x.org,A\n"b@x.org,B\n'
    with pytest.raises(BadInput) as exc:
        read_import_csv(data, source="new.csv")
    assert message(exc).startswith("new.csv line 3 has a quote that is not closed properly;")


# --- property: whatever we write in a supported dialect reads back unchanged ---------------

_LOCAL = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-"
_LABEL = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_EXTRA = "abc XYZ,;\t\"'\n#"

emails = st.builds(
    lambda local, labels: f"{local}@{'.'.join(labels)}",
    st.text(_LOCAL, min_size=1, max_size=12),
    st.lists(st.text(_LABEL, min_size=1, max_size=8), min_size=2, max_size=3),
)
references = st.one_of(st.integers(1, 10**9).map(str), emails)


def _case(data: st.DataObject, name: str) -> str:
    flips = data.draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if flip else c for c, flip in zip(name, flips, strict=True))


@settings(max_examples=200, deadline=None)
@given(data=st.data(), refs=st.lists(references, max_size=15))
def test_written_references_read_back_unchanged(data: st.DataObject, refs: list[str]) -> None:
    draw = data.draw
    delimiter = draw(st.sampled_from([",", ";", "\t"]), label="delimiter")
    newline = draw(st.sampled_from(["\n", "\r\n"]), label="newline")
    bom = draw(st.sampled_from([b"", b"\xef\xbb\xbf"]), label="bom")
    header = _case(data, draw(st.sampled_from(ID_ALIASES + EMAIL_ALIASES)))
    extras = draw(st.lists(st.sampled_from(["Name", "Notes", "Phone", "City"]), unique=True))
    position = draw(st.integers(0, len(extras)), label="position")
    quote_all = draw(st.booleans(), label="quote_all")

    out = io.StringIO(newline="")
    writer = csv.writer(
        out,
        delimiter=delimiter,
        lineterminator=newline,
        quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL,
    )
    writer.writerow([*extras[:position], header, *extras[position:]])
    expected_lines = []
    for ref in refs:
        cells = [draw(st.text(_EXTRA, max_size=10)) for _ in extras]
        expected_lines.append(out.getvalue().count("\n") + 1)
        writer.writerow([*cells[:position], ref, *cells[position:]])

    result = read_reference_csv(bom + out.getvalue().encode(), source="ended.csv")
    assert texts(result) == refs
    assert lines(result) == expected_lines


@settings(max_examples=200, deadline=None)
@given(data=st.data(), refs=st.lists(references, min_size=1, max_size=5))
def test_header_naming_another_delimiter_still_reads_back(
    data: st.DataObject, refs: list[str]
) -> None:
    # csv.Sniffer fails this on small files; the width check must not.
    draw = data.draw
    delimiter = draw(st.sampled_from([",", ";", "\t"]), label="delimiter")
    other = draw(st.sampled_from([d for d in ",;\t" if d != delimiter]), label="other")
    newline = draw(st.sampled_from(["\n", "\r\n"]), label="newline")
    extras = [f"Name{other} full", "Notes"]
    position = draw(st.integers(0, len(extras)), label="position")
    header = draw(st.sampled_from(ID_ALIASES + EMAIL_ALIASES), label="header")

    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=delimiter, lineterminator=newline)
    writer.writerow([*extras[:position], header, *extras[position:]])
    for ref in refs:
        cells = [draw(st.text(_EXTRA, max_size=10)) for _ in extras]
        writer.writerow([*cells[:position], ref, *cells[position:]])

    assert texts(read_reference_csv(out.getvalue().encode(), source="s.csv")) == refs


# --- sizes, encodings and control characters at the edges ----------------------------------

LONG_FIELD = (
    "{source}: the field on line {line} is longer than 131,072 characters; no client "
    "reference or name is that long, so check that this is the right file (a quote that is "
    "not closed makes a field run on to the end of the file). Nothing was changed."
)


def test_a_field_past_the_csv_limit_has_its_own_message() -> None:
    data = b"id,notes\n1,ok\n2," + b"x" * 131_073 + b"\n"
    with pytest.raises(BadInput) as exc:
        read_reference_csv(data, source="s.csv")
    assert message(exc) == LONG_FIELD.format(source="s.csv", line=3)
    with pytest.raises(BadInput) as exc:
        read_import_csv(b"email,first_name,last_name\na@b.org,A," + b"y" * 200_000, source="n.csv")
    assert message(exc) == LONG_FIELD.format(source="n.csv", line=2)


def test_a_field_at_the_csv_limit_is_read() -> None:
    data = b"id,notes\n1," + b"x" * 131_072 + b"\n"
    assert texts(read_reference_csv(data, source="s.csv")) == ["1"]


def test_an_unclosed_quote_in_a_large_file_names_its_line_and_the_likely_cause() -> None:
    data = b'id,name\n1,"Bob\n' + b"2,Cy\n" * 30_000
    with pytest.raises(BadInput) as exc:
        read_reference_csv(data, source="s.csv")
    assert message(exc) == LONG_FIELD.format(source="s.csv", line=2)


UNICODE_CSV = "id\tname\r\n7\tZoë\r\n\r\n8\tÅsa\r\n"


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_a_file_with_a_utf16_or_utf32_bom_is_read_without_encoding(codec: str) -> None:
    bom = {"utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}.get(codec, b"")
    data = bom + UNICODE_CSV.encode(codec)
    assert data[:2] in (b"\xff\xfe", b"\xfe\xff")
    refs = read_reference_csv(data, source="s.csv")
    assert (texts(refs), lines(refs)) == (["7", "8"], [2, 4])
    # Excel's "Unicode text" export, imported as it is.
    rows = read_import_csv(
        bom + "email,first_name,last_name\r\nzoe@example.org,Zoë,Ng\r\n".encode(codec),
        source="n.csv",
    )
    assert [(r.email, r.first_name) for r in rows] == [("zoe@example.org", "Zoë")]
    assert texts(read_reference_lines(bom + "7\r\n# x\r\n8\r\n".encode(codec), source="-")) == [
        "7",
        "8",
    ]


def test_an_explicit_utf16_encoding_still_works() -> None:
    data = UNICODE_CSV.encode("utf-16")
    assert texts(read_reference_csv(data, source="s.csv", encoding="utf-16")) == ["7", "8"]


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
def test_a_utf16_bom_under_another_encoding_suggests_utf16(encoding: str) -> None:
    with pytest.raises(BadInput) as exc:
        read_reference_csv(UNICODE_CSV.encode("utf-16"), source="s.csv", encoding=encoding)
    assert message(exc) == (
        f"s.csv starts with a UTF-16 byte-order mark, so it is not {encoding}; pass "
        "--encoding utf-16, or leave --encoding out. Nothing was changed."
    )


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_bom_is_named_not_guessed(codec: str) -> None:
    with pytest.raises(BadInput) as exc:
        read_reference_csv(UNICODE_CSV.encode(codec), source="s.csv")
    assert message(exc) == (
        "s.csv looks like UTF-16 without a byte-order mark (a 0 byte between letters); pass "
        f"--encoding {codec}, or save it as UTF-8. Nothing was changed."
    )


def test_a_damaged_utf16_file_names_the_line() -> None:
    data = "id\r\n7\r\n8\r\n".encode("utf-16")[:-1]  # cut in the middle of a character
    with pytest.raises(BadInput) as exc:
        read_reference_csv(data, source="s.csv")
    assert message(exc) == (
        "s.csv is not valid UTF-16 at line 4 (the file is cut short or damaged); save it "
        "again, preferably as UTF-8. Nothing was changed."
    )


# What no name, e-mail, phone or program may hold (escaped as the message shows it).
CONTROL_CHARACTERS = {
    "\x00": "\\x00",
    "\x07": "\\x07",
    "\x1b": "\\x1b",
    "\t": "\\t",
    "\n": "\\n",
    "\x7f": "\\x7f",
    "\x85": "\\x85",
    "\x9b": "\\x9b",
    "\u2028": "\\u2028",
    "\u202a": "\\u202a",
    "\u202e": "\\u202e",
    "\u2066": "\\u2066",
    "\u2069": "\\u2069",
    "\udc80": "\\udc80",
}


@pytest.mark.parametrize("column", ["email", "first_name", "last_name", "phone", "program"])
# A lone surrogate cannot come out of a strict decoder; it comes from argv (see add).
@pytest.mark.parametrize("char", [c for c in CONTROL_CHARACTERS if c != "\udc80"])
def test_import_refuses_control_characters_naming_line_and_column(char: str, column: str) -> None:
    row = {
        "email": "ana@example.org",
        "first_name": "Ana",
        "last_name": "Silva",
        "phone": "555",
        "program": "Reset",
    }
    row[column] = row[column][:2] + char + row[column][2:]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(list(row))
    writer.writerow(["bo@example.org", "Bo", "Li", "", ""])
    writer.writerow(list(row.values()))
    with pytest.raises(BadInput) as exc:
        read_import_csv(out.getvalue().encode(), source="new.csv")
    assert message(exc) == (
        f"new.csv line 3 has a control character ({CONTROL_CHARACTERS[char]}) in the {column} "
        "column, which no name, e-mail, phone or program holds; remove it and try again. "
        "Nothing was changed."
    )


@pytest.mark.parametrize(
    "name",
    [
        "José María",
        "محمد\u200fعلي",  # right-to-left mark
        "a\u200eb\u061cc",  # left-to-right and Arabic letter marks
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian, with a non-joiner
        "क्\u200dष",  # zero-width joiner: Devanagari conjunct
        "Ana 👩\u200d⚕️",
        "O'Brien-Smith",
    ],
)
def test_names_in_any_script_with_their_joiners_and_marks_are_accepted(name: str) -> None:
    data = f"email,first_name,last_name\nana@example.org,{name},{name}\n".encode()
    assert read_import_csv(data, source="new.csv")[0].first_name == name


@settings(deadline=None)  # a shared, loaded CI machine must not fail a pure check on time
@given(st.text(max_size=30))
def test_check_text_refuses_exactly_the_control_characters(text: str) -> None:
    from pbclients.csvinput import check_text

    bad = [c for c in text if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F]
    bad += [c for c in text if c in "\u2028\u2029" or "\u202a" <= c <= "\u202e"]
    bad += [c for c in text if "\u2066" <= c <= "\u2069" or "\ud800" <= c <= "\udfff"]
    if bad:
        with pytest.raises(BadInput, match="has a control character"):
            check_text(text, "--first-name")
    else:
        assert check_text(text, "--first-name") == text


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\u202e"])
def test_check_email_refuses_control_characters(char: str) -> None:
    with pytest.raises(BadInput) as exc:
        check_email(f"an{char}a@example.org", "--email")
    assert message(exc).startswith(
        f"--email has a control character ({CONTROL_CHARACTERS[char]}), which no name"
    )


def test_check_text_refuses_lone_surrogates_from_undecodable_arguments() -> None:
    from pbclients.csvinput import check_text

    with pytest.raises(BadInput, match=r"^--first-name has a control character \(\\udcff\)"):
        check_text("An\udcffa", "--first-name")
