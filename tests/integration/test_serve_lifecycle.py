"""`inflection serve` and `inflection run` as a user runs them, start to stop: a dead Ray
cluster is one line within the bound, SIGINT and SIGTERM end the command cleanly at every
stage (exit code, no traceback, no process left behind), a second server on a port in use
is refused, and Ctrl-C in `run` keeps the summary of the tasks that finished.

Each command starts its own private Ray cluster (ray.address: local) and is stopped by
its PID; nothing here joins or stops another Ray."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
INFLECTION = str(Path(sys.executable).parent / "inflection")
START_TIMEOUT_S = 240  # a private Ray cluster and the replicas, on a loaded 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(extra)
    return env


def _config(tmp_path: Path, port: int, ray: str = "{address: local, num_cpus: 2}") -> Path:
    path = tmp_path / "serve.yaml"
    path.write_text(
        f"ray: {ray}\n"
        "replicas: {count: 1, backend: sim, num_cpus: 0.5}\n"
        f"server: {{host: 127.0.0.1, port: {port}}}\n"
    )
    return path


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> set[int]:
    tree = _children()
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


@dataclass
class Command:
    """A running `inflection` process whose output lines are collected as they come,
    with every process it started (seen so far) remembered."""

    proc: subprocess.Popen[str]
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    started: set[int] = field(default_factory=set)

    def wait_for(self, what: Callable[[], bool], timeout: float, name: str) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            assert self.proc.poll() is None, f"exited before {name}:\n" + self.text()
            assert time.monotonic() < deadline, f"no {name} in {timeout} s:\n" + self.text()
            self.started |= _descendants(self.proc.pid)
            time.sleep(0.2)
        self.started |= _descendants(self.proc.pid)

    def line(self, text: str, stream: str = "out") -> bool:
        return any(text in line for line in (self.out if stream == "out" else self.err))

    def stop(self, sig: signal.Signals, timeout: float = 120) -> int:
        self.started |= _descendants(self.proc.pid)
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def text(self) -> str:
        return "stdout:\n" + "".join(self.out)[-3000:] + "\nstderr:\n" + "".join(self.err)[-3000:]

    def leftovers(self, timeout: float = 60) -> set[int]:
        deadline = time.monotonic() + timeout
        while (alive := {p for p in self.started if _alive(p)}) and time.monotonic() < deadline:
            time.sleep(0.5)
        return alive


@contextmanager
def inflection(*args: str, env: dict[str, str] | None = None) -> Iterator[Command]:
    proc = subprocess.Popen(
        [INFLECTION, *args],
        cwd=REPO,
        env=env or _env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    command = Command(proc)
    readers = [
        threading.Thread(target=lambda s=s, into=into: into.extend(iter(s.readline, "")))
        for s, into in ((proc.stdout, command.out), (proc.stderr, command.err))
    ]
    for reader in readers:
        reader.start()
    try:
        yield command
    finally:
        if proc.poll() is None:
            proc.kill()  # only on a failed test; the tests stop it by signal
            proc.wait(timeout=30)
        for reader in readers:
            reader.join(timeout=10)


def _ray_started(command: Command) -> Callable[[], bool]:
    def check() -> bool:
        return any("gcs_server" in _cmdline(p) for p in _descendants(command.proc.pid) if _alive(p))

    return check


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


EXIT_CODE = {signal.SIGINT: 130, signal.SIGTERM: 0}


def test_a_dead_ray_cluster_is_one_line_at_once() -> None:
    port = _free_port()  # closed: nothing listens
    started = time.monotonic()
    proc = subprocess.run(
        [INFLECTION, "serve", "--port", "0"],
        cwd=REPO,
        env=_env(RAY_ADDRESS=f"127.0.0.1:{port}"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert (
        f"inflection: could not join the Ray cluster at 127.0.0.1:{port} (from RAY_ADDRESS) "
        "within 15 s (Connection refused; is it running? set ray.address: local to start a "
        "private one)\n"
    ) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert elapsed < 60  # the Python start-up of a loaded machine; Ray's retries took minutes


def test_a_silent_ray_address_gives_up_after_connect_timeout(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        config = _config(tmp_path, 0, ray=f"{{address: '{address}', connect_timeout_s: 3}}")
        started = time.monotonic()
        proc = subprocess.run(
            [INFLECTION, "serve", "--config", str(config)],
            cwd=REPO,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert (
        f"inflection: could not join the Ray cluster at {address} (from ray.address) within 3 s"
        in proc.stderr
    )
    assert "Traceback" not in proc.stderr
    assert elapsed < 45


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_during_start_up_stops_everything(tmp_path: Path, sig: signal.Signals) -> None:
    config = _config(tmp_path, _free_port())
    with inflection("serve", "--config", str(config)) as serve:
        serve.wait_for(lambda: serve.line("inflection: starting", "err"), 120, "starting line")
        serve.wait_for(_ray_started(serve), START_TIMEOUT_S, "Ray processes")
        assert not serve.line("serving on"), "started too fast to test start-up"
        code = serve.stop(sig)
        assert code == EXIT_CODE[sig], serve.text()
    assert not serve.line("serving on")
    assert serve.line(f"inflection: {sig.name} received; stopping", "err"), serve.text()
    assert not serve.line("Traceback", "err"), serve.text()
    assert serve.started, "no process was started before the signal"
    assert not serve.leftovers(), serve.text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_while_serving_stops_everything(tmp_path: Path, sig: signal.Signals) -> None:
    port = _free_port()
    config = _config(tmp_path, port)
    with inflection("serve", "--config", str(config), "--http-port", "0") as serve:
        serve.wait_for(lambda: serve.line("inflection: serving on"), START_TIMEOUT_S, "serving")
        # The front door's URL is printed beside the gRPC address, and it answers.
        serve.wait_for(lambda: serve.line("OpenAI-compatible API on http://"), 10, "the URL")
        url = next(line for line in serve.out if "OpenAI-compatible API on" in line).split()[-1]
        with urllib.request.urlopen(f"{url}/models", timeout=30) as response:
            models = [m["id"] for m in json.load(response)["data"]]
        assert "plan_execute" in models
        if sig is signal.SIGTERM:
            # A second server on the same port is refused, before it starts anything.
            started = time.monotonic()
            second = subprocess.run(
                [INFLECTION, "serve", "--config", str(config)],
                cwd=REPO,
                env=_env(),
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert second.returncode == 1, second.stderr[-3000:]
            assert f"inflection: port 127.0.0.1:{port} is in use\n" in second.stderr
            assert "starting" not in second.stderr  # refused before any replica or Ray
            assert time.monotonic() - started < 60
        code = serve.stop(sig)
        assert code == EXIT_CODE[sig], serve.text()
    assert not serve.line("Traceback", "err"), serve.text()
    assert not serve.leftovers(), serve.text()


def test_ctrl_c_in_run_keeps_the_finished_tasks(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    args = ("run", "--tasks", "400", "--concurrency", "4", "--json", str(summary))
    with inflection(*args) as run:
        run.wait_for(lambda: run.line("ready in"), START_TIMEOUT_S, "ready line")
        time.sleep(4)  # a few plan_execute tasks finish (about one second each)
        code = run.stop(signal.SIGINT)
        assert code == 130, run.text()
    err = "".join(run.err)
    assert "Traceback" not in err and "CancelledError" not in err, run.text()
    [interrupted] = [line for line in run.err if "interrupted" in line]
    assert interrupted.startswith("inflection: interrupted (SIGINT) after "), interrupted
    document = json.loads(summary.read_text())
    assert document["interrupted"] is True
    finished = document["summary"]["tasks"]
    assert 0 < finished < 400
    assert f"after {finished} of 400 tasks" in interrupted
    assert run.line("tasks completed")  # the partial summary table
    assert not run.leftovers(), run.text()
