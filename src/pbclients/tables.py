"""The table of each kind of client record, for code that reads them as SQL text.

The models define the tables (and Alembic creates them); `models.RECORD_MODELS` is
built from this mapping, so the two cannot drift apart, and the read commands
(pbclients.roster_view) count a client's records without importing the models.
"""

# Every kind of record a client has, in the order a restore must insert them
# (payment plans refer to payment methods).
RECORD_TABLES: dict[str, str] = {
    "enrolments": "enrolment",
    "appointments": "appointment",
    "journal_entries": "journal_entry",
    "protocols": "protocol",
    "session_notes": "session_note",
    "messages": "message",
    "forms": "form_request",
    "documents": "document",
    "payment_methods": "payment_method",
    "payment_plans": "payment_plan",
    "notifications": "notification",
}
