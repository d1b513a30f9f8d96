"""Encrypted backups: the practice's age key, and sealing and opening backups with it.

A practice requires encryption by naming a key file, with `plan --set-backup-key-file
PATH` (a setting in the database) or the environment variable
PBCLIENTS_BACKUP_KEY_FILE, which wins over the setting, as PBCLIENTS_DB wins over the
default database: it is set for one command or on one machine. From then on every
backup is written encrypted to the file's recipients with pyrage, in the binary age
v1 format (`age -d -i KEY client-....pbbackup.zip.age` opens one), and checked by
decrypting it back before anything relies on it.

The key file is one of the two kinds of file the `age` tool reads:

- an identity file (`AGE-SECRET-KEY-1...` lines, as `age-keygen` or `pbclients backups
  keygen` write it): backups are encrypted to the recipients derived from it, and opened
  with it;
- a recipients file (`age1...` lines, as `age -R` reads it): backups are encrypted to
  those recipients, and this machine holds no secret. A backup is then checked with a
  one-time identity whose recipient is added to that backup alone and whose secret is
  forgotten once the backup is verified, so a server that only writes backups (cron,
  `run-due`) still verifies every one before deleting. Opening one (restore, verify,
  listing, prune) needs its identity: `--identity FILE`, or PBCLIENTS_BACKUP_KEY_FILE
  naming the identity file.

Which identities open a backup: the `--identity` files if any were given, else the key
file PBCLIENTS_BACKUP_KEY_FILE names, else the practice's key file. They are loaded
only when the first encrypted backup is met, so plain backups never need them.

A key file that is missing, unreadable, or not an age identity or recipients file is
`KeyUnavailable` (exit 4: nothing is written or deleted). A backup that none of the
identities opens is `CannotOpen` (exit 4 as well; `backups` and `backups verify`
report it per file). A backup whose encrypted bytes were changed is damaged
(`BackupInvalid`): age authenticates every 64 KiB chunk and the end of the stream.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pbclients import clock
from pbclients.errors import BackupFailed, BadInput

if TYPE_CHECKING:
    from sqlalchemy import Engine

ENV = "PBCLIENTS_BACKUP_KEY_FILE"
SETTING_OPTION = "plan --set-backup-key-file"
# The first bytes of every binary age file (age-encryption.org/v1 header).
MAGIC = b"age-encryption.org/v1\n"
# A key file is a few lines; a larger file is not one (and is never read whole).
_MAX_KEY_FILE = 1 << 16
_IDENTITY = "AGE-SECRET-KEY-1"
_RECIPIENT = "age1"


class KeyUnavailable(BackupFailed):
    """The key file cannot be used: missing, unreadable, or not an age key file (exit 4)."""


class CannotOpen(BackupFailed):
    """An encrypted backup that none of the identities given opens (exit 4).

    `detail` is the problem alone, for the listing and `backups verify` to show per file.
    """

    def __init__(self, detail: str, advice: str) -> None:
        super().__init__(f"{detail}; {advice}.")
        self.detail = detail


@dataclass(frozen=True)
class KeyFile:
    """A key file and how it was named (for messages: the option, variable or setting)."""

    path: Path
    origin: str

    @property
    def shown(self) -> str:
        return f"{self.path} ({self.origin})"


@dataclass(frozen=True)
class Keyring:
    """What one key file holds: the recipients backups are encrypted to, and the
    identities that open them (none for a recipients file)."""

    source: KeyFile
    recipients: tuple[Any, ...]
    identities: tuple[Any, ...]

    def sealing(self) -> tuple[list[Any], list[Any]]:
        """(recipients, identities to check with) for one new backup.

        A recipients file holds no identity: a one-time one is added to this backup's
        recipients, used to decrypt it back, and forgotten (its secret is never written).
        """
        if self.identities:
            return list(self.recipients), list(self.identities)
        from pyrage import x25519

        once = x25519.Identity.generate()
        return [*self.recipients, once.to_public()], [once]


def load(source: KeyFile, outcome: str = "nothing was written or deleted") -> Keyring:
    """Read and parse a key file; KeyUnavailable (exit 4) naming what is wrong."""
    from pyrage import IdentityError, RecipientError, x25519

    def unusable(problem: str) -> KeyUnavailable:
        return KeyUnavailable(
            f"The backup key file {source.shown} {problem}; {outcome}. "
            f"Fix the file, or name another with {SETTING_OPTION} or {ENV}."
        )

    try:
        with open(source.path, "rb") as handle:
            data = handle.read(_MAX_KEY_FILE + 1)
    except OSError as error:
        raise unusable(f"cannot be read ({error.strerror or error})") from None
    if len(data) > _MAX_KEY_FILE:
        raise unusable("is too large to be an age key file")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise unusable("is not an age key file (it is not text)") from None
    identities: list[Any] = []
    recipients: list[Any] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            if line.startswith(_IDENTITY):
                identities.append(x25519.Identity.from_str(line))
                continue
            if line.startswith(_RECIPIENT):
                recipients.append(x25519.Recipient.from_str(line))
                continue
        except (IdentityError, RecipientError, ValueError):
            raise unusable(f"has a damaged key on line {number}") from None
        raise unusable(
            f"is not an age identity or recipients file (line {number} is neither an "
            "AGE-SECRET-KEY-1... identity nor an age1... recipient)"
        )
    if identities and recipients:
        raise unusable(
            "holds both identities and recipients (an age key file holds one kind: use an "
            "identity file, or a recipients file)"
        )
    if not identities and not recipients:
        raise unusable("holds no key")
    derived = [identity.to_public() for identity in identities]
    return Keyring(source, tuple(recipients or derived), tuple(identities))


def encrypting(key_file: str | None) -> KeyFile | None:
    """The key file backups are written with: PBCLIENTS_BACKUP_KEY_FILE, else the
    practice's setting (`key_file`), else None (plain backups)."""
    from_env = os.environ.get(ENV, "").strip()
    if from_env:
        return KeyFile(Path(from_env).expanduser(), ENV)
    if key_file:
        return KeyFile(Path(key_file), SETTING_OPTION)
    return None


class Opener:
    """The identities that open encrypted backups, loaded once, when the first encrypted
    backup is met (plain backups need none, and no database is read for them).

    `setting` reads the practice's key file setting; it is called only when neither
    `--identity` files nor PBCLIENTS_BACKUP_KEY_FILE name one.
    """

    def __init__(
        self,
        identity_files: Sequence[Path] = (),
        setting: Callable[[], str | None] | None = None,
    ) -> None:
        self._given = [KeyFile(Path(path).expanduser(), "--identity") for path in identity_files]
        self._setting = setting
        self._loaded: tuple[list[Any], list[KeyFile]] | None = None

    @classmethod
    def holding(cls, identities: Sequence[Any], source: KeyFile) -> Opener:
        """An Opener with these identities already loaded (a writer checking its backup)."""
        opener = cls()
        opener._loaded = (list(identities), [source])
        return opener

    def identities(self) -> tuple[list[Any], list[KeyFile]]:
        """(identities, the key files they come from); KeyUnavailable if one is unusable."""
        if self._loaded is None:
            sources = self._given
            if not sources:
                # The environment first: then the database is not read at all.
                found = encrypting(None)
                if found is None and self._setting is not None:
                    found = encrypting(self._setting())
                sources = [found] if found is not None else []
            identities: list[Any] = []
            for source in sources:
                identities.extend(load(source).identities)
            self._loaded = (identities, sources)
        return self._loaded

    def cannot_open(self, path: Path) -> CannotOpen:
        """The error for a backup none of the identities opens (or with none to try)."""
        identities, sources = self.identities()
        advice = f"give the identity that opens it with --identity FILE or {ENV}"
        if not sources:
            return CannotOpen(f"Backup {path} is encrypted and no identity was given", advice)
        named = ", ".join(source.shown for source in sources)
        if not identities:
            return CannotOpen(
                f"Backup {path} is encrypted and {named} holds recipients only, no identity",
                advice,
            )
        return CannotOpen(
            f"Backup {path} cannot be opened with the identity in {named} (it was encrypted "
            "to other recipients, or its header is damaged)",
            advice,
        )


NO_KEYS = Opener()


def keygen(path: Path, now: datetime | None = None) -> str:
    """Write a new age identity to `path` (0600, never replacing a file); its recipient.

    The file is what `age-keygen -o PATH` writes, so `age -d -i PATH` reads it.
    """
    from pyrage import x25519

    identity = x25519.Identity.generate()
    recipient = str(identity.to_public())
    moment = clock.as_utc(now or clock.now())
    text = f"# created: {clock.iso(moment)}\n# public key: {recipient}\n{identity}\n"
    target = Path(path).expanduser()
    try:
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BadInput(
            f"{target} exists already; nothing was written. Choose a new file name "
            "(an identity is never overwritten: backups encrypted to it need it)."
        ) from None
    except OSError as error:
        raise BadInput(
            f"Cannot create {target} ({error.strerror or error}); nothing was written."
        ) from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            # open()'s mode passes through the umask, which may have kept more bits.
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text.encode("ascii"))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        target.unlink(missing_ok=True)
        raise BadInput(
            f"Cannot write {target} ({error.strerror or error}); nothing was kept."
        ) from None
    _fsync_dir(target.absolute().parent)
    return recipient


def practice_keyring(engine: Engine) -> Keyring | None:
    """The key new backups are encrypted with (loaded now: KeyUnavailable, exit 4, before
    any backup is written), or None when the practice writes plain backups."""
    source = encrypting(_setting(engine))
    return load(source) if source is not None else None


def practice_opener(
    engine: Engine | Callable[[], Engine], identity_files: Sequence[Path] = ()
) -> Opener:
    """An Opener for the practice: the `--identity` files, else its key file. `engine`
    may be given as a function, called only if the setting has to be read."""

    def setting() -> str | None:
        # An Engine is not callable; the function form is.
        return _setting(engine() if callable(engine) else engine)

    return Opener(identity_files, setting)


def _setting(engine: Engine) -> str | None:
    from pbclients import settings
    from pbclients.db import reading

    with reading(engine) as session:
        return settings.backup_key_file(session)


def _fsync_dir(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
