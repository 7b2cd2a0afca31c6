"""The `inflection` command's cheap paths (no Ray, no engine)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator import cli
from orchestrator.cli import build_parser, main
from orchestrator.config import Backend, DeploymentConfig
from orchestrator.domain import ClusterStatus, ReplicaState, ReplicaStatus


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


def run_config(*argv: str) -> DeploymentConfig:
    """The deployment `inflection run ARGV` would start."""
    return cli._config(build_parser().parse_args(["run", *argv]), replicas_default=True)


def test_run_defaults_to_two_simulated_h100_replicas_of_llama_8b() -> None:
    replicas = run_config().replicas
    assert replicas.backend is Backend.SIM
    assert replicas.count == 2
    assert (replicas.sim.gpu, replicas.sim.model) == ("h100", "llama-3.1-8b")


def test_model_and_gpu_choose_the_simulated_replica() -> None:
    replicas = run_config("--model", "qwen3-8b", "--gpu", "b200", "--replicas", "3").replicas
    assert (replicas.sim.gpu, replicas.sim.model, replicas.count) == ("b200", "qwen3-8b", 3)
    assert replicas.engine.model is None  # the vLLM engine's model is not touched


def test_model_names_the_vllm_model_on_the_vllm_backend() -> None:
    replicas = run_config("--backend", "vllm", "--model", "/models/llama").replicas
    assert replicas.backend is Backend.VLLM
    assert replicas.count == 1
    assert replicas.engine.model == "/models/llama"
    assert replicas.sim.model == "llama-3.1-8b"


def test_a_config_file_keeps_its_replica_count(tmp_path: Path) -> None:
    config = tmp_path / "deploy.yaml"
    config.write_text("replicas:\n  count: 3\n")
    assert run_config("--config", str(config)).replicas.count == 3
    config.write_text("server:\n  port: 0\n")
    assert run_config("--config", str(config)).replicas.count == 1  # the file's default


@pytest.mark.parametrize("command", ["run", "serve"])
def test_an_unknown_simulated_model_is_a_config_error_naming_the_known_ones(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "--model", "llama-9"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "unknown model 'llama-9'" in err and "llama-3.1-8b" in err


def test_a_model_that_does_not_fit_the_gpu_is_a_config_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "--model", "llama-3.1-70b", "--gpu", "l40s"]) == 2
    assert "does not fit l40s" in " ".join(capsys.readouterr().err.split())


def test_gpu_needs_the_sim_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--backend", "vllm", "--gpu", "h100"]) == 2
    assert "--backend sim" in " ".join(capsys.readouterr().err.split())


def _pipe_console(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """cli.console as a pipe 80 columns wide, which rich used to truncate to."""
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=80))
    return out


def test_agents_table_on_a_pipe_is_never_truncated(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _pipe_console(monkeypatch)
    assert main(["agents"]) == 0
    text = out.getvalue()
    assert "…" not in text
    from agents import BUILTIN_PROGRAMS

    for program in BUILTIN_PROGRAMS.values():
        assert program.description in text  # whole, on one line


def test_agents_prints_json_with_format(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _pipe_console(monkeypatch)
    assert main(["agents", "--format", "json"]) == 0
    rows = {row["name"]: row for row in json.loads(out.getvalue())["rows"]}
    assert rows["plan_execute"]["LLM calls/task"] == "5.00"


class _FakeClient:
    """The SDK client `inflection status` opens, answering a fixed cluster status."""

    def __init__(self, target: str, **options: object) -> None:
        del target, options

    def __enter__(self) -> _FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def cluster_status(self) -> ClusterStatus:
        replica = ReplicaStatus(
            name="replica-0",
            state=ReplicaState.READY,
            engine="sim",
            model="llama-3.1-8b on h100",
            node="n",
            unfinished_requests=3,
            in_flight_calls=3,
            calls_served=123_456_789,
            output_tokens_served=98_765_432_101,
            kv_usage=0.4567,
            prefix_hit_rate=0.75,
        )
        return ClusterStatus(replicas=(replica,), model="llama-3.1-8b on h100", max_model_len=16384)


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_status_figures_are_whole_on_a_pipe(monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    import orchestrator.client

    monkeypatch.setattr(orchestrator.client, "Client", _FakeClient)
    out = _pipe_console(monkeypatch)
    assert main(["status", "--target", "127.0.0.1:1", "--format", fmt]) == 0
    text = out.getvalue()
    assert "…" not in text
    assert "98765432101" in text and "123456789" in text and "prefix hits" in text
