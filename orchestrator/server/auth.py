"""Bearer-token authentication for the gRPC server (optional, from config), and the
throttling of failed authentications shared with the HTTP front door.

The interceptor picks the handler before gRPC reads the request body, so a refused call
is answered without its body being parsed. Health checks stay open so load balancers and
orchestrators can probe the server.

Failed authentications are counted per peer (client IP address) in `AuthFailures`; a
peer with too many is locked out for a while, during which every call it makes is
refused before its token is looked at: were a right token let in, the lock-out would
still tell a guesser which guess was right. The cost is that clients sharing an address
with a guesser (one NAT, one proxy) are locked out with it."""

from __future__ import annotations

import contextlib
import hmac
import inspect
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, cast
from urllib.parse import unquote

import grpc

from orchestrator.protocol import AUTHORIZATION, RETRY_AFTER_TRAILER
from orchestrator.server.edge import RateLimitedLog

log = logging.getLogger(__name__)

_OPEN_PREFIXES = ("/grpc.health.v1.Health/",)

Context = grpc.aio.ServicerContext[Any, Any]


def peer_address(peer: str) -> str:
    """The client's address from gRPC's `context.peer()` without its port:
    "ipv4:127.0.0.1:54321" -> "127.0.0.1", "ipv6:[::1]:5432" -> "::1" (also when gRPC
    percent-encodes the brackets); anything else (a unix socket) whole."""
    kind, _, rest = unquote(peer).partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        host = rest.rpartition(":")[0] if "]" in rest else rest
        return host.strip("[]")
    return peer


@dataclass(slots=True)
class _Peer:
    """What is known of one peer's failed authentications."""

    # When its failures since its last lock-out happened (those within the window count).
    failures: deque[float]
    last_failure: float
    # Locked out until then (monotonic clock); -inf: never locked out.
    locked_until: float = -math.inf
    # Lock-outs so far: each is twice as long as the one before (up to max_lockout_s).
    lockouts: int = 0


@dataclass(slots=True)
class AuthFailures:
    """Failed authentications per peer, and the lock-out of a peer with too many.

    `max_failures` failures within `window_s` lock a peer out for `lockout_s`, twice as
    long for each further lock-out up to `max_lockout_s`; a peer quiet for `max_lockout_s`
    after its lock-out ends starts afresh. While locked out a peer's calls are refused
    without their token being checked, so they are not failures and do not lengthen the
    lock-out. A success does not clear a peer's failures: a guesser sharing an address
    with a client that has the token would otherwise guess without limit. At most
    `max_peers` peers are remembered (the one whose last failure is oldest is forgotten
    first), so failures from many addresses cannot grow this without bound.

    One instance serves both listeners (gRPC and HTTP) of a server: a guesser does not
    get twice the guesses by using both. Each failure is logged at WARNING with the peer
    and what it called (never the token), at most once per `log_every_s` per peer; each
    lock-out once, when it starts."""

    max_failures: int = 10
    window_s: float = 60.0
    lockout_s: float = 60.0
    max_lockout_s: float = 900.0
    max_peers: int = 10_000
    log_every_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    # Peers by the time of their last failure, oldest first.
    _peers: OrderedDict[str, _Peer] = field(default_factory=OrderedDict, repr=False)
    # No peer is locked out from then on (the latest end of a lock-out): the check on
    # the hot path when nobody is locked out is one comparison.
    _all_unlocked_at: float = -math.inf
    _lines: RateLimitedLog = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.max_peers < 1:
            raise ValueError("max_failures and max_peers must be at least 1")
        self._lines = RateLimitedLog(
            every_s=self.log_every_s, clock=self.clock, logger=log, max_keys=self.max_peers
        )

    def anyone_locked_out(self) -> bool:
        return self.clock() < self._all_unlocked_at

    def locked_out(self, peer: str) -> float | None:
        """Seconds until `peer` may try again, None when it is not locked out."""
        now = self.clock()
        if now >= self._all_unlocked_at:
            return None
        state = self._peers.get(peer)
        if state is None or now >= state.locked_until:
            return None
        return state.locked_until - now

    def failed(self, peer: str) -> float | None:
        """Count a failed authentication from `peer` (not locked out); returns the length
        of the lock-out it starts, None when it starts none."""
        now = self.clock()
        state = self._peers.get(peer)
        if state is not None and now < state.locked_until:
            return None  # refused unchecked: not a guess
        if state is None or now - max(state.last_failure, state.locked_until) >= (
            self.max_lockout_s
        ):
            state = _Peer(deque(maxlen=self.max_failures), now)
        self._peers.pop(peer, None)
        while len(self._peers) >= self.max_peers:
            self._peers.popitem(last=False)
        self._peers[peer] = state
        state.last_failure = now
        state.failures.append(now)
        while state.failures and now - state.failures[0] >= self.window_s:
            state.failures.popleft()
        if len(state.failures) < self.max_failures:
            return None
        lockout = min(self.lockout_s * 2.0 ** min(state.lockouts, 30), self.max_lockout_s)
        state.lockouts += 1
        state.failures.clear()
        state.locked_until = now + lockout
        self._all_unlocked_at = max(self._all_unlocked_at, state.locked_until)
        return lockout

    def record(self, peer: str, where: str, reason: str) -> None:
        """Count and log a failed authentication from `peer` calling `where` (a method
        or an HTTP route); `reason` says what was wrong, never what the token was."""
        self._lines.warning(peer, f"failed authentication from {peer} on {where}: {reason}")
        lockout = self.failed(peer)
        if lockout is not None:
            log.warning(
                "%s locked out for %g s after %d failed authentications within %g s",
                peer,
                lockout,
                self.max_failures,
                self.window_s,
            )


def lockout_message(peer: str, retry_after_s: float) -> str:
    return (
        f"too many failed authentications from {peer}; "
        f"retry after {max(1, math.ceil(retry_after_s))} s"
    )


async def _refuse_locked_out(context: Context, peer: str, retry_after_s: float) -> NoReturn:
    context.set_trailing_metadata(((RETRY_AFTER_TRAILER, str(round(retry_after_s * 1000))),))
    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, lockout_message(peer, retry_after_s))


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token: str, failures: AuthFailures | None = None) -> None:
        self._expected = f"Bearer {token}".encode()
        self._failures = failures if failures is not None else AuthFailures()

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = metadata.get(AUTHORIZATION, "")
        given_bytes = given.encode() if isinstance(given, str) else bytes(given)
        if hmac.compare_digest(given_bytes, self._expected):
            # The peer is only known inside the handler: the common case (nobody locked
            # out) keeps the handler untouched; otherwise the call's peer is checked first.
            if self._failures.anyone_locked_out():
                return _checking_peer(handler, self._failures)
            return handler
        if not given:
            message = "missing authorization metadata; send 'authorization: Bearer <token>'"
            return _denying(handler, method, message, "no token", self._failures)
        message = "invalid bearer token"
        return _denying(handler, method, message, message, self._failures)


def _denying(
    handler: grpc.RpcMethodHandler[Any, Any],
    method: str,
    message: str,
    reason: str,
    failures: AuthFailures,
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` answering UNAUTHENTICATED with `message` (a failure counted against the
    caller, `reason` logged), or RESOURCE_EXHAUSTED to a caller locked out."""

    async def deny(context: Context) -> None:
        peer = peer_address(context.peer())
        retry_after_s = failures.locked_out(peer)
        if retry_after_s is not None:
            await _refuse_locked_out(context, peer, retry_after_s)
        failures.record(peer, method, reason)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def deny_unary(request: Any, context: Context) -> Any:
        await deny(context)

    async def deny_stream(request: Any, context: Context) -> Any:
        await deny(context)
        yield  # pragma: no cover (makes this an async generator)

    # No request deserializer: a refused body stays raw bytes, never parsed (nor logged
    # when it is not a valid message), so a client without a token reaches no parser.
    kwargs = {"request_deserializer": None, "response_serializer": handler.response_serializer}
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **kwargs)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(deny_stream, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny_unary, **kwargs)
    return grpc.unary_unary_rpc_method_handler(deny_unary, **kwargs)


def _checking_peer(
    handler: grpc.RpcMethodHandler[Any, Any], failures: AuthFailures
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` behind a check of its caller's lock-out, which comes before the body is
    parsed: grpc.aio parses a single request before the handler runs, so here the
    wrapper parses it after the check; a request stream is parsed as it is read."""
    deserialize = handler.request_deserializer

    async def check(context: Context) -> None:
        peer = peer_address(context.peer())
        retry_after_s = failures.locked_out(peer)
        if retry_after_s is not None:
            await _refuse_locked_out(context, peer, retry_after_s)

    def parsed(raw: Any) -> Any:
        return deserialize(raw) if deserialize is not None else raw

    # grpc.aio tells a streaming handler that yields from one that calls context.write()
    # by its kind of function: each wrapper is of its handler's kind. (This server's
    # handlers are all async; a sync one would run in the event loop here.)
    def guarded(
        behaviour: Callable[..., Any], request_of: Callable[[Any], Any]
    ) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behaviour):

            async def yielding(request: Any, context: Context) -> AsyncIterator[Any]:
                await check(context)
                async with contextlib.aclosing(behaviour(request_of(request), context)) as items:
                    async for item in items:
                        yield item

            return yielding

        async def awaiting(request: Any, context: Context) -> Any:
            await check(context)
            result = behaviour(request_of(request), context)
            return await result if inspect.isawaitable(result) else result

        return awaiting

    def identity(request: Any) -> Any:
        return request

    serializer = handler.response_serializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            guarded(handler.unary_unary, parsed),
            request_deserializer=None,
            response_serializer=serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            guarded(handler.unary_stream, parsed),
            request_deserializer=None,
            response_serializer=serializer,
        )
    kwargs = {"request_deserializer": deserialize, "response_serializer": serializer}
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            guarded(handler.stream_unary, identity), **kwargs
        )
    stream_stream = cast(Callable[..., Any], handler.stream_stream)  # the one kind left
    return grpc.stream_stream_rpc_method_handler(guarded(stream_stream, identity), **kwargs)
