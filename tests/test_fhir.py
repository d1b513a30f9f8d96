"""FHIR: every resource the tool writes is valid R4B, and Patients come back in as clients.

The validator is `fhir.resources` (R4B models, in the test extra only). It checks
structure, cardinality, datatypes and unknown elements; it does not check required
code bindings or the empty elements JSON FHIR forbids, so `spec_problems` adds those.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from sqlalchemy import select

from pbclients import clock, demo
from pbclients.db import make_engine, reading
from pbclients.errors import BadInput, ExitCode
from pbclients.fhir import CLIENT_ID_SYSTEM, FHIR_VERSION, bulk, mapping
from pbclients.fhir.intake import FhirPatient, parse_patient, read_patients
from pbclients.models import RECORD_MODELS, Client, Program
from pbclients.policy import Status
from tests.helpers import NOW_TEXT

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

# Required bindings of the coded elements we write (FHIR R4 = R4B value sets).
REQUIRED_CODES: dict[tuple[str, str], frozenset[str]] = {
    ("Patient", "telecom.system"): frozenset(
        {"phone", "fax", "email", "pager", "url", "sms", "other"}
    ),
    ("CarePlan", "status"): frozenset(
        {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"}
    ),
    ("CarePlan", "intent"): frozenset({"proposal", "plan", "order", "option"}),
    ("CarePlan", "activity.detail.status"): frozenset(
        {
            "not-started",
            "scheduled",
            "in-progress",
            "on-hold",
            "completed",
            "cancelled",
            "stopped",
            "unknown",
            "entered-in-error",
        }
    ),
    ("Appointment", "status"): frozenset(
        {
            "proposed",
            "pending",
            "booked",
            "arrived",
            "fulfilled",
            "cancelled",
            "noshow",
            "entered-in-error",
            "checked-in",
            "waitlist",
        }
    ),
    ("Appointment", "participant.status"): frozenset(
        {"accepted", "declined", "tentative", "needs-action"}
    ),
    ("Appointment", "participant.required"): frozenset(
        {"required", "optional", "information-only"}
    ),
    ("Communication", "status"): frozenset(
        {
            "preparation",
            "in-progress",
            "not-done",
            "on-hold",
            "stopped",
            "completed",
            "entered-in-error",
            "unknown",
        }
    ),
    ("QuestionnaireResponse", "status"): frozenset(
        {"in-progress", "completed", "amended", "entered-in-error", "stopped"}
    ),
    ("DocumentReference", "status"): frozenset({"current", "superseded", "entered-in-error"}),
    ("DocumentReference", "docStatus"): frozenset(
        {"preliminary", "final", "amended", "entered-in-error"}
    ),
}


def validate(resource: dict[str, Any]) -> None:
    """Raise pydantic's ValidationError unless `resource` is a valid FHIR R4B resource."""
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def spec_problems(
    resource: dict[str, Any], resolve: Callable[[str], bytes] | None = None
) -> list[str]:
    """What the spec forbids and the validator lets through (empty: none).

    `resolve` returns the bytes an attachment's `url` points to (a backup's member); an
    attachment by `url` is a problem when there is nothing to resolve it with.
    """
    problems = [f"empty element at {path}" for path in _empty_paths(resource, "")]
    kind = resource["resourceType"]
    for (of, path), allowed in REQUIRED_CODES.items():
        if of == kind:
            problems += [
                f"{path} = {value!r} is not a code of its value set"
                for value in _values(resource, path.split("."))
                if value not in allowed
            ]
    if len(resource.get("id", "")) > 64:
        problems.append("id longer than 64 characters")
    for reference in _references(resource):
        if not reference.startswith("Patient/client-"):
            problems.append(f"reference {reference!r} is not to a client's Patient")
    for attachment in _attachments(resource):
        if "url" in attachment:
            if resolve is None or "data" in attachment:
                problems.append(f"attachment by url {attachment['url']!r} cannot be checked")
                continue
            data = resolve(attachment["url"])
        else:
            data = base64.b64decode(attachment.get("data", ""), validate=True)
        if attachment.get("size") != len(data):
            problems.append("attachment size does not match its data")
        if base64.b64decode(attachment["hash"]) != hashlib.sha1(data).digest():
            problems.append("attachment hash is not the SHA-1 of its data")
    if kind == "Appointment" and not resource["start"] <= resource["end"]:
        problems.append("appointment ends before it starts")
    return problems


def _empty_paths(value: Any, path: str) -> Iterator[str]:
    if value is None or value in ("", [], {}):
        yield path or "(root)"
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _empty_paths(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _empty_paths(item, f"{path}[{index}]")


def _values(value: Any, path: list[str]) -> Iterator[Any]:
    if isinstance(value, list):
        for item in value:
            yield from _values(item, path)
    elif not path:
        yield value
    elif isinstance(value, dict) and path[0] in value:
        yield from _values(value[path[0]], path[1:])


def _walk(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


def _references(resource: dict[str, Any]) -> list[str]:
    return [node["reference"] for node in _walk(resource) if "reference" in node]


def _attachments(resource: dict[str, Any]) -> list[dict[str, Any]]:
    return [node for node in _walk(resource) if "hash" in node and "contentType" in node]


# --- the demo practice, loaded the way an export reads it -----------------------------


@dataclass
class LoadedClient:
    row: dict[str, Any]
    records: dict[str, list[dict[str, Any]]]


# The clients with their records, and the programs by id.
Practice = tuple[list[LoadedClient], dict[int, dict[str, Any]]]


def load(target: str) -> Practice:
    """Every client with every record of every kind, and the programs, from a database."""
    engine = make_engine(target)
    try:
        with reading(engine) as session:
            programs = {
                int(row["id"]): dict(row)
                for row in session.execute(select(Program.__table__)).mappings()  # type: ignore[attr-defined]
            }
            by_client: dict[int, dict[str, list[dict[str, Any]]]] = defaultdict(
                lambda: {kind: [] for kind in RECORD_MODELS}
            )
            for kind, model in RECORD_MODELS.items():
                table = model.__table__  # type: ignore[attr-defined]
                for row in session.execute(select(table).order_by(table.c.id)).mappings():
                    by_client[int(row["client_id"])][kind].append(dict(row))
            table = Client.__table__  # type: ignore[attr-defined]
            clients = [
                LoadedClient(dict(row), by_client[int(row["id"])])
                for row in session.execute(select(table).order_by(table.c.id)).mappings()
            ]
    finally:
        engine.dispose()
    return clients, programs


def resources_of(client: LoadedClient, programs: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    context = mapping.ClientContext(client.row["status"], NOW, programs)
    return list(
        mapping.client_resources(client.row, client.records, context, lambda row: row["content"])
    )


def as_backup_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row the way a backup's records/*.jsonl holds it: ISO times, no file bytes."""
    plain = {
        key: clock.iso(value) if isinstance(value, datetime) else value
        for key, value in row.items()
        if not isinstance(value, bytes | memoryview)
    }
    return json.loads(json.dumps(plain))


@pytest.fixture(scope="module")
def demo_practice(tmp_path_factory: pytest.TempPathFactory) -> Practice:
    """A 40-client demo practice on SQLite, built once for the tests that only read it."""
    target = str(tmp_path_factory.mktemp("fhir") / "demo.db")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PBCLIENTS_NOW", NOW_TEXT)
        demo.build(target, clients=40, seed=11, actor="tester")
    return load(target)


# --- every resource of the demo practice is valid -------------------------------------


def test_every_resource_the_demo_practice_maps_to_is_valid_fhir_r4b(
    db_target: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)
    demo.build(db_target, clients=40, seed=11, actor="tester")
    clients, programs = load(db_target)

    validated: Counter[str] = Counter()
    problems: list[str] = []
    ids: dict[str, set[str]] = defaultdict(set)
    for client in clients:
        for resource in resources_of(client, programs):
            validate(resource)
            kind = resource["resourceType"]
            problems += [f"{kind}/{resource['id']}: {p}" for p in spec_problems(resource)]
            assert resource["id"] not in ids[kind], f"{kind}/{resource['id']} written twice"
            ids[kind].add(resource["id"])
            validated[kind] += 1
            # Every resource refers to its own client's Patient, and nothing else.
            assert set(_references(resource)) <= {f"Patient/client-{client.row['id']}"}
            if kind != "Patient":
                assert _references(resource)

    assert problems == []
    records = Counter(
        kind for client in clients for kind, rows in client.records.items() for _ in rows
    )
    expected = {
        "Patient": len(clients),
        "CarePlan": records["enrolments"],
        "Appointment": records["appointments"],
        "Communication": records["messages"],
        "QuestionnaireResponse": records["forms"],
        "DocumentReference": records["documents"]
        + records["session_notes"]
        + records["protocols"]
        + records["journal_entries"],
    }
    assert dict(validated) == expected
    assert all(validated[kind] > 0 for kind in mapping.RESOURCE_TYPES)
    with capsys.disabled():
        print(f"\nFHIR {FHIR_VERSION} resources validated, zero errors: {dict(validated)}")


def test_every_record_kind_is_mapped_or_explicitly_not_exported() -> None:
    assert set(mapping.RESOURCE_OF_KIND) | set(mapping.NOT_EXPORTED) == set(RECORD_MODELS)
    assert not set(mapping.RESOURCE_OF_KIND) & set(mapping.NOT_EXPORTED)
    context = mapping.ClientContext("active", NOW, {})
    for kind, reason in mapping.NOT_EXPORTED.items():
        assert mapping.map_record(kind, {"id": 1, "client_id": 1}, context) is None
        assert len(reason) > 40
    with pytest.raises(ValueError, match="no FHIR mapping"):
        mapping.map_record("audit_events", {"id": 1, "client_id": 1}, context)


def test_rows_as_a_backup_holds_them_map_to_the_same_resources(demo_practice: Practice) -> None:
    clients, programs = demo_practice
    contents = {r["id"]: r["content"] for c in clients for r in c.records["documents"]}
    for client in clients[:15]:
        from_database = resources_of(client, programs)
        backup = LoadedClient(
            as_backup_row(client.row),
            {kind: [as_backup_row(r) for r in rows] for kind, rows in client.records.items()},
        )
        context = mapping.ClientContext(
            backup.row["status"],
            NOW,
            {i: as_backup_row(p) for i, p in programs.items()},
        )
        from_backup = list(
            mapping.client_resources(
                backup.row, backup.records, context, lambda row: contents[row["id"]]
            )
        )
        assert from_backup == from_database


def test_deactivated_clients_are_inactive_patients_whose_programs_are_on_hold(
    demo_practice: Practice,
) -> None:
    clients, programs = demo_practice
    seen: Counter[tuple[str, str]] = Counter()
    for client in clients:
        resources = resources_of(client, programs)
        patient = resources[0]
        assert patient["active"] is (client.row["status"] == Status.ACTIVE.value)
        plans = [r for r in resources if r["resourceType"] == "CarePlan"]
        assert len(plans) == len(client.records["enrolments"])
        for plan, enrolment in zip(plans, client.records["enrolments"], strict=True):
            if enrolment["completed_at"] is not None:
                assert plan["status"] == "completed"
            elif client.row["status"] == Status.DEACTIVATED.value:
                assert plan["status"] == "on-hold"
                assert plan["activity"][0]["detail"]["status"] == "on-hold"
            else:
                assert plan["status"] == "active"
            # Progress is preserved whatever the state.
            progress = plan["activity"][0]["progress"]
            assert progress == [{"text": f"Progress: {enrolment['progress_percent']}%"}]
            seen[(client.row["status"], plan["status"])] += 1
    assert seen[("deactivated", "on-hold")] > 0
    assert seen[("active", "active")] > 0


def test_demo_appointments_are_booked_or_fulfilled_and_telehealth_is_marked(
    demo_practice: Practice,
) -> None:
    clients, programs = demo_practice
    seen: Counter[tuple[str, str]] = Counter()
    for client in clients:
        appointments = [
            r for r in resources_of(client, programs) if r["resourceType"] == "Appointment"
        ]
        for resource, row in zip(appointments, client.records["appointments"], strict=True):
            coding = resource["appointmentType"]["coding"][0]
            assert coding["system"] == "http://terminology.hl7.org/CodeSystem/v3-ActCode"
            assert coding["code"] == ("VR" if row["telehealth"] else "AMB")
            ends = clock.as_utc(row["starts_at"]).timestamp() + 60 * row["duration_minutes"]
            assert resource["status"] == ("fulfilled" if ends <= NOW.timestamp() else "booked")
            seen[(coding["code"], resource["status"])] += 1
    assert set(seen) == {
        ("VR", "booked"),
        ("VR", "fulfilled"),
        ("AMB", "booked"),
        ("AMB", "fulfilled"),
    }


# --- one record kind at a time ----------------------------------------------------------


CLIENT = {
    "id": 7,
    "email": "ana.silva7@example.org",
    "first_name": "Ana",
    "last_name": "Silva",
    "phone": "+1 555 0107",
    "status": "active",
}


@pytest.mark.parametrize(
    ("status", "active"), [("active", True), ("deactivated", False), ("deleted", False)]
)
def test_patient_carries_identifier_name_telecom_and_active(status: str, active: bool) -> None:
    resource = mapping.patient({**CLIENT, "status": status})
    validate(resource)
    assert resource == {
        "resourceType": "Patient",
        "id": "client-7",
        "identifier": [{"system": CLIENT_ID_SYSTEM, "value": "7"}],
        "active": active,
        "name": [{"family": "Silva", "given": ["Ana"]}],
        "telecom": [
            {"system": "email", "value": "ana.silva7@example.org"},
            {"system": "phone", "value": "+1 555 0107"},
        ],
    }


def test_patient_leaves_out_what_the_client_does_not_have() -> None:
    resource = mapping.patient({**CLIENT, "phone": None, "first_name": ""})
    validate(resource)
    assert resource["name"] == [{"family": "Silva"}]
    assert resource["telecom"] == [{"system": "email", "value": "ana.silva7@example.org"}]
    assert spec_problems(resource) == []


ENROLMENT = {
    "id": 3,
    "client_id": 7,
    "program_id": 2,
    "enrolled_at": datetime(2026, 9, 1, tzinfo=UTC),
    "progress_percent": 40,
    "completed_at": None,
}
PROGRAM = {"id": 2, "name": "Gut Health 12-week", "kind": "program"}


def test_a_paused_clients_enrolment_is_an_on_hold_care_plan_with_its_progress() -> None:
    resource = mapping.care_plan(ENROLMENT, PROGRAM, "deactivated")
    validate(resource)
    assert spec_problems(resource) == []
    assert resource["status"] == "on-hold"
    assert resource["intent"] == "plan"
    assert resource["title"] == "Gut Health 12-week"
    assert resource["subject"] == {"reference": "Patient/client-7"}
    assert resource["period"] == {"start": "2026-09-01T00:00:00Z"}
    assert resource["activity"] == [
        {
            "progress": [{"text": "Progress: 40%"}],
            "detail": {
                "code": {"text": "Gut Health 12-week"},
                "status": "on-hold",
                "description": "Program: Gut Health 12-week",
                "statusReason": {
                    "text": "Paused while the client's portal access is deactivated; "
                    "progress is kept."
                },
            },
        }
    ]


def test_care_plan_states_follow_the_enrolment_and_the_client() -> None:
    running = mapping.care_plan(ENROLMENT, PROGRAM, "active")
    assert (running["status"], running["activity"][0]["detail"]["status"]) == (
        "active",
        "in-progress",
    )
    assert "statusReason" not in running["activity"][0]["detail"]
    fresh = mapping.care_plan({**ENROLMENT, "progress_percent": 0}, PROGRAM, "active")
    assert fresh["activity"][0]["detail"]["status"] == "not-started"
    done = {**ENROLMENT, "progress_percent": 100, "completed_at": "2026-11-20T10:00:00Z"}
    for status in ("active", "deactivated"):
        completed = mapping.care_plan(done, PROGRAM, status)
        validate(completed)
        assert completed["status"] == "completed"
        assert completed["period"] == {
            "start": "2026-09-01T00:00:00Z",
            "end": "2026-11-20T10:00:00Z",
        }
    package = mapping.care_plan(ENROLMENT, None, "active")
    validate(package)
    assert package["title"] == "Program 2"


APPOINTMENT = {
    "id": 12,
    "client_id": 7,
    "starts_at": datetime(2026, 11, 26, 8, 10, tzinfo=UTC),
    "duration_minutes": 50,
    "telehealth": True,
    "title": "Follow-up",
}


def test_telehealth_appointment_is_virtual_and_booked_until_it_ends() -> None:
    resource = mapping.appointment(APPOINTMENT, datetime(2026, 11, 26, 8, 59, 59, tzinfo=UTC))
    validate(resource)
    assert spec_problems(resource) == []
    assert resource["status"] == "booked"  # 08:10 + 50 minutes: ends at 09:00, not yet
    assert resource["appointmentType"] == {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "VR",
                "display": "virtual",
            }
        ],
        "text": "telehealth",
    }
    assert (resource["start"], resource["end"], resource["minutesDuration"]) == (
        "2026-11-26T08:10:00Z",
        "2026-11-26T09:00:00Z",
        50,
    )
    assert resource["description"] == "Follow-up"
    assert resource["participant"] == [
        {"actor": {"reference": "Patient/client-7"}, "required": "required", "status": "accepted"}
    ]
    ended = mapping.appointment(APPOINTMENT, NOW)
    assert ended["status"] == "fulfilled"
    assert {**ended, "status": "booked"} == resource


def test_in_person_appointment_is_ambulatory() -> None:
    resource = mapping.appointment({**APPOINTMENT, "telehealth": False, "title": ""}, NOW)
    validate(resource)
    assert resource["appointmentType"]["coding"][0]["code"] == "AMB"
    assert resource["appointmentType"]["text"] == "in person"
    assert "description" not in resource


@pytest.mark.parametrize("sender", ["client", "practice"])
def test_message_is_a_communication_between_client_and_practice(sender: str) -> None:
    row = {"id": 4, "client_id": 7, "sent_at": "2026-11-02T10:30:00Z", "sender": sender,
           "body": "Can we move Thursday's session?\nThanks"}  # fmt: skip
    resource = mapping.communication(row)
    validate(resource)
    assert spec_problems(resource) == []
    client = {"reference": "Patient/client-7"}
    practice = {"type": "Organization", "display": "the practice"}
    assert (resource["sender"], resource["recipient"]) == (
        (client, [practice]) if sender == "client" else (practice, [client])
    )
    assert resource["subject"] == client
    assert resource["status"] == "completed"
    assert resource["sent"] == "2026-11-02T10:30:00Z"
    assert resource["payload"] == [{"contentString": "Can we move Thursday's session?\nThanks"}]


def test_a_message_longer_than_a_fhir_string_travels_as_an_attachment() -> None:
    body = "x" * (mapping.MAX_STRING + 1)
    resource = mapping.communication(
        {"id": 4, "client_id": 7, "sent_at": NOW, "sender": "client", "body": body}
    )
    validate(resource)
    attachment = resource["payload"][0]["contentAttachment"]
    assert base64.b64decode(attachment["data"]) == body.encode()
    assert spec_problems(resource) == []


FORM = {
    "id": 9,
    "client_id": 7,
    "form_name": "Intake questionnaire",
    "sent_at": "2026-10-01T09:00:00Z",
    "completed_at": "2026-10-03T18:00:00Z",
    "response_json": json.dumps(
        {
            "sleep_hours": 7,
            "caffeine": True,
            "weight_kg": 61.5,
            "goals": ["sleep", "energy"],
            "notes": "",
            "allergies": None,
            "history": {"surgery": False, "medications": {"current": "none"}},
            "steps": 10**12,
        }
    ),
}


def test_a_completed_form_is_a_questionnaire_response_with_its_answers() -> None:
    resource = mapping.questionnaire_response(FORM)
    validate(resource)
    assert spec_problems(resource) == []
    assert resource["status"] == "completed"
    assert resource["authored"] == "2026-10-03T18:00:00Z"
    assert resource["source"] == resource["subject"] == {"reference": "Patient/client-7"}
    assert resource["identifier"] == {"system": "urn:pbclients:form-request-id", "value": "9"}
    assert resource["_questionnaire"] == {
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/display",
                "valueString": "Intake questionnaire",
            }
        ]
    }
    assert resource["item"] == [
        {"linkId": "sleep_hours", "text": "sleep_hours", "answer": [{"valueInteger": 7}]},
        {"linkId": "caffeine", "text": "caffeine", "answer": [{"valueBoolean": True}]},
        {"linkId": "weight_kg", "text": "weight_kg", "answer": [{"valueDecimal": 61.5}]},
        {
            "linkId": "goals",
            "text": "goals",
            "answer": [{"valueString": "sleep"}, {"valueString": "energy"}],
        },
        {"linkId": "notes", "text": "notes"},
        {"linkId": "allergies", "text": "allergies"},
        {
            "linkId": "history",
            "text": "history",
            "item": [
                {
                    "linkId": "history/surgery",
                    "text": "surgery",
                    "answer": [{"valueBoolean": False}],
                },
                {
                    "linkId": "history/medications",
                    "text": "medications",
                    "item": [
                        {
                            "linkId": "history/medications/current",
                            "text": "current",
                            "answer": [{"valueString": "none"}],
                        }
                    ],
                },
            ],
        },
        # Past FHIR's 32-bit integer: kept exactly, as text.
        {"linkId": "steps", "text": "steps", "answer": [{"valueString": "1000000000000"}]},
    ]


@pytest.mark.parametrize(
    "response", ["not json {", "[1, 2]", "42", '"yes"', "[" * 5000 + "]" * 5000]
)
def test_a_form_response_that_is_not_a_json_object_is_kept_as_one_text_item(
    response: str,
) -> None:
    resource = mapping.questionnaire_response({**FORM, "response_json": response})
    validate(resource)
    assert resource["item"] == [
        {"linkId": "response", "text": "Response", "answer": [{"valueString": response}]}
    ]


def test_a_form_not_yet_answered_is_in_progress_with_no_items() -> None:
    resource = mapping.questionnaire_response({**FORM, "completed_at": None, "response_json": None})
    validate(resource)
    assert spec_problems(resource) == []
    assert (resource["status"], resource["authored"]) == ("in-progress", "2026-10-01T09:00:00Z")
    assert "item" not in resource and "source" not in resource


def test_a_deeply_nested_form_answer_stops_nesting_at_the_cap() -> None:
    nested: dict[str, Any] = {"leaf": 1}
    for _ in range(mapping.MAX_FORM_DEPTH + 5):
        nested = {"level": nested}
    resource = mapping.questionnaire_response({**FORM, "response_json": json.dumps(nested)})
    validate(resource)
    depth, item = 1, resource["item"][0]
    while "item" in item:
        depth, item = depth + 1, item["item"][0]
    assert depth == mapping.MAX_FORM_DEPTH
    assert item["answer"][0]["valueString"].startswith('{"level": {"level"')


@pytest.mark.parametrize(
    ("stored", "sent"),
    [
        ("application/pdf", "application/pdf"),
        ("text/plain;  charset=utf-8", "text/plain; charset=utf-8"),
        ("", "application/octet-stream"),
        ("not a type", "application/octet-stream"),
    ],
)
def test_a_document_is_a_document_reference_with_the_file_inline(stored: str, sent: str) -> None:
    content = b"%PDF-1.7 demo \x00\xff"
    row = {"id": 5, "client_id": 7, "filename": "lab results.pdf", "content_type": stored,
           "uploaded_at": datetime(2026, 11, 1, 12, 0, tzinfo=UTC)}  # fmt: skip
    resource = mapping.document_reference(row, memoryview(content))
    validate(resource)
    assert spec_problems(resource) == []
    assert resource["status"] == "current"
    assert resource["subject"] == {"reference": "Patient/client-7"}
    assert resource["date"] == "2026-11-01T12:00:00Z"
    assert resource["content"] == [
        {
            "attachment": {
                "contentType": sent,
                "data": base64.b64encode(content).decode(),
                "size": len(content),
                "hash": base64.b64encode(hashlib.sha1(content).digest()).decode(),
                "title": "lab results.pdf",
                "creation": "2026-11-01T12:00:00Z",
            }
        }
    ]


def test_a_document_kept_beside_its_resource_is_referred_to_by_url() -> None:
    """In a backup the file is its own member: the attachment says where, with its size and
    SHA-1, instead of carrying the bytes a second time."""
    content = b"%PDF-1.7 demo \x00\xff"
    row = {"id": 5, "client_id": 7, "filename": "lab results.pdf",
           "content_type": "application/pdf",
           "uploaded_at": datetime(2026, 11, 1, 12, 0, tzinfo=UTC)}  # fmt: skip
    kept = mapping.FileReference(
        "../documents/5-lab_results.pdf", len(content), hashlib.sha1(content).digest()
    )
    resource = mapping.document_reference(row, kept)
    validate(resource)
    assert spec_problems(resource, {"../documents/5-lab_results.pdf": content}.__getitem__) == []
    assert spec_problems(resource, {"../documents/5-lab_results.pdf": b"other"}.__getitem__) == [
        "attachment size does not match its data",
        "attachment hash is not the SHA-1 of its data",
    ]
    assert spec_problems(resource) == [
        "attachment by url '../documents/5-lab_results.pdf' cannot be checked"
    ]
    assert resource["content"] == [
        {
            "attachment": {
                "contentType": "application/pdf",
                "url": "../documents/5-lab_results.pdf",
                "size": len(content),
                "hash": base64.b64encode(hashlib.sha1(content).digest()).decode(),
                "title": "lab results.pdf",
                "creation": "2026-11-01T12:00:00Z",
            }
        }
    ]
    inline = mapping.document_reference(row, content)
    del inline["content"][0]["attachment"]["data"], resource["content"][0]["attachment"]["url"]
    assert resource == inline


def test_an_empty_document_has_no_data_but_its_size_and_hash() -> None:
    row = {"id": 5, "client_id": 7, "filename": "", "content_type": "text/plain",
           "uploaded_at": NOW}  # fmt: skip
    resource = mapping.document_reference(row, b"")
    validate(resource)
    assert spec_problems(resource) == []
    assert resource["content"][0]["attachment"] == {
        "contentType": "text/plain",
        "size": 0,
        "hash": base64.b64encode(hashlib.sha1(b"").digest()).decode(),
        "creation": "2026-11-26T09:00:00Z",
    }
    with pytest.raises(ValueError, match="needs its content"):
        mapping.map_record("documents", row, mapping.ClientContext("active", NOW, {}))


# The display LOINC gives each note type.
LOINC_DISPLAY = {
    "11506-3": "Progress note",
    "18776-5": "Plan of care note",
    "51855-5": "Patient Note",
}


@pytest.mark.parametrize(
    ("kind", "row", "loinc", "title", "author"),
    [
        ("session_notes", {"written_at": NOW, "shared_with_client": False,
                           "body": "Discussed sleep hygiene."}, "11506-3", "Session note", False),
        ("protocols", {"assigned_at": NOW, "title": "Protocol 1",
                       "body": "Magnesium 200mg at night."}, "18776-5", "Protocol 1", False),
        ("journal_entries", {"written_at": NOW, "body": "Slept better."},
         "51855-5", "Journal entry", True),
    ],
)  # fmt: skip
def test_notes_protocols_and_journal_entries_are_typed_text_documents(
    kind: str, row: dict[str, Any], loinc: str, title: str, author: bool
) -> None:
    resource = mapping.map_record(
        kind, {"id": 3, "client_id": 7, **row}, mapping.ClientContext("active", NOW, {})
    )
    assert resource is not None
    validate(resource)
    assert spec_problems(resource) == []
    assert resource["resourceType"] == "DocumentReference"
    assert resource["type"]["coding"] == [
        {"system": "http://loinc.org", "code": loinc, "display": LOINC_DISPLAY[loinc]}
    ]
    attachment = resource["content"][0]["attachment"]
    assert attachment["contentType"] == "text/plain; charset=utf-8"
    assert base64.b64decode(attachment["data"]).decode() == row["body"]
    assert attachment["title"] == title
    assert ("author" in resource) is author
    assert resource["date"] == "2026-11-26T09:00:00Z"


def test_a_session_note_says_whether_the_client_sees_it() -> None:
    note = {"id": 3, "client_id": 7, "written_at": NOW, "body": "x"}
    shared = mapping.note_reference("session_notes", {**note, "shared_with_client": True})
    private = mapping.note_reference("session_notes", {**note, "shared_with_client": False})
    assert shared["description"] == "Session note, shared with the client"
    assert private["description"] == (
        "Session note, for the practice only (not shared with the client)"
    )


# --- Bulk Data output ----------------------------------------------------------------


def test_the_output_manifest_lists_files_with_counts_patient_first() -> None:
    manifest = bulk.manifest(
        datetime(2026, 11, 26, 9, 0, tzinfo=UTC),
        "pbclients export --format fhir --all",
        {"DocumentReference": 12, "Patient": 3, "Communication": 0, "Appointment": 5},
    )
    assert manifest == {
        "transactionTime": "2026-11-26T09:00:00Z",
        "request": "pbclients export --format fhir --all",
        "requiresAccessToken": False,
        "output": [
            {"type": "Patient", "url": "Patient.ndjson", "count": 3},
            {"type": "Appointment", "url": "Appointment.ndjson", "count": 5},
            {"type": "DocumentReference", "url": "DocumentReference.ndjson", "count": 12},
        ],
        "error": [],
    }


def test_an_ndjson_line_is_one_line_of_utf8_that_reads_back_the_same() -> None:
    resource = mapping.communication(
        {
            "id": 1,
            "client_id": 7,
            "sent_at": NOW,
            "sender": "client",
            "body": "line\nbreak, sep\u2028arator, Zoë, lone \udc80 surrogate",
        }
    )
    line = bulk.ndjson_line(resource)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    text = line.decode("utf-8")  # strict: valid UTF-8
    assert "Zoë" in text
    assert json.loads(text) == resource
    assert bulk.file_name("Patient") == "Patient.ndjson"


# --- intake: Patient NDJSON and Bundles -> clients ------------------------------------


def test_patients_exported_from_the_demo_come_back_as_the_same_clients(
    demo_practice: Practice,
) -> None:
    clients, _ = demo_practice
    data = b"".join(bulk.ndjson_line(mapping.patient(c.row)) for c in clients)

    read = read_patients(data, source="Patient.ndjson")

    assert read.skipped == {}
    assert [
        (p.email, p.first_name, p.last_name, p.phone, p.active, p.resource_id)
        for p in read.patients
    ] == [
        (
            c.row["email"],
            c.row["first_name"],
            c.row["last_name"],
            c.row["phone"],
            c.row["status"] == "active",
            f"client-{c.row['id']}",
        )
        for c in clients
    ]
    assert [p.where for p in read.patients[:2]] == [
        "line 1 of Patient.ndjson",
        "line 2 of Patient.ndjson",
    ]
    assert any(not p.active for p in read.patients)


def _patient(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "abc",
        "name": [{"family": "Okafor", "given": ["Ben"]}],
        "telecom": [{"system": "email", "value": "ben@example.org"}],
        **extra,
    }


def test_a_bundle_gives_its_patients_and_leaves_other_resources_out() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": _patient(), "search": {"mode": "match"}},
            {
                "resource": {"resourceType": "Organization", "id": "o"},
                "search": {"mode": "include"},
            },
            {"resource": {"resourceType": "OperationOutcome"}, "search": {"mode": "outcome"}},
            {
                "resource": _patient(
                    id="def",
                    active=False,
                    telecom=[{"system": "email", "value": "chloe@example.org"}],
                    name=[{"family": "Nguyen", "given": ["Chloe", "Mai"]}],
                )
            },
        ],
    }
    read = read_patients(json.dumps(bundle, indent=2).encode(), source="search.json")
    assert read.patients == [
        FhirPatient(
            "ben@example.org", "Ben", "Okafor", None, True, "entry 1 of search.json", "abc"
        ),
        FhirPatient(
            "chloe@example.org", "Chloe Mai", "Nguyen", None, False, "entry 4 of search.json", "def"
        ),
    ]
    assert read.skipped == {"Organization": 1, "OperationOutcome": 1}


@pytest.mark.parametrize("kind", ["collection", "transaction", "batch"])
def test_collection_and_transaction_bundles_are_read(kind: str) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {"resource": _patient(), "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation", "status": "final"}},
        ],
    }
    read = read_patients(json.dumps(bundle).encode(), source="b.json")
    assert [p.email for p in read.patients] == ["ben@example.org"]
    assert read.skipped == {"Observation": 1}


def test_a_history_bundle_is_refused() -> None:
    bundle = {"resourceType": "Bundle", "type": "history", "entry": []}
    with pytest.raises(BadInput) as caught:
        read_patients(json.dumps(bundle).encode(), source="h.json")
    assert str(caught.value) == (
        "h.json is a Bundle of type 'history', not a list of Patients; give a Bundle of type "
        "batch, collection, searchset, transaction, or Patient NDJSON. Nothing was changed."
    )


def test_a_patient_without_an_email_is_reported_by_its_line() -> None:
    data = (
        json.dumps(_patient()) + "\n\n"
        + json.dumps(_patient(telecom=[{"system": "phone", "value": "+1 555 0100"}])) + "\n"
    ).encode()  # fmt: skip
    with pytest.raises(BadInput) as caught:
        read_patients(data, source="in.ndjson")
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    assert ExitCode.BAD_INPUT.value == 3
    assert str(caught.value) == (
        'Line 3 of in.ndjson has no e-mail address (a telecom with system "email"), which '
        "every client needs; add one, or leave that Patient out. Nothing was changed."
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"resourceType": "Patient", ', "Line 2 of p.ndjson is not JSON ("),
        ('{"resourceType": "Observation"}', "Line 2 of p.ndjson is a 'Observation' resource, "
                                            "not a Patient; give Patient resources."),
        ("[1]", "Line 2 of p.ndjson is not a JSON object; give one FHIR resource."),
        (json.dumps(_patient(name=[{"given": ["Ben"]}])),
         "Line 2 of p.ndjson has no family name (name.family); add the client's last name."),
        (json.dumps(_patient(name=[{"family": "Okafor"}])),
         "Line 2 of p.ndjson has no given name (name.given); add the client's first name."),
        (json.dumps(_patient(name=[])), "Line 2 of p.ndjson has no name; add its given and "),
        (json.dumps(_patient(active="no")),
         "Line 2 of p.ndjson has active 'no'; give true or false, or leave it out."),
        (json.dumps(_patient(telecom=[{"system": "email", "value": "ben at example"}])),
         "Line 2 of p.ndjson: e-mail 'ben at example' is not an e-mail address"),
        (json.dumps(_patient(name=[{"family": "Ok\u001b[2Jafor", "given": ["Ben"]}])),
         "Line 2 of p.ndjson: the family name has a control character (\\x1b)"),
        (json.dumps(_patient(telecom="ben@example.org")),
         "Line 2 of p.ndjson has a telecom that is not a list; fix the Patient."),
    ],
)  # fmt: skip
def test_a_bad_patient_line_stops_the_whole_file_naming_the_line(line: str, message: str) -> None:
    data = (json.dumps(_patient(id="first")) + "\n" + line + "\n").encode()
    with pytest.raises(BadInput) as caught:
        read_patients(data, source="p.ndjson")
    assert str(caught.value).startswith(message)
    assert str(caught.value).endswith("Nothing was changed.")


def test_the_preferred_name_email_and_phone_are_taken() -> None:
    patient = _patient(
        name=[
            {"use": "old", "family": "Maiden", "given": ["Old"]},
            {"use": "usual", "family": "Usual", "given": ["Nick"]},
            {"use": "official", "family": " Okafor ", "given": ["Ben", " Ade "]},
        ],
        telecom=[
            {"system": "email", "value": "old@example.org", "use": "old"},
            {"system": "phone", "value": "+1 555 0199", "rank": 2},
            {"system": "email", "value": "second@example.org", "rank": 2},
            {"system": "phone", "value": "+1 555 0100", "rank": 1},
            {"system": "email", "value": "mailto:first@example.org", "rank": 1},
        ],
    )
    parsed = parse_patient(patient)
    assert (parsed.email, parsed.first_name, parsed.last_name, parsed.phone, parsed.active) == (
        "first@example.org",
        "Ben Ade",
        "Okafor",
        "+1 555 0100",
        True,
    )
    from_text = parse_patient(_patient(name=[{"text": "Mary Ann Larsen"}]))
    assert (from_text.first_name, from_text.last_name) == ("Mary Ann", "Larsen")


def test_one_pretty_printed_patient_and_an_empty_file_are_read() -> None:
    one = read_patients(json.dumps(_patient(), indent=2).encode(), source="ben.json")
    assert [(p.email, p.where) for p in one.patients] == [("ben@example.org", "ben.json")]
    assert read_patients(b"\n \n", source="empty.ndjson").patients == []
    bom = read_patients(b"\xef\xbb\xbf" + json.dumps(_patient()).encode(), source="x.ndjson")
    assert bom.patients[0].where == "line 1 of x.ndjson"


def test_a_file_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(BadInput) as caught:
        read_patients(b'{"resourceType": "Patient", "id": "\xff"}', source="latin.ndjson")
    assert str(caught.value) == (
        "latin.ndjson is not UTF-8 (byte 36), which FHIR JSON always is; save it as UTF-8 and "
        "try again. Nothing was changed."
    )


# --- start-up stays light ------------------------------------------------------------


def test_neither_the_cli_nor_the_fhir_modules_import_a_fhir_library() -> None:
    code = (
        "import sys\n"
        "import pbclients.cli.app, pbclients.fhir.mapping, pbclients.fhir.bulk, "
        "pbclients.fhir.intake\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('fhir', 'fhir_core', 'pydantic', 'sqlalchemy', 'sqlmodel')))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout == "[]\n"
