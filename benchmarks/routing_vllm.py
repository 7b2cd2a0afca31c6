"""Routing policies on a real engine: 2 replicas of vLLM's CPU build, each with its own
prefix cache, under the same agentic tasks per policy.

The live counterpart of `benchmarks/routing.py` (the simulator). In simulation the
prefix-aware policies (prefix_affinity, program_aware) keep a task's steps on the replica
that holds its context, so the prefix cache hits more and tasks finish sooner than under
round_robin. This script checks that the gain points the same way on real engines.

For each policy: a fresh `Deployment` (Ray local with 2 CPUs, 2 vLLM CPU replicas with
`num_cpus: 0`, the tiny generated model), so no policy inherits another's warm cache.
Each runs the same task list: react, plan_execute and coding_agent in turn, each task
with its own user input of `--input-tokens` tokens (random words; the CPU build's KV
block is 128 tokens, so a context spans many blocks), its own seed (the same seeds for
every policy), every call capped at `--max-tokens`, `--concurrency` tasks in flight,
submitted in the same order. Before measuring, a few short chat tasks warm both engines.

Per policy it reports the prefix hit rate (cached / prompt tokens over all calls), the
server's task latency (accepted -> completed) mean, p50 and p90, tasks/s (tasks / first
submission -> last completion), replicas used per task, and the ratios to round_robin.

    .venv/bin/python benchmarks/routing_vllm.py [--tasks 12] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Before anything imports vLLM (the Ray replicas inherit this process's environment).
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

if TYPE_CHECKING:
    from orchestrator.client import AsyncClient, TaskResult

AGENTS = ("react", "plan_execute", "coding_agent")
BASELINE = "round_robin"
CANDIDATES = ("prefix_affinity", "program_aware")
POLICIES = ("round_robin", "least_load", "prefix_affinity", "program_aware")
DEFAULT_POLICIES = ("round_robin", "prefix_affinity", "program_aware")
WARMUP_TASKS = 4


@dataclass(slots=True, frozen=True)
class Workload:
    tasks: int
    concurrency: int
    input_tokens: int
    max_tokens: int
    seed: int

    def agent(self, task: int) -> str:
        return AGENTS[task % len(AGENTS)]

    def task_seed(self, task: int) -> int:
        return self.seed + task


def make_inputs(encode: Callable[[str], list[int]], workload: Workload) -> list[str]:
    """One input per task, at least `input_tokens` tokens of the model's tokenizer, with
    nothing in common between tasks beyond the program's system prompt."""
    rng = random.Random(workload.seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    inputs = []
    for task in range(workload.tasks):
        words = [f"Case {task}:"]
        while True:
            words.extend(
                "".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(16)
            )
            text = " ".join(words)
            if len(encode(text)) >= workload.input_tokens:
                inputs.append(text)
                break
    return inputs


@dataclass(slots=True, frozen=True)
class TaskOutcome:
    task: int
    agent: str
    result: TaskResult | None
    error: str  # "" when the task completed


@dataclass(slots=True, frozen=True)
class PolicyRun:
    policy: str
    startup_s: float
    wall_s: float  # first submission -> last completion
    outcomes: tuple[TaskOutcome, ...]

    @property
    def done(self) -> list[TaskResult]:
        return [o.result for o in self.outcomes if o.result is not None]

    def hit_rate(self, agent: str | None = None) -> float:
        calls = [
            c
            for o in self.outcomes
            if o.result is not None and (agent is None or o.agent == agent)
            for c in o.result.calls
        ]
        prompt = sum(c.usage.prompt_tokens for c in calls)
        return sum(c.usage.cached_prompt_tokens for c in calls) / prompt if prompt else 0.0

    @property
    def latencies(self) -> list[float]:
        return [r.usage.task_latency for r in self.done]

    @property
    def tasks_per_s(self) -> float:
        return len(self.done) / self.wall_s

    def calls_by_replica(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.done:
            for c in r.calls:
                counts[c.replica] = counts.get(c.replica, 0) + 1
        return dict(sorted(counts.items()))


def _p(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_tasks(client: AsyncClient, workload: Workload, inputs: Sequence[str]) -> PolicyRun:
    from orchestrator.client import InflectionError

    gate = asyncio.Semaphore(workload.concurrency)

    async def one(task: int) -> TaskOutcome:
        agent = workload.agent(task)
        async with gate:
            try:
                result = await client.run(
                    agent,
                    inputs[task],
                    max_tokens=workload.max_tokens,
                    seed=workload.task_seed(task),
                )
            except InflectionError as exc:
                return TaskOutcome(task, agent, None, f"{type(exc).__name__}: {exc}")
        return TaskOutcome(task, agent, result, "")

    # Tasks take the gate in submission order (asyncio's semaphore is FIFO).
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(one(i) for i in range(workload.tasks)))
    return PolicyRun("", 0.0, time.perf_counter() - started, tuple(outcomes))


async def run_policy(
    policy: str, args: argparse.Namespace, workload: Workload, inputs: Sequence[str]
) -> PolicyRun:
    from rich.console import Console

    from orchestrator.client import AsyncClient
    from orchestrator.config import DeploymentConfig
    from orchestrator.server.app import Deployment

    console = Console()
    config = DeploymentConfig.model_validate(
        {
            "ray": {"namespace": f"routing-vllm-{policy}"},
            "server": {"host": "127.0.0.1", "port": 0},
            # num_cpus 0: both replicas fit the 2-CPU cluster (the engines share the cores).
            "replicas": {"count": 2, "backend": "vllm", "num_cpus": 0},
            "routing": {"policy": policy},
        }
    )
    started = time.perf_counter()
    deployment = await Deployment.start(config)
    startup = time.perf_counter() - started
    console.print(f"[bold]{policy}[/]: 2 vLLM replicas up in {startup:.1f} s", highlight=False)
    try:
        async with AsyncClient(deployment.address, timeout=900.0) as client:
            # Warm-up: short chat tasks (inputs unrelated to the measured ones), so the
            # first measured calls do not pay the engines' first-step costs.
            await asyncio.gather(
                *(
                    client.run("chat", f"Warm up {i}.", max_tokens=4, seed=i)
                    for i in range(WARMUP_TASKS)
                )
            )
            await asyncio.sleep(args.pause)
            run = await run_tasks(client, workload, inputs)
    finally:
        await deployment.stop()
    run = PolicyRun(policy, startup, run.wall_s, run.outcomes)
    failed = [o for o in run.outcomes if o.result is None]
    console.print(
        f"  {len(run.done)} tasks in {run.wall_s:.1f} s, prefix hits {run.hit_rate():.1%}, "
        f"p50 task latency {_p(run.latencies, 0.5):.2f} s"
        + (f", {len(failed)} failed" if failed else ""),
        highlight=False,
    )
    for o in failed:
        console.print(f"    task {o.task} ({o.agent}) failed: {o.error}", highlight=False)
    return run


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("inf")


def summarize(workload: Workload, runs: Sequence[PolicyRun]) -> dict[str, Any]:
    base = next((r for r in runs if r.policy == BASELINE), None)
    rows: dict[str, Any] = {}
    for run in runs:
        latencies = run.latencies
        row: dict[str, Any] = {
            "startup_s": run.startup_s,
            "tasks_done": len(run.done),
            "tasks_failed": len(run.outcomes) - len(run.done),
            "failed_tasks": [o.task for o in run.outcomes if o.result is None],
            "wall_s": run.wall_s,
            "tasks_per_s": run.tasks_per_s,
            "llm_calls": sum(r.usage.llm_calls for r in run.done),
            "prompt_tokens": sum(r.usage.prompt_tokens_total for r in run.done),
            "cached_tokens": sum(r.usage.cached_tokens_total for r in run.done),
            "output_tokens": sum(r.usage.output_tokens_total for r in run.done),
            "prefix_hit_rate": run.hit_rate(),
            "prefix_hit_rate_by_agent": {a: run.hit_rate(a) for a in AGENTS},
            "task_latency_mean_s": statistics.fmean(latencies),
            "task_latency_p50_s": _p(latencies, 0.5),
            "task_latency_p90_s": _p(latencies, 0.9),
            "replicas_per_task": statistics.fmean(
                len({c.replica for c in r.calls}) for r in run.done
            ),
            "calls_by_replica": run.calls_by_replica(),
        }
        if base is not None:
            b = base.latencies
            row["vs_round_robin"] = {
                "hit_rate_ratio": _ratio(run.hit_rate(), base.hit_rate()),
                "p50_rr_over_policy": _ratio(_p(b, 0.5), _p(latencies, 0.5)),
                "mean_rr_over_policy": _ratio(statistics.fmean(b), statistics.fmean(latencies)),
                "tasks_per_s_ratio": _ratio(run.tasks_per_s, base.tasks_per_s),
            }
        rows[run.policy] = row
    verdicts: dict[str, bool] = {}
    if base is not None:
        for run in runs:
            if run.policy in CANDIDATES:
                verdicts[run.policy] = run.hit_rate() > base.hit_rate() and _p(
                    run.latencies, 0.5
                ) < _p(base.latencies, 0.5)
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu_count": os.cpu_count(),
        "workload": {
            "agents": list(AGENTS),
            "tasks": workload.tasks,
            "concurrency": workload.concurrency,
            "input_tokens": workload.input_tokens,
            "max_tokens": workload.max_tokens,
            "seeds": [workload.task_seed(0), workload.task_seed(workload.tasks - 1)],
        },
        "policies": rows,
        "same_direction_as_simulation": verdicts,
    }


def print_report(workload: Workload, summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 200))
    table = Table(
        title=f"2 x vLLM CPU replicas, {workload.tasks} tasks ({' + '.join(AGENTS)} in turn), "
        f"{workload.concurrency} in flight, inputs >= {workload.input_tokens} tokens, "
        f"max_tokens {workload.max_tokens}",
        title_justify="left",
    )
    for column in ("policy", "done", "calls", "prompt tok", "prefix hits",
                   "hits react/plan/code", "latency mean", "p50", "p90", "tasks/s",
                   "replicas/task", "hits vs rr", "p50 rr/policy", "mean rr/policy",
                   "tasks/s vs rr"):  # fmt: skip
        table.add_column(column, justify="left" if column == "policy" else "right")
    for policy, row in summary["policies"].items():
        vs = row.get("vs_round_robin", {})
        by_agent = row["prefix_hit_rate_by_agent"]
        table.add_row(
            policy,
            f"{row['tasks_done']}"
            + (f" ({row['tasks_failed']} failed)" if row["tasks_failed"] else ""),
            str(row["llm_calls"]),
            f"{row['prompt_tokens']:,}",
            f"{row['prefix_hit_rate']:.1%}",
            " / ".join(f"{by_agent[a]:.0%}" for a in AGENTS),
            f"{row['task_latency_mean_s']:.2f} s",
            f"{row['task_latency_p50_s']:.2f} s",
            f"{row['task_latency_p90_s']:.2f} s",
            f"{row['tasks_per_s']:.3f}",
            f"{row['replicas_per_task']:.2f}",
            f"{vs['hit_rate_ratio']:.2f}x" if vs else "-",
            f"{vs['p50_rr_over_policy']:.2f}x" if vs else "-",
            f"{vs['mean_rr_over_policy']:.2f}x" if vs else "-",
            f"{vs['tasks_per_s_ratio']:.2f}x" if vs else "-",
        )
    console.print(table)
    for policy, ok in summary["same_direction_as_simulation"].items():
        row = summary["policies"][policy]
        base = summary["policies"][BASELINE]
        console.print(
            f"{policy} vs round_robin: prefix hits {row['prefix_hit_rate']:.1%} vs "
            f"{base['prefix_hit_rate']:.1%}, p50 {row['task_latency_p50_s']:.2f} s vs "
            f"{base['task_latency_p50_s']:.2f} s -> same direction as simulation (higher "
            f"hit rate, lower latency): {'[bold green]YES[/]' if ok else '[bold red]NO[/]'}",
            highlight=False,
        )


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from rich.console import Console

    from orchestrator.replicas.tiny_model import build_tiny_model, default_tiny_model_dir
    from orchestrator.server.app import HfTokenizer

    workload = Workload(args.tasks, args.concurrency, args.input_tokens, args.max_tokens, args.seed)
    tokenizer = HfTokenizer(str(build_tiny_model(default_tiny_model_dir())))
    inputs = make_inputs(tokenizer.encode, workload)
    lengths = [len(tokenizer.encode(text)) for text in inputs]
    Console().print(
        f"{workload.tasks} tasks, inputs {min(lengths)}-{max(lengths)} tokens, "
        f"policies {', '.join(args.policies)}",
        highlight=False,
    )
    runs = [await run_policy(policy, args, workload, inputs) for policy in args.policies]
    summary = summarize(workload, runs)
    print_report(workload, summary)
    return summary


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=12, help="tasks per policy")
    parser.add_argument("--concurrency", type=int, default=4, help="tasks in flight")
    parser.add_argument("--input-tokens", type=int, default=600, help="user input length")
    parser.add_argument("--max-tokens", type=int, default=32, help="cap on every call's output")
    parser.add_argument("--seed", type=int, default=1000, help="seed of task 0 (task i: +i)")
    parser.add_argument(
        "--policies",
        nargs="+",
        choices=POLICIES,
        default=list(DEFAULT_POLICIES),
        help="in this order; round_robin is the baseline of the ratios",
    )
    parser.add_argument(
        "--pause", type=float, default=2.0, help="idle seconds after the warm-up tasks"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    for name in ("tasks", "concurrency", "input_tokens", "max_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    import ray

    args = parse_args(argv)
    # Our own local cluster (never join one another process left running); every
    # deployment joins it and leaves it running for the next.
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        namespace="routing-vllm",
        log_to_driver=False,
    )
    try:
        summary = asyncio.run(benchmark(args))
    finally:
        ray.shutdown()
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
