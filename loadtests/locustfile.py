"""The locustfile to pass to `locust -f`: agentic load against an Inflection orchestrator.

    locust -f loadtests/locustfile.py --headless -u 8 -r 8 -t 1m --host 127.0.0.1:50051 \\
        --workload loadtests/examples/mix.yaml --slo task_ttft=5s,task_latency=30s

Closed loop by default (`AgentUser`: -u users, each running one task at a time with the
workload's think time). `--arrival-rate R` switches to open loop (`OpenLoopUser`: tasks
start at R per second in total, Poisson or `--arrival-process gamma --arrival-cv C`).
`--shape ramp|steps|spike|diurnal` drives the user count (or the arrival rate) over time.

Before any load starts the host must answer a gRPC health check and list every agent in
the mix; otherwise the run ends with one error line and exit code 1. The agentic figures
live on `environment.agentic` (a loadtests.state.AgenticState: stats, --slo, ...) and
are written as JSON to `--agentic-json` (default `<--csv prefix>_agentic.json`) at the end.

For `inflection load`: `--agentic-warmup S` leaves tasks that started in the first S
seconds out of the figures; `--agentic-tasks PATH` writes every task as a JSON line
(`--agentic-export-calls` adds its calls); `--agentic-live PATH` is rewritten every second
with the live figures the command shows.
"""

from __future__ import annotations

import locust

# isort: split
import os

# gRPC core logs a TLS handshake failure at info level; the check's one line says it all.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

# isort: split
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from locust import LoadTestShape
from locust import events as locust_events
from locust.runners import MasterRunner, WorkerRunner

from loadtests import trace_user, webui
from loadtests.arrivals import parse_arrival_process
from loadtests.metrics import figures
from loadtests.openai_trace import OpenAITraceUser
from loadtests.openai_user import (
    OpenAIAgentUser,
    OpenAIOpenLoopUser,
    OpenAIOptions,
    TargetError,
    connect,
    served_model,
)
from loadtests.report import run_config, write_reports
from loadtests.shapes import Curve, curve_from_options
from loadtests.state import state_of
from loadtests.sweep_curve import SweepPoint, sweep_point, sweep_step
from loadtests.user import (
    RATE_MESSAGE,
    AgentUser,
    OpenLoopUser,
    grpc_target,
    open_channel,
    set_total_rate,
    tls_of,
    token_of,
)
from loadtests.workload import WorkloadError, default_workload, load_workload
from orchestrator.api.v1 import inflection_pb2 as pb
from orchestrator.api.v1 import inflection_pb2_grpc as pb_grpc
from orchestrator.protocol import auth_metadata
from orchestrator.workload.slo import SloConfig, parse_slo
from orchestrator.workload.sweep import (
    SweepPlan,
    SweepStep,
    highest_rate_meeting_slo,
    next_sweep_rate,
)

_ = locust
events: Any = locust_events  # locust's hooks are untyped
log = logging.getLogger("inflection.loadtests")

__all__ = [
    "AgentUser",
    "OpenAIAgentUser",
    "OpenAIOpenLoopUser",
    "OpenAITraceUser",
    "OpenLoopUser",
]

CHECK_TIMEOUT_S = 10.0  # a loaded server still answers within this


class CurveShape(LoadTestShape):
    """A Locust shape following one loadtests.shapes curve (chosen with --shape)."""

    abstract = True  # only --shape installs it; never picked up on its own

    def __init__(self, curve: Curve, spawn_rate: float) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.curve = curve
        self.spawn_rate = spawn_rate

    def tick(self) -> tuple[int, float] | None:
        run_time: float = self.get_run_time()  # type: ignore[no-untyped-call]
        users = self.curve.users_at(run_time)
        return None if users is None else (max(users, 0), self.spawn_rate)


class CheckFailed(Exception):
    """The target cannot run the workload; the message is the one line users see."""


def _options(parser: Any) -> None:
    group = parser  # locust's parser: groups would drop its web-UI keywords (is_secret)
    group.add_argument("--workload", default="", help="Workload mix YAML (agents, input lengths).")
    group.add_argument(
        "--slo", default="", help="Task-level SLO for goodput, e.g. task_ttft=5s,task_latency=30s"
    )
    group.add_argument("--token", default="", is_secret=True, help="Bearer token for the server.")
    group.add_argument("--tls", action="store_true", help="Connect with TLS (system roots).")
    group.add_argument("--tls-ca", default="", help="TLS with this CA bundle (PEM); implies --tls.")
    group.add_argument(
        "--arrival-rate", type=float, default=0.0, help="Open loop: total tasks per second."
    )
    group.add_argument(
        "--arrival-process", default="poisson", help="Open loop: poisson | gamma | constant."
    )
    group.add_argument("--arrival-cv", type=float, default=1.0, help="Gamma arrivals' cv.")
    group.add_argument(
        "--max-outstanding", type=int, default=1000, help="Open loop: in-flight task bound."
    )
    group.add_argument(
        "--shape", default="", help="Load shape: ramp | steps | spike | diurnal (see shapes.py)."
    )
    group.add_argument(
        "--shape-args", default="", help="Shape parameters, e.g. peak=20,period=60 (shapes.py)."
    )
    group.add_argument(
        "--sweep",
        default="",
        help="Open-loop rate sweep until the SLO breaks: start=2,factor=1.5,step_s=20,"
        "max_rate=100,min_good=0.95,warmup_s=2 (any subset; see "
        "orchestrator.workload.sweep.SweepPlan).",
    )
    # `inflection load` passes these on as the same flags (loadtests.locust_run).
    group.add_argument(
        "--target",
        default="grpc",
        choices=("grpc", "openai"),
        help="grpc: an Inflection orchestrator; openai: any OpenAI-compatible server "
        "(--host http://H:P), each user running the agent programs itself.",
    )
    group.add_argument(
        "--model",
        default="",
        help="openai: the model (default: the first the server lists).",
    )
    group.add_argument(
        "--api",
        default="completions",
        choices=("completions", "chat"),
        help="openai: /v1/completions with token-id prompts, or /v1/chat/completions.",
    )
    group.add_argument(
        "--tokenizer",
        default="",
        help="openai: tokenizer directory (default: --model).",
    )
    group.add_argument(
        "--affinity-header",
        default="",
        help="openai: session-affinity headers carrying the task id, comma-separated "
        "(default: x-session-token, X-Dynamo-Session-ID, x-smg-routing-key, x-session-id; "
        "none: no header).",
    )
    group.add_argument(
        "--priority",
        action="store_true",
        help="openai: send each call's priority in vLLM's `priority` field.",
    )
    group.add_argument("--agentic-json", default="", help="Write the agentic figures here.")
    group.add_argument(
        "--agentic-warmup",
        type=float,
        default=0.0,
        help="Seconds: tasks that start this early in the run are left out of the agentic "
        "figures (they stay in tasks.jsonl, marked warmup).",
    )
    group.add_argument(
        "--agentic-tasks", default="", help="Write every task as one JSON line here (JSONL)."
    )
    group.add_argument(
        "--agentic-export-calls",
        action="store_true",
        help="Keep each task's LLM calls and tool steps and add them to --agentic-tasks.",
    )
    group.add_argument(
        "--agentic-live",
        default="",
        help="Rewrite live figures (LiveFigures JSON) to this file every second.",
    )
    group.add_argument(
        "--agentic-report",
        default="",
        help="Folder for the agentic HTML/JSON/CSV reports, written when the run ends.",
    )


def check_target(
    host: str | None,
    token: str | None,
    agents: list[str],
    tls: tuple[bool, str | None] = (False, None),
) -> list[str]:
    """Health-check the host and make sure it has every agent; returns the server's agents.
    Raises CheckFailed with a one-line reason."""
    try:
        target = grpc_target(host)
        channel = open_channel(target, *tls)
    except ValueError as exc:
        raise CheckFailed(str(exc)) from None
    except OSError as exc:
        raise CheckFailed(f"--tls-ca: cannot read {exc.filename} ({exc.strerror})") from None
    try:
        try:
            health = health_pb2_grpc.HealthStub(channel)
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=CHECK_TIMEOUT_S)
        except grpc.RpcError as exc:
            details = (exc.details() or "no details").splitlines()[0]
            hint = (
                " (--tls given: does the server serve TLS?)"
                if tls[0]
                else " (is the server TLS-only? try --tls)"
                if "handshake" in details.lower() or "ssl" in details.lower()
                else ""
            )
            raise CheckFailed(
                f"cannot reach the orchestrator at {target}: {exc.code().name} ({details}){hint}"
            ) from None
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise CheckFailed(f"the orchestrator at {target} is not serving ({reply.status})")
        stub: Any = pb_grpc.OrchestratorStub(channel)  # type: ignore[no-untyped-call]
        try:
            listed = stub.ListAgents(
                pb.ListAgentsRequest(), metadata=auth_metadata(token), timeout=CHECK_TIMEOUT_S
            )
        except grpc.RpcError as exc:
            hint = " (check --token)" if exc.code() is grpc.StatusCode.UNAUTHENTICATED else ""
            raise CheckFailed(
                f"{target} refused ListAgents: {exc.code().name}: {exc.details()}{hint}"
            ) from None
        known = [a.name for a in listed.agents]
        missing = sorted(set(agents) - set(known))
        if missing:
            raise CheckFailed(
                f"unknown agent{'s' if len(missing) > 1 else ''} in the workload: "
                f"{', '.join(missing)}; {target} has: {', '.join(sorted(known)) or '(none)'}"
            )
        return known
    finally:
        channel.close()


def _fail(message: str) -> None:
    """End the process before load starts with one clear line and exit code 1."""
    # A plain line, as the `inflection` CLI prints its errors (not a log record as well).
    sys.stderr.write(f"inflection: {message}\n")
    sys.stderr.flush()
    sys.exit(1)


def _init(environment: Any, **_kwargs: Any) -> None:
    options = environment.parsed_options
    if options is None:  # used as a library (tests build Environments themselves)
        return
    try:
        workload = load_workload(options.workload) if options.workload else default_workload()
        slo = parse_slo(options.slo) if options.slo else None
        if options.arrival_rate:
            parse_arrival_process(options.arrival_process, options.arrival_rate, options.arrival_cv)
        curve = curve_from_options(options.shape, options.shape_args)
        sweep = SweepPlan.parse(options.sweep) if options.sweep else None
        if sweep is not None and curve is not None:
            raise ValueError("--sweep and --shape cannot be combined (the sweep sets the rate)")
        # A bad trace ends the run here, its bad lines named, before any load.
        trace = trace_user.install(environment)
    except (WorkloadError, ValueError) as exc:
        _fail(str(exc))
        return
    state_of(environment).workload = workload
    state_of(environment).slo = slo
    state_of(environment).checked = False
    stats = state_of(environment).stats
    stats.keep_calls = bool(options.agentic_export_calls)
    if environment.web_ui is not None:
        webui.install(environment)  # the Agentic tabs read environment.agentic
    state_of(environment).sweep_plan = sweep
    state_of(environment).sweep = None  # the sweep's result, once it has run
    open_loop = bool(options.arrival_rate) or sweep is not None
    if open_loop:
        set_total_rate(environment, options.arrival_rate or (sweep.start if sweep else 0.0))
    # One user class per run: open loop when a rate is given, else closed loop. Workers
    # keep both: the master picks, and a remote worker may not have been given the options.
    wanted: type[Any]
    if _openai(environment):
        wanted = OpenAITraceUser if trace else OpenAIOpenLoopUser if open_loop else OpenAIAgentUser
    else:
        wanted = trace_user.TraceUser if trace else OpenLoopUser if open_loop else AgentUser
    if isinstance(environment.runner, WorkerRunner):
        environment.user_classes = [
            AgentUser,
            OpenLoopUser,
            trace_user.TraceUser,
            OpenAIAgentUser,
            OpenAIOpenLoopUser,
            OpenAITraceUser,
        ]
    else:
        environment.user_classes = [u for u in environment.user_classes if u is wanted] or [wanted]
        # Custom options travel to workers with each spawn; -u does not, so send it along.
        options.agentic_open_loop_users = options.num_users or 1
    if curve is not None:
        shape = CurveShape(curve, float(options.spawn_rate or 10.0))
        shape.runner = environment.runner
        environment.shape_class = shape
    if environment.runner is not None and not isinstance(environment.runner, MasterRunner):
        # A sweep's rate changes arrive as a message (a local runner sends it to itself).
        def on_rate(environment: Any, msg: Any, **_kwargs: Any) -> None:
            set_total_rate(environment, float(msg.data["rate"]))

        environment.runner.register_message(RATE_MESSAGE, on_rate)
    if isinstance(environment.runner, WorkerRunner):
        # Raw samples, never averages: the master's percentiles stay exact.
        def ship(client_id: str, data: dict[str, Any]) -> None:
            data["agentic"] = stats.drain()
            data["agentic_dropped"] = stats.drain_dropped()
            data["agentic_recorded"] = stats.recorded

        environment.events.report_to_master.add_listener(ship)
        return
    if isinstance(environment.runner, MasterRunner):

        def receive(client_id: str, data: dict[str, Any]) -> None:
            recorded = data.get("agentic_recorded")
            stats.merge(
                data.get("agentic", ()),
                dropped=int(data.get("agentic_dropped", 0)),
                source=client_id,
                recorded=int(recorded) if recorded is not None else None,
            )

        environment.events.worker_report.add_listener(receive)

    def final(**_kwargs: Any) -> None:
        # Workers' last reports reach the master after test_stop: write the final figures.
        write_agentic_json(environment)
        write_agentic_tasks(environment)
        write_agentic_report(environment)

    environment.events.quit.add_listener(final)
    if environment.host:
        _check_or_fail(environment)


def _openai(environment: Any) -> bool:
    return getattr(environment.parsed_options, "target", "grpc") == "openai"


def check_any_target(environment: Any) -> None:
    """check_target for the gRPC target; for the OpenAI target, `/v1/models` must list
    the model (and the tokenizer load). Raises CheckFailed with a one-line reason."""
    agents = list(state_of(environment).workload.agents)
    if not _openai(environment):
        check_target(
            environment.host, environment.parsed_options.token or None, agents, tls_of(environment)
        )
        return
    try:
        options = OpenAIOptions.of(environment)
        if state_of(environment).trace is not None:
            served_model(options)  # a replay sends token ids: no tokenizer, no agents
        else:
            connect(options, agents)
    except TargetError as exc:
        raise CheckFailed(f"{exc}{_key_hint(str(exc), environment)}") from None


def _key_hint(message: str, environment: Any) -> str:
    """What to do about a 401/403 from an OpenAI server: it wants an API key (vLLM's
    `--api-key`) that `--token` gives, or a different one."""
    if "HTTP 401" not in message and "HTTP 403" not in message:
        return ""
    if token_of(environment):  # --token, or INFLECTION_TOKEN as `inflection load` passes it
        return " (check --token: the server refused this key)"
    return " (the server wants an API key: give it with --token)"


def _check_or_fail(environment: Any) -> None:
    try:
        check_any_target(environment)
    except CheckFailed as exc:
        _fail(str(exc))
    state_of(environment).checked = True


def _adopt_master_options(environment: Any) -> None:
    """On a worker at test start: the master's custom options have just been copied into
    ours (Locust does so with each spawn), so a remote worker started without --workload,
    --slo or --arrival-rate still runs the master's mix at the master's rate."""
    options = environment.parsed_options
    try:
        if options.workload:
            state_of(environment).workload = load_workload(options.workload)
        state_of(environment).slo = parse_slo(options.slo) if options.slo else None
    except (WorkloadError, ValueError) as exc:
        log.error("inflection: %s", exc)  # the master checked the same options already
        return
    state_of(environment).stats.keep_calls = bool(getattr(options, "agentic_export_calls", False))
    sweep = SweepPlan.parse(options.sweep) if options.sweep else None
    if options.arrival_rate or sweep is not None:
        rate = options.arrival_rate or (sweep.start if sweep else 0.0)
        set_total_rate(environment, state_of(environment).rate or rate)


def _test_start(environment: Any, **_kwargs: Any) -> None:
    if environment.parsed_options is None:
        return
    if isinstance(environment.runner, WorkerRunner):
        _adopt_master_options(environment)
        return
    options = environment.parsed_options
    state_of(environment).stats.start(time.time(), float(options.agentic_warmup or 0.0))
    if options.agentic_live:
        state_of(environment).live_writer = gevent.spawn(
            write_live, environment, Path(options.agentic_live)
        )
    if state_of(environment).sweep_plan is not None:
        gevent.spawn(run_sweep, environment, state_of(environment).sweep_plan)
    if state_of(environment).checked:
        return
    # Web UI runs get their host from the start form: check it now, stop if it fails.
    try:
        check_any_target(environment)
        state_of(environment).checked = True
    except CheckFailed as exc:
        log.error("inflection: %s", exc)
        environment.process_exit_code = 1
        if environment.runner is not None:
            environment.runner.quit()


LIVE_EVERY_S = 1.0


def write_live(environment: Any, path: Path) -> None:
    """Rewrite `path` with the run's LiveFigures (plus the user count) every second, whole
    (a temporary file renamed over it), until killed at test stop."""
    stats = state_of(environment).stats
    partial = path.with_name(path.name + ".part")
    while True:
        live = stats.live(time.time()).to_dict()
        runner = environment.runner
        live["users"] = int(runner.user_count) if runner is not None else 0
        partial.write_text(json.dumps(live, allow_nan=False))
        os.replace(partial, path)
        gevent.sleep(LIVE_EVERY_S)


def run_sweep(environment: Any, plan: SweepPlan) -> None:
    """Step the total arrival rate up by `plan.factor` while each step's tasks meet the SLO;
    then record the highest rate that met it and end the run."""
    stats = state_of(environment).stats
    slo: SloConfig | None = state_of(environment).slo
    # Worker reports arrive every 3 s: wait for a step's last completions to reach us.
    lag = 4.0 if isinstance(environment.runner, MasterRunner) else 0.2
    history: list[SweepStep] = []
    points: list[SweepPoint] = []
    rate = next_sweep_rate(history, start=plan.start, factor=plan.factor, max_rate=plan.max_rate)
    while rate is not None:
        environment.runner.send_message(RATE_MESSAGE, {"rate": rate})
        begin, dropped = time.time(), stats.dropped_tasks
        gevent.sleep(plan.step_s)
        end = time.time()
        gevent.sleep(lag)
        judged_from, step_dropped = begin + plan.warmup_s, stats.dropped_tasks - dropped
        step = sweep_step(stats.samples, rate, judged_from, end, slo, step_dropped)
        history.append(step)
        judged = [s for s in stats.samples if judged_from < s.completed_at <= end]
        points.append(
            sweep_point(
                rate, figures(judged, slo, step_dropped), step, plan.min_good, end - judged_from
            )
        )
        log.info(
            "sweep: %.3g tasks/s offered: %d tasks, %.1f%% met the SLO",
            rate,
            step.tasks,
            100 * step.good_fraction,
        )
        rate = next_sweep_rate(
            history,
            start=plan.start,
            factor=plan.factor,
            max_rate=plan.max_rate,
            min_good=plan.min_good,
        )
    best = highest_rate_meeting_slo(history, plan.min_good)
    state_of(environment).sweep = {
        "steps": [
            {"rate": s.rate, "tasks": s.tasks, "good_fraction": s.good_fraction} for s in history
        ],
        "highest_rate_meeting_slo": best,
        "min_good": plan.min_good,
        "points": [p.to_dict() for p in points],  # loadtests.sweep_curve.SweepPoint
    }
    log.info("sweep: highest rate meeting the SLO: %s tasks/s", "none" if best is None else best)
    environment.runner.quit()


def write_agentic_json(environment: Any) -> Path | None:
    """Write the snapshot where --agentic-json (or --csv) says; returns the path."""
    options = environment.parsed_options
    if options is None or isinstance(environment.runner, WorkerRunner):
        return None
    target = options.agentic_json or (
        f"{options.csv_prefix}_agentic.json" if getattr(options, "csv_prefix", None) else ""
    )
    if not target:
        return None
    state = state_of(environment)
    snapshot = state.stats.snapshot(state.slo)
    if state.sweep is not None:
        snapshot["sweep"] = state.sweep
    workers = state.stats.workers()
    if workers:
        snapshot["workers"] = workers
    path = Path(target)
    path.write_text(json.dumps(snapshot, indent=1, allow_nan=False))
    return path


def write_agentic_tasks(environment: Any) -> Path | None:
    """Every task of the run, one JSON line each (metrics.task_record), to --agentic-tasks."""
    options = environment.parsed_options
    if options is None or isinstance(environment.runner, WorkerRunner):
        return None
    if not getattr(options, "agentic_tasks", ""):
        return None
    path = Path(options.agentic_tasks)
    records = state_of(environment).stats.task_records()
    path.write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in records))
    return path


def write_agentic_report(environment: Any) -> None:
    """The agentic HTML/JSON/CSV reports into --agentic-report (master or local runner)."""
    options = environment.parsed_options
    if options is None or isinstance(environment.runner, WorkerRunner):
        return
    if not getattr(options, "agentic_report", ""):
        return
    stats = state_of(environment).stats
    write_reports(
        options.agentic_report,
        stats.snapshot(state_of(environment).slo),
        title=f"Inflection load test against {environment.host}",
        config=run_config(options),
        samples=stats.samples,
    )


def _test_stop(environment: Any, **_kwargs: Any) -> None:
    writer = state_of(environment).live_writer
    if writer is not None:
        writer.kill(block=False)
    write_agentic_json(environment)
    write_agentic_tasks(environment)
    write_agentic_report(environment)


events.init_command_line_parser.add_listener(_options)
events.init.add_listener(_init)
events.test_start.add_listener(_test_start)
events.test_stop.add_listener(_test_stop)
