"""FHIR export: the selected clients' records as FHIR Bulk Data NDJSON files in a folder.

Follows the protocol of `pbclients.operation`. Nothing in the roster changes: the batch's
results are `Outcome.EXPORTED`, and one `export` audit event per client says the format
was FHIR (never the folder: a folder may carry a client's name).

The files are written one client at a time from one consistent read of the database, so
memory holds one client's records however many clients there are. `manifest.json` is
written last: a folder with a manifest holds a complete export.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine, select

from pbclients import audit
from pbclients.backup.writer import snapshot
from pbclients.db import reading, writing
from pbclients.errors import BackupFailed, UsageError
from pbclients.exporting import to_export
from pbclients.fhir import bulk, mapping
from pbclients.models import RECORD_MODELS, Client, Program
from pbclients.operation import Action, Batch, Change, Plan, ProgressCallback
from pbclients.paths import make_private_dir
from pbclients.policy import Status
from pbclients.results import ChangeResult, Outcome
from pbclients.selection import Selection, resolve

FORMAT = "fhir"
# `--all`: the clients the practice sees (as `list` shows them). A deleted client is
# hidden from the practice and kept only for its purge; exporting it to another system
# would bring it back there. Name it explicitly to export it anyway.
LIVE = (Status.ACTIVE.value, Status.DEACTIVATED.value)


@dataclass(frozen=True)
class FhirExport:
    """Write the selected clients (every live client when `selection` is None) to `folder`.

    `request` is the command, for the manifest's `request`; the plan adds `--all` or
    the number of clients selected (never their references: the manifest names no one).
    """

    selection: Selection | None
    folder: Path
    request: str


@dataclass(frozen=True)
class FhirExportDetail:
    """The folder (absolute), the request, and in a batch the manifest written."""

    folder: Path
    request: str
    manifest: dict[str, Any] = field(default_factory=dict)


def preview(engine: Engine, request: FhirExport) -> Plan[FhirExportDetail]:
    """The clients `apply` would write; reads only (the folder is checked, not created)."""
    folder = request.folder.expanduser().absolute()
    refuse_used_folder(folder)
    with reading(engine) as session:
        if request.selection is None:
            table = Client.__table__  # type: ignore[attr-defined]
            rows = session.execute(
                select(table.c.id, table.c.email, table.c.status)
                .where(table.c.status.in_(LIVE))
                .order_by(table.c.id)
            )
            results = [
                ChangeResult(
                    str(row.id), row.id, row.email, row.status, row.status, Outcome.PLANNED
                )
                for row in rows
            ]
        else:
            results = to_export(resolve(session, request.selection))
    # The manifest travels with the data: it says what was asked without naming anyone.
    chosen = sum(1 for r in results if r.outcome is Outcome.PLANNED)
    asked = (
        f"{request.request} --all"
        if request.selection is None
        else (f"{request.request} (a selection of {chosen} client{'s' if chosen != 1 else ''})")
    )
    return Plan(Action.EXPORT, results, FhirExportDetail(folder, asked))


def refuse_used_folder(folder: Path) -> None:
    """UsageError (exit 2) unless `folder` is missing or an empty folder.

    An export never overwrites, and files of an earlier export beside a new manifest
    would read as part of it; a new or empty folder holds exactly one export.
    """
    if not folder.exists():
        return
    if not folder.is_dir():
        raise UsageError(
            f"--out {folder} is a file, not a folder; give a new or empty folder. "
            "Nothing was written."
        )
    with os.scandir(folder) as entries:
        if any(True for _ in entries):
            raise UsageError(
                f"--out {folder} is not empty; give a new or empty folder, so that the "
                "export is not mixed with other files. Nothing was written."
            )


def apply(
    engine: Engine,
    plan: Plan[FhirExportDetail],
    change: Change,
    *,
    on_progress: ProgressCallback | None = None,
) -> Batch[FhirExportDetail]:
    """Write every planned client's resources, the manifest, then the audit events.

    Raises BackupFailed (exit 4) if a file cannot be written: the files of this export
    are removed again and nothing is recorded.
    """
    folder = plan.detail.folder
    try:
        make_private_dir(folder)
    except OSError as error:
        raise BackupFailed(
            f"Cannot create {folder}: {error.strerror or error}; give a folder you can "
            "write to. Nothing was written."
        ) from None
    refuse_used_folder(folder)
    files = _Files(folder)
    results: list[ChangeResult] = []
    try:
        with snapshot(engine) as session:
            programs = {
                int(row["id"]): dict(row)
                for row in session.execute(select(Program.__table__)).mappings()  # type: ignore[attr-defined]
            }
            client_table = Client.__table__  # type: ignore[attr-defined]
            written = 0
            for result in plan.results:
                if result.outcome is not Outcome.PLANNED or result.client_id is None:
                    results.append(result)
                    continue
                query = select(client_table).where(client_table.c.id == result.client_id)
                found = session.execute(query).mappings().one_or_none()
                if found is None:
                    # Purged since the plan was made: there is nothing left to export.
                    results.append(
                        ChangeResult(
                            result.reference, result.client_id, result.email, result.before,
                            None, Outcome.SKIPPED, note="purged",
                        )
                    )  # fmt: skip
                    continue
                client = dict(found)
                context = mapping.ClientContext(client["status"], change.at, programs)
                records = _Records(session, result.client_id)
                for resource in mapping.client_resources(
                    client, records, context, lambda row: row["content"]
                ):
                    files.write(resource)
                written += 1
                results.append(
                    ChangeResult(
                        result.reference, result.client_id, result.email, client["status"],
                        client["status"], Outcome.EXPORTED,
                    )
                )  # fmt: skip
                if on_progress:
                    on_progress(written, plan.changing)
        manifest = bulk.manifest(change.at, plan.detail.request, files.counts)
        files.close()
        files.write_manifest(manifest)
    except OSError as error:
        files.remove()
        raise BackupFailed(
            f"Cannot write the FHIR export in {folder}: {error.strerror or error}; "
            "fix that and run the export again. Nothing was kept."
        ) from None
    except BaseException:
        files.remove()
        raise
    detail = FhirExportDetail(folder, plan.detail.request, manifest)
    exported = [r for r in results if r.outcome is Outcome.EXPORTED]
    if not exported:
        return Batch(plan.action, results, detail)
    batch_id = audit.new_batch_id()
    with writing(engine) as session:
        audit.append(
            session,
            (
                audit.NewEvent(Action.EXPORT, r.client_id, r.before, r.after, {"format": FORMAT})
                for r in exported
            ),
            batch_id=batch_id, actor=change.actor, reason=change.reason, at=change.at,
        )  # fmt: skip
    return Batch(plan.action, results, detail, batch_id)


class _Records(Mapping[str, Any]):
    """One client's records by kind, each queried only when `client_resources` reaches it,
    so no more than one kind's rows are held at a time."""

    def __init__(self, session: Any, client_id: int) -> None:
        self._session = session
        self._client_id = client_id

    def __getitem__(self, kind: str) -> Iterator[Mapping[str, Any]]:
        table = RECORD_MODELS[kind].__table__  # type: ignore[attr-defined]
        query = select(table).where(table.c.client_id == self._client_id).order_by(table.c.id)
        return iter(self._session.execute(query.execution_options(yield_per=100)).mappings())

    def __iter__(self) -> Iterator[str]:
        return (kind for kind in RECORD_MODELS if kind not in mapping.NOT_EXPORTED)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _Files:
    """The `<Type>.ndjson` files, each created (0600, never over an existing file) on its
    first resource, with the number of resources written to each."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.counts: dict[str, int] = {}
        self._open: dict[str, IO[bytes]] = {}
        self._created: list[Path] = []

    def write(self, resource: Mapping[str, Any]) -> None:
        kind = str(resource["resourceType"])
        handle = self._open.get(kind)
        if handle is None:
            handle = self._open[kind] = self._create(bulk.file_name(kind))
            self.counts[kind] = 0
        handle.write(bulk.ndjson_line(resource))
        self.counts[kind] += 1

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        with self._create(bulk.MANIFEST_NAME) as handle:
            handle.write((json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode())
            handle.flush()
            os.fsync(handle.fileno())

    def close(self) -> None:
        while self._open:
            _, handle = self._open.popitem()
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()

    def remove(self) -> None:
        for handle in self._open.values():
            handle.close()
        self._open.clear()
        for path in self._created:
            path.unlink(missing_ok=True)

    def _create(self, name: str) -> IO[bytes]:
        path = self.folder / name
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        self._created.append(path)
        return os.fdopen(descriptor, "wb", buffering=1 << 16)
