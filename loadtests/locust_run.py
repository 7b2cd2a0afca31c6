"""One headless Locust run of the agentic locustfile: its command line (`locust_command`),
the files it writes (`RunFiles`), and running it with live progress (`run_locust`).

Locust runs in a subprocess (`python -m locust -f loadtests/locustfile.py --headless`), so
that process imports locust (and gevent's patches) first and never imports Ray.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loadtests.console import live_line
from loadtests.local_server import error_line, last_line, stop_process
from loadtests.metrics import LiveFigures, Snapshot
from loadtests.options import openai_flags, parse_timespan, parse_warmup
from orchestrator.workload.sweep import is_sweep_plan

if TYPE_CHECKING:
    from rich.console import Console

LOADTESTS = Path(__file__).resolve().parent
LOCUSTFILE = LOADTESTS / "locustfile.py"
REPO_ROOT = LOADTESTS.parent  # on the Locust process's PYTHONPATH, so `loadtests` imports
LOCUST_GRACE_S = 60.0
PLAIN_PROGRESS_EVERY_S = 10.0  # progress lines when stderr is not a terminal (CI logs)


@dataclass(slots=True, frozen=True)
class RunFiles:
    """Where one Locust run writes (all under the --out folder, or a temporary one)."""

    prefix: Path  # Locust's --csv prefix: <prefix>_stats.csv, _stats_history.csv, ...
    html: Path | None  # Locust's own HTML report (only with --out)
    agentic: Path  # the locustfile's --agentic-json
    log: Path  # Locust's stdout and stderr
    tasks: Path  # the locustfile's --agentic-tasks (one JSON line per task)
    live: Path  # the locustfile's --agentic-live (progress; removed after the run)

    @classmethod
    def under(cls, folder: Path, name: str, *, html: bool, tasks: str = "") -> RunFiles:
        return cls(
            prefix=folder / name,
            html=folder / f"{name}.html" if html else None,
            agentic=folder / f"{name}_agentic.json",
            log=folder / f"{name}.log",
            tasks=folder / (tasks or f"{name}_tasks.jsonl"),
            live=folder / f"{name}_live.json",
        )

    @property
    def history(self) -> Path:
        return Path(f"{self.prefix}_stats_history.csv")


def locust_command(
    args: argparse.Namespace,
    host: str | None,
    files: RunFiles | None,
    *,
    arrival_rate: float | None = None,
    run_time: str | None = None,
) -> list[str]:
    """The `python -m locust ...` argv for one run (pure)."""
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
    if args.worker:
        cmd += ["--worker", "--master-host", args.master_host]
        if args.master_port is not None:
            cmd += ["--master-port", str(args.master_port)]
        if args.processes is not None:
            cmd += ["--processes", str(args.processes)]
        cmd += ["--workload", str(args.workload)]  # workers load their own copy
        # The token reaches Locust as INFLECTION_TOKEN (see resolve_token), never in argv.
        return cmd + openai_flags(args) + _tls_flags(args)
    rate = arrival_rate if arrival_rate is not None else args.arrival_rate
    open_loop = bool(rate) or bool(args.sweep)
    users = args.users if args.users is not None else (1 if open_loop else 8)
    spawn_rate = args.spawn_rate if args.spawn_rate is not None else float(users)
    cmd += ["--headless", "--only-summary", "--loglevel", "WARNING"]
    cmd += ["-u", str(users), "-r", f"{spawn_rate:g}"]
    if not (args.sweep and is_sweep_plan(args.sweep)):  # an in-run sweep ends the run itself
        cmd += ["-t", f"{parse_timespan(run_time or args.run_time)}s"]
    cmd += ["--stop-timeout", "0"]
    if host:
        cmd += ["--host", host]
    cmd += ["--workload", str(args.workload)]
    if args.slo:
        cmd += ["--slo", args.slo]
    cmd += openai_flags(args)
    cmd += _tls_flags(args)
    if rate:
        cmd += ["--arrival-rate", f"{rate:g}", "--arrival-process", args.arrival_process]
        if args.arrival_cv is not None:
            cmd += ["--arrival-cv", f"{args.arrival_cv:g}"]
    if args.sweep and is_sweep_plan(args.sweep):
        cmd += ["--sweep", args.sweep]
    if args.trace:
        # Trace replay (Generate calls at the trace's arrival times) instead of agent tasks.
        cmd += ["--trace", str(args.trace), "--trace-speedup", f"{args.trace_speedup:g}"]
    if args.shape:
        cmd += ["--shape", args.shape]
        if args.shape_args:
            cmd += ["--shape-args", args.shape_args]
    if args.processes is not None or args.master:
        # Nothing listens beyond loopback unless asked for (--master-bind-host 0.0.0.0).
        cmd += ["--master-bind-host", args.master_bind_host]
    if args.processes is not None:
        cmd += ["--processes", str(args.processes)]
    if args.master:
        cmd += ["--master"]
        if args.master_port is not None:
            cmd += ["--master-bind-port", str(args.master_port)]
        if args.expect_workers is not None:
            cmd += ["--expect-workers", str(args.expect_workers)]
    warmup = parse_warmup(args.warmup)
    if warmup:
        cmd += ["--agentic-warmup", str(warmup)]
    if files is not None:
        cmd += ["--csv", str(files.prefix), "--csv-full-history"]
        cmd += ["--agentic-json", str(files.agentic), "--agentic-live", str(files.live)]
        cmd += ["--agentic-tasks", str(files.tasks)]
        if args.export_calls:
            cmd += ["--agentic-export-calls"]
        if files.html is not None:
            cmd += ["--html", str(files.html)]
    return cmd


def _tls_flags(args: argparse.Namespace) -> list[str]:
    if args.tls_ca:
        return ["--tls-ca", str(args.tls_ca)]  # implies --tls in the locustfile
    return ["--tls"] if args.tls else []


def locust_env() -> dict[str, str]:
    """The Locust process's environment: `loadtests` importable from any working folder."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{path}" if path else str(REPO_ROOT)
    return env


@dataclass(slots=True, frozen=True)
class Live:
    """What the locustfile's --agentic-live file said last."""

    users: int
    figures: LiveFigures


def read_live(path: Path) -> Live | None:
    """The live file (rewritten whole every second by the locustfile), or None yet."""
    try:
        data = json.loads(path.read_text())
        return Live(int(data["users"]), LiveFigures.from_dict(data))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_locust(
    cmd: Sequence[str], files: RunFiles | None, run_time_s: int | None, console: Console
) -> int:
    """Run Locust until it exits, showing its live figures on `console` (a bar on a
    terminal, else a line every PLAIN_PROGRESS_EVERY_S); returns its exit code. A Ctrl-C
    stops Locust in order (it writes its reports) and is raised again."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    log_path = files.log if files is not None else None
    log = log_path.open("w") if log_path is not None else None
    proc = subprocess.Popen(
        list(cmd),
        stdout=log if log is not None else None,
        stderr=subprocess.STDOUT if log is not None else None,
        env=locust_env(),
        # Its own process group: Ctrl-C reaches us once and we stop Locust in order.
        start_new_session=True,
    )
    deadline = None if run_time_s is None else time.monotonic() + run_time_s + LOCUST_GRACE_S
    started = time.monotonic()
    limit = f" / {run_time_s}s" if run_time_s is not None else ""

    def watch(show: Callable[[float, str], None]) -> None:
        while proc.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                stop_process(proc, signal.SIGINT)
                break
            live = read_live(files.live) if files is not None else None
            show(time.monotonic() - started, live_line(live) if live is not None else "")
            time.sleep(0.5)

    try:
        if console.is_terminal:
            columns = (
                TextColumn("[bold]locust"),
                BarColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[detail]}"),
            )
            with Progress(*columns, console=console, transient=True) as bar:
                job = bar.add_task("run", total=run_time_s, detail="starting")

                def update(elapsed: float, line: str) -> None:
                    detail = f"{elapsed:.0f}s{limit}\n{line or 'starting'}"
                    bar.update(job, completed=elapsed, detail=detail)

                watch(update)
        else:
            printed = [started]

            def every(elapsed: float, line: str) -> None:
                if line and time.monotonic() - printed[0] >= PLAIN_PROGRESS_EVERY_S:
                    printed[0] = time.monotonic()
                    console.print(
                        f"[{elapsed:.0f}s{limit}] {line}",
                        markup=False,
                        highlight=False,
                        soft_wrap=True,
                    )

            watch(every)
    finally:
        # Ctrl-C or any error here: stop Locust first (SIGINT: it writes its reports).
        stop_process(proc, signal.SIGINT)
        if log is not None:
            log.close()
        if files is not None:
            files.live.unlink(missing_ok=True)
    return proc.returncode if proc.returncode is not None else 1


def read_snapshot(path: Path) -> Snapshot | None:
    with contextlib.suppress(OSError, ValueError):
        data: Snapshot = json.loads(path.read_text())
        return data
    return None


def fail_line(code: int, files: RunFiles) -> str:
    return error_line(files.log) or (
        f"inflection: locust exited with code {code} before any task ran "
        f"({last_line(files.log) or 'no output'}); see {files.log}"
    )
