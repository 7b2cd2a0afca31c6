"""orchestrator.openai_api: the completions body and error text both OpenAI clients share."""

from __future__ import annotations

import pytest

from orchestrator.domain import Sampling
from orchestrator.openai_api import completions_body, error_message, sampling_fields


def test_completions_body_fields() -> None:
    sampling = Sampling(max_tokens=4, temperature=0.5, ignore_eos=True, seed=7)
    assert completions_body("m", (1, 2), sampling, priority=3) == {
        "model": "m",
        "prompt": [1, 2],
        "return_token_ids": True,
        "max_tokens": 4,
        "temperature": 0.5,
        "top_p": 1.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
        "seed": 7,
        "priority": 3,
    }
    plain = completions_body("m", (1,), Sampling(max_tokens=2))
    assert not {"ignore_eos", "seed", "priority"} & plain.keys()
    # Priority 0 is sent: only None leaves the field out.
    assert sampling_fields(Sampling(max_tokens=2), 0)["priority"] == 0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"error": {"message": "prompt too long", "code": 400}}', "prompt too long"),
        ('{"error": "no such model"}', "no such model"),
        (b'{"message": "vLLM says no", "code": 400}', "vLLM says no"),
        (b'{"error": {"type": "x"}, "message": "top level"}', "top level"),
        (b'{"detail": "other"}', '{"detail": "other"}'),
        (b"<html>\nBad Gateway\n</html>", "<html>"),
        (b"  ", ""),
    ],
)
def test_error_message(body: bytes | str, expected: str) -> None:
    assert error_message(body, 200) == expected


def test_error_message_limit() -> None:
    long = '{"error": {"message": "' + "x" * 600 + '"}}'
    assert len(error_message(long, 500)) == 500
    assert len(error_message("y" * 600, 200)) == 200
