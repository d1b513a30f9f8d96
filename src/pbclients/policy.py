"""What a client may do in each portal-access state: a pure table other code asks.

Deactivation is archiving: access pauses, nothing is lost. Forms sent by direct
e-mail link and charges on a saved payment method deliberately go on.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    ACTIVE = "active"
    DEACTIVATED = "deactivated"
    DELETED = "deleted"


class Capability(StrEnum):
    PORTAL_LOGIN = "portal_login"
    VIEW_CONTENT = "view_content"
    JOURNAL_AND_MESSAGES = "journal_and_messages"
    JOIN_TELEHEALTH = "join_telehealth"
    CONTINUE_PROGRAMS = "continue_programs"
    EMAIL_NOTIFICATIONS = "email_notifications"
    COMPLETE_FORMS = "complete_forms"
    BE_CHARGED = "be_charged"


DESCRIPTIONS: dict[Capability, str] = {
    Capability.PORTAL_LOGIN: "log in to the client portal",
    Capability.VIEW_CONTENT: "view recommendations, protocols, session notes, shared documents",
    Capability.JOURNAL_AND_MESSAGES: "post journal entries, send secure messages, get alerts",
    Capability.JOIN_TELEHEALTH: "join a telehealth session (appointments stay on the calendar)",
    Capability.CONTINUE_PROGRAMS: "continue a program or package (paused, progress preserved)",
    Capability.EMAIL_NOTIFICATIONS: "automated e-mails (session reminders, protocol/note alerts)",
    Capability.COMPLETE_FORMS: "receive and complete forms sent by direct e-mail link",
    Capability.BE_CHARGED: "be charged on a saved payment method (practice's discretion)",
}

_DEACTIVATED_KEEPS = frozenset({Capability.COMPLETE_FORMS, Capability.BE_CHARGED})


def allows(status: Status, capability: Capability) -> bool:
    if status is Status.ACTIVE:
        return True
    if status is Status.DEACTIVATED:
        return capability in _DEACTIVATED_KEEPS
    return False


def capabilities(status: Status) -> dict[str, bool]:
    return {capability.value: allows(status, capability) for capability in Capability}


def counts_toward_plan(status: Status) -> bool:
    """Deactivated clients keep their seat; only deletion frees it."""
    return status is not Status.DELETED


def listed_by_default(status: Status) -> bool:
    return status is not Status.DELETED
