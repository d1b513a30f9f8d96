"""A realistic demo practice, so an admin can try every command on made-up people."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, inspect, text
from sqlmodel import SQLModel, func, select

from pbclients import audit, clock, settings
from pbclients.db import make_engine, reading, writing
from pbclients.errors import BadInput
from pbclients.models import (
    Appointment,
    Client,
    Document,
    Enrolment,
    FormRequest,
    JournalEntry,
    Message,
    PaymentMethod,
    PaymentPlan,
    Program,
    Protocol,
    SessionNote,
)
from pbclients.operation import Action
from pbclients.paths import is_url, shown
from pbclients.policy import Status
from pbclients.schema import Kind, init_schema, inspect_target, not_a_practice

FIRST = [
    "Ana",
    "Ben",
    "Chloe",
    "Dev",
    "Elif",
    "Farah",
    "Gus",
    "Hana",
    "Ivo",
    "Jade",
    "Kofi",
    "Lena",
    "Mateo",
    "Nia",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sami",
    "Tess",
    "Uma",
    "Vik",
    "Wren",
    "Yara",
    "Zoe",
]
LAST = [
    "Silva",
    "Okafor",
    "Nguyen",
    "Schmidt",
    "Haddad",
    "Kowalski",
    "Rossi",
    "Tanaka",
    "Murphy",
    "Costa",
    "Jensen",
    "Alvarez",
    "Cohen",
    "Singh",
    "Dubois",
    "Larsen",
    "Moreau",
    "Ibrahim",
    "Park",
    "Walsh",
]
PROGRAMS = [
    ("Spring Reset", "program"),
    ("Gut Health 12-week", "program"),
    ("Sleep Foundations", "program"),
    ("Stress Resilience", "program"),
    ("Nutrition Coaching x6", "package"),
    ("Prenatal Wellness", "package"),
]
JOURNAL = [
    "Slept better this week.",
    "Energy dipped after lunch.",
    "Tried the new breakfast.",
    "Walked 30 minutes daily.",
]
NOTES = [
    "Reviewed food diary; adjust fibre.",
    "Discussed sleep hygiene.",
    "Progress on stress goals.",
    "Follow up on labs.",
]
MESSAGES = [
    "Can we move Thursday's session?",
    "Here is my food log.",
    "Thanks for the plan!",
    "Reminder: bring labs.",
]


@dataclass(frozen=True)
class DemoSummary:
    clients: int
    deactivated: int
    programs: int
    sample_email: str
    sample_program: str


def build(target: str, *, clients: int, seed: int, actor: str) -> DemoSummary:
    """(Re)build a demo practice at `target`; never over a database that is not a demo."""
    engine = _fresh_demo_engine(target)
    try:
        return _populate(engine, clients=clients, seed=seed, actor=actor)
    finally:
        engine.dispose()


def _populate(engine: Engine, *, clients: int, seed: int, actor: str) -> DemoSummary:
    init_schema(engine)
    rng = random.Random(seed)
    now = clock.now()
    with writing(engine) as session:
        session.execute(
            insert(Program),
            [{"id": i, "name": n, "kind": k} for i, (n, k) in enumerate(PROGRAMS, 1)],
        )
        client_rows: list[dict[str, Any]] = []
        records: dict[type[SQLModel], list[dict[str, Any]]] = {model: [] for model in RECORDED}
        deactivated = []
        for client_id in range(1, clients + 1):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            email = f"{first}.{last}{client_id}@example.org".lower()
            joined = now - timedelta(days=rng.randint(30, 700))
            paused = rng.random() < 0.15
            client_rows.append(
                {
                    "id": client_id,
                    "email": email,
                    "email_key": email,
                    "first_name": first,
                    "last_name": last,
                    "phone": f"+1 555 01{client_id % 100:02d}",
                    "status": Status.DEACTIVATED.value if paused else Status.ACTIVE.value,
                    "portal_password_hash": f"demo${rng.getrandbits(64):016x}",
                    "created_at": joined,
                    "deactivated_at": now - timedelta(days=rng.randint(1, 200)) if paused else None,
                }
            )
            if paused:
                deactivated.append(client_id)
            _records_for(rng, client_id, joined, now, records)
        session.execute(insert(Client), client_rows)
        for model, rows in records.items():
            if rows:
                session.execute(insert(model), rows)
        settings.put(session, settings.DEMO, "1")
        settings.put(session, settings.PLAN_LIMIT, str(max(500, clients + clients // 4)))
        audit.append(
            session,
            [
                audit.NewEvent(Action.ADD, int(row["id"]), None, Status.ACTIVE.value)
                for row in client_rows
            ],
            batch_id=audit.new_batch_id(),
            actor=actor,
            reason="demo practice",
            at=now,
        )
        audit.append(
            session,
            [
                audit.NewEvent(
                    Action.DEACTIVATE, cid, Status.ACTIVE.value, Status.DEACTIVATED.value
                )
                for cid in deactivated
            ],
            batch_id=audit.new_batch_id(),
            actor=actor,
            reason="demo: paused clients",
            at=now,
        )
    sample_email = str(client_rows[0]["email"])
    return DemoSummary(clients, len(deactivated), len(PROGRAMS), sample_email, PROGRAMS[0][0])


RECORDED: tuple[type[SQLModel], ...] = (
    Enrolment, Appointment, JournalEntry, Protocol, SessionNote,
    Message, FormRequest, Document, PaymentMethod, PaymentPlan,
)  # fmt: skip


def _records_for(
    rng: random.Random,
    client_id: int,
    joined: datetime,
    now: datetime,
    records: dict[type[SQLModel], list[dict[str, Any]]],
) -> None:
    def when() -> datetime:
        return joined + timedelta(
            days=rng.randint(0, max(1, (now - joined).days)), hours=rng.randint(8, 18)
        )

    for program_id in rng.sample(range(1, len(PROGRAMS) + 1), rng.randint(1, 2)):
        progress = rng.randint(0, 100)
        records[Enrolment].append(
            {
                "client_id": client_id,
                "program_id": program_id,
                "enrolled_at": joined,
                "progress_percent": progress,
                "completed_at": now - timedelta(days=3) if progress == 100 else None,
            }
        )
    for _ in range(rng.randint(2, 5)):
        starts = now + timedelta(days=rng.randint(-60, 45), hours=rng.randint(8, 17))
        records[Appointment].append(
            {
                "client_id": client_id,
                "starts_at": starts.replace(minute=0, second=0),
                "duration_minutes": rng.choice([30, 50, 60]),
                "telehealth": rng.random() < 0.4,
                "title": rng.choice(
                    ["Initial consult", "Follow-up", "Check-in", "Program session"]
                ),
            }
        )
    for _ in range(rng.randint(1, 6)):
        records[JournalEntry].append(
            {"client_id": client_id, "written_at": when(), "body": rng.choice(JOURNAL)}
        )
    for n in range(rng.randint(1, 2)):
        records[Protocol].append(
            {
                "client_id": client_id,
                "assigned_at": when(),
                "title": f"Protocol {n + 1}",
                "body": "Magnesium 200mg at night; 10 minutes morning light; fibre 30g/day.",
            }
        )
    for _ in range(rng.randint(1, 4)):
        records[SessionNote].append(
            {
                "client_id": client_id,
                "written_at": when(),
                "shared_with_client": rng.random() < 0.5,
                "body": rng.choice(NOTES),
            }
        )
    for _ in range(rng.randint(2, 8)):
        records[Message].append(
            {
                "client_id": client_id,
                "sent_at": when(),
                "sender": rng.choice(["client", "practice"]),
                "body": rng.choice(MESSAGES),
            }
        )
    for form in rng.sample(
        ["Intake questionnaire", "Consent", "Symptom tracker"], rng.randint(1, 2)
    ):
        done = rng.random() < 0.7
        records[FormRequest].append(
            {
                "client_id": client_id,
                "form_name": form,
                "sent_at": joined,
                "completed_at": joined + timedelta(days=2) if done else None,
                "response_json": '{"answers": 12}' if done else None,
            }
        )
    for n in range(rng.randint(0, 2)):
        records[Document].append(
            {
                "client_id": client_id,
                "filename": f"lab-results-{n + 1}.txt",
                "content_type": "text/plain",
                "uploaded_at": when(),
                "content": f"Demo lab panel {client_id}-{n}: ferritin 45 ng/mL\n".encode(),
            }
        )
    if rng.random() < 0.3:
        method_id = len(records[PaymentMethod]) + 1
        records[PaymentMethod].append(
            {
                "id": method_id,
                "client_id": client_id,
                "brand": "visa",
                "last4": f"{rng.randint(0, 9999):04d}",
                "expires": "09/28",
            }
        )
        records[PaymentPlan].append(
            {
                "client_id": client_id,
                "payment_method_id": method_id,
                "description": "Monthly coaching",
                "amount_cents": 12000,
                "interval": "monthly",
                "next_charge_at": now + timedelta(days=rng.randint(1, 28)),
                "active": True,
            }
        )


def _fresh_demo_engine(target: str) -> Engine:
    """An empty database at `target`, after making sure we only ever replace a demo."""
    if not is_url(target) and Path(target).expanduser().exists():
        engine = make_engine(target)
        try:
            _refuse_real_practice(engine, target)
        finally:
            engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{Path(target).expanduser()}{suffix}").unlink(missing_ok=True)
        return make_engine(target, create=True)
    engine = make_engine(target, create=True)
    if is_url(target):
        try:
            _refuse_real_practice(engine, target)
        except BadInput:
            engine.dispose()
            raise
        SQLModel.metadata.drop_all(engine)
        # Without this, init_schema would take the empty database as migrated already.
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    return engine


def _refuse_real_practice(engine: Engine, target: str) -> None:
    # Another application's database (or a file that is not SQLite) is never replaced;
    # a SQLite file is looked at read-only, so a refused one stays byte-for-byte the same.
    found = inspect_target(target, engine)
    if found.kind is Kind.FOREIGN:
        raise BadInput(
            f"{not_a_practice(found, shown(target))}; nothing was changed. "
            "Give demo another --db path."
        )
    if not inspect(engine).has_table("client"):
        return
    with reading(engine) as session:
        has_clients = session.exec(select(func.count()).select_from(Client)).one() > 0
        if has_clients and not settings.is_demo(session):
            raise BadInput(
                f"{shown(target)} holds a real practice, not a demo; nothing was changed. "
                "Give demo another --db path."
            )
