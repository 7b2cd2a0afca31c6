"""The local orchestrator `inflection load` starts without --host (`inflection serve` on
simulated replicas, in its own process group, always stopped with SIGTERM), and the
process and log helpers the Locust runs share.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from loadtests.options import LoadError

if TYPE_CHECKING:
    from rich.console import Console

SERVE_TIMEOUT_S = 90.0  # Ray start + replicas on a loaded 2-core machine
STOP_TIMEOUT_S = 20.0
SERVING_LINE = "inflection: serving on "


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


def stop_process(proc: subprocess.Popen[Any], sig: signal.Signals = signal.SIGTERM) -> None:
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
            last = last_line(log_path) or "no output"
            raise LoadError(f"the local orchestrator did not start ({last}); see {log_path}")
        console.print(
            f"local orchestrator (sim backend) on {address}", highlight=False, soft_wrap=True
        )
        yield address
    finally:
        stop_process(proc)
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


def last_line(path: Path) -> str | None:
    with contextlib.suppress(OSError):
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
        lines = [ln for ln in lines if ln]
        return lines[-1][:200] if lines else None
    return None


def error_line(log: Path) -> str | None:
    """The locustfile's one-line error (`inflection: ...`), if it printed one."""
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("inflection: "):
                return line.strip()
    return None
