"""`inflection load`: run the agentic locustfile headless, with progress and a summary.

    inflection load --run-time 60s --users 8                     # local sim orchestrator
    inflection load --host 127.0.0.1:50051 --arrival-rate 4 --slo task_latency=30s
    inflection load --host H:P --sweep 1:1:10 --step-time 30s --slo task_ttft=5s
    inflection load --host H:P --processes 2 --out reports/load
    inflection load --target openai --host http://H:8000 --model M --users 8    # any vLLM

Locust runs in a subprocess (`python -m locust -f loadtests/locustfile.py --headless`), so
that process imports locust (and gevent's patches) first and never imports Ray; this
module imports neither, because `orchestrator.cli` imports it to build its parser. Without
`--host` a local orchestrator on simulated replicas is started (`inflection serve`) and
always stopped with SIGTERM at the end.

Bad input (workload file, --slo, --sweep, --run-time) is rejected here before anything
starts; an unreachable host or an unknown agent is detected by the locustfile before load
starts, and its single `inflection: ...` line is passed on. Either way: one line on
stderr, exit code 1 (2 for bad options), no traceback.

Paths given on the command line are made absolute first (the local orchestrator runs in
another folder). Progress (on stderr) reads the live figures the locustfile rewrites every
second (`--agentic-live`: tasks/s, TTFT and latency p50/p99, output tok/s, amplification
over the last 10 s); the final count and the summary read the agentic JSON the locustfile
writes at test stop (`--agentic-json`, shape documented in loadtests/metrics.py), so they
agree. With --out, `tasks.jsonl` has one line per task (metrics.task_record; its calls
too with --export-calls) and a sweep writes sweep.json/.csv and its curve in report.html.
Ctrl-C stops Locust in order, prints the partial summary (the JSON is on disk) and one
`inflection: interrupted` line, exit code 130. Tables go through orchestrator.tables
(`--format table|csv|json`; with csv/json, messages move to stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from loadtests.console import (
    INTERRUPTED,
    Output,
    finished_line,
    print_error,
    summary_table,
)
from loadtests.local_server import local_orchestrator
from loadtests.locust_run import RunFiles, fail_line, locust_command, read_snapshot, run_locust
from loadtests.metrics import Snapshot
from loadtests.options import (
    LoadError,
    add_arguments,
    config_of,
    parse_timespan,
    resolve_paths,
    resolve_token,
    validate,
)
from loadtests.sweep_curve import SweepPoint
from loadtests.sweep_run import report_sweep, run_sweep_steps
from orchestrator.tables import TableFormat, format_of, print_table
from orchestrator.workload.sweep import is_sweep_plan


def cmd_load(args: argparse.Namespace) -> int:
    output = Output.for_format(format_of(args))
    resolve_paths(args)
    resolve_token(args)
    try:
        validate(args)
    except LoadError as exc:
        print_error(str(exc))
        return 2
    out = Path(args.out) if args.out else None
    try:
        with contextlib.ExitStack() as stack:
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
                folder = out
            else:
                temporary = tempfile.TemporaryDirectory(prefix="inflection-")
                folder = Path(stack.enter_context(temporary))
            if args.worker:
                return run_locust(locust_command(args, None, None), None, None, output.progress)
            host = args.host
            if host is None:
                host = stack.enter_context(local_orchestrator(folder, output.info))
            if args.sweep and not is_sweep_plan(args.sweep):
                return run_sweep_steps(args, host, folder, output, keep=out is not None)
            return _single_run(args, host, folder, output, keep=out is not None)
    except LoadError as exc:
        print_error(str(exc))
        return 1
    except KeyboardInterrupt:
        print_error("interrupted")
        return 130


def _single_run(
    args: argparse.Namespace, host: str, folder: Path, output: Output, *, keep: bool
) -> int:
    files = RunFiles.under(folder, "locust", html=keep, tasks="tasks.jsonl")
    in_run_sweep = bool(args.sweep)  # only a SweepPlan reaches here
    run_time_s = None if in_run_sweep else parse_timespan(args.run_time)
    interrupted = False
    try:
        code = run_locust(locust_command(args, host, files), files, run_time_s, output.progress)
    except KeyboardInterrupt:
        # Locust has been stopped in order and wrote what it had: show that below.
        interrupted, code = True, INTERRUPTED
    snapshot = read_snapshot(files.agentic)
    if snapshot is None:
        if interrupted:
            raise KeyboardInterrupt
        if args.master:
            return code
        raise LoadError(fail_line(code, files))
    output.info.print(finished_line(snapshot), highlight=False, soft_wrap=True)
    split = output.fmt is not TableFormat.TABLE
    print_table(output.out, summary_table(snapshot, split=split), output.fmt)
    if keep:
        write_agentic_reports(args, host, folder, snapshot)
        output.info.print(
            f"reports in {folder}/: report.html, summary.json/.csv, timeseries.csv, "
            "tasks.jsonl (agentic); locust.html, locust_*.csv (Locust's own); "
            "locust_agentic.json (raw snapshot)",
            highlight=False,
            soft_wrap=True,
        )
    if interrupted:
        print_error("interrupted: the figures above are of the tasks finished so far")
        return INTERRUPTED
    if in_run_sweep:
        result = snapshot.get("sweep")
        if result is None:
            raise LoadError("the sweep did not finish (no `sweep` in the agentic JSON)")
        points = [SweepPoint.from_dict(p) for p in result["points"]]
        report = folder / "report.html" if keep else None
        min_good = float(result["min_good"])
        return report_sweep(args, points, output, folder if keep else None, report, min_good)
    summary = snapshot["summary"]
    if code != 0:
        if summary["failed"]:
            print_error(f"{summary['failed']} of {summary['tasks']} tasks failed")
        else:
            print_error(fail_line(code, files))
        return code
    return 0


def write_agentic_reports(
    args: argparse.Namespace, host: str, folder: Path, snapshot: Snapshot
) -> None:
    """loadtests.report's HTML/JSON/CSV from the snapshot (the locustfile writes only the
    JSON; without its raw samples the amplification plot shows percentiles)."""
    from loadtests.report import write_reports

    write_reports(folder, snapshot, title="inflection load", config=config_of(args, host))


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `load` on the `inflection` command's subparsers."""
    p = sub.add_parser(
        "load",
        help="drive agentic load with Locust (a local sim orchestrator without --host)",
        description="Run loadtests/locustfile.py headless against --host (or a local "
        "orchestrator on simulated replicas), show live figures on stderr (tasks/s, TTFT and "
        "latency p50/p99, output tok/s, amplification over the last 10 s), and print the "
        "agentic summary: token amplification, calls per task, TTFT, latency, tokens/s, "
        "goodput. Ctrl-C stops the run and prints (and, with --out, writes) the summary of "
        "the tasks finished so far; exit code 130.",
    )
    add_arguments(p)
    p.set_defaults(func=cmd_load)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m loadtests.cli load ...`: the same command outside `inflection`."""
    parser = argparse.ArgumentParser(prog="inflection")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
