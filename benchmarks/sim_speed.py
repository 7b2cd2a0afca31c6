"""How fast the fast-forward simulator runs: simulated seconds per wall second for a
64-replica cluster (H100, Llama-3.1-8B) under plan_execute traffic at 80% of capacity,
pinned to one core.

Capacity is measured first, in the same run: two replicas under overload (arrivals at
several times what they can serve) complete tasks at the cluster's saturation rate per
replica. The 64-replica run then offers 80% of 64 times that.

    .venv/bin/python benchmarks/sim_speed.py [--replicas 64] [--duration 60] [--load 0.8]
"""

from __future__ import annotations

import argparse
import os
import time

from rich.console import Console
from rich.table import Table

from orchestrator.sim.cluster import simulate
from orchestrator.sim.config import SimulationConfig
from orchestrator.workload.arrivals import ArrivalConfig
from orchestrator.workload.mix import WorkloadConfig


def _config(replicas: int, rate: float, duration: float, agent: str) -> SimulationConfig:
    return SimulationConfig(
        replicas=replicas,
        workload=WorkloadConfig(mix={agent: 1.0}),
        arrival=ArrivalConfig(rate=rate),
        duration_s=duration,
        sample_interval_s=5.0,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=64)
    parser.add_argument("--duration", type=float, default=60.0, help="simulated seconds")
    parser.add_argument("--load", type=float, default=0.8, help="fraction of capacity")
    parser.add_argument("--agent", default="plan_execute")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    console = Console(width=150)

    # Saturation throughput of 2 replicas under 4x overload.
    probe = simulate(_config(2, 200.0, 20.0, args.agent))
    per_replica = probe.summary.tasks / probe.simulated_s / 2
    rate = args.load * per_replica * args.replicas
    console.print(
        f"capacity: {per_replica:.1f} {args.agent} tasks/s per replica (saturated); "
        f"offering {rate:.0f} tasks/s to {args.replicas} replicas ({args.load:.0%})"
    )
    started = time.perf_counter()
    cpu0 = time.process_time()
    result = simulate(_config(args.replicas, rate, args.duration, args.agent))
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    table = Table(title="fast-forward simulation speed", title_justify="left")
    for column in ("replicas", "simulated s", "wall s", "CPU s", "sim s / wall s",
                   "tasks", "calls", "events", "calls / wall s", "GPU busy"):  # fmt: skip
        table.add_column(column, justify="right")
    table.add_row(
        str(args.replicas),
        f"{result.simulated_s:.1f}",
        f"{wall:.1f}",
        f"{cpu:.1f}",
        f"{result.simulated_s / wall:.2f}x",
        str(result.summary.tasks),
        str(result.calls),
        str(result.events),
        f"{result.calls / wall:.0f}",
        f"{result.gpu_utilization:.0%}",
    )
    console.print(table)
    console.print("goal: >= 100x real time on one core")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
