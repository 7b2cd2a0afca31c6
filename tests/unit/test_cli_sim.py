"""`inflection simulate` and `inflection plan` as a user runs them: the metrics table on
stdout, reports that agree with it on disk, and bad input answered with one line on
stderr and exit code 2 (no traceback)."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from orchestrator.cli import main
from orchestrator.sim import commands

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "cluster" / "sim-example.yaml"


@pytest.fixture(autouse=True)
def wide_consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wide enough that rich wraps neither table cells nor error messages, so "one line"
    means the program wrote one line."""
    monkeypatch.setattr(commands, "console", Console(width=1000))
    monkeypatch.setattr(commands, "err_console", Console(width=1000, stderr=True))


def table_row(out: str, metric: str) -> list[str]:
    """The cells of the table row whose first cell is `metric`."""
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 2 and cells[1] == metric:
            return cells[2:-1]
    raise AssertionError(f"no row {metric!r} in:\n{out}")


def assert_one_line_error(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error:")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


# ---- simulate ---------------------------------------------------------------------------


def test_simulate_prints_the_metrics_and_writes_matching_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The example's warm-up is 30 s: 40 s of arrivals leaves 10 s of measured tasks.
    code = main(["simulate", "--config", str(EXAMPLE), "--replicas", "2", "--rate", "5",
                 "--duration", "40", "--out", str(tmp_path)])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = captured.out
    assert "2 x H100" in out and "llama-3.1-8b" in out
    tasks = int(table_row(out, "tasks completed")[0])
    assert 20 < tasks < 80  # ~5 tasks/s over the 10 measured seconds
    assert int(table_row(out, "tasks failed")[0]) == 0
    amplification = table_row(out, "token amplification")
    assert float(amplification[0]) > 1
    hit_rate = table_row(out, "prefix hit rate")[0]
    assert hit_rate.endswith("%") and 0 < float(hit_rate[:-1]) < 100
    assert re.search(r"SLO (met|missed)", out)

    report = orjson.loads((tmp_path / "simulate.json").read_bytes())
    assert report["summary"]["tasks"] == tasks
    assert report["summary"]["token_amplification"]["mean"] == pytest.approx(
        float(amplification[0]), abs=0.01
    )
    assert report["config"]["replicas"] == 2
    assert report["config"]["arrival"]["rate"] == 5
    assert report["config"]["duration_s"] == 40
    assert report["replicas"] == ["sim-0", "sim-1"]
    assert report["samples"] and all(len(s["kv_usage"]) == 2 for s in report["samples"])
    html = (tmp_path / "simulate.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html")
    assert "H100" in html


def test_simulate_without_overrides_uses_the_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "small.yaml"
    config.write_text(
        "replicas: 1\narrival:\n  process: constant\n  rate: 2\nduration_s: 3\n"
        "workload:\n  mix: {react: 1}\n"
    )
    assert main(["simulate", "--config", str(config), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert int(table_row(out, "tasks completed")[0]) == 5  # at 0.5, 1.0, ..., 2.5 s
    assert "react" in out
    assert (tmp_path / "r" / "simulate.json").exists()


def test_simulate_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["simulate", "--config", str(missing), "--out", str(tmp_path)]) == 2
    assert_one_line_error(capsys.readouterr().err, "nope.yaml", "cannot read")
    assert not (tmp_path / "simulate.json").exists()


def test_simulate_bad_config_field_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("arrival:\n  rate: -1\n")
    assert main(["simulate", "--config", str(config), "--out", str(tmp_path)]) == 2
    assert_one_line_error(capsys.readouterr().err, "bad.yaml", "arrival.rate")


def test_simulate_unknown_gpu_lists_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text("engine:\n  gpu: tpu9\n")
    assert main(["simulate", "--config", str(config), "--out", str(tmp_path)]) == 2
    assert_one_line_error(capsys.readouterr().err, "tpu9", "h100", "b200")


def test_simulate_bad_trace_line_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text('{"timestamp": 0}\n{"timestamp": \n')
    config = tmp_path / "sim.yaml"
    config.write_text(f"replicas: 1\narrival:\n  process: trace\n  trace: {trace}\n")
    assert main(["simulate", "--config", str(config), "--out", str(tmp_path)]) == 2
    assert_one_line_error(capsys.readouterr().err, "trace.jsonl:2")


def test_simulate_zero_replicas_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["simulate", "--config", str(EXAMPLE), "--replicas", "0",
                 "--out", str(tmp_path)])  # fmt: skip
    assert code == 2
    assert_one_line_error(capsys.readouterr().err, "replicas")


# ---- plan -----------------------------------------------------------------------------------


def plan_args(tmp_path: Path, *extra: str) -> list[str]:
    """A cheap plan: 8B at tp=1, one replica, 3 simulated seconds per trial (the search
    simulates ever higher rates, so each trial's cost grows with the answer)."""
    return ["plan", "--model", "llama-3.1-8b", "--tp", "1", "--replicas", "1",
            "--duration", "3", "--slo", "task_latency_p99=2.5s", "--out", str(tmp_path),
            *extra]  # fmt: skip


def test_plan_reports_a_model_that_does_not_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["plan", "--model", "llama-3.1-70b", "--gpus", "h100", "--tp", "1",
            "--slo", "task_latency_p99=30s", "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "does not fit" in table_row(out, "h100")
    assert re.search(r"h100 tp1: .*GiB", out)
    [row] = orjson.loads((tmp_path / "plan.json").read_bytes())["rows"]
    assert row["fits"] is False and "GiB" in row["reason"]


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--gpus", "h100,tpu9"], ["tpu9", "known", "h100", "b200"]),
        (["--gpus", "h100", "--slo", "latency=3s"], ["--slo", "task_latency_p99"]),
        (["--gpus", "h100", "--slo", "task_latency_p99=fast"], ["--slo", "not a duration"]),
        (["--gpus", "h100", "--workload", "nope"], ["nope", "plan_execute"]),
        (["--gpus", "h100", "--workload", "react:x"], ["--workload"]),
        (["--gpus", "h100", "--price", "h100"], ["--price"]),
        (["--gpus", "h100", "--model", "llama-9"], ["llama-9", "llama-3.1-8b"]),
    ],
)
def test_plan_bad_input_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needles: list[str]
) -> None:
    assert main([*plan_args(tmp_path), *extra]) == 2
    assert_one_line_error(capsys.readouterr().err, *needles)
    assert not (tmp_path / "plan.json").exists()


def test_plan_with_an_unreachable_slo_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["plan", "--model", "llama-3.1-8b", "--gpus", "h100", "--tp", "1",
            "--replicas", "1", "--duration", "5", "--slo", "task_latency_p99=0.5s",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    assert "SLO not met" in table_row(capsys.readouterr().out, "h100")
