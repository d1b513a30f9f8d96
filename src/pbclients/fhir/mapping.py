"""One practice record -> one FHIR R4B resource, as a plain dict ready for `json.dumps`.

Every function takes a row as a mapping: what `select(table)` returns (times as
datetimes, files as bytes), or the JSON-ready dict a backup holds (times as ISO-8601
strings). None keeps state or reads the database, so a caller maps one client at a time
and memory stays the size of one client's records, however many clients there are.

Elements are the ones R4 (4.0.1) and R4B (4.3.0) define identically; every resource
refers to its client's Patient as `Patient/client-<id>`, and carries an identifier in a
`urn:pbclients:<record>-id` system so a receiving system can find the record again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pbclients import clock
from pbclients.fhir import CLIENT_ID_SYSTEM
from pbclients.policy import Status

Resource = dict[str, Any]
Row = Mapping[str, Any]

PATIENT = "Patient"
CARE_PLAN = "CarePlan"
APPOINTMENT = "Appointment"
COMMUNICATION = "Communication"
QUESTIONNAIRE_RESPONSE = "QuestionnaireResponse"
DOCUMENT_REFERENCE = "DocumentReference"

# Record kind (the keys of models.RECORD_MODELS) -> the resource type it becomes.
RESOURCE_OF_KIND: dict[str, str] = {
    "enrolments": CARE_PLAN,
    "appointments": APPOINTMENT,
    "messages": COMMUNICATION,
    "forms": QUESTIONNAIRE_RESPONSE,
    "documents": DOCUMENT_REFERENCE,
    "session_notes": DOCUMENT_REFERENCE,
    "protocols": DOCUMENT_REFERENCE,
    "journal_entries": DOCUMENT_REFERENCE,
}

# Record kinds written to no FHIR resource, and why. They stay in the pbclients backup
# (records/<kind>.jsonl), so the backup a deletion relies on is still complete.
NOT_EXPORTED: dict[str, str] = {
    "payment_methods": (
        "a saved card (brand, last 4 digits, expiry) is payment-processor data, not health "
        "data: FHIR's financial resources (Claim, Coverage, Invoice, PaymentNotice) describe "
        "insurance claims and billing, and have no element for a card on file"
    ),
    "payment_plans": (
        "a recurring self-pay charge is billing kept in the payment system; FHIR has no "
        "resource for a subscription schedule, and an EHR would not import one"
    ),
    "notifications": (
        "the portal's outbox of automated e-mails (kind and times, no content) is an "
        "operational log of this tool, not part of the client's health record"
    ),
}

# Every type an export writes, in the order its files are listed (Patient first: every
# other resource refers to one).
RESOURCE_TYPES: tuple[str, ...] = (
    PATIENT,
    CARE_PLAN,
    APPOINTMENT,
    COMMUNICATION,
    QUESTIONNAIRE_RESPONSE,
    DOCUMENT_REFERENCE,
)

LOINC = "http://loinc.org"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
DISPLAY_EXTENSION = "http://hl7.org/fhir/StructureDefinition/display"
PROGRAM_KIND_SYSTEM = "urn:pbclients:program-kind"
TEXT_PLAIN = "text/plain; charset=utf-8"

# FHIR strings "SHALL NOT exceed 1MB (1024*1024 characters)"; longer text travels as an
# attachment instead, which has no such limit.
MAX_STRING = 1024 * 1024
# unsignedInt and integer are 32-bit in FHIR.
MAX_INT = 2**31 - 1
# Deeper form answers are kept as their JSON text: no real form nests that far, and it
# bounds the recursion on a crafted response.
MAX_FORM_DEPTH = 16

# Note types: LOINC document codes, the code system US Core binds DocumentReference.type to.
_NOTE_TYPES: dict[str, tuple[str, str]] = {
    "session_notes": ("11506-3", "Progress note"),
    "protocols": ("18776-5", "Plan of care note"),
    "journal_entries": ("51855-5", "Patient Note"),
}
# Identifier systems and resource id prefixes, per record kind.
_PREFIX: dict[str, str] = {
    "enrolments": "enrolment",
    "appointments": "appointment",
    "messages": "message",
    "forms": "form-request",
    "documents": "document",
    "session_notes": "session-note",
    "protocols": "protocol",
    "journal_entries": "journal-entry",
}
_MIME = re.compile(r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$")
_PRACTICE: Resource = {"type": "Organization", "display": "the practice"}
# Telehealth or not -> (v3 ActCode, its display, text).
_VISIT: dict[bool, tuple[str, str, str]] = {
    True: ("VR", "virtual", "telehealth"),
    False: ("AMB", "ambulatory", "in person"),
}


@dataclass(frozen=True)
class ClientContext:
    """What mapping one client's records needs beyond the rows themselves.

    `status` is the client's (active, deactivated, deleted): a paused client's programs
    are on hold. `now` decides whether an appointment is still to come. `programs` are
    the programs the enrolments name, by id (a missing one is named by its id).
    """

    status: str
    now: datetime
    programs: Mapping[int, Row]


@dataclass(frozen=True)
class FileReference:
    """A document's file kept beside its resource rather than inline: a backup's member.

    `url` is where the file is, relative to the NDJSON file that holds the resource;
    `size` and `sha1` (the raw digest) are the file's, so a reader can check what it finds
    there. A backup already holds every file byte for byte: inline base64 would store it
    twice and make one resource line as large as the file.
    """

    url: str
    size: int
    sha1: bytes


# What a document's resource is given: its file's bytes (inline), or where the file is.
DocumentContent = bytes | bytearray | memoryview | FileReference


def resource_id(kind: str, record_id: int) -> str:
    """A record's resource id: `appointment-7`, `session-note-3`... (unique within its type;
    a client's Patient is `client-<id>`)."""
    return f"{_PREFIX[kind]}-{int(record_id)}"


def patient_reference(client_id: int) -> Resource:
    return {"reference": f"{PATIENT}/client-{int(client_id)}"}


def patient(client: Row) -> Resource:
    """A client -> Patient: identifier, name, e-mail and phone, `active` false unless active."""
    client_id = int(client["id"])
    resource: Resource = {
        "resourceType": PATIENT,
        "id": f"client-{client_id}",
        "identifier": [{"system": CLIENT_ID_SYSTEM, "value": str(client_id)}],
        # Patient.active is "whether this patient's record is in active use": false for a
        # deactivated client (access paused) and for a deleted one.
        "active": client["status"] == Status.ACTIVE.value,
    }
    name: Resource = {}
    if family := _text(client.get("last_name")):
        name["family"] = family
    if given := _text(client.get("first_name")):
        name["given"] = [given]
    if name:
        resource["name"] = [name]
    telecom = []
    if email := _text(client.get("email")):
        telecom.append({"system": "email", "value": email})
    if phone := _text(client.get("phone")):
        telecom.append({"system": "phone", "value": phone})
    if telecom:
        resource["telecom"] = telecom
    return resource


def care_plan(enrolment: Row, program: Row | None, client_status: str) -> Resource:
    """A program or package enrolment -> CarePlan, on hold while the client is not active.

    CarePlan has no progress element: the percentage is the activity's `progress`
    annotation ("Progress: 40%"), which is what that element is for.
    """
    program_id = int(enrolment["program_id"])
    name = _text(program.get("name")) if program else None
    name = name or f"Program {program_id}"
    kind = (_text(program.get("kind")) if program else None) or "program"
    progress = int(enrolment.get("progress_percent") or 0)
    completed = enrolment.get("completed_at")
    if completed is not None:
        status, activity_status = "completed", "completed"
    elif client_status != Status.ACTIVE.value:
        status, activity_status = "on-hold", "on-hold"
    else:
        status, activity_status = "active", "in-progress" if progress > 0 else "not-started"
    started = _moment(enrolment["enrolled_at"])
    period: Resource = {"start": clock.iso(started)}
    if completed is not None and _moment(completed) >= started:
        period["end"] = clock.iso(_moment(completed))
    detail: Resource = {
        "code": {"text": name},
        "status": activity_status,
        "description": f"{kind.capitalize()}: {name}",
    }
    if status == "on-hold":
        detail["statusReason"] = {
            "text": "Paused while the client's portal access is deactivated; progress is kept."
        }
    return {
        "resourceType": CARE_PLAN,
        "id": resource_id("enrolments", enrolment["id"]),
        "identifier": [_identifier("enrolments", enrolment["id"])],
        "status": status,
        "intent": "plan",
        "category": [
            {"coding": [{"system": PROGRAM_KIND_SYSTEM, "code": kind}], "text": kind},
        ],
        "title": name,
        "description": f"Enrolment in the {kind} {name}",
        "subject": patient_reference(enrolment["client_id"]),
        "period": period,
        "created": clock.iso(started),
        "activity": [{"progress": [{"text": f"Progress: {progress}%"}], "detail": detail}],
    }


def appointment(row: Row, now: datetime) -> Resource:
    """An appointment -> Appointment: booked until it has ended, fulfilled after.

    R4 has no element for a virtual visit (R5 adds `virtualService` and `class`), so
    `appointmentType` carries the same v3 ActCode R5's `Appointment.class` uses:
    VR (virtual) for telehealth, AMB (ambulatory) for a visit in person.
    """
    start = _moment(row["starts_at"])
    minutes = int(row.get("duration_minutes") or 0)
    end = start + timedelta(minutes=max(minutes, 0))
    telehealth = bool(row.get("telehealth"))
    code, display, text = _VISIT[telehealth]
    resource: Resource = {
        "resourceType": APPOINTMENT,
        "id": resource_id("appointments", row["id"]),
        "identifier": [_identifier("appointments", row["id"])],
        "status": "fulfilled" if end <= clock.as_utc(now) else "booked",
        "appointmentType": {
            "coding": [{"system": ACT_CODE, "code": code, "display": display}],
            "text": text,
        },
    }
    if description := _text(row.get("title")):
        resource["description"] = description
    resource["start"] = clock.iso(start)
    resource["end"] = clock.iso(end)
    if 0 < minutes <= MAX_INT:
        resource["minutesDuration"] = minutes
    resource["participant"] = [
        {"actor": patient_reference(row["client_id"]), "required": "required", "status": "accepted"}
    ]
    return resource


def communication(row: Row) -> Resource:
    """A secure message -> Communication, sent by the client or by the practice."""
    client = patient_reference(row["client_id"])
    from_client = row.get("sender") == "client"
    resource: Resource = {
        "resourceType": COMMUNICATION,
        "id": resource_id("messages", row["id"]),
        "identifier": [_identifier("messages", row["id"])],
        "status": "completed",
        "subject": client,
        "sent": clock.iso(_moment(row["sent_at"])),
        # The practice has no resource of its own in the export: a typed display names it.
        "recipient": [dict(_PRACTICE) if from_client else client],
        "sender": client if from_client else dict(_PRACTICE),
    }
    body = row.get("body")
    if isinstance(body, str) and body:
        if len(body) <= MAX_STRING:
            resource["payload"] = [{"contentString": body}]
        else:
            resource["payload"] = [{"contentAttachment": _attachment(body.encode(), TEXT_PLAIN)}]
    return resource


def questionnaire_response(row: Row) -> Resource:
    """A form sent to the client -> QuestionnaireResponse (in progress until completed).

    The form has no Questionnaire resource of its own: its name travels as the core
    `display` extension of `questionnaire`. A JSON object's keys become items (nested
    objects nested items); any other response is one item holding its text.
    """
    completed = row.get("completed_at")
    resource: Resource = {
        "resourceType": QUESTIONNAIRE_RESPONSE,
        "id": resource_id("forms", row["id"]),
        "identifier": _identifier("forms", row["id"]),
    }
    if form_name := _text(row.get("form_name")):
        resource["_questionnaire"] = {
            "extension": [{"url": DISPLAY_EXTENSION, "valueString": form_name}]
        }
    resource["status"] = "completed" if completed is not None else "in-progress"
    resource["subject"] = patient_reference(row["client_id"])
    # Answered: when the answers were given; not yet: when the form was sent out.
    authored = completed if completed is not None else row["sent_at"]
    resource["authored"] = clock.iso(_moment(authored))
    if completed is not None:
        resource["source"] = patient_reference(row["client_id"])
    items = _form_items(row.get("response_json"))
    if items:
        resource["item"] = items
    return resource


def document_reference(row: Row, content: DocumentContent) -> Resource:
    """An uploaded file -> DocumentReference with the file as an attachment: inline (the
    bytes), or by `url` to where it is kept (a FileReference), with its size and hash."""
    content_type = _content_type(row.get("content_type"))
    if isinstance(content, FileReference):
        attachment = _attachment_at(content, content_type)
    else:
        attachment = _attachment(bytes(content), content_type)
    if title := _text(row.get("filename")):
        attachment["title"] = title
    uploaded = clock.iso(_moment(row["uploaded_at"]))
    attachment["creation"] = uploaded
    return {
        "resourceType": DOCUMENT_REFERENCE,
        "id": resource_id("documents", row["id"]),
        "identifier": [_identifier("documents", row["id"])],
        "status": "current",
        "docStatus": "final",
        "subject": patient_reference(row["client_id"]),
        "date": uploaded,
        "description": "Document in the client's record",
        "content": [{"attachment": attachment}],
    }


def note_reference(kind: str, row: Row) -> Resource:
    """A session note, protocol or journal entry -> DocumentReference with a LOINC note type.

    These are free-text notes: DocumentReference with a text attachment is how FHIR (and
    US Core's clinical notes) carries a note, where Observation or Communication would
    claim a structure or an exchange they do not have.
    """
    code, display = _NOTE_TYPES[kind]
    if kind == "session_notes":
        written = row["written_at"]
        shared = bool(row.get("shared_with_client"))
        description = (
            "Session note, shared with the client"
            if shared
            else "Session note, for the practice only (not shared with the client)"
        )
        title = "Session note"
    elif kind == "protocols":
        written = row["assigned_at"]
        title = _text(row.get("title")) or "Protocol"
        description = f"Protocol assigned to the client: {title}"
    else:
        written = row["written_at"]
        title = "Journal entry"
        description = "Journal entry written by the client in the portal"
    when = clock.iso(_moment(written))
    body = row.get("body")
    attachment = _attachment(body.encode() if isinstance(body, str) else b"", TEXT_PLAIN)
    attachment["title"] = title
    attachment["creation"] = when
    resource: Resource = {
        "resourceType": DOCUMENT_REFERENCE,
        "id": resource_id(kind, row["id"]),
        "identifier": [_identifier(kind, row["id"])],
        "status": "current",
        "docStatus": "final",
        "type": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": title},
        "subject": patient_reference(row["client_id"]),
        "date": when,
    }
    if kind == "journal_entries":
        resource["author"] = [patient_reference(row["client_id"])]
    resource["description"] = description
    resource["content"] = [{"attachment": attachment}]
    return resource


def map_record(
    kind: str, row: Row, context: ClientContext, content: DocumentContent | None = None
) -> Resource | None:
    """The resource for one record of `kind`, or None for a kind in NOT_EXPORTED.

    `content` is a document's file (documents only; rows of other kinds carry their text).
    """
    if kind in NOT_EXPORTED:
        return None
    if kind == "enrolments":
        return care_plan(row, context.programs.get(int(row["program_id"])), context.status)
    if kind == "appointments":
        return appointment(row, context.now)
    if kind == "messages":
        return communication(row)
    if kind == "forms":
        return questionnaire_response(row)
    if kind == "documents":
        if content is None:
            raise ValueError("a document's resource needs its content")
        return document_reference(row, content)
    if kind in _NOTE_TYPES:
        return note_reference(kind, row)
    raise ValueError(f"no FHIR mapping for record kind {kind!r}")


def kinds_of(resource_type: str) -> tuple[str, ...]:
    """The record kinds that become `resource_type`, in a stable order."""
    return tuple(kind for kind, target in RESOURCE_OF_KIND.items() if target == resource_type)


def client_resources(
    client: Row,
    records: Mapping[str, Iterable[Row]],
    context: ClientContext,
    content: Callable[[Row], DocumentContent],
) -> Iterator[Resource]:
    """Every resource of one client: the Patient, then each exported kind, type by type.

    `records` maps record kinds to their rows (iterables are consumed once, so a caller
    may pass streaming queries); `content` returns a document row's file.
    """
    yield patient(client)
    for resource_type in RESOURCE_TYPES[1:]:
        for kind in kinds_of(resource_type):
            for row in records.get(kind, ()):
                resource = map_record(
                    kind, row, context, content(row) if kind == "documents" else None
                )
                if resource is not None:
                    yield resource


# --- helpers --------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    """A non-empty string, or None: FHIR forbids empty strings."""
    return value if isinstance(value, str) and value else None


def _moment(value: Any) -> datetime:
    """A timezone-aware UTC time from a datetime or an ISO-8601 string (naive = UTC)."""
    if isinstance(value, datetime):
        return clock.as_utc(value)
    if isinstance(value, str):
        return clock.as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    raise ValueError(f"not a time: {value!r}")


def _identifier(kind: str, record_id: Any) -> Resource:
    return {"system": f"urn:pbclients:{_PREFIX[kind]}-id", "value": str(int(record_id))}


def _attachment(data: bytes, content_type: str) -> Resource:
    """An inline attachment: data, its size, and its SHA-1 (base64), as FHIR defines them."""
    attachment: Resource = {"contentType": content_type}
    if data:
        attachment["data"] = base64.b64encode(data).decode("ascii")
    if len(data) <= MAX_INT:
        attachment["size"] = len(data)
    attachment["hash"] = base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")
    return attachment


def _attachment_at(file: FileReference, content_type: str) -> Resource:
    """An attachment by reference: where the file is, its size and its SHA-1 (base64)."""
    attachment: Resource = {"contentType": content_type, "url": file.url}
    if file.size <= MAX_INT:
        attachment["size"] = file.size
    attachment["hash"] = base64.b64encode(file.sha1).decode("ascii")
    return attachment


def _content_type(value: Any) -> str:
    """The stored MIME type if it is one (type/subtype, optional parameters), else binary."""
    if isinstance(value, str):
        collapsed = " ".join(value.split())
        if _MIME.match(collapsed.partition(";")[0].strip()):
            return collapsed
    return "application/octet-stream"


def _form_items(response: Any) -> list[Resource]:
    if not isinstance(response, str) or not response.strip():
        return []
    try:
        parsed = json.loads(response)
    except (ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, dict):
        return _items(parsed, "", 1)
    return [{"linkId": "response", "text": "Response", "answer": [_answer(response)]}]


def _items(values: Mapping[str, Any], prefix: str, depth: int) -> list[Resource]:
    items = []
    for index, (key, value) in enumerate(values.items(), 1):
        # linkIds are unique within a response: nested keys carry their parents' path.
        item: Resource = {"linkId": f"{prefix}{key or f'item-{index}'}"}
        if key:
            item["text"] = key
        if isinstance(value, dict) and depth < MAX_FORM_DEPTH:
            nested = _items(value, f"{item['linkId']}/", depth + 1)
            if nested:
                item["item"] = nested
        else:
            answers = [
                answer
                for element in (value if isinstance(value, list) else [value])
                if (answer := _answer(element)) is not None
            ]
            if answers:
                item["answer"] = answers
        items.append(item)
    return items


def _answer(value: Any) -> Resource | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return {"valueBoolean": value}
    if isinstance(value, int) and -MAX_INT - 1 <= value <= MAX_INT:
        return {"valueInteger": value}
    if isinstance(value, float) and math.isfinite(value):
        return {"valueDecimal": value}
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if len(text) > MAX_STRING:
        return {"valueAttachment": _attachment(text.encode(), TEXT_PLAIN)}
    return {"valueString": text}
