"""`inflection simulate` and `inflection plan`: the fast-forward simulator and the capacity
planner on the command line.

Both print their result tables through `orchestrator.tables` (never truncated; `--format
csv|json` for machines, with the prose moved to stderr), and both stop cleanly on Ctrl-C:
one "interrupted" line, then what had finished, printed and written (exit 130).
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from orchestrator.config import ConfigError, describe_validation_error
from orchestrator.tables import (
    TableFormat,
    add_format_flag,
    format_of,
    print_table,
    print_tables,
)

if TYPE_CHECKING:
    from orchestrator.sim.planner import PlanQuery, PlanRow

console = Console()
err_console = Console(stderr=True)

INTERRUPTED = 130  # exit code after Ctrl-C, as shells report SIGINT
NOTHING_MEASURED = 1  # exit code of a run that measured no task (no verdict possible)

# Defaults of `plan`, repeated here so that --help can state them without importing the
# planner (and the simulator behind it) for every `inflection` command.
_DEFAULT_SLO = "task_ttft_p90=5s,task_latency_p99=60s"
_DEFAULT_HEADROOM = 0.8

_PLAN_DESCRIPTION = """\
For each GPU type and tensor-parallel degree, find the highest task rate per replica
that meets the SLO (fast-forward simulation), then size a fleet for --target-rate with
every replica at --headroom of that rate, and report GPUs, fleet $/hour, $ per 1k tasks
and per million output tokens, and output tokens per joule. The last lines recommend the
cheapest configuration per task and name the prices used.
"""

_PLAN_EPILOG = """\
columns:
  max tasks/s /replica  highest task rate one replica sustains within the SLO
  tasks/s /GPU, out tok/s /GPU
                        that rate (and its output tokens/s) per GPU of the replica
  tok/J                 output tokens per joule of GPU board energy at that rate, with
                        power = idle + (TDP - idle) x simulated utilisation; higher is more
                        energy-efficient
  GPUs                  GPUs for --target-rate with every replica at --headroom of its max
  fleet $/h             GPUs x $/GPU-hour (catalog prices, or --price)
  $ /1k tasks           fleet $/h spread over --target-rate tasks: the cost per agent task
  $ /M out tok          fleet $/h spread over the output tokens of those tasks
  TTFT p90 ms, lat. p99 ms
                        task TTFT and task latency at the max rate

Rows are printed on stderr as each configuration finishes and written to plan.json and
plan.csv at once, so Ctrl-C keeps the finished ones.
"""


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate",
        help="fast-forward a simulated cluster through an agentic workload",
        description="Run agent programs on simulated GPU replicas on a virtual clock "
        "(hours of traffic in seconds); print the run's metrics, its SLO verdict and a "
        "per-agent breakdown, and write JSON + HTML reports. A warm-up (warmup_s) that "
        "covers the whole run is scaled down to a quarter of it, with a warning. Exit "
        "code 1 when no task was measured, 130 after Ctrl-C (the partial summary is "
        "printed and written).",
    )
    p.add_argument("--config", required=True, help="simulation YAML (see cluster/sim-*.yaml)")
    p.add_argument("--replicas", type=int, help="override replicas")
    p.add_argument("--rate", type=float, help="override arrival.rate (tasks/s)")
    p.add_argument("--duration", type=float, help="override duration_s (simulated seconds)")
    p.add_argument("--out", default="reports", help="folder for simulate.json/.html")
    add_format_flag(p)
    p.set_defaults(func=cmd_simulate)

    q = sub.add_parser(
        "plan",
        help="capacity planner: GPUs needed for a workload at an SLO, and what they cost",
        description=_PLAN_DESCRIPTION,
        epilog=_PLAN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("--model", required=True, help="model catalog name, e.g. llama-3.1-70b")
    q.add_argument("--gpus", default="h100,h200,b200", help="comma-separated GPU names")
    q.add_argument(
        "--workload", default="plan_execute", help="agent mix: NAME or NAME:WEIGHT,NAME:WEIGHT"
    )
    q.add_argument(
        "--slo",
        default=_DEFAULT_SLO,
        help=f"task-level bounds, s or ms (default: {_DEFAULT_SLO}: the answer starts "
        "within 5 s for 90%% of tasks and 99%% finish within a minute)",
    )
    q.add_argument(
        "--target-rate", type=float, default=100.0, help="fleet tasks/s to size for (default: 100)"
    )
    q.add_argument(
        "--headroom",
        type=float,
        default=_DEFAULT_HEADROOM,
        help="utilisation target: run each replica at this fraction of its max rate "
        f"(0-1; default {_DEFAULT_HEADROOM}, room for bursts)",
    )
    q.add_argument("--tp", default="", help="tensor-parallel degrees to try (default: all)")
    q.add_argument("--weights", default="bf16", help="bf16, fp8, int8 or w4a16")
    q.add_argument("--kv-cache-dtype", default="bf16", help="bf16 or fp8")
    q.add_argument("--input-tokens", type=float, default=64.0, help="mean user input tokens")
    q.add_argument("--price", action="append", default=[], help="GPU=USD per GPU-hour (repeatable)")
    q.add_argument("--catalog", action="append", default=[], help="extra catalog YAML")
    q.add_argument(
        "--duration", type=float, default=60.0, help="simulated s per trial (default: 60)"
    )
    q.add_argument(
        "--replicas", type=int, default=2, help="replicas simulated per trial (default: 2)"
    )
    q.add_argument("--out", default="reports", help="folder for plan.json and plan.csv")
    add_format_flag(q)
    q.set_defaults(func=cmd_plan)


def _prose(fmt: TableFormat) -> Console:
    """Where lines other than the tables go: stdout beside a table, stderr beside CSV or
    JSON (so that stdout stays machine-readable)."""
    return console if fmt is TableFormat.TABLE else err_console


# ---- simulate ---------------------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace) -> int:
    from orchestrator.report import summary_table
    from orchestrator.sim.catalog import CatalogError
    from orchestrator.sim.cluster import ClusterSimulation, SimulationResult
    from orchestrator.sim.config import fit_warmup, load_simulation_config
    from orchestrator.sim.perf import SimConfigError
    from orchestrator.sim.report import (
        RunOutcome,
        agent_table,
        slo_text,
        span_text,
        write_html,
        write_json,
    )
    from orchestrator.workload.traces import TraceError

    errors = (ConfigError, CatalogError, SimConfigError, TraceError, ValueError)
    fmt = format_of(args)
    try:
        config = load_simulation_config(Path(args.config))
        updates: dict[str, Any] = {}
        if args.replicas is not None:
            updates["replicas"] = args.replicas
        if args.duration is not None:
            updates["duration_s"] = args.duration
        if args.rate is not None:
            updates["arrival"] = {**config.arrival.model_dump(), "rate": args.rate}
        warmup, warning = fit_warmup(config.warmup_s, updates.get("duration_s", config.duration_s))
        if warning is not None:
            updates["warmup_s"] = warmup
        if updates:
            try:
                config = type(config).model_validate({**config.model_dump(), **updates})
            except ValidationError as exc:
                raise ConfigError(describe_validation_error(exc)) from None
        simulation = ClusterSimulation(config)
    except errors as exc:
        err_console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        return 2
    if warning is not None:
        err_console.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    err_console.print(
        f"simulating {config.duration_s:g} s of arrivals on {config.replicas} replicas "
        f"(first {config.warmup_s:g} s not measured); Ctrl-C stops and keeps what ran",
        highlight=False,
        soft_wrap=True,
    )
    started = time.perf_counter()
    result: SimulationResult
    try:
        with err_console.status(f"simulating {config.replicas} replicas..."):
            result = simulation.run()
    except KeyboardInterrupt:
        result = simulation.result_so_far()
        err_console.print(
            f"inflection: interrupted (SIGINT) at {result.simulated_s:.1f} simulated s; "
            "the summary covers the tasks measured so far",
            highlight=False,
            soft_wrap=True,
        )
    except errors as exc:
        err_console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        return 2
    wall = time.perf_counter() - started
    engine = config.engine
    title = (
        f"inflection simulate: {config.replicas} x {engine.gpu.upper()} "
        f"tp{engine.tensor_parallel_size} {engine.model}, {', '.join(config.workload.mix)}"
    )
    summary = result.summary
    outcome = RunOutcome(
        simulated_s=result.simulated_s,
        warmup_s=result.warmup_s,
        slo_checks=result.slo_checks,
        goodput_tasks_per_s=result.goodput_tasks_per_s,
        agents=result.agents,
        interrupted=result.interrupted,
    )
    if summary.tasks == 0:
        # A table of zeros and "SLO missed" would judge the run on no sample at all.
        finished = len(result.results)
        why = (
            f"{finished} task(s) finished, all of them arriving in the {result.warmup_s:g} s "
            "warm-up"
            if finished
            else "no task finished"
        )
        hint = "" if result.interrupted else "; simulate longer (--duration) or lower warmup_s"
        err_console.print(
            f"error: no tasks measured{' yet' if result.interrupted else ''}: {why}{hint}",
            highlight=False,
            soft_wrap=True,
        )
        return INTERRUPTED if result.interrupted else NOTHING_MEASURED
    tables = [cast(Table, summary_table(summary, title=title))]
    if len(result.agents) > 1:
        tables.append(agent_table(result.agents))
    print_tables(console, tables, fmt)
    prose = _prose(fmt)
    speed = result.simulated_s / wall if wall > 0 else 0.0
    prose.print(
        f"{span_text(outcome, summary)}; {wall:.2f} s wall ({speed:.0f}x real time), "
        f"{result.calls} calls, GPU busy {result.gpu_utilization:.0%}",
        highlight=False,
        soft_wrap=True,
    )
    verdict = slo_text(outcome, summary)
    if verdict is not None:
        prose.print(
            verdict, style=None if result.slo_met else "red", highlight=False, soft_wrap=True
        )
    out = Path(args.out)
    dump = config.model_dump(mode="json")
    extra = {
        "simulated_s": result.simulated_s,
        "warmup_s": result.warmup_s,
        "measured_s": summary.duration_s,
        "wall_s": wall,
        "speed_x": speed,
        "calls": result.calls,
        "events": result.events,
        "gpu_utilization": result.gpu_utilization,
        "goodput_tasks_per_s": result.goodput_tasks_per_s,
        "slo_met": result.slo_met,
        "interrupted": result.interrupted,
    }
    write_json(out / "simulate.json", title=title, summary=summary,
               timeline=result.timeline, config=dump, extra=extra, outcome=outcome)  # fmt: skip
    write_html(out / "simulate.html", title=title, summary=summary,
               timeline=result.timeline, config=dump, extra=extra, outcome=outcome)  # fmt: skip
    prose.print(
        f"reports: {out / 'simulate.json'}, {out / 'simulate.html'}",
        highlight=False,
        soft_wrap=True,
    )
    return INTERRUPTED if result.interrupted else 0


# ---- plan -------------------------------------------------------------------------------


def _money(value: float | None) -> str:
    """Dollars to cents, or to three significant digits below a dollar (a task can cost
    a hundredth of a cent, and rows must still differ)."""
    if value is None:
        return "n/a"
    return f"{value:,.2f}" if value >= 1 else f"{value:#.3g}"


def plan_table(rows: Sequence[PlanRow], query: PlanQuery) -> Table:
    table = Table(
        title=f"inflection plan: {query.model}, {', '.join(query.workload.mix)}; fleet for "
        f"{query.target_rate:g} tasks/s at {query.headroom:.0%} of the max rate",
        title_justify="left",
    )
    for name in ("GPU", "tp", "max tasks/s /replica", "tasks/s /GPU", "out tok/s /GPU",
                 "tok/J", "GPUs", "fleet $/h", "$ /1k tasks", "$ /M out tok",
                 "TTFT p90 ms", "lat. p99 ms"):  # fmt: skip
        table.add_column(name, justify="left" if name == "GPU" else "right")
    blank = [""] * 9
    for r in rows:
        if not r.fits:
            table.add_row(r.gpu, str(r.tp), "does not fit", *blank)
        elif r.rate_per_replica <= 0:
            table.add_row(r.gpu, str(r.tp), "SLO not met", *blank)
        else:
            table.add_row(
                r.gpu,
                str(r.tp),
                f"{r.rate_per_replica:.2f}",
                f"{r.tasks_per_s_per_gpu:.2f}",
                f"{r.output_tps_per_gpu:.0f}",
                f"{r.tokens_per_joule:.2f}",
                str(r.gpus_needed),
                _money(r.fleet_usd_per_hour),
                _money(r.usd_per_1k_tasks),
                _money(r.usd_per_million_tokens),
                f"{r.task_ttft_p90 * 1000:.0f}",
                f"{r.task_latency_p99 * 1000:.0f}",
            )
    return table


def _gpus(n: int) -> str:
    return f"{n} GPU" if n == 1 else f"{n} GPUs"


def _row_line(row: PlanRow) -> str:
    head = f"{row.gpu} tp{row.tp}:"
    if not row.fits:
        return f"{head} does not fit ({row.reason})"
    if row.rate_per_replica <= 0:
        return f"{head} SLO not met at any rate tried ({row.trials} trials)"
    cost = (
        f", ${_money(row.usd_per_1k_tasks)} per 1k tasks"
        if row.usd_per_1k_tasks is not None
        else ""
    )
    return (
        f"{head} max {row.rate_per_replica:.2f} tasks/s per replica -> "
        f"{_gpus(row.gpus_needed)}{cost} ({row.trials} trials)"
    )


def recommendation_line(rows: Sequence[PlanRow]) -> str:
    from orchestrator.sim.planner import recommend

    best = recommend(rows)
    if best is None:
        return (
            "no configuration met the SLO: loosen --slo, or try larger GPUs or "
            "tensor-parallel degrees"
        )
    if best.usd_per_1k_tasks is None:
        return (
            f"fewest GPUs meeting the SLO (no prices): {best.gpu} tp{best.tp}, "
            f"{_gpus(best.gpus_needed)}"
        )
    return (
        f"cheapest per task meeting the SLO: {best.gpu} tp{best.tp}, "
        f"${_money(best.usd_per_1k_tasks)} per 1k tasks, {_gpus(best.gpus_needed)} "
        f"(${_money(best.fleet_usd_per_hour)}/hour)"
    )


def _write_plan(out: Path, meta: dict[str, Any], rows: Sequence[PlanRow]) -> None:
    import orjson

    out.mkdir(parents=True, exist_ok=True)
    records = [asdict(r) for r in rows]
    (out / "plan.json").write_bytes(
        orjson.dumps({"query": meta, "rows": records}, option=orjson.OPT_INDENT_2)
    )
    fields = list(records[0]) if records else ["gpu"]
    with (out / "plan.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(records)


def cmd_plan(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from orchestrator.sim.catalog import CatalogError, load_catalog
    from orchestrator.sim.perf import SimConfigError
    from orchestrator.sim.planner import (
        PlanQuery,
        TrialDone,
        parse_mix,
        parse_prices,
        plan,
    )
    from orchestrator.workload.mix import WorkloadConfig
    from orchestrator.workload.slo import parse_slo

    fmt = format_of(args)
    prose = _prose(fmt)
    try:
        if args.replicas < 1:
            raise ValueError("--replicas: simulate at least 1 replica per trial")
        if args.duration <= 0:
            raise ValueError("--duration: give a positive number of simulated seconds")
        if args.target_rate <= 0:
            raise ValueError("--target-rate: give a positive number of tasks/s")
        if not 0 < args.headroom <= 1:
            raise ValueError("--headroom: give a fraction of the max rate in (0, 1], e.g. 0.8")
        try:
            tps = tuple(int(t) for t in args.tp.split(",") if t.strip()) if args.tp else ()
        except ValueError:
            raise ValueError(f"--tp: {args.tp!r} is not a comma-separated list") from None
        if any(t < 1 for t in tps):
            raise ValueError("--tp: degrees must be at least 1")
        query = PlanQuery(
            model=args.model,
            gpus=tuple(g.strip().lower() for g in args.gpus.split(",") if g.strip()),
            workload=WorkloadConfig(
                mix=parse_mix(args.workload), input_tokens_mean=args.input_tokens
            ),
            slo=parse_slo(args.slo),
            target_rate=args.target_rate,
            headroom=args.headroom,
            tps=tps,
            weights=args.weights,
            kv_cache_dtype=args.kv_cache_dtype,
            replicas=args.replicas,
            duration_s=args.duration,
            warmup_s=min(20.0, args.duration / 4),
            prices=parse_prices(args.price),
            catalogs=tuple(args.catalog),
        )
        catalog = load_catalog(query.catalogs)
    except ValidationError as exc:
        err_console.print(f"[red]error:[/red] {describe_validation_error(exc)}", soft_wrap=True)
        return 2
    except (ConfigError, CatalogError, SimConfigError, ValueError) as exc:
        err_console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        return 2

    default = " (the default; --slo to change)" if args.slo == _DEFAULT_SLO else ""
    prose.print(f"SLO: {args.slo}{default}", highlight=False, soft_wrap=True)
    out = Path(args.out)
    meta = {"model": query.model, "workload": query.workload.mix, "slo": args.slo,
            "target_rate": query.target_rate, "headroom": query.headroom,
            "duration_s": query.duration_s, "replicas": query.replicas,
            "interrupted": False}  # fmt: skip
    rows: list[PlanRow] = []
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    bar = progress.add_task("planning", total=None)
    # Trials per configuration are not known ahead (doubling, then bisection); this is
    # the usual count, so the bar moves within a configuration and the ETA settles.
    expected = query.search_steps + 5

    def on_trial(t: TrialDone) -> None:
        progress.update(
            bar,
            total=t.configs,
            completed=t.config + min(t.trial / expected, 0.95),
            description=f"{t.gpu} tp{t.tp} ({t.config + 1}/{t.configs}), trial {t.trial}: "
            f"{t.rate:.2f} tasks/s/replica {'met' if t.met else 'missed'}",
        )

    def on_row(row: PlanRow) -> None:
        rows.append(row)
        _write_plan(out, meta, rows)
        progress.console.print(_row_line(row), highlight=False, soft_wrap=True, markup=False)

    try:
        with progress:
            plan(query, progress=on_trial, on_row=on_row)
    except (ConfigError, CatalogError, SimConfigError, ValueError) as exc:
        err_console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        meta["interrupted"] = True
        _write_plan(out, meta, rows)
        err_console.print(
            f"inflection: interrupted (SIGINT) after {len(rows)} finished row(s); "
            f"{out / 'plan.json'} and {out / 'plan.csv'} keep them",
            highlight=False,
            soft_wrap=True,
        )
    print_table(console, plan_table(rows, query), fmt)
    prose.print(recommendation_line(rows), highlight=False, soft_wrap=True)
    prices = catalog.prices
    if prices is not None:
        used = ", ".join(
            f"{r.gpu} {r.usd_per_gpu_hour:g}"
            for r in {r.gpu: r for r in rows}.values()
            if r.usd_per_gpu_hour is not None
        )
        prose.print(
            f"prices ($/GPU-hour): {used or 'none'} ({prices.source}, {prices.date}); "
            "override with --price GPU=USD",
            highlight=False,
            soft_wrap=True,
        )
    for r in rows:
        if not r.fits:
            prose.print(f"{r.gpu} tp{r.tp}: {r.reason}", highlight=False, soft_wrap=True)
    prose.print(
        f"written: {out / 'plan.json'}, {out / 'plan.csv'}", highlight=False, soft_wrap=True
    )
    return INTERRUPTED if meta["interrupted"] else 0
