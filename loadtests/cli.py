"""`inflection load`: run the agentic locustfile headless, with progress and a summary.

    inflection load --run-time 60s --users 8                     # local sim orchestrator
    inflection load --host 127.0.0.1:50051 --arrival-rate 4 --slo task_latency=30s
    inflection load --host H:P --sweep 1:1:10 --step-time 30s --slo task_ttft=5s
    inflection load --host H:P --processes 2 --out reports/load

Locust runs in a subprocess (`python -m locust -f loadtests/locustfile.py --headless`), so
that process imports locust (and gevent's patches) first and never imports Ray; this
module imports neither, because `orchestrator.cli` imports it to build its parser. Without
`--host` a local orchestrator on simulated replicas is started (`inflection serve`) and
always stopped with SIGTERM at the end.

Bad input (workload file, --slo, --sweep, --run-time) is rejected here before anything
starts; an unreachable host or an unknown agent is detected by the locustfile before load
starts, and its single `inflection: ...` line is passed on. Either way: one line on
stderr, exit code 1 (2 for bad options), no traceback.

Paths given on the command line are made absolute first (the local orchestrator runs in
another folder). Progress (on stderr) reads the live figures the locustfile rewrites every
second (`--agentic-live`: tasks/s, TTFT and latency p50/p99, output tok/s, amplification
over the last 10 s); the final count and the summary read the agentic JSON the locustfile
writes at test stop (`--agentic-json`, shape documented in loadtests/metrics.py), so they
agree. With --out, `tasks.jsonl` has one line per task (metrics.task_record; its calls
too with --export-calls) and a sweep writes sweep.json/.csv and its curve in report.html.
Ctrl-C stops Locust in order, prints the partial summary (the JSON is on disk) and one
`inflection: interrupted` line, exit code 130. Tables go through orchestrator.tables
(`--format table|csv|json`; with csv/json, messages move to stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from loadtests.metrics import Figures, LiveFigures, Snapshot
from loadtests.sweep_curve import (
    Outcome,
    SweepPoint,
    sweep_csv,
    sweep_json,
    sweep_point,
    sweep_step_of,
    verdict,
)
from orchestrator.tables import TableFormat, add_format_flag, format_of, print_table
from orchestrator.workload.sweep import (
    MIN_GOOD_FRACTION,
    SweepPlan,
    is_sweep_plan,
    parse_sweep,
    run_sweep,
)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

LOADTESTS = Path(__file__).resolve().parent
LOCUSTFILE = LOADTESTS / "locustfile.py"
DEFAULT_WORKLOAD = LOADTESTS / "examples" / "mix.yaml"
REPO_ROOT = LOADTESTS.parent  # on the Locust process's PYTHONPATH, so `loadtests` imports

SERVE_TIMEOUT_S = 90.0  # Ray start + replicas on a loaded 2-core machine
STOP_TIMEOUT_S = 20.0
SERVING_LINE = "inflection: serving on "
# Locust's own grace beyond --run-time (stop users, final worker reports) before we kill it.
LOCUST_GRACE_S = 60.0
PLAIN_PROGRESS_EVERY_S = 10.0  # progress lines when stderr is not a terminal (CI logs)
PATH_OPTIONS = ("out", "workload", "trace", "tls_ca")  # resolved before anything starts


class LoadError(Exception):
    """Bad input or a failed start; the message is the one line the user sees."""


# ---- pure parsing ----------------------------------------------------------------------

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


def resolve_paths(args: argparse.Namespace) -> None:
    """Make every path option absolute (and `~` expanded) against the working folder we
    were started in: the local orchestrator and Locust run in other folders."""
    for name in PATH_OPTIONS:
        value = getattr(args, name, None)
        if value:
            setattr(args, name, os.path.abspath(os.path.expanduser(value)))


def parse_warmup(text: str | None) -> int:
    """--warmup: 0 (none) or a timespan in whole seconds."""
    if text is None or text.strip() in ("", "0", "0s"):
        return 0
    return parse_timespan(text, "--warmup")


def validate(args: argparse.Namespace) -> None:
    """Check everything checkable without a server; raises LoadError with one line."""
    from loadtests.workload import WorkloadError, load_workload
    from orchestrator.workload.slo import parse_slo

    if args.worker:
        return  # a worker takes its orders (and its checks) from the master
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


# ---- the Locust command ----------------------------------------------------------------


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
        if args.token:
            cmd += ["--token", args.token]
        return cmd + _tls_flags(args)
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
    if args.token:
        cmd += ["--token", args.token]
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


# ---- progress and summary --------------------------------------------------------------


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


def _num(value: float) -> str:
    """Three significant digits, but never an exponent (1234.5 -> 1234, not 1.23e+03)."""
    return f"{value:.0f}" if abs(value) >= 99.95 else f"{value:.3g}"


def _ms(seconds: float | None) -> str:
    """Seconds as milliseconds, the unit of every latency in the tables and charts."""
    return "-" if seconds is None else _num(seconds * 1000)


def live_line(live: Live) -> str:
    """One line of live figures: totals, then the trailing window's rates and percentiles."""
    f = live.figures
    counts = f"{f.failed} failed" + (f", {f.warmup_tasks} in warm-up" if f.warmup_tasks else "")
    amplification = (
        "-" if f.token_amplification_mean is None else f"{f.token_amplification_mean:.3g}"
    )
    return (
        f"{live.users} users, {f.tasks} tasks ({counts}) | last {f.window_s:.0f}s: "
        f"{f.tasks_per_s:.2f} tasks/s, "
        f"TTFT p50/p99 {_ms(f.task_ttft_p50_s)}/{_ms(f.task_ttft_p99_s)} ms, "
        f"latency p50/p99 {_ms(f.task_latency_p50_s)}/{_ms(f.task_latency_p99_s)} ms, "
        f"{f.output_tokens_per_s:.0f} output tok/s, amplification {amplification}"
    )


def finished_line(snapshot: Snapshot) -> str:
    """The run's final count, from the same snapshot as the summary (so they agree)."""
    summary = snapshot["summary"]
    line = (
        f"{summary['tasks']} tasks measured ({summary['ok']} ok, {summary['failed']} failed) "
        f"over {summary['duration_s']:.1f}s"
    )
    warmup = snapshot.get("warmup")
    if warmup is not None:
        line += (
            f"; warm-up: {warmup['excluded_tasks']} tasks that started in the first "
            f"{warmup['seconds']:g}s are left out of every figure below"
        )
    return line


def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value}{unit}"
    return f"{float(value):.{digits}f}{unit}"


_DIST_STATS = ("mean", "p50", "p99")


def _dist(figures: Mapping[str, Any], key: str, scale: float = 1.0, stat: str = "") -> str:
    """`mean / p50 / p99` of one distribution (or just `stat`), `-` without samples."""
    d = figures[key]
    if not d["count"]:
        return "-"
    return " / ".join(_num(d[k] * scale) for k in ((stat,) if stat else _DIST_STATS))


def summary_table(snapshot: Snapshot, *, split: bool = False) -> Table:
    """Rows are metrics, columns are `all` then each agent: narrow enough for any terminal.
    `split`: one row per statistic (`task latency (s) p99`) instead of `mean / p50 / p99`
    cells, for CSV and JSON."""
    from rich.table import Table

    columns = [("all", snapshot["summary"])] + [(a["agent"], a) for a in snapshot["per_agent"]]
    caption = None if split else "* mean / p50 / p99"
    table = Table(title="Agentic summary", title_justify="left", caption=caption)
    table.add_column("metric")
    for name, _ in columns:
        table.add_column(name, justify="right")

    def row(label: str, cell: Callable[[Figures], str]) -> None:
        table.add_row(label, *(cell(f) for _, f in columns))

    def dist_row(label: str, key: str, scale: float = 1.0) -> None:
        if not split:
            row(f"{label} *", lambda f: _dist(f, key, scale))
            return
        for stat in _DIST_STATS:
            row(f"{label} {stat}", lambda f, stat=stat: _dist(f, key, scale, stat))  # type: ignore[misc]

    row("tasks ok / failed", lambda f: f"{f['ok']} / {f['failed']}")
    row("tasks/s", lambda f: _fmt(f["tasks_per_s"]))
    row("goodput/s", lambda f: _fmt(f["goodput_per_s"]))
    dist_row("token amplification", "token_amplification")
    dist_row("llm calls per task", "llm_calls_per_task")
    dist_row("task ttft (ms)", "task_ttft_s", scale=1000.0)
    dist_row("task latency (ms)", "task_latency_s", scale=1000.0)
    dist_row("call tpot (ms)", "call_tpot_s", scale=1000.0)
    row("prompt tokens/s", lambda f: _fmt(f["prompt_tokens_per_s"], digits=1))
    row("output tokens/s", lambda f: _fmt(f["output_tokens_per_s"], digits=1))
    row(
        "prefix hit rate",
        lambda f: "-" if f["prefix_hit_rate"] is None else f"{f['prefix_hit_rate']:.1%}",
    )
    summary = snapshot["summary"]
    if summary["dropped_tasks"]:
        row("dropped arrivals", lambda f: str(f["dropped_tasks"]))
    if summary["failures"]:
        row(
            "failures",
            lambda f: ", ".join(f"{k} {v}" for k, v in f["failures"].items()) or "-",
        )
    return table


# ---- processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve_config(port: int) -> str:
    """The local orchestrator's deployment YAML: two simulated replicas, loopback only."""
    return (
        "replicas: {count: 2, num_cpus: 0.5, backend: sim}\n"
        "ray: {address: local}\n"
        f"server: {{host: 127.0.0.1, port: {port}}}\n"
    )


# `inflection serve` through the interpreter running us (no reliance on the script's PATH).
_SERVE_CODE = "import sys; from orchestrator.cli import main; sys.exit(main())"


def _stop(proc: subprocess.Popen[Any], sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal `proc` and wait for it; kill it after STOP_TIMEOUT_S, or at once on a second
    Ctrl-C (the user is in a hurry, and no traceback may escape from here)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def local_orchestrator(folder: Path, console: Console) -> Iterator[str]:
    """`inflection serve` on simulated replicas; yields HOST:PORT; SIGTERM at the end."""
    folder = folder.resolve()  # the server runs in `folder`: a relative path would not do
    config = folder / "serve.yaml"
    config.write_text(serve_config(free_port()))
    log_path = folder / "serve.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE_CODE, "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=folder,
        # Its own process group: a Ctrl-C reaches us only, and we stop the server in order.
        start_new_session=True,
    )
    try:
        with console.status("starting a local orchestrator on simulated replicas..."):
            address = _wait_for_serving(proc, log, time.monotonic() + SERVE_TIMEOUT_S)
        if address is None:
            last = _last_line(log_path) or "no output"
            raise LoadError(f"the local orchestrator did not start ({last}); see {log_path}")
        console.print(
            f"local orchestrator (sim backend) on {address}", highlight=False, soft_wrap=True
        )
        yield address
    finally:
        _stop(proc)
        log.close()


def _wait_for_serving(proc: subprocess.Popen[str], log: IO[str], deadline: float) -> str | None:
    """The address from the serving line. A thread copies all output to the log, so the
    server never blocks on a full pipe."""
    found: list[str] = []
    ready = threading.Event()

    def copy() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            if line.startswith(SERVING_LINE) and not found:
                found.append(line.split()[-1])
                ready.set()
        ready.set()  # the server exited

    threading.Thread(target=copy, daemon=True).start()
    ready.wait(max(0.0, deadline - time.monotonic()))
    return found[0] if found else None


def _last_line(path: Path) -> str | None:
    with contextlib.suppress(OSError):
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
        lines = [ln for ln in lines if ln]
        return lines[-1][:200] if lines else None
    return None


def _error_line(log: Path) -> str | None:
    """The locustfile's one-line error (`inflection: ...`), if it printed one."""
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("inflection: "):
                return line.strip()
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
                _stop(proc, signal.SIGINT)
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
        _stop(proc, signal.SIGINT)
        if log is not None:
            log.close()
        if files is not None:
            files.live.unlink(missing_ok=True)
    return proc.returncode if proc.returncode is not None else 1


def _read_snapshot(path: Path) -> Snapshot | None:
    with contextlib.suppress(OSError, ValueError):
        data: Snapshot = json.loads(path.read_text())
        return data
    return None


def _fail_line(code: int, files: RunFiles) -> str:
    return _error_line(files.log) or (
        f"inflection: locust exited with code {code} before any task ran "
        f"({_last_line(files.log) or 'no output'}); see {files.log}"
    )


# ---- the command -----------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Output:
    """Where the command prints: result tables on `out` (stdout) in `fmt`; messages on
    `info` (stdout, or stderr when stdout carries CSV/JSON); live progress on stderr."""

    out: Console
    info: Console
    progress: Console
    fmt: TableFormat

    @classmethod
    def for_format(cls, fmt: TableFormat) -> Output:
        from rich.console import Console

        out = Console()
        stderr = Console(stderr=True)
        return cls(out, out if fmt is TableFormat.TABLE else stderr, stderr, fmt)


def cmd_load(args: argparse.Namespace) -> int:
    output = Output.for_format(format_of(args))
    resolve_paths(args)
    try:
        validate(args)
    except LoadError as exc:
        _print_error(str(exc))
        return 2
    out = Path(args.out) if args.out else None
    try:
        with contextlib.ExitStack() as stack:
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
                folder = out
            else:
                temporary = tempfile.TemporaryDirectory(prefix="inflection-")
                folder = Path(stack.enter_context(temporary))
            if args.worker:
                return run_locust(locust_command(args, None, None), None, None, output.progress)
            host = args.host
            if host is None:
                host = stack.enter_context(local_orchestrator(folder, output.info))
            if args.sweep and not is_sweep_plan(args.sweep):
                return _sweep(args, host, folder, output, keep=out is not None)
            return _single_run(args, host, folder, output, keep=out is not None)
    except LoadError as exc:
        _print_error(str(exc))
        return 1
    except KeyboardInterrupt:
        _print_error("interrupted")
        return 130


def _print_error(message: str) -> None:
    line = message if message.startswith("inflection: ") else f"inflection: {message}"
    sys.stderr.write(line.splitlines()[0] + "\n")
    sys.stderr.flush()


INTERRUPTED = 130  # the shell's code for a run ended by Ctrl-C (128 + SIGINT)


def _single_run(
    args: argparse.Namespace, host: str, folder: Path, output: Output, *, keep: bool
) -> int:
    files = RunFiles.under(folder, "locust", html=keep, tasks="tasks.jsonl")
    in_run_sweep = bool(args.sweep)  # only a SweepPlan reaches here
    run_time_s = None if in_run_sweep else parse_timespan(args.run_time)
    interrupted = False
    try:
        code = run_locust(locust_command(args, host, files), files, run_time_s, output.progress)
    except KeyboardInterrupt:
        # Locust has been stopped in order and wrote what it had: show that below.
        interrupted, code = True, INTERRUPTED
    snapshot = _read_snapshot(files.agentic)
    if snapshot is None:
        if interrupted:
            raise KeyboardInterrupt
        if args.master:
            return code
        raise LoadError(_fail_line(code, files))
    output.info.print(finished_line(snapshot), highlight=False, soft_wrap=True)
    split = output.fmt is not TableFormat.TABLE
    print_table(output.out, summary_table(snapshot, split=split), output.fmt)
    if keep:
        write_agentic_reports(args, host, folder, snapshot)
        output.info.print(
            f"reports in {folder}/: report.html, summary.json/.csv, timeseries.csv, "
            "tasks.jsonl (agentic); locust.html, locust_*.csv (Locust's own); "
            "locust_agentic.json (raw snapshot)",
            highlight=False,
            soft_wrap=True,
        )
    if interrupted:
        _print_error("interrupted: the figures above are of the tasks finished so far")
        return INTERRUPTED
    if in_run_sweep:
        result = snapshot.get("sweep")
        if result is None:
            raise LoadError("the sweep did not finish (no `sweep` in the agentic JSON)")
        points = [SweepPoint.from_dict(p) for p in result["points"]]
        report = folder / "report.html" if keep else None
        min_good = float(result["min_good"])
        return _report_sweep(args, points, output, folder if keep else None, report, min_good)
    summary = snapshot["summary"]
    if code != 0:
        if summary["failed"]:
            _print_error(f"{summary['failed']} of {summary['tasks']} tasks failed")
        else:
            _print_error(_fail_line(code, files))
        return code
    return 0


def write_agentic_reports(
    args: argparse.Namespace, host: str, folder: Path, snapshot: Snapshot
) -> None:
    """loadtests.report's HTML/JSON/CSV from the snapshot (the locustfile writes only the
    JSON; without its raw samples the amplification plot shows percentiles)."""
    from loadtests.report import write_reports

    write_reports(folder, snapshot, title="inflection load", config=_config(args, host))


def _config(args: argparse.Namespace, host: str) -> dict[str, Any]:
    return {
        "host": host if args.host else f"{host} (local sim orchestrator)",
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


def step_line(point: SweepPoint) -> str:
    verdict_text = "met" if point.met else "BROKE"
    return (
        f"  offered {point.offered_per_s:g} tasks/s, achieved {point.achieved_per_s:.2f}: "
        f"{point.tasks} tasks, {point.good_fraction:.1%} within the SLO ({verdict_text}); "
        f"TTFT p50/p99 {_ms(point.task_ttft_p50_s)}/{_ms(point.task_ttft_p99_s)} ms, "
        f"latency p50/p99 {_ms(point.task_latency_p50_s)}/{_ms(point.task_latency_p99_s)} ms"
    )


def _sweep(args: argparse.Namespace, host: str, folder: Path, output: Output, *, keep: bool) -> int:
    sweep = parse_sweep(args.sweep)
    step_s = parse_timespan(args.step_time, "--step-time")

    def run_step(rate: float) -> SweepPoint:
        files = RunFiles.under(folder, f"sweep_{rate:g}", html=keep)
        output.info.print(f"step: {rate:g} tasks/s for {step_s}s", highlight=False, soft_wrap=True)
        cmd = locust_command(args, host, files, arrival_rate=rate, run_time=f"{step_s}s")
        code = run_locust(cmd, files, step_s, output.progress)
        snapshot = _read_snapshot(files.agentic)
        if snapshot is None:
            raise LoadError(_fail_line(code, files))
        step = sweep_step_of(rate, snapshot["summary"])
        point = sweep_point(rate, snapshot["summary"], step, MIN_GOOD_FRACTION)
        output.info.print(step_line(point), highlight=False, soft_wrap=True)
        return point

    points: list[SweepPoint] = []
    try:
        run_sweep(sweep.rates(), run_step, points)
    except KeyboardInterrupt:
        if not points:
            raise
        # The step that was cut short is left out: it ran for less than --step-time.
        _report_sweep(args, points, output, folder if keep else None, None, host=host)
        _print_error(f"interrupted after {len(points)} finished sweep steps (shown above)")
        return INTERRUPTED
    return _report_sweep(args, points, output, folder if keep else None, None, host=host)


def sweep_table(points: Sequence[SweepPoint], slo: str) -> Table:
    """One row per step: offered against achieved rate, latency percentiles, the verdict."""
    from rich.table import Table

    table = Table(title=f"Sweep against {slo}", title_justify="left")
    for name in (
        "offered tasks/s",
        "achieved tasks/s",
        "tasks",
        "failed",
        "within SLO",
        "TTFT p50 (ms)",
        "TTFT p99 (ms)",
        "latency p50 (ms)",
        "latency p99 (ms)",
        "output tok/s",
        "verdict",
    ):
        table.add_column(name, justify="right")
    for p in points:
        table.add_row(
            f"{p.offered_per_s:g}",
            f"{p.achieved_per_s:.2f}",
            str(p.tasks),
            str(p.failed + p.dropped),
            f"{p.good_fraction:.1%}",
            _ms(p.task_ttft_p50_s),
            _ms(p.task_ttft_p99_s),
            _ms(p.task_latency_p50_s),
            _ms(p.task_latency_p99_s),
            f"{p.output_tokens_per_s:.0f}",
            "met" if p.met else "broke",
        )
    return table


def _report_sweep(
    args: argparse.Namespace,
    points: Sequence[SweepPoint],
    output: Output,
    folder: Path | None,
    report: Path | None,
    min_good: float = MIN_GOOD_FRACTION,
    host: str = "-",
) -> int:
    """The steps' table, the curve's files (sweep.json, sweep.csv and its plot in
    report.html, with --out) and the verdict; exit 1 when no rate met the SLO.
    `report`: an existing report.html to add the curve to (else a page of its own)."""
    from loadtests.report import add_sweep_section, write_sweep_report

    print_table(output.out, sweep_table(points, args.slo), output.fmt)
    if folder is not None and points:
        (folder / "sweep.json").write_bytes(sweep_json(points, slo=args.slo, min_good=min_good))
        (folder / "sweep.csv").write_text(sweep_csv(points))
        if report is not None and report.is_file():
            add_sweep_section(report, points, slo=args.slo)
        else:
            write_sweep_report(folder, points, slo=args.slo, config=_config(args, host))
        output.info.print(
            f"sweep curve in {folder}/: sweep.json, sweep.csv, report.html", highlight=False
        )
    if not points:
        _print_error("the sweep finished no step")
        return 1
    result = verdict(points)
    if result.outcome is Outcome.NEVER_MET:
        _print_error(result.line(args.slo))
        return 1
    output.info.print(result.line(args.slo), highlight=False, soft_wrap=True)
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `load` on the `inflection` command's subparsers."""
    p = sub.add_parser(
        "load",
        help="drive agentic load with Locust (a local sim orchestrator without --host)",
        description="Run loadtests/locustfile.py headless against --host (or a local "
        "orchestrator on simulated replicas), show live figures on stderr (tasks/s, TTFT and "
        "latency p50/p99, output tok/s, amplification over the last 10 s), and print the "
        "agentic summary: token amplification, calls per task, TTFT, latency, tokens/s, "
        "goodput. Ctrl-C stops the run and prints (and, with --out, writes) the summary of "
        "the tasks finished so far; exit code 130.",
    )
    p.add_argument("--host", help="the orchestrator's HOST:PORT (default: start a local one)")
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
    p.add_argument("--token", default="", help="bearer token, if the server wants one")
    p.add_argument("--tls", action="store_true", help="connect with TLS (system roots)")
    p.add_argument("--tls-ca", help="connect with TLS trusting this CA bundle (PEM)")
    p.set_defaults(func=cmd_load)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m loadtests.cli load ...`: the same command outside `inflection`."""
    parser = argparse.ArgumentParser(prog="inflection")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
