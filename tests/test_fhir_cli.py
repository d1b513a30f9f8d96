"""`export --format fhir` and `import --fhir` through the real CLI, on both engines.

The mapping itself is tested record by record in test_fhir.py; here: the files an export
writes (valid FHIR R4B, the manifest's counts, private modes), that nothing but the audit
trail changes, and that a practice comes back the same through `import --fhir`.
"""

from __future__ import annotations

import json
import stat
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import text
from typer.testing import CliRunner

from pbclients.cli.app import app
from pbclients.db import make_engine, reading
from pbclients.errors import ExitCode
from tests.helpers import NOW_TEXT, records, snapshot
from tests.test_fhir import spec_problems, validate

NOW = {"PBCLIENTS_NOW": NOW_TEXT}
TYPES = [
    "Patient",
    "CarePlan",
    "Appointment",
    "Communication",
    "QuestionnaireResponse",
    "DocumentReference",
]


def read_export(folder: Path) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The manifest and the resources of every file it lists, by type."""
    manifest = json.loads((folder / "manifest.json").read_text("utf-8"))
    resources = {
        entry["type"]: [
            json.loads(line) for line in (folder / entry["url"]).read_text("utf-8").splitlines()
        ]
        for entry in manifest["output"]
    }
    return manifest, resources


def assert_valid(resources: dict[str, list[dict[str, Any]]]) -> int:
    """Validate every resource with fhir.resources (R4B) and the spec's extra rules."""
    checked = 0
    for kind, items in resources.items():
        for resource in items:
            assert resource["resourceType"] == kind
            validate(resource)
            assert spec_problems(resource) == [], resource["id"]
            checked += 1
    return checked


def without_audit(rows: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row but the audit trail's: its events and the head of its hash chain."""
    kept = {table: values for table, values in rows.items() if table != "audit_event"}
    kept["setting"] = [row for row in kept.get("setting", []) if row[0] != "audit_head"]
    return kept


def audit_rows(engine: Any) -> list[tuple[Any, ...]]:
    with reading(engine) as session:
        return list(
            session.execute(
                text("SELECT action, client_id, before, after, detail FROM audit_event ORDER BY id")
            ).all()
        )


# --- export --------------------------------------------------------------------------


def test_fhir_export_of_the_small_practice_is_valid_private_and_changes_only_the_audit(
    cli: Any, engine: Any, practice: Any, tmp_path: Path
) -> None:
    assert cli("deactivate", "3", "--yes", env=NOW).exit_code == 0
    before = snapshot(engine)
    events_before = len(audit_rows(engine))
    out = tmp_path / "exports" / "fhir"

    run = cli("export", "--format", "fhir", "--all", "--out", str(out), env=NOW)

    assert run.exit_code == 0, run.stderr
    manifest, resources = read_export(out)
    assert records(run.stdout) == manifest
    assert manifest["transactionTime"] == NOW_TEXT
    assert manifest["request"] == "pbclients export --format fhir --all"
    assert manifest["error"] == []
    assert run.stderr.startswith(f"Wrote {sum(map(len, resources.values()))} FHIR resources")
    # Counts are the files' lines; Patient first, each client once, client 3 inactive.
    assert manifest["output"][0]["type"] == "Patient"
    assert {e["type"]: e["count"] for e in manifest["output"]} == {
        kind: len(items) for kind, items in resources.items()
    }
    active = {p["id"]: p["active"] for p in resources["Patient"]}
    assert active == {f"client-{n}": n != 3 for n in range(1, 6)}
    appointments = [a for a in resources["Appointment"] if a["description"] == "Follow-up"]
    assert appointments[0]["appointmentType"]["coding"][0]["code"] == "VR"
    assert assert_valid(resources) == sum(e["count"] for e in manifest["output"])
    # Private: the folder 0700 (created with its parent), every file 0600.
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE(out.parent.stat().st_mode) == 0o700
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["manifest.json", *(f"{k}.ndjson" for k in resources)])
    assert {stat.S_IMODE((out / n).stat().st_mode) for n in names} == {0o600}
    # Nothing changed but one export event per client, saying fhir and naming no path.
    assert without_audit(snapshot(engine)) == without_audit(before)
    events = audit_rows(engine)[events_before:]
    assert [(a, c, b, af) for a, c, b, af, _ in events] == [
        ("export", n, s, s)
        for n, s in enumerate(["active", "active", "deactivated", "active", "active"], 1)
    ]
    assert {json.loads(detail)["format"] for *_, detail in events} == {"fhir"}
    assert all(str(tmp_path) not in detail for *_, detail in events)
    assert cli("audit", "verify").exit_code == 0


def test_fhir_export_of_a_demo_practice_is_valid_for_every_record_kind(
    cli: Any, engine: Any, tmp_path: Path
) -> None:
    assert cli("demo", "--clients", "30", env=NOW).exit_code == 0
    with reading(engine) as session:
        live = session.execute(
            text("SELECT count(*) FROM client WHERE status != 'deleted'")
        ).scalar_one()
    out = tmp_path / "out"

    run = cli("export", "--format", "fhir", "--all", "--out", str(out), env=NOW)

    assert run.exit_code == 0, run.stderr
    manifest, resources = read_export(out)
    assert [e["type"] for e in manifest["output"]] == TYPES
    assert len(resources["Patient"]) == live
    checked = assert_valid(resources)
    assert checked == sum(e["count"] for e in manifest["output"])
    # Every resource refers to a Patient of the export.
    patients = {f"Patient/{p['id']}" for p in resources["Patient"]}
    for kind in TYPES[1:]:
        for resource in resources[kind]:
            subject = resource.get("subject") or resource.get("patient")
            reference = subject["reference"] if subject else None
            if reference is None:  # Appointment names its Patient as a participant
                reference = resource["participant"][0]["actor"]["reference"]
            assert reference in patients
    notes = Counter(
        r["type"]["coding"][0]["code"] for r in resources["DocumentReference"] if "type" in r
    )
    assert set(notes) == {"11506-3", "18776-5", "51855-5"}


def test_a_selection_exports_only_its_clients_and_says_so_without_naming_them(
    cli: Any, engine: Any, practice: Any, tmp_path: Path
) -> None:
    out = tmp_path / "two"
    run = cli("export", "1", "ben@example.org", "--format", "fhir", "--out", str(out), env=NOW)

    assert run.exit_code == 0, run.stderr
    manifest, resources = read_export(out)
    assert manifest["request"] == "pbclients export --format fhir (a selection of 2 clients)"
    assert [p["id"] for p in resources["Patient"]] == ["client-1", "client-2"]


def test_an_unknown_client_stops_the_fhir_export_before_anything_is_written(
    cli: Any, engine: Any, practice: Any, tmp_path: Path
) -> None:
    out = tmp_path / "never"
    events = len(audit_rows(engine))
    run = cli("export", "1", "nobody@example.org", "--format", "fhir", "--out", str(out))

    assert run.exit_code == ExitCode.BAD_INPUT
    assert "nobody@example.org" in run.stderr
    assert not out.exists()
    assert len(audit_rows(engine)) == events


def test_fhir_export_refuses_a_folder_that_is_not_empty(
    cli: Any, engine: Any, practice: Any, tmp_path: Path
) -> None:
    out = tmp_path / "used"
    out.mkdir()
    (out / "notes.txt").write_text("mine")

    run = cli("export", "--format", "fhir", "--all", "--out", str(out))

    assert run.exit_code == ExitCode.USAGE
    assert run.stderr == (
        f"Error: --out {out} is not empty; give a new or empty folder, so that the export is "
        "not mixed with other files. Nothing was written.\n"
    )
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    # An empty folder that exists is used as it is.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("export", "--format", "fhir", "--all", "--out", str(empty)).exit_code == 0
    assert (empty / "manifest.json").exists()


def test_fhir_and_out_need_each_other_and_all_takes_no_selection(
    cli: Any, engine: Any, practice: Any, tmp_path: Path
) -> None:
    out = str(tmp_path / "x")
    cases = [
        (["export", "1", "--out", out], "--out and --all write FHIR; add --format fhir"),
        (["export", "--all"], "--out and --all write FHIR; add --format fhir"),
        (["export", "1", "--format", "fhir"], "give a new or empty folder: --out DIR."),
        (["export", "1", "--all", "--format", "fhir", "--out", out], "--all selects every"),
        (["export", "--format", "fhir", "--out", out], "Name the clients"),
    ]
    for args, message in cases:
        run = cli(*args)
        assert run.exit_code == ExitCode.USAGE, args
        assert message in run.stderr, args
    assert not Path(out).exists()
    # The result formats still write backups as before.
    run = cli("export", "1", "--format", "json", env=NOW)
    assert run.exit_code == 0
    assert [r["outcome"] for r in records(run.stdout)] == ["exported"]


def test_an_empty_selection_is_nothing_to_export(
    cli: Any, engine: Any, practice: Any, tmp_path: Path
) -> None:
    out = tmp_path / "none"
    run = cli("export", "--ids-from", "-", "--format", "fhir", "--out", str(out), input="")

    assert run.exit_code == 0
    assert run.stdout == ""
    assert run.stderr == "No client to export; nothing was written.\n"
    assert not out.exists()


# --- import --fhir --------------------------------------------------------------------


def test_a_demo_practice_comes_back_the_same_through_fhir(
    cli: Any, engine: Any, tmp_path: Path
) -> None:
    source = str(tmp_path / "source.db")
    runner = CliRunner()
    assert runner.invoke(app, ["--db", source, "demo", "--clients", "30"], env=NOW).exit_code == 0
    out = tmp_path / "fhir"
    run = runner.invoke(
        app, ["--db", source, "export", "--format", "fhir", "--all", "--out", str(out)], env=NOW
    )
    assert run.exit_code == 0, run.stderr

    run = cli("import", "--fhir", str(out / "Patient.ndjson"), "--yes", "--format", "json", env=NOW)

    assert run.exit_code == 0, run.stderr
    query = (
        "SELECT email, first_name, last_name, phone, status, deactivated_at FROM client "
        "WHERE status != 'deleted' ORDER BY email"
    )
    source_engine = make_engine(source)
    try:
        with reading(source_engine) as session:
            expected = [tuple(row)[:5] for row in session.execute(text(query))]
    finally:
        source_engine.dispose()
    with reading(engine) as session:
        got = list(session.execute(text(query)))
    assert [tuple(row)[:5] for row in got] == expected
    assert {row[4] for row in got} == {"active", "deactivated"}
    # Deactivated on arrival, as of the import.
    paused = [row for row in got if row[4] == "deactivated"]
    assert all(row[5] is not None for row in paused)
    assert all(row[5] is None for row in got if row[4] == "active")
    assert Counter(r["after"] for r in records(run.stdout)) == Counter(row[4] for row in got)


PATIENT = {
    "resourceType": "Patient",
    "name": [{"family": "Lopes", "given": ["Rita"]}],
    "telecom": [{"system": "email", "value": "rita@example.org"}],
}


def ndjson(*resources: dict[str, Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in resources)


def test_import_fhir_dry_run_shows_states_and_writes_nothing(
    cli: Any, engine: Any, practice: Any, tmp_path: Path
) -> None:
    paused = {**PATIENT, "active": False}
    other = {
        **PATIENT,
        "telecom": [
            {"system": "email", "value": "zoe@example.org"},
            {"system": "phone", "value": "+1 555 0199"},
        ],
    }
    path = tmp_path / "in.ndjson"
    path.write_text(ndjson(paused, other))
    before = snapshot(engine)

    run = cli("import", "--fhir", str(path), "--dry-run", "--format", "json")

    assert run.exit_code == 0, run.stderr
    assert [(r["email"], r["after"], r["outcome"]) for r in records(run.stdout)] == [
        ("rita@example.org", "deactivated", "planned"),
        ("zoe@example.org", "active", "planned"),
    ]
    assert snapshot(engine) == before


def test_import_fhir_from_a_bundle_on_stdin_adds_patients_and_leaves_others_out(
    cli: Any, engine: Any, practice: Any
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": {**PATIENT, "active": False}},
            {"resource": {"resourceType": "Observation", "status": "final"}},
        ],
    }

    run = cli("import", "--fhir", "-", "--yes", input=json.dumps(bundle), env=NOW)

    assert run.exit_code == 0, run.stderr
    assert "Left out the resources of standard input that are not Patients: 1 Observation." in (
        run.stderr
    )
    shown = records(cli("list", "--search", "rita", "--format", "json").stdout)
    assert [(c["email"], c["status"], c["deactivated_at"]) for c in shown] == [
        ("rita@example.org", "deactivated", NOW_TEXT)
    ]
    with reading(engine) as session:
        event = session.execute(
            text("SELECT action, before, after FROM audit_event ORDER BY id DESC LIMIT 1")
        ).one()
    assert tuple(event) == ("add", None, "deactivated")


def test_a_patient_without_an_email_is_refused_by_its_line(
    cli: Any, engine: Any, practice: Any, tmp_path: Path
) -> None:
    no_email = {**PATIENT, "telecom": [{"system": "phone", "value": "+1 555 0100"}]}
    path = tmp_path / "in.ndjson"
    path.write_text(ndjson(PATIENT, no_email))
    before = snapshot(engine)

    run = cli("import", "--fhir", str(path), "--yes")

    assert run.exit_code == ExitCode.BAD_INPUT
    assert run.stderr.startswith(f"Error: Line 2 of {path} has no e-mail address")
    assert snapshot(engine) == before


def test_import_fhir_refuses_duplicates_and_past_the_plan_limit(
    cli: Any, engine: Any, practice: Any, tmp_path: Path
) -> None:
    taken = {**PATIENT, "telecom": [{"system": "email", "value": "ANA@example.org"}]}
    path = tmp_path / "dup.ndjson"
    path.write_text(ndjson(PATIENT, taken))
    before = snapshot(engine)

    run = cli("import", "--fhir", str(path), "--yes")
    assert run.exit_code == ExitCode.BAD_INPUT
    assert f"'ANA@example.org' (line 2 of {path}) is already client 1" in run.stderr
    assert snapshot(engine) == before

    assert cli("plan", "--set-limit", "5", "--yes").exit_code == 0
    path.write_text(ndjson(PATIENT))
    run = cli("import", "--fhir", str(path), "--yes")
    assert run.exit_code == ExitCode.PLAN_LIMIT
    assert cli("list", "--search", "rita", "--format", "ids").stdout == ""


def test_import_needs_a_csv_or_fhir_file_but_not_both(
    cli: Any, engine: Any, practice: Any, tmp_path: Path
) -> None:
    path = tmp_path / "in.ndjson"
    path.write_text(ndjson(PATIENT))
    for args, message in [
        ([], "Give the clients to add: FILE.csv, or --fhir FILE."),
        ([str(path), "--fhir", str(path)], "give no FILE.csv or --update with it"),
        (["--fhir", str(path), "--update"], "give no FILE.csv or --update with it"),
    ]:
        run = cli("import", *args, "--yes")
        assert run.exit_code == ExitCode.USAGE, args
        assert message in run.stderr
    # Without --yes and without a terminal, it refuses like any change.
    assert cli("import", "--fhir", str(path)).exit_code == ExitCode.USAGE


def test_the_short_format_option_still_works_for_export(
    cli: Any, engine: Any, practice: Any, tmp_path: Path
) -> None:
    run = cli("export", "1", "--backup-dir", str(tmp_path / "b"), "-f", "json", env=NOW)
    assert run.exit_code == 0, run.stderr
    assert [r["outcome"] for r in records(run.stdout)] == ["exported"]
    out = tmp_path / "f"
    assert cli("export", "1", "-f", "fhir", "--out", str(out), env=NOW).exit_code == 0
    assert (out / "Patient.ndjson").exists()
