"""The python tool: output, errors, and the time, memory and process limits a user relies on."""

from __future__ import annotations

import os
import time
from pathlib import Path

from agents.tools.base import ToolResult
from agents.tools.sandbox import PythonTool, extract_code
from tests.polling import wait_until

python = PythonTool()


def run(code: str, time_limit_s: float = 5.0) -> ToolResult:
    return python.run(code, time_limit_s=time_limit_s)


def test_returns_what_the_code_prints() -> None:
    result = run("for i in range(3):\n    print(i * i)")
    assert result.ok
    assert result.text == "0\n1\n4\n"


def test_final_expression_is_shown_like_a_repl() -> None:
    assert run("x = 6\nx * 7").text == "42\n"
    assert run("print('only once')").text == "only once\n"
    assert run("x = 1").text.startswith("(no output")


def test_fenced_code_is_unwrapped() -> None:
    argument = "Let me compute it.\n```python\nimport math\nprint(math.factorial(5))\n```\nDone."
    assert run(argument).text == "120\n"
    assert extract_code("```py\n    a = 1\n    a\n") == "a = 1\na"


def test_exception_fails_with_its_last_traceback_line() -> None:
    result = run("print('before')\n{}['missing']")
    assert not result.ok
    assert result.text.startswith("error: KeyError: 'missing'")
    assert "before" in result.text
    syntax = run("def f(:")
    assert not syntax.ok
    assert syntax.text.startswith("error: SyntaxError")


def test_infinite_loop_hits_the_time_limit() -> None:
    start = time.perf_counter()
    result = run("while True:\n    pass", time_limit_s=0.5)
    elapsed = time.perf_counter() - start
    assert not result.ok
    assert result.text == "error: time limit of 0.5 s exceeded"
    assert 0.5 <= elapsed < 1.5


def test_sleeping_code_hits_the_wall_clock_limit() -> None:
    start = time.perf_counter()
    result = run("import time\ntime.sleep(30)", time_limit_s=0.5)
    assert result.text == "error: time limit of 0.5 s exceeded"
    assert time.perf_counter() - start < 1.5


def test_memory_bombs_fail_without_hurting_the_caller() -> None:
    big = run("x = bytearray(8 * 1024**3)")
    assert not big.ok
    assert "MemoryError" in big.text
    growing = run("chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))")
    assert not growing.ok
    assert "MemoryError" in growing.text


def test_output_is_capped() -> None:
    result = run("print('x' * 100_000)")
    assert result.ok
    assert result.text.startswith("x" * 4_000)
    assert result.text.endswith("[output truncated at 4000 characters]")
    assert len(result.text) < 4_100
    # Writing to fd 1 directly skips the runner's capture but not the cap.
    raw = run("import os\nos.write(1, b'y' * 3_000_000)")
    assert raw.text.startswith("y" * 4_000)
    assert len(raw.text) < 4_100


def test_runs_in_an_empty_directory_with_a_minimal_environment() -> None:
    code = "import os, sys\nprint(os.listdir('.'))\nprint(sorted(os.environ))\nprint(sys.argv)"
    result = run(code)
    assert result.text == "[]\n['HOME', 'LANG', 'LC_ALL', 'PATH', 'TMPDIR']\n['']\n"
    workdir = run("import os\nprint(os.getcwd())").text.strip()
    assert not Path(workdir).exists()  # removed after the run


def test_stdin_is_closed_and_files_are_size_limited() -> None:
    assert run("input()").text.startswith("error: EOFError")
    big_file = run("open('f', 'wb').write(b'0' * 10_000_000)")
    assert not big_file.ok
    assert "File too large" in big_file.text


def test_site_packages_are_not_importable() -> None:
    # Isolated mode without site: only the standard library.
    result = run("import pytest")
    assert result.text.startswith("error: ModuleNotFoundError")


def test_background_children_are_killed_with_the_run() -> None:
    code = (
        "import os, time\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "print(pid)"
    )
    result = run(code)
    assert result.ok, result.text
    child = int(result.text)
    wait_until(lambda: not _alive(child), timeout=2.0, what=f"child {child} killed")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a killed child the init process has not reaped yet


def test_bad_arguments() -> None:
    assert run("").text == "error: no code to run"
    assert run("print(1)", time_limit_s=0).text.startswith("error: time limit must be a positive")
    assert run("x = 1\n" * 10_000).text.startswith("error: code longer than")


def test_error_line_survives_noise_on_stderr() -> None:
    code = "import os\nos.write(2, b'noise\\n' * 100_000)\nraise RuntimeError('the real one')"
    result = run(code)
    assert result.text == "error: RuntimeError: the real one"
