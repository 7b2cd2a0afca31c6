"""The README's `inflection simulate` example, run verbatim as a user would (in a scratch
folder holding the example config, so its reports land there)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _readme_command(prefix: str) -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Simulating a cluster", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block is not None
    line = next(row for row in block.group(1).splitlines() if row.startswith(prefix))
    return line.split("#", 1)[0].strip()


def test_readme_simulate_example_runs_verbatim(tmp_path: Path) -> None:
    command = _readme_command("inflection simulate")
    (tmp_path / "cluster").mkdir()
    shutil.copy(REPO / "cluster" / "sim-example.yaml", tmp_path / "cluster")
    argv = [str(BIN / "inflection"), *command.split()[1:]]
    done = subprocess.run(
        argv,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert done.returncode == 0, done.stderr
    printed = re.search(r"tasks completed\s*│\s*(\d+)", done.stdout)
    assert printed is not None, done.stdout
    assert "SLO met" in done.stdout
    report = orjson.loads((tmp_path / "reports" / "simulate.json").read_bytes())
    assert report["summary"]["tasks"] == int(printed.group(1)) > 1000
    html = (tmp_path / "reports" / "simulate.html").read_text()
    assert html.count("<svg") >= 4
    # The simulation is deterministic: the README's tables are exactly what it prints.
    assert _table_rows(done.stdout) == _table_rows(_readme_output()), (
        "README's simulate tables are stale; paste the new output:\n" + done.stdout
    )


def _readme_output() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Simulating a cluster", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\n(inflection simulate:.*?)```", section, flags=re.S)
    assert block is not None, "the README lost its simulate output block"
    return block.group(1)


def _table_rows(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.startswith("│")]


# ---- Ctrl-C, for real: SIGINT to the process a user started ---------------------------------


def _interrupt_when(
    argv: list[str], cwd: Path, ready: str, delay: float = 0.0
) -> tuple[int, str, str]:
    """Start `argv`, wait for a stderr line containing `ready` and `delay` seconds more,
    send SIGINT; return the exit code, stdout and the whole stderr."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if ready in line:
                break
        else:
            raise AssertionError(f"never printed {ready!r}:\n{''.join(seen)}")
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        return proc.returncode, out, "".join(seen) + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ctrl_c_stops_simulate_with_the_partial_summary(tmp_path: Path) -> None:
    config = str(REPO / "cluster" / "sim-example.yaml")
    argv = [str(BIN / "inflection"), "simulate", "--config", config, "--replicas", "2",
            "--rate", "5", "--duration", "100000", "--out", str(tmp_path)]  # fmt: skip
    # 3 s of wall time is well past the 30 simulated seconds of warm-up (the run goes at
    # tens of times real time); on a machine slow enough to measure nothing by then, the
    # command must say so instead of printing a table.
    code, out, err = _interrupt_when(argv, tmp_path, "Ctrl-C stops", delay=3.0)
    assert code == 130, err
    assert len([line for line in err.splitlines() if "interrupted" in line]) == 1, err
    assert "Traceback" not in err
    if "no tasks measured yet" not in err:
        assert re.search(r"tasks completed\s*│\s*\d+", out), out
        report = orjson.loads((tmp_path / "simulate.json").read_bytes())
        assert report["extra"]["interrupted"] is True


def test_ctrl_c_stops_plan_and_keeps_the_finished_rows(tmp_path: Path) -> None:
    argv = [str(BIN / "inflection"), "plan", "--model", "llama-3.1-8b", "--gpus", "h100,b200",
            "--tp", "1", "--replicas", "1", "--duration", "3",
            "--slo", "task_latency_p99=2.5s", "--out", str(tmp_path)]  # fmt: skip
    code, out, err = _interrupt_when(argv, tmp_path, "h100 tp1: max")
    assert code == 130, err
    assert len([line for line in err.splitlines() if "interrupted" in line]) == 1, err
    assert "Traceback" not in err
    assert re.search(r"│ h100 │\s+1 │\s+[\d.]+ │", out), out
    report = orjson.loads((tmp_path / "plan.json").read_bytes())
    assert report["query"]["interrupted"] is True
    assert [r["gpu"] for r in report["rows"]] == ["h100"]


def test_readme_plan_example_prints_the_readme_table(tmp_path: Path) -> None:
    """The planner is deterministic (seeded simulations on a virtual clock): the README's
    plan table is exactly what its first example prints today."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Capacity planning", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block is not None
    command = block.group(1).splitlines()[0].split("#", 1)[0].strip()
    shown = re.search(r"```\n(SLO: .*?)```", section, flags=re.S)
    assert shown is not None, "the README lost its plan output block"
    done = subprocess.run(
        [str(BIN / "inflection"), *command.split()[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert _table_rows(done.stdout) == _table_rows(shown.group(1)), (
        "README's plan table is stale; paste the new output:\n" + done.stdout
    )
    assert "cheapest per task meeting the SLO" in done.stdout
