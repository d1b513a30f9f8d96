"""What `browse` can do to the selected clients, in one list, and the selection itself.

Each action is the operation a command runs (its `preview` and `apply`, see
`pbclients.operation`) and the command's own `Wording`, so the confirmation, the
summary and the audit events are the command's, word for word. A new operation (a
legal hold) joins `browse` by adding one `BrowseAction` to `ACTIONS`; one that needs a
reason (a hold) asks for it before its preview.

Nothing here imports Textual: the selection rules are plain code, tested as such.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pbclients.policy import Status

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from pbclients.cli.run import Apply, Wording
    from pbclients.operation import Plan
    from pbclients.readdb import Database
    from pbclients.roster_view import ClientFilter
    from pbclients.selection import Selection


@dataclass(frozen=True)
class BrowseAction:
    """One action on the selection: its key, its name, and the command behind it.

    `preview(engine, selection, reason)`: `reason` is what the admin typed when the
    action `asks_reason` (else None), also recorded in the audit events.
    """

    key: str
    label: str
    command: str  # the command that does the same, for the help screen
    preview: Callable[[Engine, Selection, str | None], Plan[Any]]
    apply: Callable[[], Apply[Any]]
    wording: Callable[[], Wording[Any]]
    asks_reason: bool = False


def _status_preview(target: Status) -> Callable[[Engine, Selection, str | None], Plan[Any]]:
    def preview(engine: Engine, selection: Selection, reason: str | None) -> Plan[Any]:
        from pbclients import lifecycle

        return lifecycle.preview(engine, lifecycle.StatusChange(selection, target))

    return preview


def _status_wording(target: Status) -> Callable[[], Wording[Any]]:
    def wording() -> Wording[Any]:
        from pbclients.cli.access import status_wording

        return status_wording(target)

    return wording


def _lifecycle_apply() -> Apply[Any]:
    from pbclients import lifecycle

    return lifecycle.apply


def _delete_preview(engine: Engine, selection: Selection, reason: str | None) -> Plan[Any]:
    from pbclients import deletion
    from pbclients.paths import default_backup_dir

    return deletion.preview(engine, deletion.Deletion(selection, default_backup_dir()))


def _delete_apply() -> Apply[Any]:
    from pbclients import deletion

    return deletion.apply


def _delete_wording() -> Wording[Any]:
    from pbclients.cli.backups import delete_wording
    from pbclients.paths import default_backup_dir

    return delete_wording(default_backup_dir())


def _export_preview(engine: Engine, selection: Selection, reason: str | None) -> Plan[Any]:
    from pbclients import exporting
    from pbclients.paths import default_backup_dir

    return exporting.preview(engine, exporting.Export(selection, default_backup_dir()))


def _export_apply() -> Apply[Any]:
    from pbclients import exporting

    return exporting.apply


def _export_wording() -> Wording[Any]:
    from pbclients.cli.backups import export_wording

    return export_wording()


def _hold_preview(release: bool) -> Callable[[Engine, Selection, str | None], Plan[Any]]:
    def preview(engine: Engine, selection: Selection, reason: str | None) -> Plan[Any]:
        from pbclients import holds

        return holds.preview(engine, holds.HoldRequest(selection, release, reason))

    return preview


def _hold_apply() -> Apply[Any]:
    from pbclients import holds

    return holds.apply


def _hold_wording(release: bool) -> Callable[[], Wording[Any]]:
    def wording() -> Wording[Any]:
        from pbclients.cli.hold import hold_wording

        return hold_wording(release)

    return wording


ACTIONS: tuple[BrowseAction, ...] = (
    BrowseAction(
        "d", "Deactivate", "deactivate", _status_preview(Status.DEACTIVATED),
        _lifecycle_apply, _status_wording(Status.DEACTIVATED),
    ),
    BrowseAction(
        "r", "Activate", "activate", _status_preview(Status.ACTIVE),
        _lifecycle_apply, _status_wording(Status.ACTIVE),
    ),
    BrowseAction("x", "Delete", "delete", _delete_preview, _delete_apply, _delete_wording),
    BrowseAction("b", "Export backup", "export", _export_preview, _export_apply, _export_wording),
    BrowseAction(
        "h", "Hold", "hold", _hold_preview(False), _hold_apply, _hold_wording(False),
        asks_reason=True,
    ),
    BrowseAction(
        "u", "Release hold", "hold --release", _hold_preview(True), _hold_apply,
        _hold_wording(True),
    ),
)  # fmt: skip


@dataclass
class Picked:
    """The clients the admin selected.

    Either clients picked one by one (`ids`), or every match of a filter (`every`, set by
    `a`) less those unticked since (`ids` then holds the exceptions): a million matches
    are one filter and a count, not a million ids, until an action needs them.
    """

    every: ClientFilter | None = None
    total: int = 0  # matches of `every` when it was chosen
    ids: set[int] = field(default_factory=set)

    def count(self) -> int:
        return self.total - len(self.ids) if self.every is not None else len(self.ids)

    def has(self, client_id: int) -> bool:
        return (client_id not in self.ids) if self.every is not None else client_id in self.ids

    def toggle(self, client_id: int) -> None:
        if client_id in self.ids:
            self.ids.discard(client_id)
        else:
            self.ids.add(client_id)

    def select_all(self, where: ClientFilter, total: int) -> None:
        self.every, self.total, self.ids = where, total, set()

    def clear(self) -> None:
        self.every, self.total, self.ids = None, 0, set()

    def client_ids(self, database: Database) -> list[int]:
        """The selected ids, in id order; every match is read now, as ids only."""
        if self.every is None:
            return sorted(self.ids)
        from pbclients.roster_view import matching_ids

        return [i for i in matching_ids(database, self.every) if i not in self.ids]


def selection_of(client_ids: list[int]) -> Selection:
    """The ids as the selection `--ids-from` would make of them."""
    from pbclients.csvinput import Reference
    from pbclients.selection import Selection

    return Selection(
        [Reference(str(client_id), "browse", None) for client_id in client_ids], from_input=True
    )
