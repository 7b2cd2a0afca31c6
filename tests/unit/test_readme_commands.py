"""Every `inflection ...` command the README's "first ten minutes" path shows parses with
today's CLI (an option renamed or removed fails here, not in a newcomer's first hour).
The commands themselves run in the tests of their own sections (e2e and integration)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from orchestrator.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def _first_ten_minutes() -> list[str]:
    section = README.read_text().split("## The first ten minutes", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block is not None, "the README lost its first-ten-minutes commands"
    lines = [row.split("#", 1)[0].strip() for row in block.group(1).splitlines()]
    return [line for line in lines if line.startswith("inflection ")]


def test_the_path_has_the_commands_a_newcomer_needs() -> None:
    verbs = {shlex.split(line)[1] for line in _first_ten_minutes()}
    assert {"agents", "simulate", "plan", "load"} <= verbs


@pytest.mark.parametrize("line", _first_ten_minutes())
def test_each_command_parses(line: str) -> None:
    args = build_parser().parse_args(shlex.split(line)[1:])
    assert callable(args.func)


def test_the_path_commands_are_those_the_sections_run() -> None:
    text = README.read_text()
    sections = text.split("## The first ten minutes", 1)[1].split("\n## ", 1)[1]
    for line in _first_ten_minutes():
        assert line in sections, f"{line!r} is not an example of a section (tested there)"
