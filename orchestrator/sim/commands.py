"""`inflection simulate` and `inflection plan`: the fast-forward simulator and the capacity
planner on the command line."""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from orchestrator.config import ConfigError, describe_validation_error

console = Console()
err_console = Console(stderr=True)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate",
        help="fast-forward a simulated cluster through an agentic workload",
        description="Run agent programs on simulated GPU replicas on a virtual clock "
        "(hours of traffic in seconds); print the run's metrics and write JSON + HTML "
        "reports.",
    )
    p.add_argument("--config", required=True, help="simulation YAML (see cluster/sim-*.yaml)")
    p.add_argument("--replicas", type=int, help="override replicas")
    p.add_argument("--rate", type=float, help="override arrival.rate (tasks/s)")
    p.add_argument("--duration", type=float, help="override duration_s (simulated seconds)")
    p.add_argument("--out", default="reports", help="folder for simulate.json/.html")
    p.set_defaults(func=cmd_simulate)

    q = sub.add_parser(
        "plan",
        help="capacity planner: GPUs needed for a workload at an SLO, and what they cost",
        description="For each GPU type and tensor-parallel degree, find the highest task "
        "rate per replica that meets the SLO (fast-forward simulation), then report tasks/s "
        "and output tok/s per GPU, GPUs needed for --target-rate, tokens per joule and $ "
        "per million output tokens.",
    )
    q.add_argument("--model", required=True, help="model catalog name, e.g. llama-3.1-70b")
    q.add_argument("--gpus", default="h100,h200,b200", help="comma-separated GPU names")
    q.add_argument(
        "--workload", default="plan_execute", help="agent mix: NAME or NAME:WEIGHT,NAME:WEIGHT"
    )
    q.add_argument(
        "--slo",
        required=True,
        help="task-level bounds, e.g. task_ttft_p90=5s,task_latency_p99=60s",
    )
    q.add_argument("--target-rate", type=float, default=100.0, help="fleet tasks/s to size for")
    q.add_argument("--tp", default="", help="tensor-parallel degrees to try (default: all)")
    q.add_argument("--weights", default="bf16", help="bf16, fp8, int8 or w4a16")
    q.add_argument("--kv-cache-dtype", default="bf16", help="bf16 or fp8")
    q.add_argument("--input-tokens", type=float, default=64.0, help="mean user input tokens")
    q.add_argument("--price", action="append", default=[], help="GPU=USD per GPU-hour (repeatable)")
    q.add_argument("--catalog", action="append", default=[], help="extra catalog YAML")
    q.add_argument("--duration", type=float, default=60.0, help="simulated s per trial")
    q.add_argument("--replicas", type=int, default=2, help="replicas simulated per trial")
    q.add_argument("--out", default="reports", help="folder for plan.json and plan.csv")
    q.set_defaults(func=cmd_plan)


def cmd_simulate(args: argparse.Namespace) -> int:
    from orchestrator.report import summary_table
    from orchestrator.sim.catalog import CatalogError
    from orchestrator.sim.cluster import ClusterSimulation, TraceError, load_simulation_config
    from orchestrator.sim.perf import SimConfigError
    from orchestrator.sim.report import write_html, write_json

    try:
        config = load_simulation_config(Path(args.config))
        updates: dict[str, Any] = {}
        if args.replicas is not None:
            updates["replicas"] = args.replicas
        if args.duration is not None:
            updates["duration_s"] = args.duration
        if args.rate is not None:
            updates["arrival"] = {**config.arrival.model_dump(), "rate": args.rate}
        if updates:
            try:
                config = type(config).model_validate({**config.model_dump(), **updates})
            except ValidationError as exc:
                raise ConfigError(describe_validation_error(exc)) from None
        started = time.perf_counter()
        with console.status(f"simulating {config.replicas} replicas..."):
            result = ClusterSimulation(config).run()
        wall = time.perf_counter() - started
    except (ConfigError, CatalogError, SimConfigError, TraceError, ValueError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        return 2
    engine = config.engine
    title = (
        f"inflection simulate: {config.replicas} x {engine.gpu.upper()} "
        f"tp{engine.tensor_parallel_size} {engine.model}, {', '.join(config.workload.mix)}"
    )
    console.print(summary_table(result.summary, title=title))
    extra = {
        "simulated_s": result.simulated_s,
        "wall_s": wall,
        "speed_x": result.simulated_s / wall if wall > 0 else 0.0,
        "calls": result.calls,
        "events": result.events,
        "gpu_utilization": result.gpu_utilization,
        "goodput_tasks_per_s": result.goodput_tasks_per_s,
        "slo_met": result.slo_met,
    }
    console.print(
        f"simulated {result.simulated_s:.1f} s in {wall:.2f} s "
        f"({extra['speed_x']:.0f}x real time), {result.calls} calls, "
        f"GPU busy {result.gpu_utilization:.0%}"
    )
    if result.slo_met is not None:
        verdict = "met" if result.slo_met else "[red]missed[/red]"
        console.print(f"SLO {verdict}; goodput {result.goodput_tasks_per_s:.2f} tasks/s")
    out = Path(args.out)
    dump = config.model_dump(mode="json")
    write_json(out / "simulate.json", title=title, summary=result.summary,
               timeline=result.timeline, config=dump, extra=extra)  # fmt: skip
    write_html(out / "simulate.html", title=title, summary=result.summary,
               timeline=result.timeline, config=dump, extra=extra)  # fmt: skip
    console.print(f"reports: {out / 'simulate.json'}, {out / 'simulate.html'}")
    return 0


def _plan_table(rows: list[Any], target: float) -> Table:
    table = Table(title=f"inflection plan (fleet sized for {target:g} tasks/s)",
                  title_justify="left")  # fmt: skip
    for name in ("GPU", "tp", "tasks/s /replica", "tasks/s /GPU", "out tok/s /GPU", "GPUs",
                 "tok/J", "$/GPU-h", "$/M tok", "TTFT p90 s", "lat. p99 s"):  # fmt: skip
        table.add_column(name, justify="left" if name == "GPU" else "right")
    for r in rows:
        if not r.fits:
            table.add_row(r.gpu, str(r.tp), "does not fit", *[""] * 8)
            continue
        if r.rate_per_replica <= 0:
            table.add_row(r.gpu, str(r.tp), "SLO not met", *[""] * 8)
            continue
        table.add_row(
            r.gpu,
            str(r.tp),
            f"{r.rate_per_replica:.2f}",
            f"{r.tasks_per_s_per_gpu:.2f}",
            f"{r.output_tps_per_gpu:.0f}",
            str(r.gpus_needed),
            f"{r.tokens_per_joule:.2f}",
            f"{r.usd_per_gpu_hour:.2f}" if r.usd_per_gpu_hour else "n/a",
            f"{r.usd_per_million_tokens:.3f}" if r.usd_per_million_tokens else "n/a",
            f"{r.task_ttft_p90:.2f}",
            f"{r.task_latency_p99:.2f}",
        )
    return table


def cmd_plan(args: argparse.Namespace) -> int:
    import orjson

    from orchestrator.sim.catalog import CatalogError, load_catalog
    from orchestrator.sim.cluster import WorkloadConfig
    from orchestrator.sim.perf import SimConfigError
    from orchestrator.sim.planner import PlanQuery, parse_mix, parse_prices, parse_slo, plan

    try:
        if args.replicas < 1:
            raise ValueError("--replicas: simulate at least 1 replica per trial")
        if args.duration <= 0:
            raise ValueError("--duration: give a positive number of simulated seconds")
        if args.target_rate <= 0:
            raise ValueError("--target-rate: give a positive number of tasks/s")
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
        with console.status("planning...") as status:
            rows = plan(query, progress=lambda s: status.update(f"planning: {s}"))
    except ValidationError as exc:
        err_console.print(f"[red]error:[/red] {describe_validation_error(exc)}")
        return 2
    except (ConfigError, CatalogError, SimConfigError, ValueError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        return 2
    console.print(_plan_table(rows, query.target_rate))
    prices = catalog.prices
    if prices is not None:
        console.print(f"prices: {prices.source} ({prices.date}); override with --price GPU=USD")
    for r in rows:
        if not r.fits:
            console.print(f"{r.gpu} tp={r.tp}: {r.reason}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = [asdict(r) for r in rows]
    meta = {"model": query.model, "workload": query.workload.mix, "slo": args.slo,
            "target_rate": query.target_rate}  # fmt: skip
    (out / "plan.json").write_bytes(
        orjson.dumps({"query": meta, "rows": records}, option=orjson.OPT_INDENT_2)
    )
    with (out / "plan.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]) if records else ["gpu"])
        writer.writeheader()
        writer.writerows(records)
    console.print(f"written: {out / 'plan.json'}, {out / 'plan.csv'}")
    return 0
