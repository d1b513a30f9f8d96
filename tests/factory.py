"""Test data built through the domain API, so tests exercise the real code paths."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, insert

from pbclients.db import writing
from pbclients.models import (
    Appointment,
    Document,
    JournalEntry,
    Message,
    PaymentMethod,
    PaymentPlan,
    SessionNote,
)
from pbclients.operation import Change
from pbclients.roster import NewClient, add_clients

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class SmallPractice:
    emails: list[str]
    programs: list[str]


def build_small_practice(engine: Engine) -> SmallPractice:
    people = [
        NewClient("ana@example.org", "Ana", "Silva", "+1 555 0101", "Spring Reset"),
        NewClient("ben@example.org", "Ben", "Okafor", None, "Spring Reset"),
        NewClient("chloe@example.org", "Chloe", "Nguyen", None, "Sleep Foundations"),
        NewClient("dev@example.org", "Dev", "Schmidt", None, None),
        NewClient("elif@example.org", "Elif", "Haddad", None, "Sleep Foundations"),
    ]
    add_clients(engine, people, Change("setup", None, NOW - timedelta(days=90)))
    with writing(engine) as session:
        session.execute(
            insert(Appointment),
            [
                {
                    "client_id": 1,
                    "starts_at": NOW + timedelta(days=3),
                    "telehealth": True,
                    "title": "Follow-up",
                },
                {
                    "client_id": 1,
                    "starts_at": NOW - timedelta(days=10),
                    "telehealth": False,
                    "title": "Intake",
                },
                {
                    "client_id": 2,
                    "starts_at": NOW + timedelta(days=5),
                    "telehealth": False,
                    "title": "Check-in",
                },
            ],
        )
        session.execute(
            insert(JournalEntry),
            [{"client_id": 1, "written_at": NOW - timedelta(days=2), "body": "Slept well."}],
        )
        session.execute(
            insert(SessionNote),
            [{"client_id": 1, "written_at": NOW - timedelta(days=10), "body": "Intake done."}],
        )
        session.execute(
            insert(Message),
            [
                {
                    "client_id": 1,
                    "sent_at": NOW - timedelta(days=1),
                    "sender": "client",
                    "body": "Hi",
                }
            ],
        )
        session.execute(
            insert(Document),
            [
                {
                    "client_id": 1,
                    "filename": "labs.txt",
                    "content_type": "text/plain",
                    "uploaded_at": NOW - timedelta(days=5),
                    "content": b"ferritin 45",
                }
            ],
        )
        session.execute(
            insert(PaymentMethod),
            [{"id": 1, "client_id": 2, "brand": "visa", "last4": "4242", "expires": "09/28"}],
        )
        session.execute(
            insert(PaymentPlan),
            [
                {
                    "client_id": 2,
                    "payment_method_id": 1,
                    "description": "Monthly coaching",
                    "amount_cents": 12000,
                    "next_charge_at": NOW + timedelta(days=10),
                }
            ],
        )
    return SmallPractice([p.email for p in people], ["Spring Reset", "Sleep Foundations"])
