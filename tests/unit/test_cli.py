"""The `inflection` command's cheap paths (no Ray, no engine)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from orchestrator import cli
from orchestrator.cli import main


def test_agents_lists_the_builtin_programs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Wide enough that rich does not wrap the cells.
    monkeypatch.setattr(cli, "console", Console(width=400))
    assert main(["agents"]) == 0
    out = capsys.readouterr().out
    assert "LLM calls/task" in out and "token amplification" in out
    [row] = [line for line in out.splitlines() if "plan_execute" in line]
    cells = [cell.strip() for cell in row.split("│")]
    assert "5.00" in cells
    amplification = next(c for c in cells if c.endswith("x") and c[:-1].replace(".", "").isdigit())
    assert float(amplification[:-1]) > 1.0


def test_a_bad_config_names_the_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "deploy.yaml"
    config.write_text("replicas:\n  count: 0\n  engine:\n    max_model_len: 1024\n")
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "deploy.yaml" in err and "replicas.count" in err


def test_run_rejects_an_unknown_agent_before_starting_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "--agent", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown agent 'nope'" in err and "plan_execute" in err


def test_run_rejects_a_non_positive_task_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--tasks", "0"]) == 2
    assert "--tasks" in capsys.readouterr().err


def test_agents_validate_reports_each_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "name: mine\nsteps:\n  - llm: answer\n    instruction: 'Answer {input}'\n"
        "    max_tokens: 16\n"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nsteps:\n  - llm: a\n    instruction: x\n    max_tokens: {uniform: [5, 2]}\n"
    )
    assert main(["agents", "validate", str(good)]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["agents", "validate", str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.yaml:5" in err and "steps[0].max_tokens.uniform" in err


def test_agents_show_prints_the_tree_and_the_expected_cost(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["agents", "show", "coding_agent"]) == 0
    out = capsys.readouterr().out
    assert "work: loop" in out and "run: tool python" in out
    assert "LLM calls 7." in out  # ~7.8 calls per task, as the Copilot traces
    assert main(["agents", "show", "nope"]) == 2
    assert "known: chat" in capsys.readouterr().err
