"""Legal hold: clients that must not be deleted, purged or touched by automatic rules.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "legal_hold",
        # The client's own id as the key: one hold in force per client. The foreign key
        # also makes the database itself refuse to purge a client whose hold row remains.
        sa.Column(
            "client_id", sa.Integer(), sa.ForeignKey("client.id"), primary_key=True, nullable=False
        ),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("held_at", sa.DateTime(), nullable=False),
        sa.Column("until", sa.DateTime(), nullable=True),
        sa.Column("actor", sa.String(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("legal_hold")
