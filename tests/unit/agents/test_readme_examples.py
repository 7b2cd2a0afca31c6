"""The YAML program in agents/README.md loads as written, and the README's pattern table
names every built-in program."""

from __future__ import annotations

import re
from pathlib import Path

from agents import BUILTIN_PROGRAMS
from agents.tools import BUILTIN_TOOLS
from agents.yaml_loader import load_program_text
from orchestrator.domain import TaskSpec
from orchestrator.executor.estimate import approximate_encoder, expect
from orchestrator.executor.interpreter import Interpreter

README = Path(__file__).resolve().parents[3] / "agents" / "README.md"


def test_the_readme_yaml_program_loads_and_runs_dry() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
    program_text = next(b for b in blocks if b.startswith("name:"))
    program = load_program_text(program_text, "agents/README.md", tools=BUILTIN_TOOLS)
    assert program.name == "research_assistant"
    expected = expect(
        Interpreter(program, approximate_encoder()),
        TaskSpec(agent=program.name, input="why is the sky blue?"),
        samples=100,
    )
    # 2-4 research rounds (one query each), 3 drafts, one answer.
    assert 2 + 3 + 1 <= expected.llm_calls <= 4 + 3 + 1
    assert expected.tool_calls >= 2


def test_the_readme_table_lists_every_builtin_program() -> None:
    text = README.read_text()
    for name in BUILTIN_PROGRAMS:
        assert f"| `{name}` |" in text, name
