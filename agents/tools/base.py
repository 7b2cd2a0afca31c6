"""The contract between a tool step and a real tool: the `Tool` protocol and its result.

The executor calls `Tool.run` in a worker thread (asyncio.to_thread), so a tool must be
thread-safe and must never raise: every failure comes back as a `ToolResult` with
ok=False and text starting "error: ", which the program then sees as the observation.
`run_guarded` gives each built-in tool that behaviour in one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

ERROR_PREFIX = "error: "


@dataclass(slots=True, frozen=True)
class ToolResult:
    """What one tool run produced."""

    # The observation the program sees: the tool's output, or "error: ..." on failure.
    text: str
    ok: bool  # False when the tool failed; `text` then says why
    elapsed_s: float  # wall-clock time of the run, measured inside the tool


@runtime_checkable
class Tool(Protocol):
    """A real tool a tool step can call by name.

    `name` and `description` are read-only so that frozen dataclasses satisfy the protocol.
    """

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    def run(self, argument: str, *, time_limit_s: float) -> ToolResult:
        """Run once on `argument`; thread-safe, never raises."""
        ...


class ToolError(Exception):
    """A failure the caller should see as the observation (bad input, user-code error)."""


def run_guarded(body: Callable[[], str]) -> ToolResult:
    """Run a tool body, timing it and turning every exception into a failed result."""
    start = time.perf_counter()
    try:
        text = body()
    except ToolError as error:
        return ToolResult(f"{ERROR_PREFIX}{error}", False, time.perf_counter() - start)
    # A tool must never raise into the executor's thread, whatever went wrong inside it.
    except Exception as error:  # noqa: BLE001
        text = f"{ERROR_PREFIX}internal tool failure: {type(error).__name__}: {error}"
        return ToolResult(text, False, time.perf_counter() - start)
    return ToolResult(text, True, time.perf_counter() - start)
