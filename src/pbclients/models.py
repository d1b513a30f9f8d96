"""The practice database: clients, the records kept about them, audit, settings.

Times are stored as naive UTC and handed back timezone-aware, the same on
SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, Index, LargeBinary, Text, TypeDecorator, UniqueConstraint
from sqlalchemy import text as sql_text
from sqlmodel import Field, SQLModel

from pbclients.policy import Status
from pbclients.tables import RECORD_TABLES


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _when(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime, nullable=nullable, index=index))


def _client_fk() -> Any:
    return Field(foreign_key="client.id", index=True)


class Client(SQLModel, table=True):
    __table_args__ = (
        # An e-mail names one client the practice can see; a deleted client pending
        # purge may share it with a newer client, which is why restore checks it.
        Index(
            "ix_client_email_key_live",
            "email_key",
            unique=True,
            sqlite_where=sql_text("status != 'deleted'"),
            postgresql_where=sql_text("status != 'deleted'"),
        ),
        Index("ix_client_email_key", "email_key"),
        Index("ix_client_status_purge_after", "status", "purge_after"),
        Index("ix_client_status_deactivated_at", "status", "deactivated_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    email: str
    email_key: str
    first_name: str
    last_name: str
    phone: str | None = None
    status: str = Field(default=Status.ACTIVE.value)
    # Kept untouched by deactivation so reactivation needs no password reset.
    portal_password_hash: str | None = None
    created_at: datetime = _when()
    deactivated_at: datetime | None = _when(nullable=True)
    deleted_at: datetime | None = _when(nullable=True)
    purge_after: datetime | None = _when(nullable=True)


class Program(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    kind: str = "program"  # "program" or "package"


class Enrolment(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("client_id", "program_id"),
        # (client_id, time) indexes let the inactivity query probe each record table by index.
        Index(
            "ix_enrolment_client_id_enrolled_at_completed_at",
            "client_id",
            "enrolled_at",
            "completed_at",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = _client_fk()
    program_id: int = Field(foreign_key="program.id", index=True)
    enrolled_at: datetime = _when()
    progress_percent: int = 0
    completed_at: datetime | None = _when(nullable=True)


class Appointment(SQLModel, table=True):
    __table_args__ = (Index("ix_appointment_client_id_starts_at", "client_id", "starts_at"),)

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = _client_fk()
    starts_at: datetime = _when(index=True)
    duration_minutes: int = 50
    telehealth: bool = False
    title: str = "Session"


class JournalEntry(SQLModel, table=True):
    __tablename__ = "journal_entry"
    __table_args__ = (Index("ix_journal_entry_client_id_written_at", "client_id", "written_at"),)

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = _client_fk()
    written_at: datetime = _when()
    body: str = Field(sa_type=Text)


class Protocol(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    client_id: int = _client_fk()
    assigned_at: datetime = _when()
    title: str
    body: str = Field(sa_type=Text)


class SessionNote(SQLModel, table=True):
    __tablename__ = "session_note"

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = _client_fk()
    written_at: datetime = _when()
    shared_with_client: bool = False
    body: str = Field(sa_type=Text)


class Message(SQLModel, table=True):
    __table_args__ = (Index("ix_message_client_id_sent_at", "client_id", "sent_at"),)

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = _client_fk()
    sent_at: datetime = _when()
    sender: str  # "client" or "practice"
    body: str = Field(sa_type=Text)


class FormRequest(SQLModel, table=True):
    __tablename__ = "form_request"
    __table_args__ = (Index("ix_form_request_client_id_completed_at", "client_id", "completed_at"),)

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = _client_fk()
    form_name: str
    sent_at: datetime = _when()
    completed_at: datetime | None = _when(nullable=True)
    response_json: str | None = Field(default=None, sa_type=Text)


class Document(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    client_id: int = _client_fk()
    filename: str
    content_type: str
    uploaded_at: datetime = _when()
    content: bytes = Field(sa_type=LargeBinary)


class PaymentMethod(SQLModel, table=True):
    __tablename__ = "payment_method"

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = _client_fk()
    brand: str
    last4: str
    expires: str  # MM/YY, as printed on the card


class PaymentPlan(SQLModel, table=True):
    __tablename__ = "payment_plan"

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = _client_fk()
    payment_method_id: int | None = Field(default=None, foreign_key="payment_method.id", index=True)
    description: str
    amount_cents: int
    interval: str = "monthly"
    next_charge_at: datetime | None = _when(nullable=True)
    active: bool = True


class Notification(SQLModel, table=True):
    """The portal's outbox of automated e-mails; deactivation must never add to it."""

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = _client_fk()
    kind: str
    created_at: datetime = _when()
    sent_at: datetime | None = _when(nullable=True)


class AuditEvent(SQLModel, table=True):
    """Append-only, hash-chained. Holds client IDs only: never a name or an e-mail."""

    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _when(index=True)
    actor: str
    action: str = Field(index=True)
    client_id: int | None = Field(default=None, index=True)
    before: str | None = None
    after: str | None = None
    batch_id: str = Field(index=True)
    reason: str | None = None
    detail: str | None = Field(default=None, sa_type=Text)  # JSON: backup path and sha256
    # SHA-256 of `reason`, which is what the chain covers: purge erases the reason of its
    # client's events (the text may name them) and keeps this, so the trail still verifies.
    reason_sha256: str | None = None
    prev_hash: str
    hash: str


class Setting(SQLModel, table=True):
    key: str = Field(primary_key=True)
    value: str


class UndoRecord(SQLModel, table=True):
    """What a batch replaced (an edit's old values), for `undo` to put back.

    Kept outside the audit trail because it holds personal data; removed when its
    client is purged.
    """

    __tablename__ = "undo_record"

    id: int | None = Field(default=None, primary_key=True)
    batch_id: str = Field(index=True)
    client_id: int = Field(index=True)
    data: str = Field(sa_type=Text)  # JSON: {"before": {...}, "after": {...}}


class Schedule(SQLModel, table=True):
    """A change decided now and carried out by `run-due` when it comes due.

    Holds client IDs only, like the audit trail. A schedule stays as a record once it
    is carried out (`done`, with its batch) or cancelled.
    """

    __table_args__ = (Index("ix_schedule_state_due_at", "state", "due_at"),)

    id: int | None = Field(default=None, primary_key=True)
    action: str  # deactivate, activate or delete
    client_ids: str = Field(sa_type=Text)  # JSON list of ints
    due_at: datetime = _when()
    created_at: datetime = _when()
    actor: str
    reason: str | None = None
    # Where a scheduled deletion writes its backups (absolute, fixed when scheduled).
    backup_dir: str | None = None
    state: str = "pending"  # pending, done or cancelled
    batch_id: str | None = None
    finished_at: datetime | None = _when(nullable=True)


class LegalHold(SQLModel, table=True):
    """A client under legal hold: never deleted, purged or touched by an automatic rule.

    One row per held client, removed on release: the row is the hold in force, and the
    audit trail (hold and release events) is its history. `until` is the moment the
    hold ends by itself (NULL: until released); a row whose `until` has passed holds
    nothing, and purge removes it with its client. The reason is free text that may
    name the client, which is why it lives here and goes with the client.
    """

    __tablename__ = "legal_hold"

    client_id: int = Field(foreign_key="client.id", primary_key=True)
    reason: str = Field(sa_type=Text)
    held_at: datetime = _when()
    until: datetime | None = _when(nullable=True)
    actor: str


# Every kind of record a client has, in restore order (pbclients.tables names them).
_RECORD_CLASSES: tuple[type[SQLModel], ...] = (
    Enrolment, Appointment, JournalEntry, Protocol, SessionNote, Message, FormRequest,
    Document, PaymentMethod, PaymentPlan, Notification,
)  # fmt: skip
_BY_TABLE = {str(model.__tablename__): model for model in _RECORD_CLASSES}
RECORD_MODELS: dict[str, type[SQLModel]] = {
    kind: _BY_TABLE[table] for kind, table in RECORD_TABLES.items()
}
