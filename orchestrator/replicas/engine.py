"""The `Engine` seam: what serves calls inside one replica.

An engine takes `CallRequest`s and produces output deltas followed by one `CallResult`
carrying usage and engine-side timings. Two engines implement it: `VllmEngine` (vLLM, on
GPUs or vLLM's CPU build) and `SimEngine` (a simulated GPU, `orchestrator/sim/`), so the
replica actor, the pool, the executor and the tests do not depend on which one serves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from orchestrator.domain import CallDelta, CallRequest, CallResult, EngineStats, ErrorCode


class EngineError(Exception):
    """A call the engine refused or failed; `code` says whose fault it is."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        # Both in args, so the exception pickles across Ray intact.
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


class Engine(Protocol):
    @property
    def name(self) -> str:
        """Backend name, e.g. "vllm"."""
        ...

    @property
    def max_model_len(self) -> int: ...

    async def start(self) -> None: ...

    def generate(
        self, call: CallRequest, *, stream: bool = True
    ) -> AsyncIterator[CallDelta | CallResult]:
        """Deltas as tokens are produced (none when `stream` is False), then exactly one
        CallResult.

        Cancelling the consumer aborts the request inside the engine.
        """
        ...

    async def abort(self, call_id: str) -> None: ...

    async def abort_many(self, call_ids: Sequence[str]) -> None:
        """Abort a batch of calls at once (ids not running are ignored); each aborted
        call's `generate` ends with a CallResult of finish reason ABORT."""
        ...

    def stats(self) -> EngineStats: ...

    async def shutdown(self) -> None: ...
