"""FHIR Bulk Data output: one NDJSON file per resource type, and the output manifest.

The layout is the one the FHIR Bulk Data Access IG (v2) defines for an export's result:
`<Type>.ndjson` files, one resource a line, and a manifest listing them with counts. The
manifest's `url`s are the files' names relative to the manifest, so the folder can be
moved or archived whole and still read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pbclients import clock
from pbclients.fhir.mapping import RESOURCE_TYPES

MANIFEST_NAME = "manifest.json"
SUFFIX = ".ndjson"


def file_name(resource_type: str) -> str:
    """`Patient.ndjson`: the Bulk Data convention, one file per resource type."""
    return f"{resource_type}{SUFFIX}"


# What json.dumps(resource, ensure_ascii=False, separators=(",", ":")) writes, with the
# encoder built once: a backup or an export writes every resource with it.
_LINE_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def ndjson_line(resource: Mapping[str, Any]) -> bytes:
    """One resource as one line of UTF-8 JSON (no line break inside: JSON escapes them)."""
    text = _LINE_JSON.encode(resource)
    # A lone surrogate (undecodable input that reached the database) cannot be UTF-8;
    # backslashreplace writes it as the JSON escape `\udc80`, which reads back the same.
    return text.encode("utf-8", "backslashreplace") + b"\n"


def manifest(
    transaction_time: datetime,
    request: str,
    counts: Mapping[str, int],
) -> dict[str, Any]:
    """The Bulk Data output manifest for files named by `file_name`.

    `transaction_time` is when the data was read (the export's snapshot); `request`
    describes what was asked for (there is no HTTP kick-off request: the export passes
    its command); `counts` gives the resources written per type: types with none are
    left out, as the IG asks. `error` stays empty: a record that cannot be written stops
    the export instead of becoming an OperationOutcome.
    """
    return {
        "transactionTime": clock.iso(transaction_time),
        "request": request,
        # Files on the admin's disk: no server, no token.
        "requiresAccessToken": False,
        "output": _files(counts),
        "error": [],
    }


def _files(counts: Mapping[str, int]) -> list[dict[str, Any]]:
    known = [kind for kind in RESOURCE_TYPES if kind in counts]
    others = sorted(kind for kind in counts if kind not in RESOURCE_TYPES)
    return [
        {
            "type": kind,
            "url": file_name(kind),
            "count": int(counts[kind]),
        }
        for kind in (*known, *others)
        if counts[kind] > 0
    ]
