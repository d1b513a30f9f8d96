"""FHIR intake: Patient resources from another system -> clients to add.

A file is either NDJSON (one resource a line, as a Bulk Data export's `Patient.ndjson`),
one Patient, or a Bundle of them (`searchset`, `collection`, `transaction`, `batch`).
A Patient gives the client's e-mail, first and last name, phone, and whether it arrives
active or deactivated (`active: false`). Everything is checked before anything is added,
with the rules `import FILE.csv` applies, and an error names the line or Bundle entry.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pbclients.csvinput import check_email, check_text
from pbclients.errors import BadInput

PATIENT = "Patient"
BUNDLE = "Bundle"
# Bundles that carry resources to take in; a history or a message is not a list of clients.
BUNDLE_TYPES = frozenset({"collection", "searchset", "transaction", "batch"})

_NOTHING_CHANGED = "Nothing was changed."
# Preferred first: the name a person is known by officially, then the one in use.
_NAME_USES = ("official", "usual")


@dataclass(frozen=True)
class FhirPatient:
    """A client to add, read from one Patient; `where` names it ("line 3 of p.ndjson")."""

    email: str
    first_name: str
    last_name: str
    phone: str | None
    active: bool
    where: str
    resource_id: str | None = None


@dataclass(frozen=True)
class PatientFile:
    """The Patients of a file, in order, and how many other resources a Bundle carried
    (by type): those are not clients, and are left out."""

    patients: list[FhirPatient]
    skipped: dict[str, int] = field(default_factory=dict)


def parse_patient(resource: Any, where: str = "The Patient") -> FhirPatient:
    """Read one Patient resource; BadInput naming `where` and what is wrong or missing."""
    if not isinstance(resource, dict):
        raise _bad(where, "is not a JSON object", "give one FHIR resource")
    kind = resource.get("resourceType")
    if kind != PATIENT:
        what = f"a {kind!r} resource" if isinstance(kind, str) else "not a FHIR resource"
        raise _bad(where, f"is {what}, not a Patient", "give Patient resources")
    email = _contact(resource, "email", where)
    if email is None:
        raise _bad(
            where,
            'has no e-mail address (a telecom with system "email"), which every client needs',
            "add one, or leave that Patient out",
        )
    address = email.removeprefix("mailto:").removeprefix("MAILTO:")
    email = check_email(address, f"{_cap(where)}: e-mail")
    first, last = _name(resource, where)
    phone = _contact(resource, "phone", where)
    active = resource.get("active", True)
    if not isinstance(active, bool):
        raise _bad(where, f"has active {active!r}", "give true or false, or leave it out")
    resource_id = resource.get("id")
    return FhirPatient(
        email=email,
        first_name=check_text(first, f"{_cap(where)}: the given name"),
        last_name=check_text(last, f"{_cap(where)}: the family name"),
        phone=check_text(phone, f"{_cap(where)}: the phone number") if phone else None,
        active=active,
        where=where,
        resource_id=resource_id if isinstance(resource_id, str) else None,
    )


def read_patients(data: bytes, *, source: str) -> PatientFile:
    """Every Patient of an NDJSON file, a single Patient or a Bundle, checked; all or none.

    Blank lines are skipped; an empty file holds no Patient (nothing to do).
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BadInput(
            f"{source} is not UTF-8 (byte {error.start + 1}), which FHIR JSON always is; "
            f"save it as UTF-8 and try again. {_NOTHING_CHANGED}"
        ) from None
    if not text.strip():
        return PatientFile([])
    try:
        whole = json.loads(text)
    except (ValueError, RecursionError):
        # Not one JSON document: NDJSON, one resource a line.
        return PatientFile(list(_ndjson(text, source)))
    if isinstance(whole, dict) and whole.get("resourceType") == BUNDLE:
        return _bundle(whole, source)
    # One resource, on one line (NDJSON of one) or pretty-printed over many.
    where = f"line 1 of {source}" if "\n" not in text.strip() else source
    return PatientFile([parse_patient(whole, where)])


def _ndjson(text: str, source: str) -> Iterator[FhirPatient]:
    # Split on \n only: JSON escapes line breaks inside strings, but a raw U+2028 in a
    # string is valid JSON and str.splitlines() would cut the line there.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"line {number} of {source}"
        try:
            resource = json.loads(line)
        except (ValueError, RecursionError) as error:
            reason = error.msg if isinstance(error, json.JSONDecodeError) else "nested too deep"
            raise BadInput(
                f"{_cap(where)} is not JSON ({reason}); give one Patient resource a line (NDJSON), "
                f"or one Bundle. {_NOTHING_CHANGED}"
            ) from None
        yield parse_patient(resource, where)


def _bundle(bundle: Mapping[str, Any], source: str) -> PatientFile:
    kind = bundle.get("type")
    if kind not in BUNDLE_TYPES:
        shown = repr(kind) if isinstance(kind, str) else "no"
        raise BadInput(
            f"{source} is a Bundle of type {shown}, not a list of Patients; give a Bundle of "
            f"type {', '.join(sorted(BUNDLE_TYPES))}, or Patient NDJSON. {_NOTHING_CHANGED}"
        )
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise BadInput(
            f"{source}: the Bundle's entry is not a list; fix the Bundle. {_NOTHING_CHANGED}"
        )
    patients: list[FhirPatient] = []
    skipped: Counter[str] = Counter()
    for number, entry in enumerate(entries, start=1):
        where = f"entry {number} of {source}"
        if not isinstance(entry, dict):
            raise _bad(where, "is not a JSON object", "fix the Bundle")
        search = entry.get("search")
        if kind == "searchset" and isinstance(search, dict) and search.get("mode") != "match":
            # Included resources and OperationOutcomes of a search are not its results.
            skipped[_type_of(entry.get("resource"))] += 1
            continue
        resource = entry.get("resource")
        if resource is None:
            raise _bad(where, "has no resource", "give each entry its Patient")
        if isinstance(resource, dict) and resource.get("resourceType") != PATIENT:
            skipped[_type_of(resource)] += 1
            continue
        patients.append(parse_patient(resource, where))
    return PatientFile(patients, dict(skipped))


def _type_of(resource: Any) -> str:
    kind = resource.get("resourceType") if isinstance(resource, dict) else None
    return kind if isinstance(kind, str) and kind else "unknown"


def _contact(resource: Mapping[str, Any], system: str, where: str) -> str | None:
    """The value of the preferred current telecom of `system` (lowest rank), if any."""
    telecom = resource.get("telecom", [])
    if not isinstance(telecom, list):
        raise _bad(where, "has a telecom that is not a list", "fix the Patient")
    found: list[tuple[int, int, str]] = []
    for index, point in enumerate(telecom):
        if not isinstance(point, dict) or point.get("system") != system:
            continue
        if point.get("use") == "old":
            continue
        value = point.get("value")
        if not isinstance(value, str) or not value.strip():
            continue
        rank = point.get("rank")
        order = rank if isinstance(rank, int) and not isinstance(rank, bool) else 2**31
        found.append((order, index, value.strip()))
    return min(found)[2] if found else None


def _name(resource: Mapping[str, Any], where: str) -> tuple[str, str]:
    """(first name, last name) from the official name, else the usual one, else the first."""
    names = resource.get("name", [])
    if not isinstance(names, list):
        raise _bad(where, "has a name that is not a list", "fix the Patient")
    candidates = [n for n in names if isinstance(n, dict) and n.get("use") not in ("old",)]
    chosen = next(
        (n for use in _NAME_USES for n in candidates if n.get("use") == use),
        candidates[0] if candidates else None,
    )
    if chosen is None:
        raise _bad(where, "has no name", "add its given and family name")
    family = chosen.get("family")
    given = chosen.get("given", [])
    if not isinstance(given, list):
        given = [given]
    first = " ".join(part.strip() for part in given if isinstance(part, str) and part.strip())
    last = family.strip() if isinstance(family, str) else ""
    text = chosen.get("text")
    if not first and not last and isinstance(text, str) and text.strip():
        # Only a display text such as "Ana Silva": the last word is the family name.
        first, _, last = text.strip().rpartition(" ")
        first = first.strip()
    if not last:
        raise _bad(where, "has no family name (name.family)", "add the client's last name")
    if not first:
        raise _bad(where, "has no given name (name.given)", "add the client's first name")
    return first, last


def _bad(where: str, problem: str, advice: str) -> BadInput:
    return BadInput(f"{_cap(where)} {problem}; {advice}. {_NOTHING_CHANGED}")


def _cap(where: str) -> str:
    """`where` opening a sentence: "line 3 of p.ndjson" -> "Line 3 of p.ndjson"."""
    return where[:1].upper() + where[1:]
