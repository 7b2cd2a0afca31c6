"""`inflection load --sweep START:STEP:MAX`: one Locust run per rate until a step breaks
the SLO (orchestrator.workload.sweep), then the steps' table, the curve's files and the
verdict.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from loadtests.console import INTERRUPTED, Output, print_error, step_line, sweep_table
from loadtests.locust_run import RunFiles, fail_line, locust_command, read_snapshot, run_locust
from loadtests.options import LoadError, config_of, parse_timespan
from loadtests.sweep_curve import (
    Outcome,
    SweepPoint,
    sweep_csv,
    sweep_json,
    sweep_point,
    sweep_step_of,
    verdict,
)
from orchestrator.tables import print_table
from orchestrator.workload.sweep import (
    MIN_GOOD_FRACTION,
    parse_sweep,
    run_sweep,
)


def run_sweep_steps(
    args: argparse.Namespace, host: str, folder: Path, output: Output, *, keep: bool
) -> int:
    sweep = parse_sweep(args.sweep)
    step_s = parse_timespan(args.step_time, "--step-time")

    def run_step(rate: float) -> SweepPoint:
        files = RunFiles.under(folder, f"sweep_{rate:g}", html=keep)
        output.info.print(f"step: {rate:g} tasks/s for {step_s}s", highlight=False, soft_wrap=True)
        cmd = locust_command(args, host, files, arrival_rate=rate, run_time=f"{step_s}s")
        code = run_locust(cmd, files, step_s, output.progress)
        snapshot = read_snapshot(files.agentic)
        if snapshot is None:
            raise LoadError(fail_line(code, files))
        step = sweep_step_of(rate, snapshot["summary"])
        point = sweep_point(rate, snapshot["summary"], step, MIN_GOOD_FRACTION)
        output.info.print(step_line(point), highlight=False, soft_wrap=True)
        return point

    points: list[SweepPoint] = []
    try:
        run_sweep(sweep.rates(), run_step, points)
    except KeyboardInterrupt:
        if not points:
            raise
        # The step that was cut short is left out: it ran for less than --step-time.
        report_sweep(args, points, output, folder if keep else None, None, host=host)
        print_error(f"interrupted after {len(points)} finished sweep steps (shown above)")
        return INTERRUPTED
    return report_sweep(args, points, output, folder if keep else None, None, host=host)


def report_sweep(
    args: argparse.Namespace,
    points: Sequence[SweepPoint],
    output: Output,
    folder: Path | None,
    report: Path | None,
    min_good: float = MIN_GOOD_FRACTION,
    host: str = "-",
) -> int:
    """The steps' table, the curve's files (sweep.json, sweep.csv and its plot in
    report.html, with --out) and the verdict; exit 1 when no rate met the SLO.
    `report`: an existing report.html to add the curve to (else a page of its own)."""
    from loadtests.report import add_sweep_section, write_sweep_report

    print_table(output.out, sweep_table(points, args.slo), output.fmt)
    if folder is not None and points:
        (folder / "sweep.json").write_bytes(sweep_json(points, slo=args.slo, min_good=min_good))
        (folder / "sweep.csv").write_text(sweep_csv(points))
        if report is not None and report.is_file():
            add_sweep_section(report, points, slo=args.slo)
        else:
            write_sweep_report(folder, points, slo=args.slo, config=config_of(args, host))
        output.info.print(
            f"sweep curve in {folder}/: sweep.json, sweep.csv, report.html", highlight=False
        )
    if not points:
        print_error("the sweep finished no step")
        return 1
    result = verdict(points)
    if result.outcome is Outcome.NEVER_MET:
        print_error(result.line(args.slo))
        return 1
    output.info.print(result.line(args.slo), highlight=False, soft_wrap=True)
    return 0
