"""Activity indexes: (client_id, time) on every table that marks a client as active.

`pbclients.activity` finds a client's last activity (and the clients inactive since a
date) from the latest appointment, journal entry, message, form response and enrolment
change. With these indexes each of those lookups reads only the index: per client the
entries are in time order, so the latest one, or whether any is later than a date, is
one seek, and a whole table's per-client maxima are one ordered scan of its index.

Enrolment's index carries both of its times (enrolled_at, completed_at) so one index
answers for it. The single-column client_id indexes stay: the models declare them as
the foreign keys' indexes, and dropping them is a separate decision.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (index name, table, columns): the same names as the Index declarations in models.py.
INDEXES = (
    ("ix_appointment_client_id_starts_at", "appointment", ["client_id", "starts_at"]),
    ("ix_journal_entry_client_id_written_at", "journal_entry", ["client_id", "written_at"]),
    ("ix_message_client_id_sent_at", "message", ["client_id", "sent_at"]),
    ("ix_form_request_client_id_completed_at", "form_request", ["client_id", "completed_at"]),
    (
        "ix_enrolment_client_id_enrolled_at_completed_at",
        "enrolment",
        ["client_id", "enrolled_at", "completed_at"],
    ),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
