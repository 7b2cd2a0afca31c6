"""10x overload: with adaptive admission (`admission.adaptive: true`), tasks arriving at
ten times what the replicas can serve. The admitted ones keep their latency (p99 within
2x of the p99 at capacity), the excess is refused with RESOURCE_EXHAUSTED and a
retry-after hint, the completed throughput stays at capacity (>= 90%), no task fails
otherwise, and the server's memory stays bounded.

Two simulated replicas in real time, each running at most 8 sequences at once (so that
the engines, not this 2-core machine, are the bottleneck); the load comes from a client
process of its own (`overload_client`). After 8 s of warm-up, in which admission learns
what the engines carry, capacity is measured by a closed loop of 32 tasks always in
flight (20 s); then an open loop (Poisson arrivals) at capacity, then at ten
times capacity, 30 s each."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.test_deadlines_sim import sim_deployment
from tests.reliability.conftest import Figures

REPO = Path(__file__).resolve().parents[2]
SCENARIO = "10x overload"
PHASE_S = 30.0
PROBE_S = 20.0
WARMUP_S = 8.0
PROBE_CONCURRENCY = 32
OVERLOAD = 10.0


def drive(address: str, rate: float, seconds: float, concurrency: int | None = None) -> Any:
    """One phase of load from the client process; its JSON summary."""
    args = [sys.executable, "-m", "tests.reliability.overload_client", address]
    args += [str(rate), str(seconds)] + ([str(concurrency)] if concurrency else [])
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return orjson.loads(done.stdout.strip().splitlines()[-1])


def rss_mb() -> float:
    """This process's resident memory: the in-process server's, and the test's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    replicas = {"count": 2, "sim": {"time_scale": 1.0, "max_num_seqs": 8}}
    with sim_deployment(replicas, admission={"adaptive": True}) as running:
        yield running


def test_10x_overload_keeps_admitted_latency_and_throughput(cluster: Any, figures: Figures) -> None:
    drive(cluster.address, 0, WARMUP_S, PROBE_CONCURRENCY // 2)  # admission learns the engines
    probe = drive(cluster.address, 0, PROBE_S, PROBE_CONCURRENCY)
    capacity = probe["throughput"]
    figures.record(
        SCENARIO,
        f"capacity ({PROBE_CONCURRENCY} tasks always in flight)",
        round(capacity, 2),
        "tasks/s",
    )
    at_capacity = drive(cluster.address, capacity, PHASE_S)
    figures.record(
        SCENARIO, "p99 at capacity (arrivals at that rate)", round(at_capacity["p99_s"], 2), "s"
    )
    before = rss_mb()
    over = drive(cluster.address, OVERLOAD * capacity, PHASE_S)
    grown = rss_mb() - before
    offered, refused = over["offered"], over["refused"]
    p99_ratio = over["p99_s"] / at_capacity["p99_s"]
    throughput_ratio = over["throughput"] / capacity
    figures.record(SCENARIO, "tasks offered at 10x capacity", offered)
    figures.record(SCENARIO, "refused (RESOURCE_EXHAUSTED)", f"{refused / offered:.0%}")
    figures.record(
        SCENARIO,
        "refused without a retry-after hint",
        refused - over["refused_with_hint"],
        "",
        "= 0",
    )
    figures.record(SCENARIO, "failed otherwise", over["failed"], "", "= 0")
    figures.record(SCENARIO, "admitted p99", round(over["p99_s"], 2), "s")
    figures.record(SCENARIO, "admitted p99 / p99 at capacity", round(p99_ratio, 2), "", "<= 2")
    figures.record(SCENARIO, "completed throughput", round(over["throughput"], 2), "tasks/s")
    figures.record(
        SCENARIO,
        "completed throughput / capacity",
        round(throughput_ratio, 2),
        "",
        ">= 0.9 (fails < 0.85)",
    )
    figures.record(SCENARIO, "server memory growth", round(grown, 1), "MB", "< 100")
    print(f"\n10x overload: probe {probe}\n  at capacity {at_capacity}\n  10x {over}")
    assert over["refused_with_hint"] == refused > 0
    assert over["failed"] == 0, over["errors"]
    assert p99_ratio <= 2.0
    # The goal is 0.9; over seven runs the ratio was 0.90 to 1.13, as the closed-loop
    # probe itself varies by about 10% from run to run: the test fails below 0.85.
    assert throughput_ratio >= 0.85
    assert grown < 100
