"""Failed authentications at the OpenAI-compatible front door (aiohttp on loopback):
logged (rate-limited, never the token), and a client address that fails ten times gets
429 with Retry-After in OpenAI's error shape, before its token or body is looked at; the
count is the gRPC server's, so guesses on both listeners add up."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer

from agents import BUILTIN_PROGRAMS
from orchestrator.config import LimitsConfig
from orchestrator.server import auth
from orchestrator.server.auth import AuthFailures
from orchestrator.server.http import FrontDoor

from .test_auth_throttle import BAD, FakeClock, list_agents, refused, serve

TOKEN = "sekrit"
GUESS = "guess-0123456789"
RIGHT = {"Authorization": f"Bearer {TOKEN}"}
WRONG = {"Authorization": f"Bearer {GUESS}"}


@dataclass
class StubExecutor:
    programs: dict[str, Any] = field(default_factory=lambda: dict(BUILTIN_PROGRAMS))


async def started(failures: AuthFailures) -> TestClient[Any, Any]:
    door = FrontDoor(
        StubExecutor(),  # type: ignore[arg-type]
        "llama",
        LimitsConfig(),
        1000,
        auth_token=TOKEN,
        max_body_bytes=2048,
        auth_failures=failures,
    )
    client: TestClient[Any, Any] = TestClient(TestServer(door.app(), host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def client(clock: FakeClock) -> AsyncIterator[TestClient[Any, Any]]:
    client = await started(AuthFailures(clock=clock))
    try:
        yield client
    finally:
        await client.close()


async def test_ten_bad_keys_get_429_with_retry_after_in_openais_shape(
    client: TestClient[Any, Any], clock: FakeClock
) -> None:
    for headers in [WRONG] * 9 + [{}]:  # a missing key is a failure too
        assert (await client.get("/v1/models", headers=headers)).status == 401
    for headers in (WRONG, {}, RIGHT):  # even the right key: it would tell a guess
        locked = await client.get("/v1/models", headers=headers)
        assert locked.status == 429
        assert locked.headers["Retry-After"] == "60"
        assert locked.headers["retry-after-ms"] == "60000"
        assert await locked.json() == {
            "error": {
                "message": "too many failed authentications from 127.0.0.1; retry after 60 s",
                "type": "rate_limit_error",
                "param": None,
                "code": "resource_exhausted",
            }
        }
    # Refused before the body is read: no 413 for a body over the limit.
    huge = await client.post("/v1/chat/completions", data=b"x" * 100_000, headers=RIGHT)
    assert huge.status == 429

    clock.now += 30
    assert (await client.get("/v1/models", headers=RIGHT)).headers["Retry-After"] == "30"
    clock.now += 30
    models = await client.get("/v1/models", headers=RIGHT)
    assert models.status == 200
    assert (await models.json())["data"][-1]["id"] == "llama"
    assert (await client.get("/v1/models", headers=WRONG)).status == 401


async def test_failures_are_logged_rate_limited_with_the_peer_and_never_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    client = await started(AuthFailures(max_failures=1000))
    try:
        for _ in range(50):
            answer = await client.post("/v1/completions", json={}, headers=WRONG)
            assert answer.status == 401
    finally:
        await client.close()
    lines = [r for r in caplog.records if r.name == auth.__name__]
    assert [(r.levelno, r.getMessage()) for r in lines] == [
        (
            logging.WARNING,
            "failed authentication from 127.0.0.1 on POST /v1/completions: invalid bearer token",
        )
    ]
    assert not [r for r in caplog.records if GUESS in r.getMessage()]


async def test_guesses_on_grpc_and_http_add_up_when_they_share_the_count() -> None:
    failures = AuthFailures()
    server, port = await serve(failures)
    client = await started(failures)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            for _ in range(5):
                error = await refused(list_agents(chan, BAD))
                assert error.code() is grpc.StatusCode.UNAUTHENTICATED
            for _ in range(5):
                assert (await client.get("/v1/models", headers=WRONG)).status == 401
            # Locked out on both.
            assert (await client.get("/v1/models", headers=WRONG)).status == 429
            error = await refused(list_agents(chan, BAD))
            assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await client.close()
        await server.stop(grace=None)
