"""`inflection simulate` and `inflection plan` as a new user meets them: a
warm-up that covers the run, a run that measures nothing, Ctrl-C, plan's defaults,
progress, costs and recommendation, and tables piped into an 80-column console."""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.console import Console

from orchestrator.cli import main
from orchestrator.sim import commands, planner
from orchestrator.sim.cluster import ClusterSimulation
from orchestrator.sim.planner import DEFAULT_HEADROOM, DEFAULT_SLO, PlanRow, recommend

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "cluster" / "sim-example.yaml"


class Pipe:
    """stdout and stderr as a pipe: non-terminal consoles of 80 columns (rich's width
    when it cannot ask a terminal)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.out_file, self.err_file = io.StringIO(), io.StringIO()
        monkeypatch.setattr(commands, "console", Console(file=self.out_file, width=80))
        monkeypatch.setattr(commands, "err_console", Console(file=self.err_file, width=80))

    @property
    def out(self) -> str:
        return self.out_file.getvalue()

    @property
    def err(self) -> str:
        return self.err_file.getvalue()


@pytest.fixture
def pipe(monkeypatch: pytest.MonkeyPatch) -> Pipe:
    return Pipe(monkeypatch)


def table_row(out: str, first: str) -> list[str]:
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 2 and cells[1] == first:
            return cells[2:-1]
    raise AssertionError(f"no row {first!r} in:\n{out}")


def interrupted_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "interrupted" in line]


def simulate_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["simulate", "--config", str(EXAMPLE), "--replicas", "2", "--rate", "5",
            "--out", str(tmp_path), *extra]  # fmt: skip


def plan_args(tmp_path: Path, *extra: str) -> list[str]:
    """A cheap plan (see test_cli_sim.plan_args)."""
    return ["plan", "--model", "llama-3.1-8b", "--tp", "1", "--replicas", "1",
            "--duration", "3", "--slo", "task_latency_p99=2.5s", "--out", str(tmp_path),
            *extra]  # fmt: skip


# ---- item 2: the warm-up and runs that measure nothing ------------------------------------


def test_a_warmup_covering_the_run_is_scaled_down_with_a_warning(
    tmp_path: Path, pipe: Pipe
) -> None:
    # The example's warmup_s is 30: with --duration 30 it used to swallow every arrival
    # and print a table of zeros and "SLO missed".
    assert main(simulate_args(tmp_path, "--duration", "30")) == 0, pipe.err
    assert "warning: warmup_s 30 s covers all 30 s of arrivals; measuring after 7.5 s" in pipe.err
    assert int(table_row(pipe.out, "tasks completed")[0]) > 50  # ~5/s over 22.5 s
    assert "SLO met" in pipe.out
    report = orjson.loads((tmp_path / "simulate.json").read_bytes())
    assert report["config"]["warmup_s"] == 7.5
    assert report["extra"]["warmup_s"] == 7.5


def test_a_run_that_measures_no_task_says_so_and_fails(tmp_path: Path, pipe: Pipe) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text(
        "replicas: 1\narrival: {process: constant, rate: 2}\nduration_s: 10\nwarmup_s: 5\n"
        "max_tasks: 2\nslo: {task_latency_p99: 60}\nworkload: {mix: {react: 1}}\n"
    )
    assert main(["simulate", "--config", str(config), "--out", str(tmp_path)]) == 1
    assert "no tasks measured" in pipe.err and "2 task(s) finished" in pipe.err
    assert "SLO" not in pipe.out and "tasks completed" not in pipe.out
    assert "Traceback" not in pipe.err


# ---- item 6: Ctrl-C ------------------------------------------------------------------------


def test_ctrl_c_in_simulate_prints_and_writes_the_partial_summary(
    tmp_path: Path, pipe: Pipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = ClusterSimulation._sample

    def interrupt_at_45_s(self: ClusterSimulation, now: float) -> None:
        sample(self, now)
        if now >= 45.0:  # 15 s after the example's 30 s warm-up
            raise KeyboardInterrupt

    monkeypatch.setattr(ClusterSimulation, "_sample", interrupt_at_45_s)
    assert main(simulate_args(tmp_path, "--duration", "600")) == 130
    [line] = interrupted_lines(pipe.err)
    assert "SIGINT" in line and "Traceback" not in pipe.err
    tasks = int(table_row(pipe.out, "tasks completed")[0])
    assert 30 < tasks < 120  # ~5/s over the 15 measured seconds
    assert re.search(r"^simulated [\d.]+ s \(interrupted\), measured", pipe.out, re.M)
    report = orjson.loads((tmp_path / "simulate.json").read_bytes())
    assert report["extra"]["interrupted"] is True
    assert report["summary"]["tasks"] == tasks
    assert report["extra"]["simulated_s"] <= 45.0
    assert (tmp_path / "simulate.html").exists()


def test_ctrl_c_in_plan_keeps_the_finished_rows(
    tmp_path: Path, pipe: Pipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    trial = planner._trial
    seen_on_disk: list[list[str]] = []

    def interrupt_at_b200(query: Any, engine: Any, rate: float) -> Any:
        if engine.gpu == "b200":
            # The h100 row is already printed and on disk when the next search starts.
            rows = orjson.loads((tmp_path / "plan.json").read_bytes())["rows"]
            seen_on_disk.append([r["gpu"] for r in rows])
            raise KeyboardInterrupt
        return trial(query, engine, rate)

    monkeypatch.setattr(planner, "_trial", interrupt_at_b200)
    assert main(plan_args(tmp_path, "--gpus", "h100,b200")) == 130
    assert seen_on_disk == [["h100"]]
    assert re.search(r"^h100 tp1: max [\d.]+ tasks/s per replica", pipe.err, re.M)
    [line] = interrupted_lines(pipe.err)
    assert "1 finished row" in line and "Traceback" not in pipe.err
    assert float(table_row(pipe.out, "h100")[1]) > 0
    assert "b200" not in pipe.out.split("cheapest")[0]
    report = orjson.loads((tmp_path / "plan.json").read_bytes())
    assert report["query"]["interrupted"] is True
    assert [r["gpu"] for r in report["rows"]] == ["h100"]
    with (tmp_path / "plan.csv").open(newline="") as f:
        assert [r["gpu"] for r in csv.DictReader(f)] == ["h100"]


# ---- item 11: plan's defaults, costs, recommendation, progress, help -----------------------


def test_plan_needs_no_slo_and_prints_the_default_it_used(tmp_path: Path, pipe: Pipe) -> None:
    args = ["plan", "--model", "llama-3.1-70b", "--gpus", "b200", "--tp", "2",
            "--replicas", "1", "--duration", "2", "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0, pipe.err
    assert f"SLO: {DEFAULT_SLO} (the default" in pipe.out
    assert DEFAULT_SLO == "task_ttft_p90=5s,task_latency_p99=60s"  # as the README documents
    report = orjson.loads((tmp_path / "plan.json").read_bytes())
    assert report["query"]["slo"] == DEFAULT_SLO
    assert report["query"]["headroom"] == DEFAULT_HEADROOM
    [row] = report["rows"]
    assert row["rate_per_replica"] > 0 and row["task_ttft_p90"] <= 5.0


def test_plan_help_explains_tok_per_joule_and_states_the_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "tok/J output tokens per joule of GPU board energy" in text
    assert DEFAULT_SLO in text
    assert f"default {DEFAULT_HEADROOM}" in text
    assert "--format" in text
    # The CLI states the planner's defaults without importing it; they must agree.
    assert (commands._DEFAULT_SLO, commands._DEFAULT_HEADROOM) == (DEFAULT_SLO, DEFAULT_HEADROOM)


@pytest.mark.parametrize("headroom", ["0", "1.5", "-0.2"])
def test_plan_headroom_outside_0_1_is_a_one_line_error(
    tmp_path: Path, pipe: Pipe, headroom: str
) -> None:
    assert main(plan_args(tmp_path, "--gpus", "h100", "--headroom", headroom)) == 2
    [line] = pipe.err.strip().splitlines()
    assert line.startswith("error: --headroom")


def row(gpu: str, gpus: int, per_1k: float | None, fits: bool = True) -> PlanRow:
    return PlanRow(gpu, 1, fits, "", 1.0 if gpus else 0.0, 1.0, 1.0, gpus, 1.0, None,
                   None, 1.0, 1.0, 3, None, per_1k)  # fmt: skip


def test_recommendation_is_the_cheapest_per_task_that_meets_the_slo() -> None:
    rows = [row("h100", 40, 0.9), row("b200", 16, 0.7), row("h200", 0, None),
            row("mi300x", 0, None, fits=False)]  # fmt: skip
    assert recommend(rows) == rows[1]
    assert "cheapest per task meeting the SLO: b200 tp1, $0.700 per 1k tasks, 16 GPUs" in (
        commands.recommendation_line(rows)
    )
    unpriced = [row("h100", 40, None), row("b200", 16, None)]
    assert "fewest GPUs meeting the SLO (no prices): b200 tp1, 16 GPUs" in (
        commands.recommendation_line(unpriced)
    )
    assert recommend([rows[2], rows[3]]) is None
    assert commands.recommendation_line([rows[2]]).startswith("no configuration met the SLO")


# ---- item 13 (and 11's figures): a plan piped into an 80-column console ---------------------


@pytest.fixture(scope="module")
def piped_plan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipe, dict[str, Any]]]:
    folder = tmp_path_factory.mktemp("plan")
    with pytest.MonkeyPatch.context() as monkeypatch:
        pipe = Pipe(monkeypatch)
        # 70B at tp2 under the default SLO: a few tasks/s per replica, so trials are quick.
        args = ["plan", "--model", "llama-3.1-70b", "--gpus", "h200,b200", "--tp", "2",
                "--replicas", "1", "--duration", "2", "--price", "h200=2.1",
                "--headroom", "0.5", "--target-rate", "30", "--out", str(folder)]  # fmt: skip
        assert main(args) == 0, pipe.err
        yield pipe, orjson.loads((folder / "plan.json").read_bytes())


def test_piped_plan_table_keeps_every_figure_and_header_whole(
    piped_plan: tuple[Pipe, dict[str, Any]],
) -> None:
    pipe, report = piped_plan
    out = pipe.out
    assert "…" not in out
    for header in ("max tasks/s /replica", "out tok/s /GPU", "tok/J", "fleet $/h",
                   "$ /1k tasks", "$ /M out tok", "TTFT p90 ms", "lat. p99 ms"):  # fmt: skip
        assert header in out, header
    for r in report["rows"]:
        cells = table_row(out, r["gpu"])
        assert cells[1] == f"{r['rate_per_replica']:.2f}"
        assert cells[3] == f"{r['output_tps_per_gpu']:.0f}"
        assert cells[4] == f"{r['tokens_per_joule']:.2f}"
        assert cells[5] == str(r["gpus_needed"])
        assert cells[6] == f"{r['fleet_usd_per_hour']:,.2f}"
        assert cells[9] == f"{r['task_ttft_p90'] * 1000:.0f}"
        assert cells[10] == f"{r['task_latency_p99'] * 1000:.0f}"


def test_plan_sizes_the_fleet_at_the_headroom_and_prices_it_per_task(
    piped_plan: tuple[Pipe, dict[str, Any]],
) -> None:
    pipe, report = piped_plan
    assert report["query"]["headroom"] == 0.5
    assert "at 50% of the max rate" in pipe.out
    rows = {r["gpu"]: r for r in report["rows"]}
    for r in rows.values():
        # Half the max rate per replica: twice the replicas a 100% fleet would need.
        assert r["gpus_needed"] == math.ceil(30 / (r["rate_per_replica"] * 0.5)) * r["tp"]
        assert r["fleet_usd_per_hour"] == pytest.approx(r["gpus_needed"] * r["usd_per_gpu_hour"])
        assert r["usd_per_1k_tasks"] == pytest.approx(1000 * r["fleet_usd_per_hour"] / (3600 * 30))
    assert rows["h200"]["usd_per_gpu_hour"] == 2.1
    best = min(rows.values(), key=lambda r: r["usd_per_1k_tasks"])
    assert re.search(
        rf"^cheapest per task meeting the SLO: {best['gpu']} tp2, \$[\d.]+ per 1k tasks, "
        rf"{best['gpus_needed']} GPUs? \(\$[\d.,]+/hour\)$",
        pipe.out,
        re.M,
    )
    # Each row was reported as it finished, on stderr beside the progress bar.
    finished = re.findall(r"^(\w+) tp2: max [\d.]+ tasks/s per replica", pipe.err, re.M)
    assert finished == ["h200", "b200"]


def test_plan_csv_format_puts_only_the_table_on_stdout(
    tmp_path: Path, pipe: Pipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The search itself is covered above; a fixed row keeps this one instant.
    fixed = PlanRow("h100", 1, True, "", 12.345, 12.345, 2345.6, 12, 1.23, 2.0, 0.456,
                    1.5, 2.25, 9, 24.0, 0.0123)  # fmt: skip

    def plan(query: Any, progress: Any, on_row: Any) -> list[PlanRow]:
        on_row(fixed)
        return [fixed]

    monkeypatch.setattr(planner, "plan", plan)
    assert main(plan_args(tmp_path, "--gpus", "h100", "--format", "csv")) == 0
    [header, line] = list(csv.reader(io.StringIO(pipe.out)))
    assert header[:3] == ["GPU", "tp", "max tasks/s /replica"]
    assert line == ["h100", "1", "12.35", "12.35", "2346", "1.23", "12", "24.00", "0.0123",
                    "0.456", "1500", "2250"]  # fmt: skip
    assert "cheapest per task" in pipe.err and "SLO:" in pipe.err


# ---- item 13: simulate's tables through a pipe -----------------------------------------------


def test_piped_simulate_tables_keep_every_figure_whole(tmp_path: Path, pipe: Pipe) -> None:
    assert main(simulate_args(tmp_path, "--duration", "40")) == 0, pipe.err
    out = pipe.out
    assert "…" not in out
    report = orjson.loads((tmp_path / "simulate.json").read_bytes())
    summary = report["summary"]
    assert table_row(out, "tasks/s")[0] == f"{summary['tasks_per_s']:.2f}"
    assert table_row(out, "processed tokens/s")[0] == f"{summary['processed_tps']:.1f}"
    latency = summary["task_latency"]
    assert table_row(out, "task latency (ms)") == [
        f"{latency[k] * 1000:.1f}" for k in ("mean", "p50", "p90", "p99")
    ]
    assert [c["name"] for c in report["outcome"]["slo_checks"]] == [
        "task_ttft_p90",
        "task_latency_p99",
    ]
    for agent in report["outcome"]["agents"]:
        cells = table_row(out, agent["agent"])
        assert cells[0] == str(agent["summary"]["tasks"])
        assert cells[5] == f"{agent['summary']['task_latency']['p99'] * 1000:.1f}"
        assert cells[6] == f"{agent['goodput_tasks_per_s']:.2f}"
    for line in out.splitlines():
        if line.startswith(("simulated ", "SLO ")):
            assert "; " in line  # prose lines are not hard-wrapped at 80 columns
    # The page states the span in the CLI's words.
    [span] = re.findall(r"^(simulated .*?);", out, re.M)
    assert f'<p class="sub">{span} · 2 replicas' in (tmp_path / "simulate.html").read_text()
