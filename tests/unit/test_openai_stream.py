"""Folding an OpenAI stream: SSE lines, completion and chat chunks into a CallResult with
usage and client-side timings, and the faults of a stream that is not what the API
promises. Both OpenAI clients read their streams with it (the orchestrator's openai
backend, the load generator's OpenAI target); their own tests map the faults."""

from __future__ import annotations

import json

import pytest

from orchestrator.domain import CallDelta, FinishReason
from orchestrator.openai_stream import StreamError, StreamFault, StreamFold, sse_data


def _chunk(text: str = "", ids: list[int] | None = None, finish: str | None = None) -> bytes:
    choice = {"index": 0, "text": text, "token_ids": ids, "finish_reason": finish}
    return json.dumps({"choices": [choice]}).encode()


USAGE = json.dumps(
    {
        "choices": [],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 8},
        },
    }
).encode()


def test_sse_lines() -> None:
    assert sse_data(b"data: {}\n") == b"{}"
    assert sse_data(b"data:[DONE]\r\n") == b"[DONE]"
    assert sse_data(b"\n") is None
    assert sse_data(b": keep-alive\n") is None
    assert sse_data(b"event: message\n") is None


def test_fold_completions_stream() -> None:
    fold = StreamFold("c1", sent_at=10.0)
    assert fold.feed(_chunk("a", [5]), 10.5) == CallDelta((5,), "a")
    fold.feed(_chunk("b", [6]), 10.7)
    assert fold.feed(_chunk("", [7], finish="length"), 11.0) == CallDelta((7,), "")
    assert fold.feed(USAGE, 11.0) is None
    assert fold.feed(b"[DONE]", 11.0) is None and fold.done
    result = fold.result()
    assert result.token_ids == (5, 6, 7) and result.text == "ab"
    assert result.finish_reason is FinishReason.LENGTH
    assert (result.usage.prompt_tokens, result.usage.cached_prompt_tokens) == (10, 8)
    assert result.usage.output_tokens == 3
    t = result.timings
    assert t.queue_time == 0.0 and t.ttft == pytest.approx(0.5) and t.e2e == pytest.approx(1.0)
    assert t.tpot == pytest.approx(0.25) and t.itl == pytest.approx((0.2, 0.3))
    assert fold.first_token_at == 10.5


def test_fold_chat_stream_without_cached_details() -> None:
    fold = StreamFold("c1", sent_at=0.0, chat=True)
    fold.feed(json.dumps({"choices": [{"delta": {"role": "assistant", "content": ""}}]}), 0.1)
    fold.feed(json.dumps({"choices": [{"delta": {"content": "hi"}, "finish_reason": "stop"}]}), 0.2)
    usage = {"prompt_tokens": 4, "completion_tokens": 1}
    fold.feed(json.dumps({"choices": [], "usage": usage}), 0.2)
    result = fold.result()
    assert result.text == "hi" and result.token_ids == ()
    assert result.finish_reason is FinishReason.STOP
    assert result.usage.cached_prompt_tokens == 0 and result.timings.tpot is None
    assert result.timings.ttft == pytest.approx(0.2)  # the empty role chunk is no token


def test_an_aborted_call_finishes_as_aborted() -> None:
    fold = StreamFold("c1", sent_at=0.0)
    fold.feed(_chunk("a", [1], finish="abort"), 0.1)
    fold.feed(USAGE, 0.1)
    assert fold.result().finish_reason is FinishReason.ABORT


def test_without_usage_required_the_ids_count() -> None:
    # The orchestrator's openai backend: a server that sends no usage still serves.
    fold = StreamFold("c1", sent_at=0.0, usage_required=False)
    fold.feed(_chunk("a", [1]), 0.1)
    fold.feed(_chunk("b", [2], finish="stop"), 0.3)
    result = fold.result(ended_at=0.4)
    assert (result.usage.prompt_tokens, result.usage.output_tokens) == (0, 2)
    assert result.timings.e2e == pytest.approx(0.3)  # the last delta, not the end
    # Usage that counts fewer tokens than the stream carried: the ids count.
    fold.feed(
        json.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}), 0.4
    )
    assert (fold.result().usage.prompt_tokens, fold.result().usage.output_tokens) == (3, 2)


def test_a_call_without_output_ends_when_the_stream_did() -> None:
    fold = StreamFold("c1", sent_at=1.0)
    fold.feed(_chunk(finish="stop"), 1.5)
    fold.feed(USAGE, 1.5)
    assert fold.first_token_at is None
    assert fold.result().timings.e2e == 0.0
    timings = fold.result(ended_at=2.0).timings
    assert (timings.ttft, timings.e2e, timings.tpot, timings.itl) == (0.0, 1.0, None, ())


@pytest.mark.parametrize(
    ("chunks", "fault"),
    [
        ([b"not json"], StreamFault.NOT_JSON),
        ([b"[1, 2]"], StreamFault.NOT_A_CHUNK),
        ([json.dumps({"id": "x"}).encode()], StreamFault.NOT_A_CHUNK),
        ([json.dumps({"choices": ["x"]}).encode()], StreamFault.NOT_A_CHUNK),
        ([_chunk("a", [1])], StreamFault.UNFINISHED),
        ([_chunk("a", [1], finish="length")], StreamFault.NO_USAGE),
        (
            [_chunk("a", [1], finish="length"), b'{"choices": [], "usage": {}}'],
            StreamFault.NO_USAGE,
        ),
        ([b'{"error": {"message": "engine died", "code": 500}}'], StreamFault.ERROR),
    ],
)
def test_faults(chunks: list[bytes], fault: StreamFault) -> None:
    fold = StreamFold("c1", sent_at=0.0)
    with pytest.raises(StreamError) as raised:
        for chunk in chunks:
            fold.feed(chunk, 1.0)
        fold.result()
    assert raised.value.fault is fault
    assert "\n" not in str(raised.value)


def test_an_error_in_the_stream_keeps_what_the_server_sent() -> None:
    with pytest.raises(StreamError) as raised:
        StreamFold("c1", 0.0).feed(b'{"error": {"message": "too long", "code": 400}}', 1.0)
    assert raised.value.error == {"message": "too long", "code": 400}
    assert raised.value.message == "error in stream: too long"
