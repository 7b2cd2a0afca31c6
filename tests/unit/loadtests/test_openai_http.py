"""The OpenAI target's pure parts: request bodies, failure causes (of a stream the fold
refused too: the fold itself is tests/unit/test_openai_stream.py's), the host URL,
/v1/models and the affinity headers."""

from __future__ import annotations

import json

import pytest

from loadtests.openai_http import (
    DEFAULT_AFFINITY_HEADERS,
    CallFailure,
    Endpoint,
    StreamFold,
    chat_body,
    classify_status,
    completions_body,
    stream_failure,
)
from loadtests.openai_user import TargetError, check_models, parse_affinity_headers
from orchestrator.domain import Sampling
from orchestrator.openai_stream import StreamError


def _chunk(text: str = "", ids: list[int] | None = None, finish: str | None = None) -> str:
    choice = {"index": 0, "text": text, "token_ids": ids, "finish_reason": finish}
    return json.dumps({"choices": [choice]})


def test_completions_body_streams_token_ids_with_usage() -> None:
    body = completions_body("m", (1, 2, 3), Sampling(max_tokens=7, ignore_eos=True), priority=4)
    assert body["prompt"] == [1, 2, 3] and body["max_tokens"] == 7
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["ignore_eos"] is True and body["return_token_ids"] is True
    assert body["priority"] == 4
    plain = completions_body("m", (1,), Sampling(max_tokens=2))
    assert "ignore_eos" not in plain and "priority" not in plain


def test_chat_body() -> None:
    body = chat_body("m", [{"role": "user", "content": "hi"}], Sampling(max_tokens=2))
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["stream_options"] == {"include_usage": True} and "prompt" not in body


@pytest.mark.parametrize(
    ("chunks", "cause"),
    [
        (["not json"], "bad_sse"),
        (["[1, 2]"], "bad_sse"),
        ([json.dumps({"id": "x"})], "bad_sse"),
        ([_chunk("a", [1])], "bad_sse"),  # truncated: no finish_reason
        ([_chunk("a", [1], finish="length")], "no_usage"),
        ([_chunk("a", [1], finish="length"), json.dumps({"choices": [], "usage": {}})], "no_usage"),
        ([json.dumps({"error": {"message": "engine died"}})], "http_5xx"),
    ],
)
def test_causes_of_a_stream_the_fold_refused(chunks: list[str], cause: str) -> None:
    fold = StreamFold("c1", sent_at=0.0)
    with pytest.raises(CallFailure) as raised:
        try:
            for chunk in chunks:
                fold.feed(chunk, 1.0)
            fold.result()
        except StreamError as error:
            raise stream_failure(error) from None
    assert raised.value.cause == cause
    assert str(raised.value).startswith(f"{cause}: ")


def test_classify_status() -> None:
    missing = b'{"error": {"message": "The model `x` does not exist.", "code": 404}}'
    assert classify_status(404, missing, "x").cause == "unknown_model"
    assert classify_status(404, b"Not Found", "x").cause == "http_4xx"
    assert classify_status(400, b'{"message": "max_tokens too big"}', "m").cause == "http_4xx"
    failure = classify_status(503, b"<html>busy</html>\nmore", "m")
    assert failure.cause == "http_5xx" and failure.message == "HTTP 503: <html>busy</html>"


def test_endpoint() -> None:
    e = Endpoint.parse("http://127.0.0.1:8000/v1/")
    assert (e.host, e.port, e.tls, e.prefix) == ("127.0.0.1", 8000, False, "")
    assert e.path("/v1/models") == "/v1/models"
    assert Endpoint.parse("127.0.0.1:9").url == "http://127.0.0.1:9"
    gateway = Endpoint.parse("https://gw.example/llm/v1")
    assert (gateway.port, gateway.tls, gateway.path("/v1/models")) == (
        443,
        True,
        "/llm/v1/models",
    )
    for bad in ("", "ftp://h:1", "http://h:x"):
        with pytest.raises(ValueError):
            Endpoint.parse(bad)


def test_models_and_headers() -> None:
    listing = {"data": [{"id": "a", "max_model_len": 2048}, {"id": "b"}]}
    assert check_models(listing, None) == ("a", 2048)
    assert check_models(listing, "b") == ("b", None)
    with pytest.raises(TargetError, match="'c' is not served; the server has: a, b") as raised:
        check_models(listing, "c")
    assert raised.value.cause == "unknown_model"
    with pytest.raises(TargetError):
        check_models({"data": []}, None)
    assert parse_affinity_headers("") == DEFAULT_AFFINITY_HEADERS
    assert "x-session-token" in DEFAULT_AFFINITY_HEADERS
    assert parse_affinity_headers("none") == ()
    assert parse_affinity_headers("x-a, x-b") == ("x-a", "x-b")


class _Chars:
    """One token per character (ids from 3), bos 1."""

    bos_token_id = 1

    def encode(self, text: str) -> list[int]:
        return [ord(c) + 3 for c in text]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(i - 3) for i in ids if i >= 3)


def test_chat_messages_from_a_context() -> None:
    from agents.library import plan_execute
    from loadtests.openai_user import assistant_spans, chat_messages

    program = plan_execute()
    t = _Chars()
    plan, done = tuple(t.encode("1. look 2. write")), tuple(t.encode("found it"))
    context = [
        1,
        *t.encode(program.system + "\nUser: how?\nPlan:"),
        *plan,
        *t.encode("\nWork on step 1:"),
        *done,
        *t.encode("\nAnswer:"),
    ]
    assert len(assistant_spans(context, [plan, done, (5,)])) == 2
    messages = chat_messages(t, program, context, [plan, done])
    assert messages == [
        {"role": "system", "content": program.system},
        {"role": "user", "content": "how?\nPlan:"},
        {"role": "assistant", "content": "1. look 2. write"},
        {"role": "user", "content": "\nWork on step 1:"},
        {"role": "assistant", "content": "found it"},
        {"role": "user", "content": "\nAnswer:"},
    ]
    first = chat_messages(t, program, context[: context.index(plan[0], 2)], [])
    assert first[1:] == [{"role": "user", "content": "how?\nPlan:"}]
