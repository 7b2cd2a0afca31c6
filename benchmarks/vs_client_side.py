"""Inflection against what users do today: the same agent programs run in the client over
vLLM's OpenAI server, on the same engines.

Three cases, the same tasks, the same concurrency, 2 cores, vLLM's CPU build with the tiny
generated model, the same engine arguments everywhere (`engine_args` of the default
`replicas.vllm` config: prefix caching on, whole-prompt prefills) and the same threads
(`OMP_NUM_THREADS=1`, what Ray gives a replica actor with `num_cpus: 0`). Mind the
hardware: vLLM's CPU build pins every engine's worker to the same single core (CPU 0 on
this machine, `VLLM_CPU_OMP_THREADS_BIND=auto`), so here 2 engines have the compute of 1,
in (a) and (b) alike; on GPUs each replica has its own device.

(a) **inflection**: a `Deployment` with 2 vLLM replicas (Ray actors, `num_cpus: 0`) and
    program_aware routing; the tasks go to it through the gRPC SDK.
(b) **client_rr**: 2 `vllm.entrypoints.openai.api_server` processes; Inflection's load
    generator runs the programs client-side (the OpenAI target's runner, the task
    driver's third shell) and sends every call to the next server in turn, as a
    round-robin balancer in front of them would (`--host A,B`).
(c) **client_1**: the same against 1 server.

Each task has its own user input of random words (>= `--input-tokens` tokens of the
model's tokenizer), its own seed (the same for every case), synthetic mode, every call
capped at `--max-tokens`; `--agents` in turn (plan_execute and react by default);
`--concurrency` tasks in flight, taken in submission order. Before measuring, each case
runs a few short chat tasks (a) or calls (b, c) to warm its engines.

Per case it reports, all measured at the client: output tok/s (output tokens of the
completed tasks / first submission -> last completion), tasks/s, task latency p50 and
p99 (nearest rank), the prefix hit rate (cached / prompt tokens as the engines report
them), servers per task, the machine's busy CPU seconds over the same window (all
processes: engines, servers, Ray, the client) and output tokens per CPU second, and the
ratios of (a) to (b) and (c). The goal: (a) >= 2x the
output tok/s of (b), or >= 2x lower p50 task latency at equal throughput.

`--rounds 2` runs the cases twice, the second round in reverse order, so a machine
getting busier or quieter does not favour one case; the table then shows each case's
median round.

    .venv/bin/python benchmarks/vs_client_side.py [--tasks 24] [--concurrency 4]

The client-side cases run in a child process of this script (`--leg FILE`): the load
generator's runner lives on gevent, which must not patch this process's Ray and asyncio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: the checkout's root, for `benchmarks.*`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Before anything imports vLLM (the Ray replicas and the servers inherit this).
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

from benchmarks.routing_vllm import Workload, make_inputs

CASES = ("inflection", "client_rr", "client_1")
DEFAULT_AGENTS = ("plan_execute", "react")
WARMUP_TASKS = 4
SERVER_START_TIMEOUT_S = 300.0


@dataclass(slots=True, frozen=True)
class TaskRow:
    """One task as the client saw it."""

    agent: str
    ok: bool
    error: str
    latency_s: float  # submission -> result, at the client
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    servers: int  # distinct replicas (a) or servers (b, c) its calls went to


@dataclass(slots=True, frozen=True)
class CaseRun:
    case: str
    startup_s: float
    wall_s: float  # first submission -> last completion
    tasks: tuple[TaskRow, ...]
    cpu_s: float  # the machine's busy CPU seconds over the same window (all processes)

    @property
    def done(self) -> list[TaskRow]:
        return [t for t in self.tasks if t.ok]

    @property
    def output_tps(self) -> float:
        return sum(t.output_tokens for t in self.done) / self.wall_s

    @property
    def tasks_per_s(self) -> float:
        return len(self.done) / self.wall_s

    @property
    def hit_rate(self) -> float:
        prompt = sum(t.prompt_tokens for t in self.done)
        return sum(t.cached_tokens for t in self.done) / prompt if prompt else 0.0

    def latency(self, q: float) -> float:
        ordered = sorted(t.latency_s for t in self.done)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat): the
    difference over a window is what every process together used, engines, servers,
    Ray, the client and anything else running."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def agents_of(args: argparse.Namespace, task: int) -> str:
    agents: Sequence[str] = args.agents
    return agents[task % len(agents)]


# ---- (a) the orchestrator ----------------------------------------------------------------


async def run_inflection(args: argparse.Namespace, inputs: Sequence[str]) -> CaseRun:
    from orchestrator.client import AsyncClient, InflectionError
    from orchestrator.config import DeploymentConfig
    from orchestrator.server.app import Deployment

    config = DeploymentConfig.model_validate(
        {
            "ray": {"namespace": f"vs-client-side-{os.getpid()}"},
            "server": {"host": "127.0.0.1", "port": 0},
            # num_cpus 0: both replicas fit the 2-CPU cluster (the engines share the cores).
            "replicas": {"count": 2, "backend": "vllm", "num_cpus": 0},
            "routing": {"policy": "program_aware"},
        }
    )
    started = time.perf_counter()
    deployment = await Deployment.start(config)
    startup = time.perf_counter() - started
    gate = asyncio.Semaphore(args.concurrency)

    async def one(client: AsyncClient, task: int) -> TaskRow:
        agent = agents_of(args, task)
        async with gate:
            sent = time.perf_counter()
            try:
                result = await client.run(
                    agent, inputs[task], max_tokens=args.max_tokens, seed=args.seed + task
                )
            except InflectionError as exc:
                return TaskRow(agent, False, str(exc)[:200], 0.0, 0, 0, 0, 0)
            u = result.usage
            return TaskRow(
                agent,
                True,
                "",
                time.perf_counter() - sent,
                u.prompt_tokens_total,
                u.cached_tokens_total,
                u.output_tokens_total,
                len({c.replica for c in result.calls}),
            )

    try:
        async with AsyncClient(deployment.address, timeout=900.0) as client:
            await asyncio.gather(
                *(
                    client.run("chat", f"Warm up {i}.", max_tokens=4, seed=i)
                    for i in range(WARMUP_TASKS)
                )
            )
            await asyncio.sleep(args.pause)
            began, cpu = time.perf_counter(), busy_cpu_s()
            rows = await asyncio.gather(*(one(client, i) for i in range(args.tasks)))
            wall, cpu = time.perf_counter() - began, busy_cpu_s() - cpu
    finally:
        await deployment.stop()
    return CaseRun("inflection", startup, wall, tuple(rows), cpu)


# ---- (b), (c): vLLM's OpenAI servers, the programs in the client --------------------------


def server_command(model: str, port: int) -> list[str]:
    """`vllm.entrypoints.openai.api_server` with the engine arguments a replica of (a)
    gets (`engine_args` of the default config), plus cached tokens in `usage`."""
    from orchestrator.config import VllmEngineConfig
    from orchestrator.replicas.vllm_engine import engine_args

    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--enable-prompt-tokens-details"]
    for name, value in engine_args(VllmEngineConfig(), model, on_cpu=True).items():
        if name == "disable_log_stats" or value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            command.append(flag if value else f"--no-{flag[2:]}")
        else:
            command += [flag, str(value)]
    return command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


class Servers:
    """`count` vLLM OpenAI servers, each in its own process group, stopped by PID."""

    def __init__(self, model: str, count: int, logs: Path) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        self.logs = logs
        # A replica of (a) is a Ray actor with num_cpus 0, which Ray runs with
        # OMP_NUM_THREADS=1; the servers get the same. (vLLM's CPU build then pins each
        # engine's worker to one core, CPU 0 here, in every case alike.)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        for _ in range(count):
            port = _free_port()
            with (logs / f"server-{port}.log").open("wb") as out:
                self.processes.append(
                    subprocess.Popen(
                        server_command(model, port),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=env,
                        start_new_session=True,
                    )
                )
            self.urls.append(f"http://127.0.0.1:{port}")

    def wait(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        for process, url in zip(self.processes, self.urls, strict=True):
            while not _healthy(url):
                if process.poll() is not None:
                    raise RuntimeError(f"the vLLM server {url} exited; its log is in {self.logs}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the vLLM server {url} did not start in time")
                time.sleep(0.5)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def run_client_side(
    case: str, args: argparse.Namespace, model: str, inputs: Sequence[str], servers: int
) -> CaseRun:
    with tempfile.TemporaryDirectory(prefix="vs-client-side-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        fleet = Servers(model, servers, folder)
        try:
            fleet.wait()
            startup = time.perf_counter() - started
            leg = folder / "leg.json"
            leg.write_text(
                json.dumps(
                    {
                        "hosts": fleet.urls,
                        "model": model,
                        "inputs": list(inputs),
                        "agents": list(args.agents),
                        "seed": args.seed,
                        "max_tokens": args.max_tokens,
                        "concurrency": args.concurrency,
                        "pause": args.pause,
                    }
                )
            )
            done = subprocess.run(
                [sys.executable, __file__, "--leg", str(leg)],
                capture_output=True,
                text=True,
                timeout=3600,
            )
            if done.returncode != 0:
                raise RuntimeError(f"the client-side leg failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
        finally:
            fleet.stop()
    rows = tuple(TaskRow(**row) for row in result["tasks"])
    return CaseRun(case, startup, float(result["wall_s"]), rows, float(result["cpu_s"]))


def leg(path: Path) -> None:
    """The client-side leg, in its own process: the OpenAI target's runner (gevent), one
    greenlet per task in flight, the tasks taken in submission order."""
    import locust

    # isort: split
    import gevent
    from gevent.queue import Queue
    from locust.env import Environment

    from loadtests.openai_user import OpenAIRunner
    from loadtests.state import state_of
    from loadtests.workload import Workload as LoadWorkload
    from orchestrator.domain import Mode, TaskSpec

    _ = locust
    spec = json.loads(path.read_text())
    inputs: list[str] = spec["inputs"]
    agents: list[str] = spec["agents"]
    seed0: int = spec["seed"]

    class Runner(OpenAIRunner):
        """The runner with this benchmark's task list instead of the workload's draws."""

        def spec(self, agent: str, seed: int | None = None) -> TaskSpec:
            assert seed is not None
            return TaskSpec(
                agent=agent,
                input=inputs[seed - seed0],
                mode=Mode.SYNTHETIC,
                max_tokens=spec["max_tokens"],
                seed=seed,
            )

    hosts = ",".join(spec["hosts"])
    env = Environment(host=hosts)
    env.parsed_options = argparse.Namespace(
        api="completions",
        model=spec["model"],
        tokenizer="",
        affinity_header="",
        priority=False,
        token="",
    )
    state = state_of(env)
    state.workload = LoadWorkload(agents=dict.fromkeys(agents, 1.0))
    state.stats.keep_calls = True
    # Warm-up: a few short calls to every server, on a task list of their own.
    warm = OpenAIRunner(env, hosts)
    warm.target()
    gevent.joinall(
        [gevent.spawn(warm.run_one, "chat", i) for i in range(WARMUP_TASKS * len(spec["hosts"]))]
    )
    warm.close()
    gevent.sleep(spec["pause"])
    queue: Queue[int] = Queue()
    for task in range(len(inputs)):
        queue.put(task)
    rows: list[dict[str, Any]] = []

    def worker() -> None:
        runner = Runner(env, hosts)
        try:
            while not queue.empty():
                task = queue.get()
                agent = agents[task % len(agents)]
                s = runner.run_one(agent, seed0 + task)
                rows.append(
                    asdict(
                        TaskRow(
                            agent,
                            s.ok,
                            "" if s.ok else s.status,
                            s.task_latency,
                            s.prompt_tokens,
                            s.cached_tokens,
                            s.output_tokens,
                            len({c.target for c in s.calls if c.kind == "llm"}),
                        )
                    )
                )
        finally:
            runner.close()

    began, cpu = time.perf_counter(), busy_cpu_s()
    gevent.joinall([gevent.spawn(worker) for _ in range(spec["concurrency"])])
    wall, cpu = time.perf_counter() - began, busy_cpu_s() - cpu
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "tasks": rows}))


# ---- the report --------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("inf")


def summarize(args: argparse.Namespace, rounds: Sequence[Sequence[CaseRun]]) -> dict[str, Any]:
    by_case: dict[str, list[CaseRun]] = {c: [] for c in CASES if c in args.cases}
    for runs in rounds:
        for run in runs:
            by_case[run.case].append(run)
    rows: dict[str, Any] = {}
    for case, runs in by_case.items():
        ordered = sorted(runs, key=lambda r: r.output_tps)
        median = ordered[(len(ordered) - 1) // 2]
        rows[case] = {
            "rounds": [
                {
                    "output_tps": r.output_tps,
                    "p50_s": r.latency(0.5),
                    "wall_s": r.wall_s,
                    "cpu_s": r.cpu_s,
                }
                for r in runs
            ],
            "startup_s": median.startup_s,
            "tasks_done": len(median.done),
            "tasks_failed": len(median.tasks) - len(median.done),
            "failures": sorted({t.error for t in median.tasks if not t.ok}),
            "wall_s": median.wall_s,
            "cpu_s": median.cpu_s,
            "output_tokens_per_cpu_s": sum(t.output_tokens for t in median.done) / median.cpu_s
            if median.cpu_s > 0
            else 0.0,
            "output_tokens": sum(t.output_tokens for t in median.done),
            "prompt_tokens": sum(t.prompt_tokens for t in median.done),
            "output_tps": median.output_tps,
            "tasks_per_s": median.tasks_per_s,
            "task_latency_p50_s": median.latency(0.5),
            "task_latency_p99_s": median.latency(0.99),
            "prefix_hit_rate": median.hit_rate,
            "servers_per_task": statistics.fmean(t.servers for t in median.done)
            if median.done
            else 0.0,
        }
    a = rows.get("inflection")
    versus: dict[str, Any] = {}
    if a is not None:
        for case in ("client_rr", "client_1"):
            b = rows.get(case)
            if b is not None:
                versus[case] = {
                    "output_tps": _ratio(a["output_tps"], b["output_tps"]),
                    "p50_latency": _ratio(b["task_latency_p50_s"], a["task_latency_p50_s"]),
                    "p99_latency": _ratio(b["task_latency_p99_s"], a["task_latency_p99_s"]),
                    "prefix_hit_rate": _ratio(a["prefix_hit_rate"], b["prefix_hit_rate"]),
                }
    goal = versus.get("client_rr")
    # The cases ran the same programs with the same seeds: the same calls, token for token
    # (when every task completed), so the ratios compare the same work.
    work = {
        (r["prompt_tokens"], r["output_tokens"]) for r in rows.values() if not r["tasks_failed"]
    }
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "workload": {
            "agents": list(args.agents),
            "tasks": args.tasks,
            "concurrency": args.concurrency,
            "input_tokens": args.input_tokens,
            "max_tokens": args.max_tokens,
            "seeds": [args.seed, args.seed + args.tasks - 1],
            "rounds": args.rounds,
        },
        "cases": rows,
        "inflection_over": versus,
        "same_work": len(work) == 1 and all(not r["tasks_failed"] for r in rows.values()),
        "goal_met": None
        if goal is None
        else bool(goal["output_tps"] >= 2.0 or goal["p50_latency"] >= 2.0),
    }


def print_report(args: argparse.Namespace, summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 160))
    table = Table(
        title=f"{args.tasks} tasks ({' + '.join(args.agents)} in turn), {args.concurrency} in "
        f"flight, inputs >= {args.input_tokens} tokens, max_tokens {args.max_tokens}, "
        f"vLLM CPU build, tiny model"
        + (f", median of {args.rounds} rounds" if args.rounds > 1 else ""),
        title_justify="left",
    )
    columns = ("case", "done", "output tok/s", "tasks/s", "p50", "p99", "prefix hits",
               "servers/task", "CPU s", "tok/CPU s", "a: tok/s x", "a: p50 x")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "case" else "right")
    for case, row in summary["cases"].items():
        vs = summary["inflection_over"].get(case)
        table.add_row(
            case,
            f"{row['tasks_done']}"
            + (f" ({row['tasks_failed']} failed)" if row["tasks_failed"] else ""),
            f"{row['output_tps']:.1f}",
            f"{row['tasks_per_s']:.3f}",
            f"{row['task_latency_p50_s']:.2f} s",
            f"{row['task_latency_p99_s']:.2f} s",
            f"{row['prefix_hit_rate']:.1%}",
            f"{row['servers_per_task']:.2f}",
            f"{row['cpu_s']:.1f}",
            f"{row['output_tokens_per_cpu_s']:.0f}",
            f"{vs['output_tps']:.2f}x" if vs else "-",
            f"{vs['p50_latency']:.2f}x" if vs else "-",
        )
    console.print(table)
    first = next(iter(summary["cases"].values()))
    console.print(
        f"same work in every case (prompt {first['prompt_tokens']:,} and output "
        f"{first['output_tokens']:,} tokens): "
        + ("yes" if summary["same_work"] else "[bold red]NO[/] (failed tasks or other tokens)"),
        highlight=False,
    )
    if summary["goal_met"] is not None:
        vs = summary["inflection_over"]["client_rr"]
        verdict = "[bold green]MET[/]" if summary["goal_met"] else "[bold red]NOT MET[/]"
        console.print(
            f"inflection vs client_rr: output tok/s {vs['output_tps']:.2f}x, p50 task latency "
            f"{vs['p50_latency']:.2f}x lower; goal (>= 2x either): {verdict}",
            highlight=False,
        )


def run_rounds(args: argparse.Namespace) -> list[list[CaseRun]]:
    import ray
    from rich.console import Console

    from orchestrator.replicas.tiny_model import build_tiny_model, default_tiny_model_dir
    from orchestrator.server.app import HfTokenizer

    console = Console()
    model = str(build_tiny_model(default_tiny_model_dir()))
    tokenizer = HfTokenizer(model)
    workload = Workload(args.tasks, args.concurrency, args.input_tokens, args.max_tokens, args.seed)
    inputs = make_inputs(tokenizer.encode, workload)
    lengths = [len(tokenizer.encode(text)) for text in inputs]
    console.print(
        f"{args.tasks} tasks, inputs {min(lengths)}-{max(lengths)} tokens, cases "
        f"{', '.join(args.cases)}, {args.rounds} round(s)",
        highlight=False,
    )
    rounds: list[list[CaseRun]] = []
    for n in range(args.rounds):
        order = list(args.cases) if n % 2 == 0 else list(reversed(args.cases))
        runs = []
        for case in order:
            if case == "inflection":
                # Our own local cluster (never one another process left running).
                ray.init(
                    address="local",
                    num_cpus=2,
                    include_dashboard=False,
                    log_to_driver=False,
                )
                try:
                    run = asyncio.run(run_inflection(args, inputs))
                finally:
                    ray.shutdown()
            else:
                servers = 2 if case == "client_rr" else 1
                run = run_client_side(case, args, model, inputs, servers)
            failed = len(run.tasks) - len(run.done)
            console.print(
                f"round {n + 1} {case}: up in {run.startup_s:.0f} s; {len(run.done)} tasks in "
                f"{run.wall_s:.1f} s, {run.output_tps:.1f} output tok/s, p50 "
                f"{run.latency(0.5):.2f} s, prefix hits {run.hit_rate:.1%}"
                + (f", {failed} failed" if failed else ""),
                highlight=False,
            )
            runs.append(run)
        rounds.append(runs)
    return rounds


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=24, help="tasks per case")
    parser.add_argument("--concurrency", type=int, default=4, help="tasks in flight")
    parser.add_argument("--input-tokens", type=int, default=600, help="user input length")
    parser.add_argument("--max-tokens", type=int, default=32, help="cap on every call's output")
    parser.add_argument("--seed", type=int, default=1000, help="seed of task 0 (task i: +i)")
    parser.add_argument("--agents", nargs="+", default=list(DEFAULT_AGENTS), help="in turn")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--rounds", type=int, default=1, help="odd rounds in reverse order")
    parser.add_argument("--pause", type=float, default=2.0, help="idle s after the warm-up")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--leg", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("tasks", "concurrency", "input_tokens", "max_tokens", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.leg is not None:
        leg(args.leg)
        return
    summary = summarize(args, run_rounds(args))
    print_report(args, summary)
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
