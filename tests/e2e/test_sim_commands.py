"""The README's `inflection simulate` example, run verbatim as a user would (in a scratch
folder holding the example config, so its reports land there)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
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
