"""TAB completion of client references, as bash asks for it: the installed `pbclients`
script (the name completion is registered under) with click's variables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.helpers import pbclients, sql, subprocess_env

SCRIPT = Path(sys.executable).with_name("pbclients")
pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="the pbclients script is not installed")


def complete(
    db: str, *words: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """What bash gets for the last of `words` (the one being completed)."""
    line = ["pbclients", "--db", db, *words]
    run = subprocess.run(
        [str(SCRIPT)],
        capture_output=True,
        text=True,
        env=subprocess_env(
            _PBCLIENTS_COMPLETE="complete_bash",
            COMP_WORDS=" ".join(line),
            COMP_CWORD=str(len(line) - 1),
            **(env or {}),
        ),
        check=False,
    )
    return run


def candidates(run: subprocess.CompletedProcess[str]) -> list[str]:
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    return [line for line in run.stdout.splitlines() if line]


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (("show", "b"), "ben@example.org"),
        (("deactivate", "1", "b"), "ben@example.org"),
        (("edit", "be"), "ben@example.org"),
        # References ignore case: what was typed stays as typed.
        (("show", "B"), "Ben@example.org"),
        (("audit", "--client", "BEN@"), "BEN@example.org"),
    ],
)
def test_a_client_reference_completes_to_the_emails_that_start_with_it(
    db_target: str, practice: object, words: tuple[str, ...], expected: str
) -> None:
    assert candidates(complete(db_target, *words)) == [expected]


def test_completion_lists_every_match_in_order_and_deleted_clients_too(
    db_target: str, engine: Engine, practice: object
) -> None:
    sql(engine, "UPDATE client SET status = 'deleted' WHERE id = 4")
    found = candidates(complete(db_target, "show", ""))
    assert found == [
        "ana@example.org", "ben@example.org", "chloe@example.org", "dev@example.org",
        "elif@example.org",
    ]  # fmt: skip
    assert candidates(complete(db_target, "show", "zz")) == []
    # An ID is typed, not completed: a number matches no e-mail anyway.
    assert candidates(complete(db_target, "show", "1")) == []


def test_completion_takes_like_wildcards_literally(
    db_target: str, engine: Engine, practice: object
) -> None:
    sql(engine, "UPDATE client SET email = 'a_b@example.org', email_key = 'a_b@example.org' "
        "WHERE id = 2")  # fmt: skip
    assert candidates(complete(db_target, "show", "a_")) == ["a_b@example.org"]
    assert candidates(complete(db_target, "show", "a%")) == []
    assert candidates(complete(db_target, "show", "ax")) == []


def test_an_email_that_would_break_the_shell_line_is_not_offered(
    db_target: str, engine: Engine, practice: object
) -> None:
    sql(engine, "UPDATE client SET email = :e, email_key = :e WHERE id = 2",
        e="bad\x1b[31m\nrm -rf@example.org")  # fmt: skip
    sql(engine, "UPDATE client SET email = :e, email_key = :e WHERE id = 3", e="b c@example.org")
    assert candidates(complete(db_target, "show", "b")) == []


def test_completion_without_a_database_offers_nothing_and_does_not_fail(tmp_path) -> None:
    missing = tmp_path / "missing.db"
    assert candidates(complete(str(missing), "show", "a")) == []
    assert not missing.exists()
    not_ours = tmp_path / "notes.txt"
    not_ours.write_text("hello")
    assert candidates(complete(str(not_ours), "show", "a")) == []
    assert not_ours.read_text() == "hello"


def test_completion_reads_the_database_named_by_the_environment(tmp_path) -> None:
    db = tmp_path / "p.db"
    assert pbclients("--db", str(db), "demo", "--clients", "3").returncode == 0
    line = ["pbclients", "show", ""]
    run = subprocess.run(
        [str(SCRIPT)],
        capture_output=True,
        text=True,
        env=subprocess_env(
            PBCLIENTS_DB=str(db),
            _PBCLIENTS_COMPLETE="complete_bash",
            COMP_WORDS=" ".join(line),
            COMP_CWORD="2",
        ),
        check=False,
    )
    emails = json.loads(pbclients("--db", str(db), "list", "--format", "json").stdout)
    assert candidates(run) == sorted(c["email"] for c in emails)
