"""Arrival trace files; a malformed one raises TraceError naming the file and line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson

from orchestrator.workload.arrivals import Arrival


class TraceError(ValueError):
    """A trace line that cannot be used; the message names the file and line."""


def read_trace(path: Path, speedup: float, duration_s: float) -> Iterator[Arrival]:
    """A trace's arrivals within [0, duration_s), in time order (a trace need not be
    sorted); raises TraceError naming the file and line of a malformed entry."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror}") from exc
    entries: list[Arrival] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
            at = float(row["timestamp"]) / 1000.0 / speedup
            agent = row.get("agent")
            length = row.get("input_length")
            if at < 0 or (length is not None and int(length) < 1):
                raise ValueError("negative timestamp or input_length < 1")
            if agent is not None and not isinstance(agent, str):
                raise ValueError("agent must be a string")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise TraceError(f"{path}:{number}: bad trace line ({exc})") from None
        if at < duration_s:
            entries.append(Arrival(at, agent, int(length) if length is not None else None))
    entries.sort(key=lambda a: a.at)
    yield from entries
