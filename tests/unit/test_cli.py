"""The `inflection` command's cheap paths (no Ray, no engine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import main


def test_agents_lists_the_builtin_programs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agents"]) == 0
    out = capsys.readouterr().out
    assert "plan_execute" in out
    assert "planner(64x1)" in out and "worker(48x3)" in out


def test_a_bad_config_names_the_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "deploy.yaml"
    config.write_text("replicas:\n  count: 0\n  engine:\n    max_model_len: 1024\n")
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "deploy.yaml" in err and "replicas.count" in err


def test_run_rejects_a_non_positive_task_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--tasks", "0"]) == 2
    assert "--tasks" in capsys.readouterr().err
