"""Figures quoted in agents/README.md are what the code computes today (issue 10, item 5).

The pattern table's *expected* column is the program's Monte Carlo expectation with the
tiny model's tokenizer (what `benchmarks/amplification.py` measured against), for the
shared sample input. A change to a program or to the interpreter that moves a figure
fails here until the table is rerun."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agents import BUILTIN_PROGRAMS
from orchestrator.domain import TaskSpec
from orchestrator.executor.estimate import SAMPLE_INPUT, expect
from orchestrator.executor.interpreter import Encoder, Interpreter

REPO = Path(__file__).resolve().parents[2]


def _table_rows() -> dict[str, list[str]]:
    text = (REPO / "agents" / "README.md").read_text()
    section = text.split("## The built-in library", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| `(\w+)` \|", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in line.strip("|").split("|")]
    return rows


@pytest.mark.slow
def test_the_agents_table_expected_column_is_what_the_estimator_gives() -> None:
    from orchestrator.replicas.tiny_model import build_tiny_model, default_tiny_model_dir
    from orchestrator.server.app import HfTokenizer

    tokenizer = HfTokenizer(str(build_tiny_model(default_tiny_model_dir())))
    encoder = Encoder(tokenizer.encode, tokenizer.bos_token_id)
    rows = _table_rows()
    assert set(rows) == set(BUILTIN_PROGRAMS)
    for name, program in BUILTIN_PROGRAMS.items():
        expected = expect(
            Interpreter(program, encoder), TaskSpec(agent=name, input=SAMPLE_INPUT), 2000, 10**6
        )
        # Columns: program, shape, calls, tools, prompt:completion, hits, expected, ...
        assert rows[name][6] == f"{expected.token_amplification:.1f}x", name
