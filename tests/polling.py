"""Polling helpers for tests: wait for a condition instead of sleeping a fixed time,
so a test is as fast as the system under test and fails with a clear line when the
condition never holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


def wait_until(
    predicate: Callable[[], object], timeout: float, interval: float = 0.02, what: str = ""
) -> None:
    """Poll `predicate` until it is truthy; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout} s: {what or predicate}")
        time.sleep(interval)


async def async_wait_until(
    predicate: Callable[[], object],
    timeout: float,  # noqa: ASYNC109 (the same call shape as wait_until's)
    interval: float = 0.005,
    what: str = "",
) -> None:
    """`wait_until` for a coroutine: yields to the event loop between polls."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout} s: {what or predicate}")
        await asyncio.sleep(interval)
