"""`inflection load`: option parsing, the Locust command it builds, input checks, the sweep
driver, progress from Locust's stats history and the summary table. Pure: no process."""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from loadtests import cli, console, local_server, locust_run, options, sweep_run
from loadtests.metrics import AgenticStats, TaskSample
from loadtests.sweep_curve import SweepPoint, sweep_step_of
from orchestrator.tables import TableFormat, print_table
from orchestrator.workload.slo import SloConfig
from orchestrator.workload.sweep import is_sweep_plan, parse_sweep, run_sweep


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="inflection")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["load", *argv])


def files(tmp_path: Path, html: bool = True) -> locust_run.RunFiles:
    return locust_run.RunFiles.under(tmp_path, "run", html=html)


def option(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_defaults_run_the_example_mix_closed_loop_for_60s(tmp_path: Path) -> None:
    args = parse()
    assert args.func is cli.cmd_load
    cmd = locust_run.locust_command(args, "127.0.0.1:5000", files(tmp_path))
    assert cmd[:5] == [sys.executable, "-m", "locust", "-f", str(locust_run.LOCUSTFILE)]
    assert "--headless" in cmd
    assert option(cmd, "-u") == "8" and option(cmd, "-r") == "8"
    assert option(cmd, "-t") == "60s"
    assert option(cmd, "--host") == "127.0.0.1:5000"
    assert option(cmd, "--workload") == str(options.DEFAULT_WORKLOAD)
    assert options.DEFAULT_WORKLOAD.is_file()
    assert "--arrival-rate" not in cmd and "--processes" not in cmd and "--slo" not in cmd
    # Reports: CSV with history (progress reads it), HTML, the agentic JSON.
    assert option(cmd, "--csv") == str(tmp_path / "run")
    assert "--csv-full-history" in cmd
    assert option(cmd, "--html") == str(tmp_path / "run.html")
    assert option(cmd, "--agentic-json") == str(tmp_path / "run_agentic.json")


def test_open_loop_slo_token_and_processes_pass_through(tmp_path: Path) -> None:
    args = parse(
        *("--users", "2", "--spawn-rate", "0.5", "--run-time", "2m"),
        *("--arrival-rate", "3.5", "--arrival-process", "gamma", "--arrival-cv", "2"),
        *("--slo", "task_ttft=5s,task_latency=30s", "--token", "t0k", "--processes", "2"),
    )
    cmd = locust_run.locust_command(args, "h:1", files(tmp_path, html=False))
    assert option(cmd, "-u") == "2" and option(cmd, "-r") == "0.5" and option(cmd, "-t") == "120s"
    assert option(cmd, "--arrival-rate") == "3.5"
    assert option(cmd, "--arrival-process") == "gamma" and option(cmd, "--arrival-cv") == "2"
    assert option(cmd, "--slo") == "task_ttft=5s,task_latency=30s"
    assert "--token" not in cmd and not any("t0k" in part for part in cmd)  # `ps` shows argv
    assert option(cmd, "--processes") == "2"
    assert option(cmd, "--master-bind-host") == "127.0.0.1"  # loopback unless asked
    assert "--html" not in cmd


@pytest.mark.parametrize("worker", [False, True])
def test_the_token_reaches_locust_by_environment_never_argv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker: bool
) -> None:
    monkeypatch.setenv("INFLECTION_TOKEN", "")  # restored after, whatever resolve_token sets
    (tmp_path / "token").write_text("s3cret\n")
    args = parse("--token-file", str(tmp_path / "token"), *(["--worker"] if worker else []))
    options.resolve_token(args)
    cmd = locust_run.locust_command(args, None if worker else "h:1", files(tmp_path))
    assert not any("s3cret" in part for part in cmd)
    assert locust_run.locust_env()["INFLECTION_TOKEN"] == "s3cret"


def test_the_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFLECTION_TOKEN", "from-env")
    args = parse()
    options.resolve_token(args)
    assert args.token == "from-env"
    args = parse("--token", "flag-wins")
    options.resolve_token(args)
    assert args.token == "flag-wins"


def test_open_loop_defaults_to_one_dispatcher(tmp_path: Path) -> None:
    cmd = locust_run.locust_command(parse("--arrival-rate", "4"), "h:1", None)
    assert option(cmd, "-u") == "1"
    assert "--csv" not in cmd


def test_sweep_step_overrides_rate_and_run_time(tmp_path: Path) -> None:
    args = parse("--sweep", "1:1:3", "--slo", "task_latency=2s")
    cmd = locust_run.locust_command(args, "h:1", None, arrival_rate=2.0, run_time="15s")
    assert option(cmd, "--arrival-rate") == "2" and option(cmd, "-t") == "15s"


def test_master_and_worker_passthrough() -> None:
    master = locust_run.locust_command(
        parse("--master", "--expect-workers", "3", "--master-bind-host", "0.0.0.0"), "h:1", None
    )
    assert "--master" in master and option(master, "--expect-workers") == "3"
    assert option(master, "--master-bind-host") == "0.0.0.0"
    worker = locust_run.locust_command(
        parse("--worker", "--master-host", "10.0.0.5", "--master-port", "6000"), None, None
    )
    assert option(worker, "--master-host") == "10.0.0.5"
    assert option(worker, "--master-port") == "6000"
    assert "--headless" not in worker and "-t" not in worker  # the master decides those
    assert "--workload" in worker  # each worker loads the mix itself


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("45s", 45), ("2m", 120), ("1h30m", 5400), ("1m5s", 65)]
)
def test_parse_timespan(text: str, seconds: int) -> None:
    assert options.parse_timespan(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0s", "ten", "5x", "-3s"])
def test_parse_timespan_rejects(text: str) -> None:
    with pytest.raises(options.LoadError, match="--run-time"):
        options.parse_timespan(text)


def test_parse_sweep_and_rates() -> None:
    assert parse_sweep("1:1:4").rates() == [1, 2, 3, 4]
    assert parse_sweep("0.5:0.25:1.2").rates() == [0.5, 0.75, 1.0]
    assert parse_sweep("2:5:2").rates() == [2]
    for bad in ("1:2", "a:1:2", "0:1:2", "1:-1:2", "5:1:2"):
        with pytest.raises(ValueError, match="--sweep"):
            parse_sweep(bad)


def point(rate: float, good: float = 1.0, tasks: int = 10, **kw: Any) -> SweepPoint:
    values: dict[str, Any] = {
        "offered_per_s": rate,
        "achieved_per_s": rate * 0.98,
        "tasks": tasks,
        "ok": tasks,
        "failed": 0,
        "dropped": 0,
        "good_fraction": good,
        "met": good >= 0.95,
        "task_ttft_p50_s": 0.25,
        "task_ttft_p99_s": 0.5,
        "task_latency_p50_s": 1.5,
        "task_latency_p99_s": 3.25,
        "output_tokens_per_s": 1234.5,
    }
    values.update(kw)
    return SweepPoint(**values)


def test_sweep_stops_at_the_first_broken_step() -> None:
    tried: list[float] = []

    def step(rate: float) -> SweepPoint:
        tried.append(rate)
        return point(rate, 1.0 if rate < 3 else 0.5)

    history = run_sweep([1, 2, 3, 4, 5], step)
    assert tried == [1, 2, 3]
    assert [s.offered_per_s for s in history] == [1, 2, 3]


def snapshot(samples: list[TaskSample], slo: SloConfig | None = None, dropped: int = 0) -> Any:
    stats = AgenticStats()
    for s in samples:
        stats.add(s)
    stats.add_dropped(dropped)
    return stats.snapshot(slo)


def sample(agent: str = "plan_execute", latency: float = 1.0, ok: bool = True) -> TaskSample:
    return TaskSample(
        completed_at=1000.0 + latency,
        agent=agent,
        ok=ok,
        status="OK" if ok else "DEADLINE_EXCEEDED",
        llm_calls=5,
        prompt_tokens=300,
        cached_tokens=100,
        output_tokens=70,
        user_input_tokens=32,
        final_output_tokens=0 if not ok else 8,
        token_amplification=9.25,
        task_ttft=0.5,
        task_latency=latency,
        call_tpots=(0.007,),
    )


def test_sweep_step_counts_failures_and_drops_as_misses() -> None:
    slo = SloConfig(task_latency=2.0)
    samples = [sample(latency=1), sample(latency=1), sample(latency=3), sample(ok=False)]
    step = sweep_step_of(4.0, snapshot(samples, slo, dropped=4)["summary"])
    assert step.rate == 4.0 and step.tasks == 8
    assert step.good_fraction == pytest.approx(2 / 8)


def render(table: Any) -> str:
    rich_console = Console(file=io.StringIO(), width=160, color_system=None)
    rich_console.print(table)
    out = rich_console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def test_summary_table_shows_amplification_per_agent_and_failures() -> None:
    snap = snapshot([sample(), sample("react", latency=2), sample("react", ok=False)])
    text = render(console.summary_table(snap))
    assert "token amplification" in text and "9.25 / 9.25 / 9.25" in text
    header = next(line for line in text.splitlines() if "metric" in line)
    assert header.index("all") < header.index("plan_execute") < header.index("react")
    assert "DEADLINE_EXCEEDED 1" in text
    assert "2 / 1" in text  # tasks ok / failed, all agents


def test_summary_table_of_an_empty_run() -> None:
    text = render(console.summary_table(snapshot([])))
    assert "0 / 0" in text and "-" in text


def at(start: float, latency: float, ok: bool = True) -> TaskSample:
    """A sample of a task that started at `start` (unix s) and took `latency`."""
    return replace(sample(latency=latency, ok=ok), completed_at=start + latency)


def test_progress_shows_live_rates_percentiles_and_amplification(tmp_path: Path) -> None:
    stats = AgenticStats()
    stats.start(990.0, warmup_s=2.0)
    stats.add(at(1000.0, 1.0))  # measured
    stats.add(at(990.5, 9.5))  # started in the warm-up
    stats.add(at(1000.0, 2.0, ok=False))
    live = stats.live(now=1003.0).to_dict()
    path = tmp_path / "live.json"
    path.write_text(json.dumps({**live, "users": 8}))
    line = console.live_line(locust_run.read_live(path))  # type: ignore[arg-type]
    assert line.startswith("8 users, 3 tasks (1 failed, 1 in warm-up) | last 10s: ")
    assert "0.10 tasks/s" in line  # 1 measured ok task in the last 10 s
    assert "TTFT p50/p99 500/500 ms" in line and "latency p50/p99 1000/1000 ms" in line
    assert "output tok/s" in line and "amplification 9.25" in line
    assert locust_run.read_live(tmp_path / "missing.json") is None


def test_the_final_count_is_the_summarys() -> None:
    stats = AgenticStats()
    stats.start(990.0, warmup_s=5.0)
    for sample_ in (at(1000.0, 1.0), at(1000.0, 2.0), at(990.5, 10.0)):
        stats.add(sample_)
    snap = stats.snapshot()
    line = console.finished_line(snap)
    assert line.startswith("2 tasks measured (2 ok, 0 failed)")
    assert "warm-up: 1 tasks that started in the first 5s are left out" in line
    assert "2 / 0" in render(console.summary_table(snap))


def test_relative_path_options_are_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = parse("--out", "reports/load", "--workload", "mix.yaml", "--trace", "t.jsonl")
    options.resolve_paths(args)
    assert args.out == str(tmp_path / "reports" / "load")
    assert args.workload == str(tmp_path / "mix.yaml") and args.trace == str(tmp_path / "t.jsonl")
    assert parse().workload == str(options.DEFAULT_WORKLOAD)  # already absolute


def test_warmup_export_and_live_options_reach_the_locustfile(tmp_path: Path) -> None:
    args = parse("--warmup", "10s", "--export-calls", "--run-time", "30s")
    cmd = locust_run.locust_command(
        args, "h:1", locust_run.RunFiles.under(tmp_path, "locust", html=True, tasks="tasks.jsonl")
    )
    assert option(cmd, "--agentic-warmup") == "10"
    assert option(cmd, "--agentic-tasks") == str(tmp_path / "tasks.jsonl")
    assert option(cmd, "--agentic-live") == str(tmp_path / "locust_live.json")
    assert "--agentic-export-calls" in cmd
    plain = locust_run.locust_command(parse(), "h:1", files(tmp_path))
    assert "--agentic-warmup" not in plain and "--agentic-export-calls" not in plain


def test_serve_config_is_two_sim_replicas_on_loopback() -> None:
    import yaml

    from orchestrator.config import Backend, DeploymentConfig

    config = DeploymentConfig.model_validate(yaml.safe_load(local_server.serve_config(4321)))
    assert config.replicas.count == 2 and config.replicas.backend is Backend.SIM
    assert config.replicas.num_cpus == 0.5
    assert config.server.host == "127.0.0.1" and config.server.port == 4321
    assert config.ray.address == "local"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--slo", "ttft=5s"], "--slo: unknown bound 'ttft'"),
        (["--slo", "task_ttft=soon"], "--slo: task_ttft='soon' is not a duration"),
        (["--run-time", "forever"], "--run-time: 'forever' is not a duration"),
        (["--users", "0"], "--users: must be at least 1"),
        (["--sweep", "1:1:3"], "--sweep needs --slo"),
        (["--sweep", "1:x:3", "--slo", "task_ttft=1s"], "--sweep: '1:x:3'"),
        (["--arrival-rate", "0"], "--arrival-rate: must be a positive"),
        (["--warmup", "60s"], "--warmup 60s covers the whole --run-time 60s"),
        (["--warmup", "soon"], "--warmup: 'soon' is not a duration"),
        (
            ["--sweep", "1:1:2", "--slo", "task_ttft=1s", "--step-time", "5s", "--warmup", "5s"],
            "--warmup 5s covers each whole --step-time 5s",
        ),
    ],
)
def test_bad_options_are_one_line_before_anything_starts(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.cmd_load(parse(*argv)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("inflection: ") and expected in err, err


def test_bad_workload_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mix = tmp_path / "mix.yaml"
    mix.write_text("agents: {react: 0}\n")
    assert cli.cmd_load(parse("--workload", str(mix))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mix.yaml: agents.react" in err, err
    assert cli.cmd_load(parse("--workload", str(tmp_path / "nope.yaml"))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.yaml" in err, err


def test_importing_the_command_stays_light() -> None:
    # orchestrator.cli imports this module to build its parser: no locust (gevent patches),
    # no Ray, no grpc in the `inflection` process.
    code = (
        "import sys, loadtests.cli; "
        "print(','.join(m for m in ('locust', 'gevent', 'ray', 'grpc') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""


def test_a_sweep_plan_goes_to_the_locustfile_in_one_run() -> None:
    args = parse("--sweep", "start=2,factor=2,step_s=5,max_rate=8", "--slo", "task_ttft=1s")
    assert is_sweep_plan(args.sweep) and not is_sweep_plan("1:1:3")
    cmd = locust_run.locust_command(args, "h:1", None)
    assert option(cmd, "--sweep") == "start=2,factor=2,step_s=5,max_rate=8"
    assert "-t" not in cmd  # the in-run sweep ends the run itself
    assert option(cmd, "-u") == "1"  # open loop: one dispatcher
    # Ours (START:STEP:MAX) never reaches Locust as --sweep: each step is its own run.
    ours = locust_run.locust_command(
        parse("--sweep", "1:1:3", "--slo", "task_ttft=1s"), "h:1", None
    )
    assert "--sweep" not in ours


def test_a_bad_sweep_plan_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.cmd_load(parse("--sweep", "start=2,factor=1", "--slo", "task_ttft=1s")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("inflection: --sweep"), err


def output(fmt: TableFormat = TableFormat.TABLE, width: int = 80) -> console.Output:
    """An Output writing to one string buffer, like a pipe (not a terminal)."""
    buffer = Console(file=io.StringIO(), width=width, color_system=None)
    return console.Output(buffer, buffer, buffer, fmt)


def printed(out: console.Output) -> str:
    text = out.out.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(text, str)
    return text


def test_sweep_report_names_the_highest_rate(capsys: pytest.CaptureFixture[str]) -> None:
    history = [point(1, 1.0), point(2, 0.97), point(3, 0.5)]
    args = parse("--sweep", "1:1:3", "--slo", "task_ttft=1s")
    out = output()
    assert sweep_run.report_sweep(args, history, out, None, None) == 0
    text = printed(out)
    assert "highest rate meeting the SLO: 2 tasks/s (broke at 3)" in text and "broke" in text
    assert sweep_run.report_sweep(args, history[2:], output(), None, None) == 1
    assert capsys.readouterr().err.startswith("inflection: no rate met the SLO")


def test_a_sweep_that_never_broke_does_not_call_max_the_answer(tmp_path: Path) -> None:
    history = [point(2), point(4)]
    args = parse("--sweep", "2:2:4", "--slo", "task_latency=30s")
    out = output()
    assert sweep_run.report_sweep(args, history, out, tmp_path, None) == 0
    text = printed(out)
    assert "SLO never broke up to 4 tasks/s" in text
    assert "highest rate meeting the SLO" not in text
    # The curve, whole, on an 80-column pipe: offered vs achieved and the percentiles.
    row = next(line for line in text.splitlines() if "3.92" in line)
    assert row.split("│")[1].strip() == "4" and "250" in row and "3250" in row and "1234" in row
    doc = json.loads((tmp_path / "sweep.json").read_text())
    assert doc["outcome"] == "never_broke" and doc["highest_rate_tried"] == 4
    assert [p["offered_per_s"] for p in doc["points"]] == [2, 4]
    lines = (tmp_path / "sweep.csv").read_text().splitlines()
    assert lines[0].startswith("offered_per_s,achieved_per_s,tasks,") and len(lines) == 3
    report = (tmp_path / "report.html").read_text()
    assert 'id="sweep"' in report and "<svg" in report and "SLO never broke up to 4" in report


def test_the_sweep_curve_is_added_to_an_existing_report(tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    report.write_text("<html><body><h1>run</h1></body></html>\n")
    args = parse("--sweep", "start=1,factor=2", "--slo", "task_latency=30s")
    assert sweep_run.report_sweep(args, [point(1), point(2, 0.5)], output(), tmp_path, report) == 0
    text = report.read_text()
    assert text.index("<h1>run</h1>") < text.index('id="sweep"') < text.index("</body>")


def test_summary_as_csv_and_json_keeps_every_figure_whole() -> None:
    snap = snapshot([sample(latency=123.456789), sample("react", latency=2)])
    out = output(TableFormat.CSV)
    print_table(out.out, console.summary_table(snap, split=True), out.fmt)
    rows = list(csv.reader(io.StringIO(printed(out))))
    assert rows[0] == ["metric", "all", "plan_execute", "react"]
    latency = {r[0]: r[1:] for r in rows}["task latency (ms) p99"]
    assert latency[1] == "123457"  # plan_execute's p99 in ms, whole (not 1.23e+05, not cut)
    out = output(TableFormat.JSON)
    print_table(out.out, console.summary_table(snap, split=True), out.fmt)
    doc = json.loads(printed(out))
    assert {r["metric"] for r in doc["rows"]} >= {"tasks/s", "task ttft (ms) mean"}


def test_the_summary_table_is_never_truncated_on_a_narrow_pipe() -> None:
    agents = ["plan_execute", "react", "reflexion", "tree_of_thought", "map_reduce"]
    snap = snapshot([sample(a, latency=1234.5678) for a in agents])
    out = output(width=80)
    print_table(out.out, console.summary_table(snap), out.fmt)
    text = printed(out)
    assert "…" not in text and "1234568 / 1234568 / 1234568" in text


def test_tls_flags_pass_through() -> None:
    assert "--tls" not in locust_run.locust_command(parse(), "h:1", None)
    assert "--tls" in locust_run.locust_command(parse("--tls"), "h:1", None)
    cmd = locust_run.locust_command(parse("--tls", "--tls-ca", "ca.pem"), "h:1", None)
    assert option(cmd, "--tls-ca") == "ca.pem" and "--tls" not in cmd
    worker = locust_run.locust_command(parse("--worker", "--tls-ca", "ca.pem"), None, None)
    assert option(worker, "--tls-ca") == "ca.pem"
