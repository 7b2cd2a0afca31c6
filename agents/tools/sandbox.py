"""The `python` tool: run a snippet of Python in a resource-limited subprocess.

What the sandbox does, per run:

- starts a fresh interpreter, `sys.executable -I -S` (isolated mode: no PYTHON* variables,
  no user site, no site-packages, so only the standard library is importable), in its own
  session (process group), with stdin closed (/dev/null), an empty temporary working
  directory that is deleted afterwards, and a minimal environment (PATH, C.UTF-8 locale,
  HOME and TMPDIR pointing at that directory);
- before any user code runs, sets hard resource limits on the child: CPU seconds
  (about the time limit), address space (`memory_bytes`, 256 MiB by default: large
  allocations raise MemoryError), file size (`file_size_bytes`: caps files the code writes
  and the child's own output files), open files, no core files, and a small RLIMIT_NPROC;
- enforces a wall-clock time limit: when it expires, the whole process group is killed
  with SIGKILL and the result is "error: time limit of X s exceeded". The group is also
  killed after a normal exit, so background children the code forked do not outlive it;
- returns what the code printed (stdout and stderr interleaved, capped at
  `max_output_chars`), plus the repr of a final bare expression as a REPL would; an
  uncaught exception gives ok=False with the exception's last traceback line.

What it does NOT protect against. It is a resource-limited subprocess, not a security
boundary against a hostile user with local privileges:

- the code runs as the same user as the service, so it can read and write whatever that
  user can (files outside the working directory included) and signal that user's other
  processes; run the service as an unprivileged user, and not as root: root ignores
  RLIMIT_NPROC and can raise its own limits;
- there is no network isolation (no network namespace): the code can open sockets;
- there is no filesystem, PID or IPC namespace, seccomp filter or chroot;
- RLIMIT_NPROC counts all processes of the user, so it only blocks forking when the user
  already runs that many; a child that calls setsid() leaves the process group and
  escapes the final kill (its CPU and memory limits still apply);
- the address-space limit bounds virtual memory per process, not the machine's memory.

The limits are set by the child runner itself rather than in a `preexec_fn`: the executor
calls tools from worker threads, and Python documents preexec_fn as unsafe (it can
deadlock) when the parent has threads. The runner sets both soft and hard limits before
compiling the user's code, so the code cannot raise them back.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from typing import IO

from agents.tools.base import ToolError, ToolResult, run_guarded

# Passed to the child in argv, whose entries Linux caps at 128 KiB each; 32k characters
# stay under that even when every character is 4 bytes of UTF-8.
MAX_CODE_CHARS = 32_000

# The first fenced block, if any: models usually wrap code in ```python ... ```. A
# missing closing fence (a truncated reply) still counts.
_FENCE = re.compile(
    r"```[ \t]*(?:python3?|py)?[ \t]*\r?\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE
)

# The child's program. argv: code, CPU s, address space B, file size B, open files,
# processes, output cap (characters). Exit status 0: success; 1: the code raised, and the
# last line of stderr is the error. Everything the user's code prints goes through a
# capture, so fd 2 carries only that error line.
_RUNNER = r"""
import ast, io, os, resource, sys, traceback

code = sys.argv[1]
cpu_s, memory, file_size, files, processes, cap = (int(a) for a in sys.argv[2:8])

def limit(kind, value):
    hard = resource.getrlimit(kind)[1]
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, value))

# CPU: the soft limit sends SIGXCPU; the hard limit, a second later, SIGKILL.
hard_cpu = resource.getrlimit(resource.RLIMIT_CPU)[1]
if hard_cpu == resource.RLIM_INFINITY or hard_cpu > cpu_s + 1:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
limit(resource.RLIMIT_AS, memory)
limit(resource.RLIMIT_FSIZE, file_size)
limit(resource.RLIMIT_CORE, 0)
limit(resource.RLIMIT_NOFILE, files)
limit(resource.RLIMIT_NPROC, processes)

class Capture(io.TextIOBase):
    def __init__(self, cap):
        self.parts, self.size, self.cap = [], 0, cap
    def writable(self):
        return True
    def write(self, text):
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not " + type(text).__name__)
        room = self.cap - self.size
        if room > 0:
            self.parts.append(text[:room])
            self.size += min(len(text), room)
        return len(text)
    @property
    def encoding(self):
        return "utf-8"

# One character more than the cap tells the parent that output was cut.
out = Capture(cap + 1)
sys.stdout = sys.stderr = out
sys.argv = [""]
error = None
try:
    tree = ast.parse(code, "<python>", "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    exec(compile(tree, "<python>", "exec"), namespace)
    if last is not None:
        value = eval(compile(last, "<python>", "eval"), namespace)
        if value is not None:
            print(repr(value))
except SystemExit as exc:
    if exc.code not in (None, 0):
        error = "SystemExit: " + str(exc.code)
except BaseException as exc:
    try:
        if isinstance(exc, SyntaxError):
            error = type(exc).__name__ + ": " + str(exc)
        else:
            error = traceback.format_exception_only(type(exc), exc)[-1].strip()
    except BaseException:
        error = type(exc).__name__
sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
text = "".join(out.parts)
# The error first: if the code already filled fd 1 up to RLIMIT_FSIZE (by writing to it
# directly), writing the captured text fails, and the error must not be lost with it.
for fd, data in ((2, None if error is None else error.replace("\n", " ") + "\n"), (1, text)):
    if data:
        try:
            os.write(fd, data.encode("utf-8", "replace"))
        except OSError:
            pass
# _exit: do not wait for threads the code started, nor run its atexit handlers.
os._exit(0 if error is None else 1)
"""

_SIGNAL_REASONS: dict[int, str] = {
    signal.SIGXCPU: "CPU time limit exceeded",
    signal.SIGXFSZ: "file size limit exceeded",
    signal.SIGKILL: "killed (SIGKILL): CPU or memory limit exceeded",
    signal.SIGSEGV: "crashed (SIGSEGV), possibly out of memory",
}


def extract_code(argument: str) -> str:
    """The code in a tool argument: the first ```python fenced block if there is one,
    else the whole argument; dedented, surrounding blank lines removed."""
    match = _FENCE.search(argument)
    code = match.group(1) if match else argument
    return textwrap.dedent(code).strip("\n").rstrip()


@dataclass(slots=True, frozen=True)
class PythonTool:
    """Runs Python code in a resource-limited subprocess; the result is what it printed."""

    name: str = "python"
    description: str = (
        "Runs a Python 3 snippet in a fresh, time- and memory-limited process (standard "
        "library only; files it writes are discarded) and returns what it prints; a final "
        "bare expression is printed as in a REPL. Wrap the code in ```python fences."
    )
    memory_bytes: int = 256 * 1024 * 1024  # RLIMIT_AS of the child
    file_size_bytes: int = 1024 * 1024  # RLIMIT_FSIZE of the child
    max_output_chars: int = 4_000  # longer output is cut, with a note saying so
    # RLIMIT_NOFILE: the interpreter needs a handful; the code gets a few more.
    max_open_files: int = 64
    max_processes: int = 8  # RLIMIT_NPROC (see the module docstring for its limits)

    def run(self, argument: str, *, time_limit_s: float) -> ToolResult:
        return run_guarded(lambda: self._run(argument, time_limit_s))

    def _run(self, argument: str, time_limit_s: float) -> str:
        if not (math.isfinite(time_limit_s) and time_limit_s > 0):
            raise ToolError(f"time limit must be a positive number of seconds: {time_limit_s}")
        code = extract_code(argument)
        if not code.strip():
            raise ToolError("no code to run")
        if len(code) > MAX_CODE_CHARS:
            raise ToolError(f"code longer than {MAX_CODE_CHARS} characters")
        if "\0" in code:
            raise ToolError("code contains a NUL character")
        with (
            tempfile.TemporaryDirectory(prefix="inflection-python-") as workdir,
            tempfile.TemporaryFile() as stdout,
            tempfile.TemporaryFile() as stderr,
        ):
            timed_out, returncode = self._spawn(code, time_limit_s, workdir, stdout, stderr)
            output = _read(stdout, self.max_output_chars)
            error = _tail(stderr, 2_000).strip().splitlines()
        if timed_out:
            raise ToolError(f"time limit of {time_limit_s:g} s exceeded")
        if returncode == 0:
            return output if output else "(no output; print() what you want to see)"
        if returncode == 1 and error:
            reason = error[-1]
        elif returncode < 0:
            reason = _SIGNAL_REASONS.get(-returncode, f"killed by {_signal_name(-returncode)}")
        else:
            reason = f"process exited with status {returncode}"
        if output:
            raise ToolError(f"{reason}\noutput before the error:\n{output}")
        raise ToolError(reason)

    def _spawn(
        self, code: str, time_limit_s: float, workdir: str, stdout: IO[bytes], stderr: IO[bytes]
    ) -> tuple[bool, int]:
        """Run the child to completion or the time limit; returns (timed out, exit status)."""
        # CPU seconds only back up the wall clock (which also catches sleeping code).
        cpu_s = math.ceil(time_limit_s) + 1
        limits = (
            cpu_s,
            self.memory_bytes,
            self.file_size_bytes,
            self.max_open_files,
            self.max_processes,
            self.max_output_chars,
        )
        env = {
            "PATH": os.defpath,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": workdir,
            "TMPDIR": workdir,
        }
        # Files, not pipes, take the output: nothing can block on a full pipe, and
        # RLIMIT_FSIZE caps what the child can write even past the runner's capture.
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _RUNNER, code, *map(str, limits)],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=workdir,
            env=env,
            close_fds=True,
            start_new_session=True,  # its own process group, killed as a whole below
        )
        try:
            returncode = process.wait(timeout=time_limit_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            returncode, timed_out = -signal.SIGKILL, True
        finally:
            _kill_group(process.pid)
            process.wait()
        return timed_out, returncode


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is already empty
    except PermissionError:
        pass  # only a setuid program the code ran is left; nothing more we can do


def _read(file: IO[bytes], max_chars: int) -> str:
    """At most max_chars characters of what the child wrote, with a note when there was
    more (the runner keeps max_chars + 1 so that it shows; code that writes to fd 1
    directly bypasses the runner but not this cut)."""
    file.seek(0)
    data = file.read((max_chars + 1) * 4).decode("utf-8", errors="replace")
    if len(data) <= max_chars:
        return data
    return f"{data[:max_chars]}\n... [output truncated at {max_chars} characters]"


def _tail(file: IO[bytes], max_bytes: int) -> str:
    """The end of what the child wrote: the runner writes its error line last."""
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - max_bytes))
    return file.read().decode("utf-8", errors="replace")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
