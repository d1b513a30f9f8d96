"""One result per selected client, and the consequences to confirm (see pbclients.operation)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from json.encoder import encode_basestring
from typing import Any


class Outcome(StrEnum):
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    PLANNED = "planned"
    EXPORTED = "exported"
    SCHEDULED = "scheduled"


@dataclass(frozen=True)
class ChangeResult:
    reference: str
    client_id: int | None
    email: str | None
    before: str | None
    after: str | None
    outcome: Outcome
    backup: str | None = None
    sha256: str | None = None
    note: str | None = None

    def as_record(self, batch_id: str | None) -> dict[str, Any]:
        # Spelled out rather than dataclasses.asdict: that deep-copies every field and
        # costs seconds on a 100,000-client batch.
        return {
            "reference": self.reference,
            "id": self.client_id,
            "email": self.email,
            "before": self.before,
            "after": self.after,
            "outcome": self.outcome.value,
            "backup": self.backup,
            "sha256": self.sha256,
            "note": self.note,
            "batch": batch_id,
        }

    def as_json(self, batch_id: str | None) -> str:
        """`as_record` exactly as `json.JSONEncoder(ensure_ascii=False)` encodes it, at a
        third of the cost: a bulk command prints 100,000 of them."""
        return (
            f'{{"reference": {encode_basestring(self.reference)}, '
            f'"id": {"null" if self.client_id is None else int(self.client_id)}, '
            f'"email": {_json(self.email)}, "before": {_json(self.before)}, '
            f'"after": {_json(self.after)}, "outcome": {encode_basestring(self.outcome.value)}, '
            f'"backup": {_json(self.backup)}, "sha256": {_json(self.sha256)}, '
            f'"note": {_json(self.note)}, "batch": {_json(batch_id)}}}'
        )


def _json(text: str | None) -> str:
    return "null" if text is None else encode_basestring(text)


@dataclass(frozen=True)
class Consequences:
    """What the admin should know before pausing or resuming portal access."""

    clients: int
    upcoming_telehealth: int = 0
    clients_with_telehealth: int = 0
    active_enrolments: int = 0
    active_payment_plans: int = 0
