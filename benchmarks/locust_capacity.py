"""How much load one Locust process can drive: agent steps per second and CPU-seconds per
step of `loadtests.user.AgentUser` against an orchestrator on instant simulated replicas
(`replicas.sim.time_scale: 0`), beside a plain unary gRPC Locust user against a bare
grpc.aio echo server, measured in the same run. Goal: the agentic user costs at most 2x
the plain call per step.

    .venv/bin/python benchmarks/locust_capacity.py [--users 16] [--seconds 10] [--rounds 2]

Each measurement is its own process running Locust as a library (a LocalRunner, like one
`locust --worker`): users start, `--warmup` seconds pass, then requests and the process's
CPU time (user + system, every thread) are counted over `--seconds`. A "step" is one
llm call of a task the agentic user recorded (a `plan_execute` task makes five) and one
unary call of the plain user. Both servers run throughout on the same machine; rounds
alternate agent, plain, agent, plain and the medians are reported.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
ECHO_METHOD = "/bench.Echo/Echo"
PAYLOAD = b"x" * 64


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ------------------------------------------------------------------ echo server


def echo_server(port: int) -> None:
    """A bare grpc.aio server with one unary method returning its request bytes."""
    import asyncio

    import grpc

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    async def serve() -> None:
        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
        )
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("ready", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()
        await server.stop(1)

    asyncio.run(serve())


# ------------------------------------------------------------------ one measurement


def drive(
    kind: str, host: str, users: int, warmup: float, seconds: float, rate: float = 0.0
) -> dict[str, float]:
    """Run `users` Locust users of `kind` (agent | plain | idle) in this process; count
    steps and CPU time over `seconds` after `warmup`. `rate` > 0 paces the plain users to
    that many calls per second in total. Prints nothing; returns the figures."""
    import locust

    # isort: split
    import resource
    import types

    import gevent
    import grpc
    import grpc.experimental.gevent as grpc_gevent
    from locust import User, constant, constant_throughput, task
    from locust.env import Environment

    grpc_gevent.init_gevent()
    from loadtests.user import AgentUser

    _ = locust

    class PlainUser(User):
        """The baseline: a unary gRPC call per iteration, one request event per call."""

        wait_time = constant_throughput(rate / users) if rate > 0 else constant(0)

        def on_start(self) -> None:
            self.channel = grpc.insecure_channel(str(self.host))
            self.echo: Any = self.channel.unary_unary(ECHO_METHOD)

        def on_stop(self) -> None:
            self.channel.close()

        @task
        def call(self) -> None:
            started = time.perf_counter()
            error: Exception | None = None
            try:
                self.echo(PAYLOAD, timeout=10)
            except grpc.RpcError as exc:
                error = exc
            self.environment.events.request.fire(
                request_type="unary",
                name="echo",
                response_time=(time.perf_counter() - started) * 1000,
                response_length=len(PAYLOAD),
                exception=error,
                context={},
            )

    # "idle": the same process and runner with no users, for the fixed cost of Locust's
    # own greenlets and gRPC's threads, subtracted to give the net figures.
    user_class: type[User] = AgentUser if kind == "agent" else PlainUser
    step_type = "step" if kind == "agent" else "unary"
    env = Environment(user_classes=[user_class], host=host)
    env.parsed_options = types.SimpleNamespace(token="", num_users=users)
    runner = env.create_local_runner()

    def counts() -> tuple[int, int, float, float]:
        steps = failures = 0
        for (_name, method), entry in env.stats.entries.items():
            if method == step_type:
                steps += entry.num_requests
                failures += entry.num_failures
            elif method == "task":
                failures += entry.num_failures
        # The agentic user fires one request per task (not per step): its steps are the
        # LLM calls of the tasks it recorded.
        agentic = getattr(env, "agentic", None)
        if kind == "agent" and agentic is not None:
            steps = sum(sample.llm_calls for sample in agentic.stats.samples)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return steps, failures, usage.ru_utime + usage.ru_stime, time.perf_counter()

    if kind != "idle":
        runner.start(users, spawn_rate=users)
    gevent.sleep(warmup)
    s0, f0, cpu0, t0 = counts()
    gevent.sleep(seconds)
    s1, f1, cpu1, t1 = counts()
    runner.quit()
    steps, wall, cpu = s1 - s0, t1 - t0, cpu1 - cpu0
    return {
        "steps": steps,
        "failures": f1 - f0,
        "wall_s": wall,
        "cpu_s": cpu,
        "steps_per_s": steps / wall,
        "cpu_util": cpu / wall,
        "cpu_ms_per_step": 1000 * cpu / steps if steps else float("inf"),
    }


# ------------------------------------------------------------------ orchestration


def _reader(proc: subprocess.Popen[str], marker: str, timeout: float) -> str | None:
    """The first stdout line starting with `marker`; keeps draining stdout afterwards."""
    found: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(marker) and not found:
                found.append(line.strip())
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(timeout)
    return found[0] if found else None


@contextlib.contextmanager
def _process(args: list[str], marker: str, timeout: float, what: str) -> Iterator[str]:
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        line = _reader(proc, marker, timeout)
        if line is None:
            raise SystemExit(f"locust_capacity: the {what} did not start")
        yield line
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def orchestrator(tmp: Path) -> Iterator[str]:
    """`inflection serve` on instant simulated replicas, 127.0.0.1 only, stopped with
    SIGINT (its Ray instance is its own: address local)."""
    port = _free_port()
    config = tmp / "serve.yaml"
    config.write_text(
        "replicas: {count: 1, num_cpus: 0.5, backend: sim, sim: {time_scale: 0.0}}\n"
        "ray: {address: local, num_cpus: 2}\n"
        f"server: {{host: 127.0.0.1, port: {port}}}\n"
    )
    args = [str(VENV_BIN / "inflection"), "serve", "--config", str(config)]
    with _process(args, "inflection: serving on", 120, "orchestrator") as line:
        yield line.split()[-1]


@contextlib.contextmanager
def echo() -> Iterator[str]:
    port = _free_port()
    args = [sys.executable, __file__, "--echo-server", str(port)]
    with _process(args, "ready", 30, "echo server"):
        yield f"127.0.0.1:{port}"


def measure(kind: str, host: str, args: argparse.Namespace, rate: float = 0.0) -> dict[str, float]:
    command = [sys.executable, __file__, "--drive", kind, "--host", host, "--rate", str(rate)]
    command += ["--users", str(args.users), "--warmup", str(args.warmup)]
    command += ["--seconds", str(args.seconds)]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=args.warmup + args.seconds + 120,
    )
    if done.returncode != 0:
        raise SystemExit(f"locust_capacity: the {kind} run failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=16, help="Locust users per run.")
    parser.add_argument("--seconds", type=float, default=10.0, help="Measured seconds per run.")
    parser.add_argument("--warmup", type=float, default=3.0, help="Unmeasured seconds first.")
    parser.add_argument("--rounds", type=int, default=2, help="Runs per side, alternating.")
    parser.add_argument("--json", default="", help="Write every run's figures here.")
    parser.add_argument("--echo-server", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--drive", default="", help=argparse.SUPPRESS)
    parser.add_argument("--host", default="", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        echo_server(args.echo_server)
        return
    if args.drive:
        result = drive(args.drive, args.host, args.users, args.warmup, args.seconds, args.rate)
        print(json.dumps(result), flush=True)  # the parent reads the last line
        return

    kinds = ("agent", "matched", "plain", "idle")
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    with (
        tempfile.TemporaryDirectory() as tmp,
        orchestrator(Path(tmp)) as grpc_host,
        echo() as echo_host,
    ):
        for round_ in range(args.rounds):
            for kind in kinds:
                if kind == "agent":
                    result = measure("agent", grpc_host, args)
                elif kind == "matched":  # plain calls paced to the agent's step rate
                    result = measure("plain", echo_host, args, runs["agent"][-1]["steps_per_s"])
                else:
                    result = measure(kind, echo_host, args)
                runs[kind].append(result)
                print(
                    f"round {round_ + 1} {kind:7s}: {result['steps_per_s']:8.1f} steps/s  "
                    f"cpu {result['cpu_util']:5.0%}  {result['cpu_ms_per_step']:.3f} cpu-ms/step"
                    f"  failures {int(result['failures'])}",
                    flush=True,
                )
    med = {
        kind: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
        for kind, rs in runs.items()
    }
    idle_util = med["idle"]["cpu_util"]
    for kind in kinds[:3]:
        m = med[kind]
        m["net_cpu_ms_per_step"] = 1000 * (m["cpu_util"] - idle_util) / m["steps_per_s"]
    ratios = {
        f"agent/{base}": med["agent"]["cpu_ms_per_step"] / med[base]["cpu_ms_per_step"]
        for base in ("matched", "plain")
    }
    print()
    print(f"idle Locust process: {idle_util:.1%} of a core")
    print(f"{'user':38s} {'steps/s':>9s} {'cpu':>6s} {'cpu-ms/step':>12s} {'net':>8s}")
    labels = {
        "agent": "AgentUser (plan_execute)",
        "matched": "plain unary user, at the agent's rate",
        "plain": "plain unary user, unpaced",
    }
    for kind, label in labels.items():
        m = med[kind]
        print(
            f"{label:38s} {m['steps_per_s']:9.1f} {m['cpu_util']:6.0%} "
            f"{m['cpu_ms_per_step']:12.3f} {m['net_cpu_ms_per_step']:8.3f}"
        )
    for name, ratio in ratios.items():
        print(f"CPU per step {name}: {ratio:.2f} (goal <= 2.0)")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "median": med, "ratios": ratios}))


if __name__ == "__main__":
    main()
