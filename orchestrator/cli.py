"""The `inflection` command.

    inflection run                      all-in-one: replicas + server + a burst of tasks
    inflection serve --config FILE      replicas + gRPC server until stopped
    inflection agents [--target ADDR]   list agent programs (built-in, or a server's)
    inflection status --target ADDR     replicas of a running server, their state and load
    inflection simulate --config FILE   fast-forward a simulated cluster; JSON + HTML reports
    inflection plan --model M --slo ..  GPUs needed per GPU type at an SLO, tok/J, $/M tokens
    inflection load [--host ADDR]       Locust agentic load (a local sim server if no host)

Heavy imports (Ray, vLLM, transformers) happen inside the commands that need them, so
`inflection agents` and `inflection status` start fast.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rich.console import Console

from orchestrator.config import Backend, ConfigError, DeploymentConfig, load_config
from orchestrator.tables import add_format_flag, format_of, print_table

if TYPE_CHECKING:
    from rich.table import Table

    from agents.dsl import Program
    from orchestrator.client import Client
    from orchestrator.domain import AgentInfo, TaskResult, TaskUsage
    from orchestrator.executor.interpreter import Encoder

_T = TypeVar("_T")

console = Console()
err_console = Console(stderr=True)

# Inputs for the main job's tasks: short agentic requests of varied length.
_SAMPLE_INPUTS = (
    "Compare H100 and B200 clusters for an agentic coding workload.",
    "Plan a migration of our inference fleet to tensor-parallel replicas.",
    "Summarise why agents multiply the tokens of a chat turn.",
    "Find the cheapest way to serve a research agent at a 5 second TTFT.",
    "Explain prefix caching to a new engineer, with one example.",
    "Draft a load test that measures token amplification and goodput.",
)


def _http_port(text: str) -> int | str:
    """--http-port: a port number, or `off`."""
    if text == "off":
        return text
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number or 'off'") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0-65535)")
    return port


def _config(args: argparse.Namespace, *, replicas_default: bool = False) -> DeploymentConfig:
    """The deployment: the --config file (or the defaults) with the flags applied, then
    validated once, simulated replica included. `replicas_default`: without --config or
    --replicas, run 2 simulated replicas, or 1 vLLM replica (`inflection run`)."""
    config = load_config(Path(args.config)) if args.config else DeploymentConfig()
    updates: dict[str, Any] = {}
    server = config.server
    if getattr(args, "port", None) is not None:
        server = server.model_copy(update={"port": args.port})
    if getattr(args, "host", None) is not None:
        server = server.model_copy(update={"host": args.host})
    http_port = getattr(args, "http_port", None)
    if http_port is not None:
        server = server.model_copy(update={"http_port": None if http_port == "off" else http_port})
    updates["server"] = server
    replicas = config.replicas
    if getattr(args, "backend", None) is not None:
        replicas = replicas.model_copy(update={"backend": Backend(args.backend)})
    sim = replicas.backend is Backend.SIM
    count = getattr(args, "replicas", None)
    if count is None and replicas_default and not args.config:
        count = 2 if sim else 1
    if count is not None:
        replicas = replicas.model_copy(update={"count": count})
    if getattr(args, "model", None) is not None:
        if sim:
            replicas = replicas.model_copy(
                update={"sim": replicas.sim.model_copy(update={"model": args.model})}
            )
        else:
            replicas = replicas.model_copy(
                update={"engine": replicas.engine.model_copy(update={"model": args.model})}
            )
    if getattr(args, "gpu", None) is not None:
        if not sim:
            raise ConfigError("--gpu chooses the simulated GPU: it needs --backend sim")
        replicas = replicas.model_copy(
            update={"sim": replicas.sim.model_copy(update={"gpu": args.gpu})}
        )
    updates["replicas"] = replicas
    # Round-trip through validation so overrides obey the same rules as files.
    config = DeploymentConfig.model_validate(
        {**config.model_dump(), **{k: v.model_dump() for k, v in updates.items()}}
    )
    if sim:
        _check_sim(config)
    return config


def _check_sim(config: DeploymentConfig) -> None:
    """Build the simulated replica once, so an unknown GPU or model, or one that does
    not fit, is a config error before anything starts."""
    from orchestrator.sim.build import CatalogError, SimConfigError, build_replica

    try:
        build_replica(config.replicas.sim)
    except (CatalogError, SimConfigError) as exc:
        raise ConfigError(f"replicas.sim: {exc}") from exc


def _require_vllm(config: DeploymentConfig) -> None:
    import importlib.util

    if config.replicas.backend is Backend.VLLM and importlib.util.find_spec("vllm") is None:
        raise ConfigError(
            "the vllm backend needs vLLM: pip install -e '.[cpu]' (its CPU build, as "
            "`make test` does) or -e '.[vllm]' on GPUs"
        )


def _quiet_logs() -> None:
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


class _Terminated(BaseException):
    """SIGTERM before the command's event loop runs (a BaseException, like
    KeyboardInterrupt, so no `except Exception` swallows it)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


@dataclass(slots=True)
class _Stop:
    """SIGINT and SIGTERM on a command's event loop. The first one is remembered and
    cancels the piece of work under way (start-up, a burst of tasks) or wakes the
    server; a second one exits at once, for a clean-up that hangs. Installed before
    anything slow, so that start-up is interruptible."""

    sigterm_code: int  # exit code after SIGTERM (SIGINT: 130, as shells do)
    announce: str | None  # printed once on the first signal; None: the command says it
    received: signal.Signals | None = None
    event: asyncio.Event = field(default_factory=asyncio.Event)
    _work: asyncio.Future[Any] | None = None

    @property
    def exit_code(self) -> int:
        return 130 if self.received is signal.SIGINT else self.sigterm_code

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._received, sig)

    def _received(self, sig: signal.Signals) -> None:
        if self.received is not None:
            err_console.print(f"inflection: {sig.name} again; exiting without clean-up")
            os._exit(self.exit_code)
        self.received = sig
        if self.announce is not None:
            err_console.print(f"inflection: {sig.name} received; {self.announce}")
        self.event.set()
        if self._work is not None:
            self._work.cancel()

    async def run(self, work: Coroutine[Any, Any, _T]) -> _T | None:
        """Await `work`, cancelled by a stop signal: then None (the work cleans up
        after itself on cancellation, as Deployment.start does)."""
        if self.received is not None:
            work.close()
            return None
        task = asyncio.ensure_future(work)
        self._work = task
        try:
            return await task
        except asyncio.CancelledError:
            if task.cancelled() and self.received is not None:
                return None
            raise
        finally:
            self._work = None


def _stoppable(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """SIGTERM raises (like SIGINT) until the event loop takes both signals over."""

    def wrapped(args: argparse.Namespace) -> int:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            return command(args)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapped


async def _serve(config: DeploymentConfig) -> int:
    # Exit 0 after SIGTERM: it is how supervisors (systemd, Kubernetes, `ray job stop`)
    # ask a server to stop, and stopping as asked is success. Ctrl-C: 130.
    stop = _Stop(sigterm_code=0, announce="stopping")
    stop.install()
    from orchestrator.server.app import Deployment, check_port, describe_ray_target

    check_port(config.server)  # a port in use is the only line, before anything starts
    replicas = config.replicas
    if replicas.backend is Backend.OPENAI:
        # Existing servers: no Ray, no replica actors (README "Existing ... as replicas").
        endpoints = ", ".join(replicas.openai.endpoints)
        starting = f"inflection: connecting to {len(replicas.openai.endpoints)} "
        starting += f"OpenAI-compatible server(s): {endpoints}"
    else:
        starting = (
            f"inflection: starting {replicas.count} {replicas.backend.value} replica(s) on "
            f"{describe_ray_target(config.ray)}"
        )
    err_console.print(starting, highlight=False, soft_wrap=True)
    deployment = await stop.run(Deployment.start(config))
    if deployment is None:
        return stop.exit_code
    # Tests and scripts wait for this exact line.
    print(f"inflection: serving on {deployment.address}", flush=True)
    if deployment.http_url is not None:
        print(f"inflection: OpenAI-compatible API on {deployment.http_url}", flush=True)
    await stop.event.wait()
    # Graceful drain: health NOT_SERVING and new tasks refused at once, the tasks in
    # flight get server.drain_timeout_s; a second signal still exits at once (_Stop).
    timeout = config.server.drain_timeout_s
    err_console.print(
        f"inflection: draining {deployment.in_flight} tasks in flight for up to {timeout:g} s",
        highlight=False,
    )
    drained = await deployment.drain(timeout)
    err_console.print(
        f"inflection: drained in {drained.seconds:.1f} s: "
        f"{drained.in_flight - drained.cancelled} ended, {drained.cancelled} cancelled; "
        "stopping",
        highlight=False,
    )
    await deployment.stop()
    return stop.exit_code


@_stoppable
def cmd_serve(args: argparse.Namespace) -> int:
    _quiet_logs()
    config = _config(args)
    _require_vllm(config)
    return asyncio.run(_serve(config))


@dataclass(slots=True, frozen=True)
class _BurstOutcome:
    results: list[TaskResult]
    failures: list[str]
    failed_usage: list[TaskUsage | None]  # each failure's partial usage
    duration_s: float


async def _burst(args: argparse.Namespace, address: str) -> _BurstOutcome:
    """Run the tasks; a cancellation keeps what finished and returns it."""
    from rich.progress import Progress

    from orchestrator.client import AsyncClient, InflectionError

    rng = random.Random(args.seed)
    results: list[TaskResult] = []
    failures: list[str] = []
    failed_usage: list[TaskUsage | None] = []
    started = time.monotonic()
    async with AsyncClient(address) as client:
        gate = asyncio.Semaphore(args.concurrency)
        with Progress(console=console, transient=True) as progress:
            bar = progress.add_task(f"{args.agent} tasks", total=args.tasks)

            async def one(index: int) -> None:
                async with gate:
                    try:
                        result = await client.run(
                            args.agent, rng.choice(_SAMPLE_INPUTS), seed=args.seed + index
                        )
                        results.append(result)
                    except InflectionError as exc:
                        failures.append(str(exc))
                        failed_usage.append(exc.usage)
                    progress.advance(bar)

            # Interrupted (cancelled by a stop signal): what finished still makes a summary.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*(one(i) for i in range(args.tasks)))
    return _BurstOutcome(results, failures, failed_usage, time.monotonic() - started)


@dataclass(slots=True, frozen=True)
class RunOutput:
    document: dict[str, Any] | None  # the --json document; None when no task ran
    exit_code: int


async def _run_burst(args: argparse.Namespace, config: DeploymentConfig) -> RunOutput:
    from orchestrator.report import summarize, summary_table
    from orchestrator.server.app import Deployment

    # A stopped `run` did not do its job: SIGTERM exits 143, SIGINT 130.
    stop = _Stop(sigterm_code=143, announce=None)
    stop.install()
    replicas = config.replicas
    sim = replicas.backend is Backend.SIM
    starting = "starting replicas" + ("" if sim else " (the first start builds a tiny model)")
    with console.status(starting + "..."):
        t0 = time.monotonic()
        deployment = await stop.run(Deployment.start(config))
        startup = time.monotonic() - t0
    if deployment is None:
        name = stop.received.name if stop.received else "signal"
        err_console.print(f"inflection: interrupted ({name}) during start-up; no task ran")
        return RunOutput(None, stop.exit_code)
    what = f"{'simulated' if sim else 'vLLM'} replica(s) of {deployment.pool.model}"
    console.print(
        f"{replicas.count} {what} ready in {startup:.1f} s; server on {deployment.address}",
        highlight=False,
        soft_wrap=True,
    )
    if sim and replicas.sim.time_scale != 1.0:
        console.print(f"simulated time runs at time_scale {replicas.sim.time_scale:g}")
    try:
        outcome = await stop.run(_burst(args, deployment.address))
        # The burst returns what finished even when cancelled; None only if the signal
        # came before it began.
        if outcome is None:
            outcome = _BurstOutcome([], [], [], 0.0)
        if stop.received is not None:
            done = len(outcome.results) + len(outcome.failures)
            err_console.print(
                f"inflection: interrupted ({stop.received.name}) after {done} of {args.tasks} "
                "tasks; the summary covers those",
                highlight=False,
            )
        summary = summarize(outcome.results, outcome.duration_s, failed=outcome.failed_usage)
        table = summary_table(summary, title=f"inflection run: {args.agent}")
        _print_table(table, args)
        for failure in outcome.failures[:5]:
            err_console.print(f"[red]failed task:[/red] {failure}")
    finally:
        await deployment.stop()
    out = {
        "summary": asdict(summary),
        "failures": outcome.failures,
        "startup_s": startup,
        "interrupted": stop.received is not None,
    }
    code = stop.exit_code if stop.received is not None else (1 if outcome.failures else 0)
    return RunOutput(out, code)


def _print_table(table: object, args: argparse.Namespace) -> None:
    from rich.table import Table

    if not isinstance(table, Table):
        raise TypeError(f"expected a rich Table, got {type(table).__name__}")
    print_table(console, table, format_of(args))


@_stoppable
def cmd_run(args: argparse.Namespace) -> int:
    _quiet_logs()
    config = _config(args, replicas_default=True)
    _require_vllm(config)
    if config.ray.address is None:
        # The all-in-one run owns its cluster: joining whatever Ray happens to be
        # running would measure someone else's load.
        ray = config.ray.model_copy(update={"address": "local"})
        replicas = config.replicas
        if replicas.backend is Backend.SIM and ray.num_cpus is None:
            # A simulated replica is one asyncio loop, far lighter than the CPU its Ray
            # reservation stands for: let any number of them start on a small machine.
            wanted = math.ceil(replicas.count * replicas.num_cpus)
            ray = ray.model_copy(update={"num_cpus": max(os.cpu_count() or 1, wanted, 1)})
        config = config.model_copy(update={"ray": ray})
    # Refuse an unknown agent before spending a minute starting engines.
    programs = _local_programs(config.programs)
    if args.agent not in programs:
        err_console.print(
            f"error: unknown agent {args.agent!r}; known: {', '.join(sorted(programs))}"
        )
        return 2
    out = asyncio.run(_run_burst(args, config))
    if args.json and out.document is not None:
        Path(args.json).write_text(json.dumps(out.document, indent=2))
    return out.exit_code


def _agent_table(agents: Sequence[AgentInfo]) -> Table:
    from rich.table import Table

    table = Table(title="agent programs", title_justify="left")
    for column in ("name", "LLM calls/task", "token amplification", "description"):
        table.add_column(column)
    for agent in agents:
        table.add_row(
            agent.name,
            f"{agent.expected_llm_calls:.2f}",
            f"{agent.expected_token_amplification:.1f}x",
            agent.description,
        )
    return table


def _local_programs(files: Sequence[str]) -> dict[str, Program]:
    from agents import BUILTIN_PROGRAMS
    from agents.tools import BUILTIN_TOOLS
    from agents.yaml_loader import load_programs

    programs = dict(BUILTIN_PROGRAMS)
    programs.update(
        load_programs([Path(f) for f in files], tools=BUILTIN_TOOLS, reserved=BUILTIN_PROGRAMS)
    )
    return programs


def _encoder(model: str | None) -> Encoder:
    """The tokenizer of a model folder, or by default the simulated Llama-3.1-8B's (what
    `inflection run` serves), so local estimates match a default server's."""
    from orchestrator.executor.estimate import catalog_encoder

    if model is None:
        return catalog_encoder()
    from orchestrator.executor.interpreter import Encoder
    from orchestrator.server.app import HfTokenizer

    tokenizer = HfTokenizer(model)
    return Encoder(tokenizer.encode, tokenizer.bos_token_id)


def server_client_flags(p: argparse.ArgumentParser) -> None:
    """How a command that talks to a server authenticates and connects."""
    p.add_argument(
        "--token",
        help="bearer token, if the server wants one (default: $INFLECTION_TOKEN); prefer "
        "the variable or --token-file, a flag shows in `ps`",
    )
    p.add_argument("--token-file", help="read the bearer token from this file")
    p.add_argument("--tls", action="store_true", help="connect with TLS (system roots)")
    p.add_argument("--tls-ca", help="connect with TLS trusting this CA bundle (PEM)")


def client_of(args: argparse.Namespace, timeout: float) -> Client:
    from orchestrator.client import Client, token_from

    token = token_from(args.token, args.token_file)
    return Client(args.target, token=token, timeout=timeout, tls=args.tls, ca=args.tls_ca)


def cmd_agents(args: argparse.Namespace) -> int:
    from orchestrator.domain import TaskSpec
    from orchestrator.executor.estimate import SAMPLE_INPUT, describe, expect
    from orchestrator.executor.interpreter import Interpreter

    if args.target:
        with client_of(args, timeout=60.0) as client:
            print_table(console, _agent_table(client.list_agents()), format_of(args))
        return 0
    encoder = _encoder(None)
    agents = []
    for program in _local_programs(args.programs or []).values():
        spec = TaskSpec(agent=program.name, input=SAMPLE_INPUT)
        agents.append(describe(program, expect(Interpreter(program, encoder), spec)))
    print_table(console, _agent_table(agents), format_of(args))
    return 0


def cmd_agents_validate(args: argparse.Namespace) -> int:
    from agents.tools import BUILTIN_TOOLS
    from agents.yaml_loader import ProgramLoadError, load_program

    failed = 0
    for name in args.files:
        try:
            program = load_program(Path(name), tools=BUILTIN_TOOLS)
        except ProgramLoadError as exc:
            err_console.print(f"[red]invalid[/red] {exc}", highlight=False)
            failed += 1
        else:
            console.print(f"[green]ok[/green] {name}: program {program.name!r}", highlight=False)
    return 1 if failed else 0


def cmd_agents_show(args: argparse.Namespace) -> int:
    from agents.dsl import Llm, Loop, Parallel, Tool, walk
    from orchestrator.domain import TaskSpec
    from orchestrator.executor.estimate import DEFAULT_CATALOG_MODEL, SAMPLE_INPUT, expect
    from orchestrator.executor.interpreter import Interpreter

    programs = _local_programs(args.programs or [])
    program = programs.get(args.name)
    if program is None:
        err_console.print(f"error: no program {args.name!r}; known: {', '.join(sorted(programs))}")
        return 2
    console.print(f"[bold]{program.name}[/bold]: {program.description}", highlight=False)
    if program.source:
        console.print(f"source: {program.source}", highlight=False)
    for path, node in walk(program.body):
        indent = "  " * (path.count(".body") + path.count(".join"))
        if isinstance(node, Llm):
            what = f"llm, max_tokens ~{node.max_tokens.mean():.0f}"
        elif isinstance(node, Tool):
            kind = f"tool {node.tool}" if node.tool else "simulated tool"
            what = f"{kind}, result ~{node.result_tokens.mean():.0f} tokens"
        elif isinstance(node, Parallel):
            what = f"parallel x{node.branches.mean():.3g}, join {node.join.kind.value}"
        elif isinstance(node, Loop):
            until = f", until {node.until!r}" if node.until else ""
            what = f"loop x{node.iterations.mean():.3g} (max {node.max_iterations}{until})"
        console.print(f"  {indent}{node.name}: {what}", highlight=False)
    encoder = _encoder(args.model)
    input_text = args.input or SAMPLE_INPUT
    expected = expect(
        Interpreter(program, encoder), TaskSpec(agent=program.name, input=input_text), 1000
    )
    tokenizer_note = args.model or f"simulated {DEFAULT_CATALOG_MODEL} (--model DIR: a real one)"
    console.print(
        f"expected per task (synthetic mode, {expected.tasks} seeded samples, "
        f"tokenizer: {tokenizer_note}):",
        highlight=False,
    )
    console.print(
        f"  LLM calls {expected.llm_calls:.2f}, tool calls {expected.tool_calls:.2f}, "
        f"prompt tokens {expected.prompt_tokens:,.0f}, output tokens "
        f"{expected.output_tokens:,.0f}, token amplification "
        f"{expected.token_amplification:.1f}x, longest context {expected.max_context:,}",
        highlight=False,
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from rich.table import Table

    with client_of(args, timeout=10.0) as client:
        status = client.cluster_status()
    table = Table(
        title=f"{status.model} (max_model_len {status.max_model_len})", title_justify="left"
    )
    columns = (
        "replica",
        "state",
        "engine",
        "waiting",
        "running",
        "in flight",
        "KV used",
        "prefix hits",
        "calls",
        "tokens out",
    )
    for column in columns:
        table.add_column(column)
    for r in status.replicas:
        table.add_row(
            r.name,
            r.state.value,
            r.engine,
            str(r.waiting_requests),
            str(r.running_requests),
            str(r.in_flight_calls),
            f"{r.kv_usage:.0%}",
            f"{r.prefix_hit_rate:.0%}",
            str(r.calls_served),
            str(r.output_tokens_served),
        )
    print_table(console, table, format_of(args))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inflection", description="Agentic workload orchestrator and load generator."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def deployment_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="deployment YAML (see cluster/local.yaml)")
        p.add_argument(
            "--backend",
            choices=("sim", "vllm"),
            help="what serves the calls: sim (a simulated GPU, the default) or vllm",
        )
        p.add_argument(
            "--model",
            help="sim: a catalog model (default llama-3.1-8b); vllm: a model path or Hugging "
            "Face id (default: a tiny local model built on first use)",
        )
        p.add_argument("--gpu", help="sim: the catalog GPU each replica simulates (default h100)")
        p.add_argument(
            "--replicas", type=int, help="number of replicas (run: 2 with sim, 1 with vllm)"
        )
        p.add_argument("--host", help="interface for the gRPC server (default 127.0.0.1)")
        p.add_argument("--port", type=int, help="gRPC port (0: any free port)")
        p.add_argument(
            "--http-port",
            type=_http_port,
            metavar="PORT|off",
            help="the OpenAI-compatible HTTP front door's port (0: any free port; off: "
            "none); default: the config's server.http_port",
        )

    serve = sub.add_parser("serve", help="start replicas and the gRPC server until stopped")
    deployment_flags(serve)
    serve.set_defaults(func=cmd_serve)

    run = sub.add_parser("run", help="the main job: an all-in-one local run with a summary")
    deployment_flags(run)
    run.add_argument("--agent", default="plan_execute", help="agent program to run")
    run.add_argument("--tasks", type=int, default=24, help="tasks to run")
    run.add_argument("--concurrency", type=int, default=8, help="tasks in flight at once")
    run.add_argument("--seed", type=int, default=0, help="seed for inputs and sampling")
    run.add_argument("--json", help="also write the summary as JSON to this file")
    add_format_flag(run)
    run.set_defaults(func=cmd_run, port=0)

    agents = sub.add_parser("agents", help="list, validate and show agent programs")
    agents.add_argument("--target", help="a server's host:port (default: the local list)")
    server_client_flags(agents)
    agents.add_argument(
        "--programs", nargs="*", help="YAML program files or folders to add to the built-ins"
    )
    add_format_flag(agents)
    agents.set_defaults(func=cmd_agents)
    agents_sub = agents.add_subparsers(dest="agents_command")
    validate = agents_sub.add_parser("validate", help="check YAML program files")
    validate.add_argument("files", nargs="+", help="program files")
    validate.set_defaults(func=cmd_agents_validate)
    show = agents_sub.add_parser("show", help="a program's graph and expected cost per task")
    show.add_argument("name", help="program name")
    show.add_argument("--programs", nargs="*", help="YAML program files or folders")
    show.add_argument("--model", help="model folder whose tokenizer counts the tokens")
    show.add_argument("--input", help="the user input to assume (default: a 74-character request)")
    show.set_defaults(func=cmd_agents_show)

    status = sub.add_parser("status", help="show a server's replicas and their load")
    status.add_argument("--target", required=True, help="the server's host:port")
    server_client_flags(status)
    add_format_flag(status)
    status.set_defaults(func=cmd_status)

    from orchestrator.sim.commands import add_parsers as add_sim_parsers

    add_sim_parsers(sub)

    from loadtests.cli import add_parser as add_load_parser

    add_load_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "tasks", 1) < 1 or getattr(args, "concurrency", 1) < 1:
        err_console.print("error: --tasks and --concurrency must be at least 1")
        return 2
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        err_console.print(f"config error: {exc}")
        return 2
    except ValueError as exc:
        from agents.yaml_loader import ProgramLoadError

        if isinstance(exc, ProgramLoadError):
            err_console.print(f"program error: {exc}", highlight=False)
            return 2
        raise
    except KeyboardInterrupt:
        if args.func in (cmd_serve, cmd_run):
            # Ctrl-C before the command's event loop took the signal over.
            err_console.print("inflection: interrupted (SIGINT)")
        return 130
    except _Terminated:
        err_console.print("inflection: stopped (SIGTERM)")
        return 0 if args.func is cmd_serve else 143
    except Exception as exc:
        from orchestrator.client import InflectionError

        if isinstance(exc, InflectionError):
            err_console.print(f"error: {exc}")
            return 1
        # StartupError lives with the deployment code, imported only by the commands
        # that start one (it imports Ray).
        app = sys.modules.get("orchestrator.server.app")
        if app is not None and isinstance(exc, app.StartupError):
            return _startup_failed(exc)
        raise
    return code


def _startup_failed(exc: Exception) -> int:
    """A deployment that could not start: one line, exit 1."""
    from orchestrator.server.app import ray_join_abandoned

    err_console.print(f"inflection: {exc}", highlight=False, soft_wrap=True)
    if ray_join_abandoned():
        # A ray.init still retrying a dead cluster would hold interpreter exit.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    return 1


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
