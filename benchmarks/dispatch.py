"""Dispatch rate: LLM calls per second the orchestrator completes on instant replicas,
against a bare loop of Ray actor calls to the same replicas, measured in the same run.

Goal: the orchestrator completes >= 0.7 x the calls/s of the bare loop, so it is never
what limits a large cluster.

Both sides drive the same replica actors: simulated replicas (`backend: sim`) with
`time_scale: 0`, whose engines answer as fast as their scheduler steps run.

- **(b) bare loop**: `--callers` coroutines, each awaiting
  `actor.generate.remote(CallRequest)` in a loop, round robin over the replicas. The
  requests are the ones side (a) sent in its warm-up (recorded by a pass-through
  dispatcher), replayed with fresh call ids: same prompts, same max_tokens.
- **(a) orchestrator**: the `Executor` in this process (what the gRPC servicer calls) over
  the `ReplicaPool`, with a router of the policy under test, running `--tasks` concurrent
  synthetic `plan_execute` tasks closed loop (each coroutine starts a new task when its
  last one completes): `prepare` (the per-task dry run), the interpreter, routing, the
  pool's Ray calls, the driver loop's events. gRPC is left out, so this is the
  executor + pool + router path; `--grpc` adds a third side, `AsyncClient.run` against
  a `Deployment` started in this process on the same replicas.

Each window runs its side for `--warmup` seconds uncounted, then counts the calls that
complete in the next `--seconds` (side (a): a `StepFinished` event with a call; gRPC:
each finished task's calls, at its completion). Rounds alternate b, a, b, a per routing
policy; the script prints each side's median calls/s, the ratio a/b and PASS/FAIL
against 0.7, with the CPU seconds each process used per window. `--profile` runs one
more side (a) window under cProfile and prints where this process's time goes.

    .venv/bin/python benchmarks/dispatch.py [--tasks 32] [--rounds 2] [--grpc] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import itertools
import json
import os
import pstats
import statistics
import time
from collections import defaultdict
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.client import AsyncClient
    from orchestrator.domain import CallDelta, CallRequest, CallResult, TaskSpec
    from orchestrator.executor.executor import Executor
    from orchestrator.replicas.pool import ReplicaPool
    from orchestrator.routing import ReplicaView, RoutingPolicy
    from orchestrator.server.app import ServingTokenizer

AGENT = "plan_execute"
GOAL = 0.7  # (a)/(b) calls per second
BARE = "bare ray loop"
GRPC = "grpc (AsyncClient.run)"


@dataclass(slots=True)
class Window:
    """One measured (or warm-up) window of one side."""

    side: str  # BARE, GRPC or "executor"
    policy: str  # routing policy of side (a); "-" for the bare loop
    label: str  # "warmup", "profile" or the round number
    seconds: float
    calls: int
    # Sum over the counted calls of dispatch -> result, seconds: / seconds = the mean
    # number of calls in flight (Little's law).
    busy_s: float
    cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    @property
    def in_flight(self) -> float:
        return self.busy_s / self.seconds


# ---------------------------------------------------------------------------- workload


def task_spec(index: int, max_tokens: int) -> TaskSpec:
    from orchestrator.domain import Mode, TaskSpec

    return TaskSpec(
        agent=AGENT,
        input=f"Task {index}: compare two GPU clusters for an agentic coding workload.",
        mode=Mode.SYNTHETIC,
        ignore_eos=True,
        step_max_tokens=tuple(
            (step, max_tokens) for step in ("planner", "synthesizer", "worker")
        ),
    )


class Recorder:
    """A pass-through Dispatcher that keeps every CallRequest side (a) sends."""

    def __init__(self, pool: ReplicaPool) -> None:
        self._pool = pool
        self.requests: list[CallRequest] = []

    @property
    def max_model_len(self) -> int:
        return self._pool.max_model_len

    def views(self) -> list[ReplicaView]:
        return self._pool.views()

    async def call(self, replica_name: str, call: CallRequest) -> CallResult:
        self.requests.append(call)
        return await self._pool.call(replica_name, call)

    def stream(
        self, replica_name: str, call: CallRequest
    ) -> AsyncGenerator[CallDelta | CallResult, None]:
        self.requests.append(call)
        return self._pool.stream(replica_name, call)


# ---------------------------------------------------------------------------- CPU


def _cpu_by_role() -> dict[str, float]:
    """CPU seconds used so far: this process, the replica actors, and the rest of this
    process's descendants (raylet, GCS, Ray's other workers). Linux /proc; {} elsewhere."""
    proc = Path("/proc")
    if not proc.is_dir():
        return {}
    ticks = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    replica: set[int] = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
        if argv.startswith(b"ray::ReplicaActor"):
            replica.add(pid)
    children: dict[int, list[int]] = defaultdict(list)
    for pid, ppid in parent.items():
        children[ppid].append(pid)
    me = os.getpid()
    totals = {"this process": cpu.get(me, 0.0), "replica actors": 0.0, "other ray": 0.0}
    stack = list(children.get(me, []))
    while stack:
        pid = stack.pop()
        totals["replica actors" if pid in replica else "other ray"] += cpu.get(pid, 0.0)
        stack.extend(children.get(pid, []))
    return totals


# ---------------------------------------------------------------------------- windows


@dataclass(slots=True)
class _Counter:
    """Completions inside [start, end) of the perf_counter clock."""

    start: float
    end: float
    calls: int = 0
    busy_s: float = 0.0

    def add(self, at: float, calls: int, busy_s: float) -> None:
        if self.start <= at < self.end:
            self.calls += calls
            self.busy_s += busy_s


async def measure(
    side: str,
    policy: str,
    label: str,
    workers: int,
    one: Callable[[_Counter], Awaitable[None]],
    args: argparse.Namespace,
) -> Window:
    """Run `workers` coroutines, each calling `one` in a loop, for warmup + seconds; then
    let them finish what they started (those completions fall outside the window)."""
    await asyncio.sleep(args.pause)
    stop = asyncio.Event()
    now = time.perf_counter()
    counter = _Counter(now + args.warmup, now + args.warmup + args.seconds)

    async def loop() -> None:
        while not stop.is_set():
            await one(counter)

    before: dict[str, float] = {}
    running = [asyncio.create_task(loop()) for _ in range(workers)]
    try:
        await asyncio.sleep(args.warmup)
        before = _cpu_by_role()
        await asyncio.sleep(args.seconds)
        after = _cpu_by_role()
        stop.set()
        await asyncio.gather(*running)
    finally:
        for task in running:
            task.cancel()
    window = Window(
        side,
        policy,
        label,
        args.seconds,
        counter.calls,
        counter.busy_s,
        {role: after[role] - before.get(role, 0.0) for role in after},
    )
    print(
        f"{label:>7} {side:<24} {policy:<15} {window.rate:8,.0f} calls/s"
        f"  (in flight {window.in_flight:5.1f})",
        flush=True,
    )
    return window


def bare_one(
    actors: Sequence[Any], requests: Sequence[CallRequest]
) -> Callable[[_Counter], Awaitable[None]]:
    ids = itertools.count()

    async def one(counter: _Counter) -> None:
        n = next(ids)
        request = replace(requests[n % len(requests)], call_id=f"bare-{n}")
        started = time.perf_counter()
        await actors[n % len(actors)].generate.remote(request)
        done = time.perf_counter()
        counter.add(done, 1, done - started)

    return one


def executor_one(executor: Executor, max_tokens: int) -> Callable[[_Counter], Awaitable[None]]:
    from orchestrator.domain import StepFinished

    ids = itertools.count()

    async def one(counter: _Counter) -> None:
        task = executor.prepare(task_spec(next(ids), max_tokens))
        async for event in executor.run(task, stream_answer=False):
            if isinstance(event, StepFinished) and event.call is not None:
                counter.add(time.perf_counter(), 1, event.call.dispatch_to_result)

    return one


def grpc_one(client: AsyncClient, max_tokens: int) -> Callable[[_Counter], Awaitable[None]]:
    from orchestrator.client import Mode

    ids = itertools.count()
    steps = {step: max_tokens for step in ("planner", "synthesizer", "worker")}

    async def one(counter: _Counter) -> None:
        n = next(ids)
        result = await client.run(
            AGENT,
            f"Task {n}: compare two GPU clusters for an agentic coding workload.",
            mode=Mode.SYNTHETIC,
            ignore_eos=True,
            step_max_tokens=steps,
        )
        busy = sum(c.dispatch_to_result for c in result.calls)
        counter.add(time.perf_counter(), result.usage.llm_calls, busy)

    return one


# ---------------------------------------------------------------------------- driver


def make_executor(
    dispatcher: Any, policy: RoutingPolicy, tokenizer: ServingTokenizer, limit: int
) -> Executor:
    from agents import BUILTIN_PROGRAMS
    from orchestrator.executor.executor import Executor
    from orchestrator.routing import RouterSettings, make_router

    return Executor(
        dispatcher,
        make_router(RouterSettings(policy=policy)),
        tokenizer,
        BUILTIN_PROGRAMS,
        max_concurrent_calls_per_task=limit,
    )


def profile_text(profile: cProfile.Profile, limit: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)
    return out.getvalue()


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from orchestrator.client import AsyncClient
    from orchestrator.config import DeploymentConfig
    from orchestrator.replicas.pool import ReplicaPool
    from orchestrator.routing import RoutingPolicy
    from orchestrator.server.app import Deployment, resolve_model, sim_tokenizer

    config = DeploymentConfig.model_validate(
        {
            "server": {"host": "127.0.0.1", "port": 0},
            "replicas": {
                "count": args.replicas,
                "backend": "sim",
                "num_cpus": args.replica_cpus,
                "sim": {"time_scale": 0},
            },
        }
    )
    default_policy: RoutingPolicy = config.routing.policy
    policies = [default_policy]
    if RoutingPolicy.ROUND_ROBIN not in policies:
        policies.append(RoutingPolicy.ROUND_ROBIN)
    tokenizer = sim_tokenizer(config.replicas.sim)
    limit = config.limits.max_concurrent_calls_per_task
    deployment: Deployment | None = None
    client: AsyncClient | None = None
    if args.grpc:
        deployment = await Deployment.start(config)
        pool = deployment.pool
        client = AsyncClient(deployment.address, timeout=600.0)
    else:
        pool = ReplicaPool(config.replicas, resolve_model(config), config.ray.namespace)
        await pool.start()
    import ray

    actors = [
        ray.get_actor(f"inflection-replica-{i}", namespace=config.ray.namespace)
        for i in range(args.replicas)
    ]
    windows: list[Window] = []
    profile_report = ""
    try:
        # Warm-up of side (a) that also records the requests the bare loop replays.
        recorder = Recorder(pool)
        recording = make_executor(recorder, default_policy, tokenizer, limit)
        windows.append(
            await measure(
                "executor",
                default_policy.value,
                "warmup",
                args.tasks,
                executor_one(recording, args.max_tokens),
                args,
            )
        )
        requests = list(recorder.requests)
        bare = bare_one(actors, requests)
        windows.append(await measure(BARE, "-", "warmup", args.callers, bare, args))
        for policy in policies:
            executor = make_executor(pool, policy, tokenizer, limit)
            side_a = executor_one(executor, args.max_tokens)
            windows.append(
                await measure("executor", policy.value, "warmup", args.tasks, side_a, args)
            )
            for round_ in range(1, args.rounds + 1):
                windows.append(
                    await measure(BARE, policy.value, str(round_), args.callers, bare, args)
                )
                windows.append(
                    await measure(
                        "executor", policy.value, str(round_), args.tasks, side_a, args
                    )
                )
        if client is not None:
            side_g = grpc_one(client, args.max_tokens)
            windows.append(await measure(GRPC, "deployment's", "warmup", args.tasks, side_g, args))
            for round_ in range(1, args.rounds + 1):
                windows.append(
                    await measure(BARE, GRPC, str(round_), args.callers, bare, args)
                )
                windows.append(
                    await measure(GRPC, "deployment's", str(round_), args.tasks, side_g, args)
                )
        if args.profile:
            executor = make_executor(pool, default_policy, tokenizer, limit)
            profile = cProfile.Profile()
            profile.enable()
            try:
                windows.append(
                    await measure(
                        "executor",
                        default_policy.value,
                        "profile",
                        args.tasks,
                        executor_one(executor, args.max_tokens),
                        args,
                    )
                )
            finally:
                profile.disable()
            profile_report = profile_text(profile, args.profile_lines)
    finally:
        if client is not None:
            await client.close()
        if deployment is not None:
            await deployment.stop()
        else:
            await pool.shutdown()

    summary = summarize(args, windows, [p.value for p in policies], len(requests))
    print_report(summary, windows)
    if profile_report:
        print("\ncProfile of side (a), this process, one window (top by tottime, cumulative):")
        print(profile_report)
    return summary


def summarize(
    args: argparse.Namespace, windows: Sequence[Window], policies: Sequence[str], recorded: int
) -> dict[str, Any]:
    measured = [w for w in windows if w.label not in ("warmup", "profile")]
    pairs: dict[str, dict[str, float]] = {}
    for name in [*policies, *([GRPC] if args.grpc else [])]:
        if name == GRPC:
            bare = [w.rate for w in measured if w.side == BARE and w.policy == GRPC]
            ours = [w.rate for w in measured if w.side == GRPC]
        else:
            bare = [w.rate for w in measured if w.side == BARE and w.policy == name]
            ours = [w.rate for w in measured if w.side == "executor" and w.policy == name]
        b, a = statistics.median(bare), statistics.median(ours)
        pairs[name] = {"bare_calls_per_s": b, "calls_per_s": a, "ratio": a / b}
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu_count": os.cpu_count(),
        "args": {k: v for k, v in vars(args).items() if k != "json"},
        "recorded_requests": recorded,
        "goal_ratio": GOAL,
        "results": pairs,
        "meets_goal": all(p["ratio"] >= GOAL for p in pairs.values()),
        "windows": [{**asdict(w), "rate": w.rate, "in_flight": w.in_flight} for w in windows],
    }


def print_report(summary: dict[str, Any], windows: Sequence[Window]) -> None:
    args = summary["args"]
    print(
        f"\n{AGENT}, synthetic, {args['max_tokens']} output tokens per call; "
        f"{args['replicas']} instant sim replicas (time_scale 0); side (a) {args['tasks']} "
        f"concurrent tasks, bare loop {args['callers']} callers; "
        f"{args['seconds']:g} s windows after {args['warmup']:g} s warm-up"
    )
    header = f"{'side (a)':<24} {'bare calls/s':>12} {'(a) calls/s':>12} {'ratio':>7}  verdict"
    print(header)
    print("-" * len(header))
    for name, r in summary["results"].items():
        label = name if name == GRPC else f"executor, {name}"
        verdict = "PASS" if r["ratio"] >= GOAL else "FAIL"
        print(
            f"{label:<24} {r['bare_calls_per_s']:>12,.0f} {r['calls_per_s']:>12,.0f} "
            f"{r['ratio']:>7.3f}  {verdict} (goal >= {GOAL})"
        )
    # Where the CPU goes, per 1,000 calls, by side (measured windows pooled).
    measured = [w for w in windows if w.label not in ("warmup", "profile") and w.calls]
    groups: dict[str, list[Window]] = defaultdict(list)
    for w in measured:
        groups[w.side if w.side != "executor" else f"executor, {w.policy}"].append(w)
    roles = ("this process", "replica actors", "other ray")
    print(f"\nCPU seconds per 1,000 calls (measured windows pooled; 2 cores = {2:.1f} per s)")
    print(f"{'side':<24} " + " ".join(f"{r:>15}" for r in roles) + f" {'in flight':>10}")
    for name, ws in groups.items():
        calls = sum(w.calls for w in ws)
        cells = " ".join(
            f"{1000 * sum(w.cpu_s.get(r, 0.0) for w in ws) / calls:>15.3f}" for r in roles
        )
        print(f"{name:<24} {cells} {statistics.fmean(w.in_flight for w in ws):>10.1f}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="LLM calls/s through the executor on instant sim replicas vs a bare "
        "loop of Ray actor calls to the same replicas, measured side by side."
    )
    parser.add_argument("--tasks", type=int, default=32, help="concurrent tasks, side (a)")
    parser.add_argument(
        "--callers",
        type=int,
        default=None,
        help="concurrent callers of the bare loop (default: tasks x 5/3, the mean calls "
        "in flight of a plan_execute task: waves of 1, 3 and 1)",
    )
    parser.add_argument("--replicas", type=int, default=2, help="instant sim replicas")
    parser.add_argument(
        "--replica-cpus", type=float, default=0.5, help="Ray CPUs reserved per replica"
    )
    parser.add_argument("--max-tokens", type=int, default=8, help="output tokens per call")
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds per side")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured s per window")
    parser.add_argument("--warmup", type=float, default=1.0, help="uncounted s per window")
    parser.add_argument("--pause", type=float, default=0.5, help="idle s before each window")
    parser.add_argument(
        "--grpc", action="store_true", help="also measure AsyncClient.run over gRPC"
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile one more side (a) window"
    )
    parser.add_argument("--profile-lines", type=int, default=25, help="rows per profile table")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.callers is None:
        args.callers = max(1, round(args.tasks * 5 / 3))
    for name in ("tasks", "callers", "replicas", "max_tokens", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.seconds <= 0 or args.warmup < 0 or args.pause < 0:
        parser.error("--seconds must be > 0, --warmup and --pause >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    import ray

    args = parse_args(argv)
    # Our own local cluster (never one another process left running), started from the
    # main thread, where Ray installs its signal handlers.
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        namespace="inflection",
        log_to_driver=False,
    )
    try:
        summary = asyncio.run(benchmark(args))
    finally:
        ray.shutdown()
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    if not summary["meets_goal"]:
        print("below goal")


if __name__ == "__main__":
    main()
