"""One exception tree; each error carries the exit code the CLI turns it into."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes: the contract scripts rely on (documented in README)."""

    OK = 0
    ERROR = 1  # declined at the prompt, or an unexpected error
    USAGE = 2  # usage error, or a changing command without a terminal and without --yes
    BAD_INPUT = 3  # unknown client, malformed CSV, a transition that is not allowed
    BACKUP_FAILED = 4  # a backup could not be written or verified: nothing deleted
    BUSY = 5  # the database is busy: nothing changed, try later
    PLAN_LIMIT = 6  # plan limit reached: nothing added
    TOO_MANY_CHANGES = 7  # the change is larger than --max-changes (or the policy's cap)


class PbClientsError(Exception):
    """Base of every error the tool reports as one sentence on stderr."""

    exit_code: ExitCode = ExitCode.ERROR


class Declined(PbClientsError):
    exit_code = ExitCode.ERROR


class UsageError(PbClientsError):
    exit_code = ExitCode.USAGE


class BadInput(PbClientsError):
    exit_code = ExitCode.BAD_INPUT


class UnknownClient(BadInput):
    pass


class TransitionNotAllowed(BadInput):
    pass


class BackupFailed(PbClientsError):
    exit_code = ExitCode.BACKUP_FAILED


class DatabaseBusy(PbClientsError):
    exit_code = ExitCode.BUSY


class PlanLimitReached(PbClientsError):
    exit_code = ExitCode.PLAN_LIMIT


class ChangeLimitExceeded(PbClientsError):
    """The run would change more clients than --max-changes allows: nothing changed."""

    exit_code = ExitCode.TOO_MANY_CHANGES
