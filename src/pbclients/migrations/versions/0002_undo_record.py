"""Undo records: the values an edit replaced, kept outside the audit trail.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "undo_record",
        sa.Column("id", sa.Integer(), primary_key=True, nullable=False),
        sa.Column("batch_id", sa.String(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
    )
    op.create_index("ix_undo_record_batch_id", "undo_record", ["batch_id"])
    op.create_index("ix_undo_record_client_id", "undo_record", ["client_id"])


def downgrade() -> None:
    op.drop_index("ix_undo_record_client_id", table_name="undo_record")
    op.drop_index("ix_undo_record_batch_id", table_name="undo_record")
    op.drop_table("undo_record")
