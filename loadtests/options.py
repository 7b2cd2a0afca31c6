"""The options of `inflection load`: their definitions (`add_arguments`), the checks run
before anything starts (`validate`: one `LoadError` line), and the run's config as the
reports record it (`config_of`).
"""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path
from typing import Any

from loadtests.openai_http import Endpoint
from orchestrator.tables import add_format_flag
from orchestrator.workload.sweep import (
    SweepPlan,
    is_sweep_plan,
    parse_sweep,
)

LOADTESTS = Path(__file__).resolve().parent
DEFAULT_WORKLOAD = LOADTESTS / "examples" / "mix.yaml"
PATH_OPTIONS = ("out", "workload", "trace", "tls_ca")  # resolved before anything starts
# The OpenAI target's options, passed on to the locustfile as the same flags.
OPENAI_OPTIONS = ("target", "model", "api", "tokenizer", "affinity_header", "priority")


class LoadError(Exception):
    """Bad input or a failed start; the message is the one line the user sees."""


_TIMESPAN = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_timespan(text: str, option: str = "--run-time") -> int:
    """Locust's timespan format (`90`, `45s`, `2m`, `1h30m`) -> whole seconds (> 0)."""
    value = text.strip().lower()
    if value.isdigit():
        seconds = int(value)
    else:
        match = _TIMESPAN.match(value)
        if not value or match is None:
            raise LoadError(f"{option}: {text!r} is not a duration like 60s, 2m or 1h30m")
        hours, minutes, secs = (int(g) if g else 0 for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds <= 0:
        raise LoadError(f"{option}: must be at least 1s, got {text!r}")
    return seconds


def resolve_token(args: argparse.Namespace) -> None:
    """--token, --token-file or INFLECTION_TOKEN, exported as INFLECTION_TOKEN for the
    Locust processes: a token on their command line would be visible to `ps`."""
    from orchestrator.client import TOKEN_ENV, token_from

    args.token = token_from(args.token, args.token_file) or ""
    if args.token:
        os.environ[TOKEN_ENV] = args.token


def resolve_paths(args: argparse.Namespace) -> None:
    """Make every path option absolute (and `~` expanded) against the working folder we
    were started in: the local orchestrator and Locust run in other folders."""
    for name in PATH_OPTIONS:
        value = getattr(args, name, None)
        if value:
            setattr(args, name, os.path.abspath(os.path.expanduser(value)))
    tokenizer = getattr(args, "tokenizer", "")
    if tokenizer and os.path.isdir(os.path.expanduser(tokenizer)):
        args.tokenizer = os.path.abspath(os.path.expanduser(tokenizer))


def openai_flags(args: argparse.Namespace) -> list[str]:
    """The OpenAI target's options as the locustfile's flags (none for the gRPC target's
    defaults); loadtests.locust_run puts them on every Locust process's command line."""
    if getattr(args, "target", "grpc") != "openai":
        return []
    flags: list[str] = []
    for name in OPENAI_OPTIONS:
        value = getattr(args, name, None)
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value:
            flags += [flag, str(value)]
    return flags


def parse_warmup(text: str | None) -> int:
    """--warmup: 0 (none) or a timespan in whole seconds."""
    if text is None or text.strip() in ("", "0", "0s"):
        return 0
    return parse_timespan(text, "--warmup")


def parse_hosts(text: str | None) -> tuple[Endpoint, ...]:
    """--host with --target openai: one server's URL, or several separated by commas
    (each call goes to the next in turn, as a round-robin load balancer in front of them
    would send it). Raises ValueError with one line."""
    urls = [u.strip() for u in (text or "").split(",") if u.strip()]
    endpoints = tuple(Endpoint.parse(u) for u in urls) if urls else (Endpoint.parse(text),)
    if len(set(endpoints)) != len(endpoints):
        raise ValueError(f"--host {text!r}: a server is listed twice")
    return endpoints


def validate(args: argparse.Namespace) -> None:
    """Check everything checkable without a server; raises LoadError with one line."""
    from loadtests.workload import WorkloadError, load_workload
    from orchestrator.workload.slo import parse_slo

    if args.worker:
        return  # a worker takes its orders (and its checks) from the master
    target = getattr(args, "target", "grpc")
    if target == "openai":
        if not args.host:
            raise LoadError("--target openai needs --host: the server's URL, e.g. http://H:8000")
        try:
            hosts = parse_hosts(args.host)
        except ValueError as exc:
            raise LoadError(str(exc)) from None
        plain = [e.url for e in hosts if not e.tls]
        if (args.tls or args.tls_ca) and plain:
            raise LoadError(
                f"--tls/--tls-ca with --target openai: {plain[0]} is not https://; "
                "give the server's https:// URL"
            )
    elif (
        getattr(args, "model", "")
        or getattr(args, "tokenizer", "")
        or getattr(args, "priority", False)
    ):
        raise LoadError("--model, --tokenizer and --priority go with --target openai")
    warmup = parse_warmup(args.warmup)
    try:
        load_workload(args.workload)
    except WorkloadError as exc:
        raise LoadError(str(exc)) from None
    except OSError as exc:
        raise LoadError(f"--workload: cannot read {args.workload}: {exc.strerror}") from None
    if args.slo:
        try:
            parse_slo(args.slo)
        except ValueError as exc:
            raise LoadError(str(exc)) from None
    parse_timespan(args.run_time)
    if args.users is not None and args.users < 1:
        raise LoadError("--users: must be at least 1")
    if args.spawn_rate is not None and not (args.spawn_rate > 0):
        raise LoadError("--spawn-rate: must be positive")
    if args.arrival_rate is not None and not (
        math.isfinite(args.arrival_rate) and args.arrival_rate > 0
    ):
        raise LoadError("--arrival-rate: must be a positive number of tasks per second")
    if args.processes is not None and args.processes < 1:
        raise LoadError("--processes: must be at least 1")
    if args.sweep:
        if is_sweep_plan(args.sweep):
            try:
                SweepPlan.parse(args.sweep)
            except ValueError as exc:
                raise LoadError(str(exc)) from None
        else:
            try:
                parse_sweep(args.sweep)
            except ValueError as exc:
                raise LoadError(str(exc)) from None
            step_s = parse_timespan(args.step_time, "--step-time")
            if warmup >= step_s:
                raise LoadError(
                    f"--warmup {args.warmup} covers each whole --step-time {args.step_time}: "
                    "no task would be measured"
                )
        if not args.slo:
            raise LoadError("--sweep needs --slo (the bound the sweep steps the rate up to)")
        if args.arrival_rate is not None:
            raise LoadError("--sweep sets the arrival rate itself; drop --arrival-rate")
        if args.master and not is_sweep_plan(args.sweep):
            raise LoadError("--sweep START:STEP:MAX runs locally; use --processes")
    elif warmup >= parse_timespan(args.run_time):
        raise LoadError(
            f"--warmup {args.warmup} covers the whole --run-time {args.run_time}: "
            "no task would be measured"
        )


def config_of(args: argparse.Namespace, host: str) -> dict[str, Any]:
    openai = getattr(args, "target", "grpc") == "openai"
    return {
        "host": host if args.host else f"{host} (local sim orchestrator)",
        "target": getattr(args, "target", "grpc"),
        "model": (args.model or None) if openai else None,
        "api": args.api if openai else None,
        "workload": str(args.workload),
        "users": args.users,
        "run_time": args.run_time,
        "warmup": args.warmup,
        "arrival_rate": args.arrival_rate,
        "arrival_process": args.arrival_process if args.arrival_rate else None,
        "processes": args.processes,
        "slo": args.slo or None,
        "sweep": args.sweep,
        "step_time": args.step_time if args.sweep else None,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `inflection load`."""
    p.add_argument(
        "--host",
        help="the orchestrator's HOST:PORT (default: start a local one); with --target "
        "openai, the server's URL http://HOST:PORT, or several URLs separated by commas "
        "(the calls take them in turn: round robin)",
    )
    p.add_argument(
        "--target",
        choices=("grpc", "openai"),
        default="grpc",
        help="grpc: an Inflection orchestrator (default); openai: any OpenAI-compatible "
        "server (vLLM, SGLang, llm-d, Dynamo), each Locust user running the agent programs "
        "itself and streaming every call",
    )
    p.add_argument("--model", default="", help="openai: the model (default: the first listed)")
    p.add_argument(
        "--api",
        choices=("completions", "chat"),
        default="completions",
        help="openai: /v1/completions with token-id prompts (exact counts; default) or "
        "/v1/chat/completions with messages",
    )
    p.add_argument(
        "--tokenizer",
        default="",
        help="openai: tokenizer directory for token-id prompts (default: --model, when it "
        "is a directory)",
    )
    p.add_argument(
        "--affinity-header",
        default="",
        help="openai: session-affinity headers carrying the task id, comma-separated "
        "(default: x-session-token,X-Dynamo-Session-ID,x-smg-routing-key,x-session-id; "
        "none: no header)",
    )
    p.add_argument(
        "--priority",
        action="store_true",
        help="openai: send each call's priority in vLLM's `priority` field (a server "
        "started with --scheduling-policy priority)",
    )
    p.add_argument("--workload", default=str(DEFAULT_WORKLOAD), help="workload mix YAML")
    p.add_argument("--users", type=int, help="closed loop: users (default 8; open loop: 1)")
    p.add_argument("--spawn-rate", type=float, help="users started per second (default: all)")
    p.add_argument("--run-time", default="60s", help="run time, e.g. 60s, 5m (default 60s)")
    p.add_argument("--arrival-rate", type=float, help="open loop: tasks per second in total")
    p.add_argument(
        "--trace", help="replay a Mooncake-format JSONL trace (loadtests/data/sample_trace.jsonl)"
    )
    p.add_argument(
        "--trace-speedup", type=float, default=1.0, help="divide the trace's timestamps by this"
    )
    p.add_argument(
        "--arrival-process",
        choices=("poisson", "gamma", "constant"),
        default="poisson",
        help="open loop: how tasks arrive (default poisson)",
    )
    p.add_argument("--arrival-cv", type=float, help="gamma arrivals: cv of the gaps")
    p.add_argument(
        "--shape", choices=("ramp", "steps", "spike", "diurnal"), help="user-count curve"
    )
    p.add_argument("--shape-args", default="", help="shape parameters, e.g. peak=20,ramp_s=30")
    p.add_argument(
        "--slo", default="", help="task SLO for goodput, e.g. task_ttft=5s,task_latency=30s"
    )
    p.add_argument(
        "--sweep",
        help="open-loop rate sweep START:STEP:MAX (one Locust run per --step-time step), "
        "stopping at the first step that breaks --slo; prints offered vs achieved rate and "
        "latency percentiles per step (with --out: sweep.json, sweep.csv, a plot in "
        "report.html) and the highest rate meeting the SLO, or that it never broke up to "
        "MAX; or the locustfile's in-run sweep "
        "start=2,factor=1.5,step_s=20,max_rate=100 (orchestrator/workload/sweep.py SweepPlan)",
    )
    p.add_argument("--step-time", default="30s", help="sweep: run time of each step")
    p.add_argument("--processes", type=int, help="Locust worker processes on this machine")
    p.add_argument("--master", action="store_true", help="run as a Locust master")
    p.add_argument("--expect-workers", type=int, help="master: wait for this many workers first")
    p.add_argument("--master-bind-host", default="127.0.0.1", help="master: interface to bind")
    p.add_argument("--worker", action="store_true", help="run as a Locust worker")
    p.add_argument("--master-host", default="127.0.0.1", help="worker: the master's address")
    p.add_argument("--master-port", type=int, help="master's port (Locust's default 5557)")
    p.add_argument(
        "--out",
        help="folder for the reports: report.html, summary.json/.csv, tasks.jsonl (one line "
        "per task), Locust's CSV/HTML; a sweep adds sweep.json/.csv and its curve",
    )
    p.add_argument(
        "--warmup",
        help="leave tasks that start in the first N seconds (e.g. 10s) out of the agentic "
        "figures (Locust's own stats keep them; tasks.jsonl marks them warmup); per step "
        "with --sweep",
    )
    p.add_argument(
        "--export-calls",
        action="store_true",
        help="add each task's LLM calls and tool steps to tasks.jsonl (a `calls` list per "
        "line: step, replica or tool, tokens, engine timings)",
    )
    add_format_flag(p)
    p.add_argument(
        "--token",
        default="",
        help="bearer token, if the server wants one (default: $INFLECTION_TOKEN); "
        "prefer the variable or --token-file, a flag shows in `ps`",
    )
    p.add_argument("--token-file", help="read the bearer token from this file")
    p.add_argument("--tls", action="store_true", help="connect with TLS (system roots)")
    p.add_argument("--tls-ca", help="connect with TLS trusting this CA bundle (PEM)")
