"""The YAML program in agents/README.md loads as written, and the README's pattern table
names every built-in program."""

from __future__ import annotations

import re
from pathlib import Path

from agents import BUILTIN_PROGRAMS
from agents.tools import BUILTIN_TOOLS
from agents.yaml_loader import load_program_text
from orchestrator.domain import TaskSpec
from orchestrator.executor.estimate import (
    SAMPLE_INPUT,
    approximate_encoder,
    catalog_encoder,
    expect,
)
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


def _agents_listing() -> dict[str, float]:
    """Expected token amplification per built-in program, as `inflection agents` prints it
    (the default simulated model's tokenizer, the shared sample input)."""
    encoder = catalog_encoder()
    return {
        name: expect(
            Interpreter(program, encoder), TaskSpec(agent=name, input=SAMPLE_INPUT)
        ).token_amplification
        for name, program in BUILTIN_PROGRAMS.items()
    }


def test_the_main_readme_quotes_the_amplification_range_inflection_agents_prints() -> None:
    text = (README.parents[1] / "README.md").read_text()
    quoted = re.search(r"token amplification from ([\d.]+)x \(chat\) to about ([\d,]+)x", text)
    assert quoted is not None, "the README's agent-programs paragraph lost its range"
    listing = _agents_listing()
    low, high = min(listing.values()), max(listing.values())
    assert float(quoted.group(1)) == round(low, 1)
    # "about": within 2% of the printed figure, quoted to two significant digits.
    assert abs(float(quoted.group(2).replace(",", "")) - high) <= 0.02 * high
