"""Free text in the audit trail can be erased without breaking the chain: each event's hash
covers the SHA-256 of its reason, purge erases the purged client's reasons (and only theirs),
`audit` shows them as erased, and a trail from before this change is re-chained once."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import text

from pbclients.db import make_engine, reading
from pbclients.models import UTCDateTime
from tests.helpers import NOW_TEXT, records, sql

LATER = "2026-12-27T09:00:00Z"  # 31 days after NOW_TEXT: past the 30-day retention
SECRET = "Ana moved to Lisbon"
SHARED = "Spring group ended"


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)


def ok(run) -> None:
    assert run.exit_code == 0, run.stderr


def delete_and_purge(cli, client: str, tmp_path: Path) -> None:
    ok(cli("delete", client, "--backup-dir", str(tmp_path / "backups"), "--yes"))
    ok(cli("purge", "--yes", env={"PBCLIENTS_NOW": LATER}))


def reasons(cli, client: int) -> list[tuple[str, str | None, bool]]:
    events = records(cli("audit", "--client", str(client), "-f", "json").stdout)
    return [(e["action"], e["reason"], e["reason_erased"]) for e in events]


def test_purge_erases_only_the_purged_clients_reasons_and_the_trail_verifies(
    cli, practice, engine, tmp_path
):
    ok(cli("deactivate", "2", "3", "--reason", SHARED, "--yes"))
    ok(cli("activate", "2", "--reason", SECRET, "--yes"))
    assert reasons(cli, 2) == [("add", None, False), ("deactivate", SHARED, False),
                               ("activate", SECRET, False)]  # fmt: skip
    delete_and_purge(cli, "2", tmp_path)
    assert reasons(cli, 2) == [
        ("add", None, False),
        ("deactivate", None, True),
        ("activate", None, True),
        ("delete", None, False),
        ("purge", None, False),
    ]
    # Client 3 was in the same batch: its event keeps the batch's reason.
    assert reasons(cli, 3) == [("add", None, False), ("deactivate", SHARED, False)]
    verified = cli("audit", "verify")
    assert (verified.exit_code, verified.stdout) == (0, "Audit trail intact: 10 events verified.\n")
    with reading(engine) as session:
        digests = session.execute(
            text(
                "SELECT reason_sha256 FROM audit_event WHERE client_id = 2 AND action = 'activate'"
            )
        ).scalar_one()
    assert digests == hashlib.sha256(SECRET.encode()).hexdigest()
    table = cli("audit", "--client", "2").stdout
    assert table.count("(erased at purge)") == 2
    assert SECRET not in table and SHARED not in table
    csv_out = cli("audit", "--client", "2", "-f", "csv").stdout
    assert SECRET not in csv_out


def test_a_purged_clients_reason_is_gone_from_the_database_bytes(
    cli, practice, engine, db_target, tmp_path
):
    if "://" in db_target:
        pytest.skip("the bytes of a server's files are the server operator's (VACUUM FULL)")
    ok(cli("deactivate", "1", "--reason", SECRET, "--yes"))
    files = [Path(db_target), Path(f"{db_target}-wal")]

    def on_disk() -> bytes:
        return b"".join(path.read_bytes() for path in files if path.exists())

    assert SECRET.encode() in on_disk()
    delete_and_purge(cli, "1", tmp_path)
    engine.dispose()
    assert SECRET.encode() not in on_disk()
    assert cli("audit", "verify").exit_code == 0


def test_erasing_a_reason_by_hand_is_detected(cli, practice, engine):
    ok(cli("deactivate", "3", "--reason", SHARED, "--yes"))
    sql(engine, "UPDATE audit_event SET reason = NULL WHERE id = 6")
    verified = cli("audit", "verify")
    assert (verified.exit_code, verified.stderr) == (
        1,
        "Audit trail broken at event 6: event 6's reason was erased but client 3 was never "
        "purged.\n",
    )


def test_editing_a_reason_is_detected_even_with_its_digest_left(cli, practice, engine):
    ok(cli("deactivate", "3", "--reason", SHARED, "--yes"))
    sql(engine, "UPDATE audit_event SET reason = 'nothing to see' WHERE id = 6")
    assert cli("audit", "verify").stderr == "Audit trail broken at event 6: event 6 was altered.\n"


# --- a trail written before this change -------------------------------------------------------

_events = sa.table(
    "audit_event",
    *(sa.column(name) for name in ("id", "actor", "action", "client_id", "before", "after",
                                   "batch_id", "reason", "detail", "prev_hash", "hash")),
    sa.column("at", UTCDateTime()),
)  # fmt: skip
_clients = sa.table(
    "client",
    *(sa.column(name) for name in ("id", "email", "email_key", "first_name", "last_name",
                                   "status")),
    sa.column("created_at", UTCDateTime()),
    sa.column("deactivated_at", UTCDateTime()),
)  # fmt: skip


def _v1_hash(prev: str, content: list) -> str:
    """How pbclients hashed an event before 0006: over the reason's text."""
    payload = json.dumps([prev, *content], separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _old_practice(target: str, *, altered: bool) -> None:
    """A database at revision 0005: client 1 (Ana), added then deactivated with a reason
    that names her, in a trail hashed the old way."""
    from alembic import command

    from pbclients.schema import alembic_config

    at = datetime(2026, 11, 1, 9, tzinfo=UTC)
    engine = make_engine(target, create=True)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0005")
        with engine.begin() as connection:
            connection.execute(
                _clients.insert().values(
                    id=1, email="ana@example.org", email_key="ana@example.org",
                    first_name="Ana", last_name="Silva", status="deactivated",
                    created_at=at, deactivated_at=at,
                )
            )  # fmt: skip
            prev = "0" * 64
            steps = [("add", None, "active", None), ("deactivate", "active", "deactivated", SECRET)]
            for event_id, (action, before, after, reason) in enumerate(steps, start=1):
                content = [event_id, "2026-11-01T09:00:00Z", "tester", action, 1, before, after,
                           f"batch{event_id}", reason, None]  # fmt: skip
                digest = _v1_hash(prev, content)
                connection.execute(
                    _events.insert().values(
                        id=event_id, at=at, actor="tester", action=action, client_id=1,
                        before=before, after=after, batch_id=f"batch{event_id}", reason=reason,
                        detail=None, prev_hash=prev, hash=digest,
                    )
                )  # fmt: skip
                prev = digest
            connection.execute(
                text("INSERT INTO setting (key, value) VALUES ('audit_head', :head)"),
                {"head": f"2:{prev}"},
            )
            if altered:
                connection.execute(text("UPDATE audit_event SET after = 'active' WHERE id = 2"))
    finally:
        engine.dispose()


@pytest.mark.parametrize("altered", [False, True], ids=["intact", "altered"])
def test_an_older_trail_is_rechained_once_and_its_reasons_become_erasable(
    cli_on_empty, db_target, tmp_path, altered
):
    _old_practice(db_target, altered=altered)
    ok(cli_on_empty("init"))
    verified = cli_on_empty("audit", "verify")
    assert (verified.exit_code, verified.stdout) == (0, "Audit trail intact: 3 events verified.\n")
    events = records(cli_on_empty("audit", "-f", "json").stdout)
    assert [(e["id"], e["action"], e["reason"]) for e in events] == [
        (1, "add", None), (2, "deactivate", SECRET), (3, "audit.rechain", None),
    ]  # fmt: skip
    detail = json.loads(events[2]["detail"])
    assert (detail["hash_version"], detail["rechained"]) == (2, 2)
    assert detail["old_chain"] == ("event 2 was altered" if altered else "intact")
    assert detail["old_head"].startswith("2:")
    # Running init again re-chains nothing more.
    ok(cli_on_empty("init"))
    assert len(records(cli_on_empty("audit", "-f", "json").stdout)) == 3
    # The reason written before the upgrade goes with its client, and the chain holds.
    ok(cli_on_empty("delete", "1", "--backup-dir", str(tmp_path / "b"), "--yes"))
    ok(cli_on_empty("purge", "--yes", env={"PBCLIENTS_NOW": LATER}))
    assert reasons(cli_on_empty, 1)[1] == ("deactivate", None, True)
    assert cli_on_empty("audit", "verify").exit_code == 0


@pytest.fixture
def cli_on_empty(db_target: str):
    """`pbclients --db <db_target>` on a database the test builds itself."""
    from typer.testing import CliRunner

    from pbclients.cli.app import app

    runner = CliRunner()

    def run(*args: str, env: dict[str, str] | None = None):
        return runner.invoke(app, ["--db", db_target, *args], env=env, catch_exceptions=False)

    return run
