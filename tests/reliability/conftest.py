"""The reliability suite's frame: every test here is marked `reliability`, and records
the figures it measured through the session fixture `figures`; the session ends by
printing them as one table and, with RELIABILITY_JSON=path, writing them as JSON.

    .venv/bin/pytest tests/reliability -q -s
    RELIABILITY_JSON=build/reliability.json .venv/bin/pytest tests/reliability -q

Adding a scenario: a module `tests/reliability/test_<scenario>.py` whose tests take
`figures` and call `figures.record(scenario, what, value, unit, bound)` for each number
they assert, *before* asserting it (a failed bound is still printed).

The whole suite is held to 6 minutes on a 2-core machine (it runs in `make test`)."""

from __future__ import annotations

import io
import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

RELIABILITY_JSON = "RELIABILITY_JSON"
_HERE = Path(__file__).resolve().parent


@dataclass(slots=True, frozen=True)
class Figure:
    scenario: str  # the name of the scenario, e.g. "replica killed under load"
    what: str  # the quantity, e.g. "tasks lost"
    value: float | int | str
    unit: str  # "s", "ms", "" (a count) ...
    bound: str  # what the test holds it to, e.g. "= 0", "< 60"; "" when only reported


@dataclass
class Figures:
    """The figures of one session, in the order they were recorded."""

    rows: list[Figure] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(
        self, scenario: str, what: str, value: float | int | str, unit: str = "", bound: str = ""
    ) -> None:
        with self._lock:
            self.rows.append(Figure(scenario, what, value, unit, bound))


_FIGURES = Figures()


@pytest.fixture(scope="session")
def figures() -> Figures:
    return _FIGURES


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.reliability)
            item.add_marker(pytest.mark.slow)


def _shown(value: float | int | str) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _FIGURES.rows:
        return
    from rich.console import Console
    from rich.table import Table

    from orchestrator.tables import print_table

    table = Table(title="reliability figures", title_justify="left")
    for header in ("scenario", "figure", "value", "unit", "bound"):
        table.add_column(header, justify="right" if header == "value" else "left")
    for row in _FIGURES.rows:
        table.add_row(row.scenario, row.what, _shown(row.value), row.unit, row.bound)
    out = io.StringIO()
    print_table(Console(file=out), table)
    terminalreporter.write_sep("=", "reliability figures")
    terminalreporter.write(out.getvalue())
    path = os.environ.get(RELIABILITY_JSON)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps([asdict(row) for row in _FIGURES.rows], indent=2) + "\n")
        terminalreporter.write_line(f"reliability figures written to {path}")
