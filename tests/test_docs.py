"""Docs that check themselves: help text, README examples and completion scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command

from pbclients.cli.app import app

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[tuple[str, object]]:
    root = get_command(app)
    found = []
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        found.append((name, command))
        for sub_name, sub in getattr(command, "commands", {}).items():
            found.append((f"{name} {sub_name}", sub))
    return found


@pytest.mark.parametrize(("name", "command"), _commands(), ids=[n for n, _ in _commands()])
def test_every_command_has_help_with_an_example(name: str, command) -> None:
    assert command.help, f"{name} has no help text"
    assert "Example:" in command.help, f"{name}'s help has no Example: block"
    example = command.help.split("Example:", 1)[1]
    assert f"pbclients {name}" in example or "pbclients --db" in example


@pytest.mark.parametrize("name", [n for n, _ in _commands()])
def test_every_command_appears_in_the_readme(name: str) -> None:
    assert f"pbclients {name}" in (ROOT / "README.md").read_text()


def test_readme_quickstart_has_exactly_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line for line in section.strip().splitlines() if line.strip()]
    assert len(commands) == 2
    assert "pbclients demo" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    test_command = section.strip().splitlines()[1].strip()
    assert test_command in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_are_current(shell: str) -> None:
    env = {**os.environ, "_PBCLIENTS_COMPLETE": f"source_{shell}"}
    generated = subprocess.run(
        [sys.executable, "-c", "from pbclients.cli.app import app; app(prog_name='pbclients')"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    committed = (ROOT / "completions" / f"pbclients.{shell}").read_text()
    assert generated == committed, (
        f"completions/pbclients.{shell} is stale; regenerate it (see README, Contributing)"
    )
