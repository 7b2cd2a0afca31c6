"""Bad input against the real server: a clear status naming the field and the limit,
never a traceback, and the server keeps serving."""

from __future__ import annotations

import logging

import grpc
import pytest

from orchestrator.client import (
    Client,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
)
from tests.polling import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def client(live_server):  # type: ignore[no-untyped-def]
    with Client(live_server.address, timeout=120) as c:
        yield c


def test_unknown_agent_is_not_found(client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NotFound) as info:
        client.run("no_such_agent", "hello")
    assert info.value.code is grpc.StatusCode.NOT_FOUND
    assert "no_such_agent" in info.value.details


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"input": "   "}, ["input", "empty"]),
        ({"max_tokens": 0}, ["sampling.max_tokens", "1024"]),
        ({"max_tokens": 5000}, ["sampling.max_tokens", "1024"]),
        ({"step_max_tokens": {"critic": 8}}, ["step_max_tokens", "critic", "planner"]),
        ({"step_max_tokens": {"worker": 0}}, ["step_max_tokens", "worker"]),
        ({"input": "plan the plan " * 8000}, ["input", "max_model_len", "16384"]),
    ],
)
def test_invalid_task_requests_name_the_field(client, kwargs, names) -> None:  # type: ignore[no-untyped-def]
    options = dict(kwargs)
    text = options.pop("input", "Plan a trip.")
    with pytest.raises(InvalidArgument) as info:
        client.run("plan_execute", text, **options)
    for name in names:
        assert name in info.value.details, info.value.details
    assert "Traceback" not in info.value.details


def test_generate_prompt_longer_than_the_context(client, live_server) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument) as info:
        list(client.generate([5 + i % 400 for i in range(live_server.max_model_len)], max_tokens=4))
    assert "max_model_len" in info.value.details


def test_generate_rejects_tokens_outside_the_vocabulary(client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument) as info:
        list(client.generate([1, 2, 10_000_000], max_tokens=2))
    assert "prompt_token_ids[2]" in info.value.details


def test_deadline_ends_the_task_with_its_partial_usage(client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DeadlineExceeded) as info:
        client.run(
            "plan_execute",
            "Plan a trip.",
            step_max_tokens={"planner": 4, "worker": 250},
            deadline_s=0.8,
        )
    usage = info.value.usage
    assert usage is not None
    assert usage.llm_calls >= 1  # the planner finished before the deadline
    assert usage.output_tokens_total >= 4
    # The task's calls are aborted as it ends; the aborts reach the engine off the
    # task's path (batched per replica), so the engine lets go of them a moment later.
    wait_until(
        lambda: sum(r.unfinished_requests for r in client.cluster_status().replicas) == 0,
        timeout=3.0,
        interval=0.05,
        what="the engine let go of the deadline's aborted calls",
    )


def test_server_keeps_serving_after_errors(client) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        with pytest.raises(InvalidArgument):
            client.run("plan_execute", "")
    assert client.run("plan_execute", "Plan a trip.", max_tokens=4).usage.llm_calls == 5


def test_unparseable_body_is_invalid_argument_and_logged_once(  # type: ignore[no-untyped-def]
    client, live_server, caplog
) -> None:
    caplog.set_level(logging.INFO)
    with grpc.insecure_channel(live_server.address) as channel:
        run = channel.unary_unary("/inflection.v1.Orchestrator/Run")
        for _ in range(10):
            with pytest.raises(grpc.RpcError) as info:
                run(b"\x0a\xff", timeout=30)  # a length that never ends: no message parses
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details() == "request body is not a valid inflection.v1.TaskRequest"
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len([r for r in caplog.records if "inflection.v1.TaskRequest" in r.getMessage()]) == 1
    assert client.run("plan_execute", "Plan a trip.", max_tokens=4).usage.llm_calls == 5


def test_a_20_kb_agent_name_is_not_found_with_a_short_message(client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NotFound) as info:
        client.run("x" * 20_000, "hello")
    assert "(20000 chars)" in info.value.details
    assert len(info.value.details) < 200
