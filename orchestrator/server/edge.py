"""The Orchestrator service's registration with grpc.aio, hardened against hostile bodies.

The generated `add_OrchestratorServicer_to_server` parses request bodies with
`Message.FromString`; when that raises, grpc.aio logs a traceback at ERROR and answers
UNKNOWN. Here each method gets a deserializer that turns an unparseable body into a
sentinel and a handler that answers it with INVALID_ARGUMENT and one rate-limited log line.
Interceptors (auth) still run first: they choose the handler before the body is read.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from orchestrator.api.v1 import inflection_pb2 as pb
from orchestrator.server.servicer import OrchestratorServicer

log = logging.getLogger(__name__)

SERVICE_NAME: Final = pb.DESCRIPTOR.services_by_name["Orchestrator"].full_name

Request = TypeVar("Request", bound=Message)
Response = TypeVar("Response", bound=Message)
Context = grpc.aio.ServicerContext[Any, Any]


class Unparseable:
    """Stands in for a request body that is not a valid message of the method's type."""

    __slots__ = ()


UNPARSEABLE: Final = Unparseable()


@dataclass(slots=True)
class RateLimitedLog:
    """At most one line per `every_s` per key (a method, a peer); the next line that gets
    through says how many were suppressed since, so a flood of bad requests stays readable."""

    every_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    logger: logging.Logger = log  # where the lines go
    # Keys remembered at most; past it the key written longest ago is forgotten (its next
    # line is written), so a flood from many peers cannot grow this without bound.
    max_keys: int = 10_000
    # key -> (when its last line was written, lines suppressed since); oldest line first
    _last: dict[str, tuple[float, int]] = field(default_factory=dict)

    def admit(self, key: str) -> int | None:
        """None: suppress this line. Otherwise write it, with this many suppressed before."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.every_s:
            self._last[key] = (last[0], last[1] + 1)
            return None
        self._last.pop(key, None)  # re-inserted last: the dict stays in order of lines
        while len(self._last) >= self.max_keys:
            del self._last[next(iter(self._last))]
        self._last[key] = (now, 0)
        return last[1] if last is not None else 0

    def warning(self, key: str, message: str) -> None:
        suppressed = self.admit(key)
        if suppressed is None:
            return
        if suppressed:
            message += f" ({suppressed} more like it in the last {self.every_s:g} s not logged)"
        self.logger.warning("%s", message)


BAD_BODIES = RateLimitedLog()


def parse(message: type[Request], data: bytes) -> Request | Unparseable:
    try:
        return message.FromString(data)
    except DecodeError:
        return UNPARSEABLE


def _deserializer(message: type[Request]) -> Callable[[bytes], Request | Unparseable]:
    # Looks `parse` up at call time, so a test can observe whether a body was parsed.
    return lambda data: parse(message, data)


async def _reject(context: Context, method: str, message: type[Message]) -> NoReturn:
    name = message.DESCRIPTOR.full_name
    BAD_BODIES.warning(
        method, f"{method}: refused a body that is not a valid {name} ({context.peer()})"
    )
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"request body is not a valid {name}")


def _unary(
    method: str,
    message: type[Request],
    behaviour: Callable[[Request, Context], Awaitable[Response]],
    response: type[Response],
) -> grpc.RpcMethodHandler[Any, Any]:
    async def guarded(request: Request | Unparseable, context: Context) -> Response:
        if isinstance(request, Unparseable):
            await _reject(context, method, message)
        return await behaviour(request, context)

    return grpc.unary_unary_rpc_method_handler(
        guarded,
        request_deserializer=_deserializer(message),
        response_serializer=response.SerializeToString,
    )


def _streaming(
    method: str,
    message: type[Request],
    behaviour: Callable[[Request, Context], AsyncIterator[Response]],
    response: type[Response],
) -> grpc.RpcMethodHandler[Any, Any]:
    async def guarded(request: Request | Unparseable, context: Context) -> AsyncIterator[Response]:
        if isinstance(request, Unparseable):
            await _reject(context, method, message)
        # aclosing: a cancelled or abandoned stream closes the servicer's generator at
        # once, so its cleanup (engine aborts) runs now rather than at garbage collection.
        async with contextlib.aclosing(behaviour(request, context)) as responses:  # type: ignore[type-var]
            async for item in responses:
                yield item

    return grpc.unary_stream_rpc_method_handler(
        guarded,
        request_deserializer=_deserializer(message),
        response_serializer=response.SerializeToString,
    )


def orchestrator_handlers(
    servicer: OrchestratorServicer,
) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """The service's method handlers by method name, as the generated code builds them
    but with tolerant deserializers."""

    def path(name: str) -> str:
        return f"/{SERVICE_NAME}/{name}"

    return {
        "RunTask": _streaming(path("RunTask"), pb.TaskRequest, servicer.RunTask, pb.TaskEvent),
        "Run": _unary(path("Run"), pb.TaskRequest, servicer.Run, pb.TaskResult),
        "Generate": _streaming(
            path("Generate"), pb.GenerateRequest, servicer.Generate, pb.GenerateChunk
        ),
        "ListAgents": _unary(
            path("ListAgents"), pb.ListAgentsRequest, servicer.ListAgents, pb.ListAgentsResponse
        ),
        "GetClusterStatus": _unary(
            path("GetClusterStatus"),
            pb.GetClusterStatusRequest,
            servicer.GetClusterStatus,
            pb.ClusterStatus,
        ),
    }


def add_orchestrator_to_server(servicer: OrchestratorServicer, server: grpc.aio.Server) -> None:
    """Register the servicer in place of the generated `add_OrchestratorServicer_to_server`."""
    handlers = orchestrator_handlers(servicer)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
