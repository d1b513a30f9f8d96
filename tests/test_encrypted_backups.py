"""Encrypted backups (age, via pyrage): written to the practice's key, verified by
decrypting them back, opened by restore / verify / the listing, on both engines."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from datetime import timedelta
from pathlib import Path

import pyrage
import pytest
from pyrage import x25519
from sqlalchemy import insert

from pbclients import clock
from pbclients.backup.keys import MAGIC
from pbclients.backup.reader import verify_backup
from pbclients.db import writing
from pbclients.models import Document
from tests.factory import NOW
from tests.helpers import NOW_TEXT, pbclients, records, snapshot, statuses, subprocess_env


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBCLIENTS_NOW", NOW_TEXT)
    monkeypatch.delenv("PBCLIENTS_BACKUP_KEY_FILE", raising=False)


def later(days: int) -> dict[str, str]:
    return {"PBCLIENTS_NOW": str(clock.iso(NOW + timedelta(days=days)))}


def new_key(cli, path: Path) -> str:
    """A new identity written by `backups keygen`; its recipient."""
    made = cli("backups", "keygen", str(path))
    assert made.exit_code == 0, made.stderr
    return made.stdout.strip()


@pytest.fixture
def key(cli, practice, tmp_path) -> Path:
    """The practice requires encryption to an identity made by `backups keygen`."""
    path = tmp_path / "backup-key.txt"
    new_key(cli, path)
    configured = cli("plan", "--set-backup-key-file", str(path), "--yes", "--reason", "HIPAA")
    assert configured.exit_code == 0, configured.stderr
    return path


def identity_of(path: Path) -> x25519.Identity:
    [line] = [x for x in path.read_text().splitlines() if x.startswith("AGE-SECRET-KEY-1")]
    return x25519.Identity.from_str(line)


def only_file(folder: Path) -> Path:
    [path] = list(folder.iterdir())
    return path


def test_keygen_writes_an_age_identity_once_and_prints_its_recipient(cli, tmp_path):
    path = tmp_path / "key.txt"
    recipient = new_key(cli, path)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# created: ")
    assert lines[1] == f"# public key: {recipient}"
    assert str(identity_of(path).to_public()) == recipient
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    again = cli("backups", "keygen", str(path))
    assert again.exit_code == 3
    assert again.stderr.startswith(f"Error: {path} exists already; nothing was written.")
    assert path.read_bytes() == before


def test_an_encrypted_backup_round_trips_through_delete_purge_and_restore(
    cli, practice, engine, key, tmp_path
):
    folder = tmp_path / "backups"
    before = snapshot(engine)
    deleted = cli("delete", "1", "--backup-dir", str(folder), "--yes", "--format", "json")
    assert deleted.exit_code == 0, deleted.stderr
    [result] = records(deleted.stdout)
    backup = Path(result["backup"])
    assert backup.name == "client-000001-20261126T090000Z.pbbackup.zip.age"
    data = backup.read_bytes()
    # Binary age, one stanza: the practice's own recipient (its identity checked it).
    assert data.startswith(MAGIC) and data.count(b"\n-> X25519 ") == 1
    assert b"ana@example.org" not in data and b"Silva" not in data
    assert not zipfile.is_zipfile(backup)
    assert result["sha256"] == hashlib.sha256(data).hexdigest()

    assert cli("purge", "--yes", env=later(31)).exit_code == 0
    assert 1 not in statuses(engine)
    [row] = records(cli("backups", "--backup-dir", str(folder), "--format", "json").stdout)
    assert (row["client_id"], row["state"], row["problem"]) == (1, "purged", None)
    verified = cli("backups", "verify", "--backup-dir", str(folder))
    assert verified.exit_code == 0 and "1 of 1 backup in" in verified.stdout

    restored = cli("restore", str(backup), "--yes", "--format", "json")
    assert restored.exit_code == 0, restored.stderr
    assert [(r["id"], r["after"], r["outcome"]) for r in records(restored.stdout)] == [
        (1, "deactivated", "changed")
    ]
    after = snapshot(engine)
    for table in ("appointment", "message", "journal_entry", "enrolment"):
        assert after[table] == before[table]
    # The setting was audited with the recipient it encrypts to (a public key).
    [event] = records(cli("audit", "--action", "plan.set_backup_key_file", "-f", "json").stdout)
    assert (event["before"], event["after"], event["reason"]) == ("none", str(key), "HIPAA")
    assert json.loads(event["detail"]) == {"recipients": [str(identity_of(key).to_public())]}


@pytest.mark.parametrize(
    "damage",
    ["missing", "damaged identity", "not a key", "both kinds", "a folder", "empty"],
)
def test_an_unusable_key_is_exit_4_and_nothing_is_deleted(
    cli, practice, engine, key, tmp_path, damage
):
    text = key.read_text()
    secret = next(line for line in text.splitlines() if line.startswith("AGE-SECRET"))
    if damage == "missing":
        key.unlink()
    elif damage == "damaged identity":
        # One character changed: the Bech32 checksum no longer matches.
        changed = secret[:-3] + ("Q" if secret[-3] != "Q" else "P") + secret[-2:]
        key.write_text(text.replace(secret, changed))
    elif damage == "not a key":
        key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsab\n")
    elif damage == "both kinds":
        key.write_text(text + str(x25519.Identity.generate().to_public()) + "\n")
    elif damage == "a folder":
        key.unlink()
        key.mkdir()
    else:
        key.write_text("# only a comment\n\n")
    before = snapshot(engine)
    folder = tmp_path / "backups"

    result = cli("delete", "1", "2", "--backup-dir", str(folder), "--yes")

    assert result.exit_code == 4, result.stdout
    assert result.stderr.startswith(f"Error: The backup key file {key} (plan --set-backup-key-")
    assert "nothing was written or deleted" in result.stderr
    assert snapshot(engine) == before
    assert not folder.exists() or list(folder.iterdir()) == []
    assert cli("export", "1", "--backup-dir", str(folder)).exit_code == 4


def test_a_key_named_by_the_environment_wins_over_the_setting(cli, practice, engine, key, tmp_path):
    other = tmp_path / "laptop-key.txt"
    new_key(cli, other)
    folder = tmp_path / "backups"
    env = {"PBCLIENTS_BACKUP_KEY_FILE": str(other)}
    assert cli("export", "2", "--backup-dir", str(folder), env=env).exit_code == 0
    data = only_file(folder).read_bytes()
    assert pyrage.decrypt(data, [identity_of(other)]).startswith(b"PK")
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(data, [identity_of(key)])
    # A missing file named by the environment is exit 4 even though the setting is fine.
    missing = {"PBCLIENTS_BACKUP_KEY_FILE": str(tmp_path / "nope.txt")}
    before = snapshot(engine)
    result = cli("delete", "2", "--backup-dir", str(folder), "--yes", env=missing)
    assert result.exit_code == 4
    assert "(PBCLIENTS_BACKUP_KEY_FILE) cannot be read" in result.stderr
    assert snapshot(engine) == before


def test_restore_with_a_wrong_identity_is_exit_4_and_writes_nothing(
    cli, practice, engine, key, tmp_path
):
    folder = tmp_path / "backups"
    assert cli("delete", "3", "--backup-dir", str(folder), "--yes").exit_code == 0
    assert cli("purge", "--yes", env=later(31)).exit_code == 0
    backup = only_file(folder)
    stranger = tmp_path / "stranger.txt"
    new_key(cli, stranger)
    before = snapshot(engine)

    wrong = cli("restore", str(backup), "--identity", str(stranger), "--yes")

    assert wrong.exit_code == 4
    assert wrong.stderr.startswith(
        f"Error: Backup {backup} cannot be opened with the identity in {stranger} (--identity)"
    )
    assert snapshot(engine) == before
    listed = cli("backups", "--backup-dir", str(folder), "-i", str(stranger), "-f", "json")
    [row] = records(listed.stdout)
    assert (row["state"], row["client_id"]) == ("unreadable", None)
    assert "cannot be opened with the identity" in row["problem"]
    checked = cli("backups", "verify", "--backup-dir", str(folder), "-i", str(stranger))
    assert checked.exit_code == 4 and "1 of 1 backup failed verification" in checked.stderr
    # Without any key at all it says what to give.
    assert cli("plan", "--set-backup-key-file", "none", "--yes").exit_code == 0
    before = snapshot(engine)
    none = cli("restore", str(backup), "--yes")
    assert none.exit_code == 4
    assert "is encrypted and no identity was given; give the identity" in none.stderr
    assert snapshot(engine) == before
    assert cli("restore", str(backup), "-i", str(key), "--yes").exit_code == 0
    assert statuses(engine)[3] == "deactivated"


def test_a_recipients_file_encrypts_and_the_identity_opens(cli, practice, engine, tmp_path):
    """A server that holds only recipients still verifies what it writes (a one-time
    identity is added to each backup), but cannot read any backup back."""
    admin = tmp_path / "admin-key.txt"
    escrow = x25519.Identity.generate()
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(
        f"# the admin\n{new_key(cli, admin)}\n# the offline escrow key\n{escrow.to_public()}\n"
    )
    assert cli("plan", "--set-backup-key-file", str(recipients), "--yes").exit_code == 0
    folder = tmp_path / "backups"

    deleted = cli("delete", "4", "--backup-dir", str(folder), "--yes")

    assert deleted.exit_code == 0, deleted.stderr
    backup = only_file(folder)
    data = backup.read_bytes()
    assert data.count(b"\n-> X25519 ") == 3  # admin, escrow, and the forgotten one-time key
    assert pyrage.decrypt(data, [escrow]).startswith(b"PK")
    [row] = records(cli("backups", "--backup-dir", str(folder), "-f", "json").stdout)
    assert row["state"] == "unreadable"
    assert "holds recipients only, no identity" in row["problem"]
    assert cli("backups", "verify", "--backup-dir", str(folder)).exit_code == 4
    opened = cli("backups", "--backup-dir", str(folder), "-i", str(admin), "verify")
    assert opened.exit_code == 0, opened.stderr
    refused = cli("restore", str(backup), "--yes")
    assert refused.exit_code == 4 and "holds recipients only" in refused.stderr
    restored = cli("restore", str(backup), "--identity", str(admin), "--yes")
    assert restored.exit_code == 0, restored.stderr
    assert statuses(engine)[4] == "deactivated"


def test_a_backup_encrypted_by_pyrage_itself_lists_verifies_and_restores(
    cli, practice, engine, key, tmp_path
):
    plain_folder = tmp_path / "plain"
    # Written before the practice had a key: a plain ZIP.
    env = {"PBCLIENTS_BACKUP_KEY_FILE": ""}
    assert cli("plan", "--set-backup-key-file", "none", "--yes").exit_code == 0
    assert cli("delete", "5", "--backup-dir", str(plain_folder), "--yes", env=env).exit_code == 0
    plain = only_file(plain_folder)
    assert zipfile.is_zipfile(plain)
    folder = tmp_path / "sealed"
    folder.mkdir()
    sealed = folder / f"{plain.name}.age"
    pyrage.encrypt_file(str(plain), str(sealed), [identity_of(key).to_public()])
    plain.unlink()
    assert cli("purge", "--yes", env=later(31)).exit_code == 0

    listed = cli("backups", "--backup-dir", str(folder), "-i", str(key), "-f", "json")
    [row] = records(listed.stdout)
    assert (row["client_id"], row["state"]) == (5, "purged")
    assert cli("backups", "verify", str(sealed), "--identity", str(key)).exit_code == 0
    shown = cli("export", "--verify", str(sealed), "-i", str(key), "--format", "json")
    assert shown.exit_code == 0 and records(shown.stdout)["client_id"] == 5
    restored = cli("restore", str(sealed), "-i", str(key), "--yes")
    assert restored.exit_code == 0, restored.stderr
    assert statuses(engine)[5] == "deactivated"


def test_a_backup_pbclients_encrypts_is_plain_age_for_pyrage(cli, practice, key, tmp_path):
    folder = tmp_path / "backups"
    assert cli("export", "1", "--backup-dir", str(folder)).exit_code == 0
    sealed = only_file(folder)
    opened = tmp_path / "opened.pbbackup.zip"
    pyrage.decrypt_file(str(sealed), str(opened), [identity_of(key)])
    manifest = verify_backup(opened)
    assert (manifest.client_id, manifest.counts["appointments"]) == (1, 2)


def _add_document(engine, client_id: int, size: int) -> bytes:
    content = os.urandom(size)
    with writing(engine) as session:
        session.execute(
            insert(Document),
            [{"client_id": client_id, "filename": "scan.bin", "content_type": "application/x",
              "uploaded_at": NOW - timedelta(days=1), "content": content}],
        )  # fmt: skip
    return content


def test_a_flipped_byte_fails_verification_and_is_never_partly_restored(
    cli, practice, engine, key, tmp_path
):
    # Larger than the in-memory spool, so both sides go through a private temporary file,
    # and many 64 KiB age chunks: the damage is far from the start.
    _add_document(engine, 2, 9 << 20)
    folder = tmp_path / "backups"
    assert cli("delete", "2", "--backup-dir", str(folder), "--yes").exit_code == 0
    assert cli("purge", "--yes", env=later(31)).exit_code == 0
    backup = only_file(folder)
    good = backup.read_bytes()
    before = snapshot(engine)

    def damaged(data: bytes, problem: str, code: int) -> None:
        backup.write_bytes(data)
        result = cli("backups", "verify", "--backup-dir", str(folder), "-f", "json")
        assert result.exit_code == 4
        [row] = records(result.stdout)
        assert row["status"] == "bad" and problem in row["problem"], row["problem"]
        restored = cli("restore", str(backup), "--yes")
        assert restored.exit_code == code, restored.stderr
        assert problem in restored.stderr
        assert snapshot(engine) == before

    middle = bytearray(good)
    middle[len(good) * 2 // 3] ^= 0x01
    damaged(bytes(middle), "is damaged (its encrypted contents do not authenticate)", 3)
    damaged(good[: len(good) - 70_000], "is damaged (its encrypted contents do", 3)
    damaged(good + b"\x00", "is damaged (its encrypted contents do", 3)

    def replaced(marker: bytes, by: bytes) -> bytes:
        """`good` with one base64 character of the header line after `marker` replaced."""
        at = good.index(marker) + len(marker) + 9
        changed = bytearray(good)
        changed[at : at + 1] = by if good[at : at + 1] != by else b"B"
        return bytes(changed)

    # Another valid character in the recipient stanza: no key opens it, which to age is
    # the same as a backup encrypted to someone else.
    damaged(replaced(b"\n-> X25519 ", b"A"), "or its header is damaged", 4)
    # Not base64 at all, or a header MAC that fails once the key opened it: damage.
    damaged(replaced(b"\n-> X25519 ", b"{"), "is damaged (its age header is not valid)", 3)
    damaged(replaced(b"\n--- ", b"A"), "is damaged (its age header is not valid)", 3)

    backup.write_bytes(good)
    assert cli("restore", str(backup), "--yes").exit_code == 0
    assert statuses(engine)[2] == "deactivated"


def test_scheduled_and_policy_deletions_are_encrypted(cli, practice, engine, key, tmp_path):
    folder = tmp_path / "backups"
    scheduled = cli("delete", "3", "--at", "+1d", "--backup-dir", str(folder), "--yes")
    assert scheduled.exit_code == 0, scheduled.stderr
    ran = cli("run-due", env=later(2))
    assert ran.exit_code == 0, ran.stderr
    assert statuses(engine)[3] == "deleted"
    backup = only_file(folder)
    assert backup.name.endswith(".pbbackup.zip.age") and backup.read_bytes().startswith(MAGIC)
    # The automation policy's deletions too.
    assert cli("deactivate", "4", "--yes").exit_code == 0
    policy = cli("policy", "set", "--delete-after", "60d", "--max-changes", "10", "--yes")
    assert policy.exit_code == 0, policy.stderr
    policed = tmp_path / "policy"
    ran = cli("run-due", "--backup-dir", str(policed), env=later(2))
    assert ran.exit_code == 0, ran.stderr
    assert statuses(engine)[4] == "deleted"
    assert only_file(policed).read_bytes().startswith(MAGIC)


def test_old_plain_backups_still_list_verify_and_restore_with_a_key(
    cli, practice, engine, tmp_path
):
    folder = tmp_path / "backups"
    assert cli("delete", "1", "--backup-dir", str(folder), "--yes").exit_code == 0
    key = tmp_path / "key.txt"
    new_key(cli, key)
    assert cli("plan", "--set-backup-key-file", str(key), "--yes").exit_code == 0
    assert cli("delete", "2", "--backup-dir", str(folder), "--yes").exit_code == 0
    names = sorted(path.name for path in folder.iterdir())
    assert names == [
        "client-000001-20261126T090000Z.pbbackup.zip",
        "client-000002-20261126T090000Z.pbbackup.zip.age",
    ]
    rows = records(cli("backups", "--backup-dir", str(folder), "-f", "json").stdout)
    assert [(r["client_id"], r["state"]) for r in rows] == [(1, "deleted"), (2, "deleted")]
    assert cli("backups", "verify", "--backup-dir", str(folder)).exit_code == 0
    assert cli("purge", "--yes", env=later(31)).exit_code == 0
    for name in names:
        assert cli("restore", str(folder / name), "--yes").exit_code == 0
    assert (statuses(engine)[1], statuses(engine)[2]) == ("deactivated", "deactivated")
    # Back to plain backups.
    assert cli("plan", "--set-backup-key-file", "none", "--yes").exit_code == 0
    assert records(cli("plan", "-f", "json").stdout)["backup_key_file"] is None
    assert cli("export", "3", "--backup-dir", str(tmp_path / "p")).exit_code == 0
    assert zipfile.is_zipfile(only_file(tmp_path / "p"))


def test_setting_an_unusable_key_file_changes_nothing(cli, practice, engine, tmp_path):
    bogus = tmp_path / "id_rsa.pub"
    bogus.write_text("ssh-rsa AAAAB3NzaC1yc2E\n")
    result = cli("plan", "--set-backup-key-file", str(bogus), "--yes")
    assert result.exit_code == 4
    assert result.stderr.startswith(
        f"Error: The backup key file {bogus} (--set-backup-key-file) is not an age identity "
        "or recipients file (line 1"
    )
    assert "nothing was changed" in result.stderr
    assert records(cli("plan", "-f", "json").stdout)["backup_key_file"] is None
    missing = cli("plan", "--set-backup-key-file", str(tmp_path / "nope"), "--yes")
    assert missing.exit_code == 4 and "cannot be read" in missing.stderr


def test_plan_shows_the_key_file_in_use(cli, practice, key):
    usage = records(cli("plan", "--format", "json").stdout)
    assert usage["backup_key_file"] == str(key)
    assert f"backups encrypted with age, key file: {key}" in cli("plan").stdout


def test_new_files_are_private_under_umask_000(db_target, engine, practice, tmp_path):
    folder = tmp_path / "store"
    key = tmp_path / "keys" / "backup.txt"
    key.parent.mkdir()
    env = subprocess_env(PBCLIENTS_DB=db_target)
    os.umask(0o000)
    try:
        made = pbclients("backups", "keygen", str(key), env=env)
        configured = pbclients("plan", "--set-backup-key-file", str(key), "--yes", env=env)
        exported = pbclients("export", "1", "2", "--backup-dir", str(folder), env=env)
        deleted = pbclients("delete", "3", "--backup-dir", str(folder), "--yes", env=env)
    finally:
        os.umask(0o022)
    for run in (made, configured, exported, deleted):
        assert run.returncode == 0, run.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(folder.iterdir())
    # Only the encrypted backups: no plaintext or temporary file was left beside them.
    assert [path.name for path in files] == [
        f"client-00000{n}-20261126T090000Z.pbbackup.zip.age" for n in (1, 2, 3)
    ]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
