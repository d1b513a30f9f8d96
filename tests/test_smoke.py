import json


def test_deactivate_then_list_shows_status(cli, practice, monkeypatch):
    monkeypatch.setenv("PBCLIENTS_NOW", "2026-11-26T09:00:00Z")
    result = cli("deactivate", "1", "BEN@example.org", "--yes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    records = json.loads(result.stdout)
    assert [(r["id"], r["before"], r["after"], r["outcome"]) for r in records] == [
        (1, "active", "deactivated", "changed"),
        (2, "active", "deactivated", "changed"),
    ]
    listed = json.loads(cli("list", "--status", "deactivated", "--format", "json").stdout)
    assert [c["id"] for c in listed] == [1, 2]
    assert listed[0]["deactivated_at"] == "2026-11-26T09:00:00Z"
