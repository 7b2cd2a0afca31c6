"""Workload mix files: parsing, clear errors, draws."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from loadtests.workload import WorkloadError, load_workload
from orchestrator.workload.mix import input_text

EXAMPLES = Path(__file__).parents[3] / "loadtests" / "examples"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mix.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["mix.yaml", "plan_execute.yaml"])
def test_examples_load(name: str) -> None:
    workload = load_workload(EXAMPLES / name)
    assert "plan_execute" in workload.agents


def test_draws_follow_the_mix() -> None:
    workload = load_workload(EXAMPLES / "mix.yaml")
    rng = random.Random(0)
    agents = [workload.choose_agent(rng) for _ in range(4000)]
    assert agents.count("plan_execute") / len(agents) == pytest.approx(0.75, abs=0.03)
    lengths = [workload.draw_input_tokens(rng) for _ in range(4000)]
    assert min(lengths) >= 8 and max(lengths) <= 512
    assert sum(lengths) / len(lengths) == pytest.approx(64, rel=0.05)
    assert all(0.5 <= workload.draw_think_time(rng) <= 2.0 for _ in range(100))


def test_input_text_has_one_word_per_token() -> None:
    assert len(input_text(random.Random(1), 17).split()) == 17


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("agents: {}\n", "agents: Dictionary should have at least 1 item"),
        ("agents: {react: 0}\n", "agents.react: Input should be greater than 0"),
        ("agents: {react: 1}\nmode: turbo\n", "mode: Input should be 'synthetic' or 'live'"),
        ("agents: {react: 1}\nthink_time_s: {min: 3, max: 1}\n", "think_time_s: Value error"),
        ("agents: {react: 1}\nbogus: 1\n", "bogus: Extra inputs are not permitted"),
        ("- 1\n", "expected a mapping"),
        ("agents: [\n", "not valid YAML"),
    ],
)
def test_errors_name_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(WorkloadError) as info:
        load_workload(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="cannot read the workload file"):
        load_workload(tmp_path / "nope.yaml")


def test_check_agents_lists_known_ones() -> None:
    workload = load_workload(EXAMPLES / "mix.yaml")
    workload.check_agents(["chat", "plan_execute", "react"])
    with pytest.raises(
        WorkloadError,
        match=r"unknown agent in the workload: react; the server has: chat, plan_execute",
    ):
        workload.check_agents(["plan_execute", "chat"])
