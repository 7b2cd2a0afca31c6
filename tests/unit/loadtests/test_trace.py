"""Trace replay: shared hash_ids give shared prompt prefixes of whole 512-token blocks,
prompts are exactly input_length, the speed-up divides the gaps, bad lines are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests.workload import sample_trace_path
from orchestrator.workload.traces import (
    MOONCAKE_BLOCK_TOKENS,
    TraceError,
    TraceRequest,
    arrival_offsets,
    load_mooncake_trace,
    parse_lines,
    prompt_tokens,
    shared_prefix_tokens,
)


def line(
    timestamp: float = 0,
    input_length: int = 1024,
    output_length: int = 8,
    hash_ids: list[int] | None = None,
) -> str:
    ids = hash_ids if hash_ids is not None else [0, 1]
    return json.dumps(
        {
            "timestamp": timestamp,
            "input_length": input_length,
            "output_length": output_length,
            "hash_ids": ids,
        }
    )


def request(hash_ids: tuple[int, ...], input_length: int, number: int = 1) -> TraceRequest:
    return TraceRequest(number, 0.0, input_length, 8, hash_ids)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@pytest.mark.parametrize("shared_blocks", [1, 2, 3])
def test_shared_hash_ids_share_exactly_those_blocks(shared_blocks: int) -> None:
    common = tuple(range(100, 100 + shared_blocks))
    a = request((*common, 7, 8), 4 * 512 + 100, number=1)
    b = request((*common, 9), 3 * 512 + 300, number=2)
    pa, pb = prompt_tokens(a), prompt_tokens(b)
    assert common_prefix(pa, pb) == shared_blocks * MOONCAKE_BLOCK_TOKENS
    assert shared_prefix_tokens(a, b) == shared_blocks * MOONCAKE_BLOCK_TOKENS


def test_prompts_are_exactly_input_length_and_deterministic() -> None:
    for length in (1, 511, 512, 513, 1500, 2048):
        blocks = tuple(range(-(-length // MOONCAKE_BLOCK_TOKENS)))
        tokens = prompt_tokens(request(blocks, length))
        assert len(tokens) == length
        assert tokens == prompt_tokens(request(blocks, length))
    # Fewer blocks than the length needs: padded with tokens of the line's own.
    short_a = prompt_tokens(request((5,), 1000, number=1))
    short_b = prompt_tokens(request((5,), 1000, number=2))
    assert len(short_a) == 1000 and common_prefix(short_a, short_b) == MOONCAKE_BLOCK_TOKENS


def test_tokens_stay_inside_the_vocabulary() -> None:
    tokens = prompt_tokens(request((1, 2, 3), 1536), vocab_size=50)
    assert min(tokens) > 0 and max(tokens) < 50
    assert len(set(tokens)) > 40
    assert prompt_tokens(request((1,), 512), 32000) != prompt_tokens(request((1,), 512), 50)


def test_the_last_partial_block_is_a_prefix_of_the_full_block() -> None:
    short, full = request((3, 4), 600), request((3, 4, 5), 1100)
    assert prompt_tokens(full)[:600] == prompt_tokens(short)
    assert shared_prefix_tokens(short, full) == 600


def test_speedup_divides_gaps_from_the_first_request() -> None:
    requests = parse_lines([line(1000), line(3000), line(2000), line(11000)], "t.jsonl")
    assert [r.timestamp_s for r in requests] == [1.0, 2.0, 3.0, 11.0]  # sorted by time
    assert arrival_offsets(requests) == [0.0, 1.0, 2.0, 10.0]
    assert arrival_offsets(requests, speedup=4) == [0.0, 0.25, 0.5, 2.5]
    with pytest.raises(ValueError, match="speed-up"):
        arrival_offsets(requests, speedup=0)


def test_bad_lines_are_all_reported_with_their_numbers(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    rows = [
        line(0),
        "{oops",
        "",
        line(5, input_length=0),
        line(6, hash_ids=[1, 2, 3]),  # 1024 tokens are 2 blocks
        json.dumps([1, 2]),
        line(7),
        json.dumps({"timestamp": -1, "input_length": 1, "output_length": 1, "hash_ids": []}),
        json.dumps({"timestamp": 1, "input_length": 4}),
        line(8, hash_ids=[-1]),
    ]
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(TraceError) as info:
        load_mooncake_trace(path)
    message = str(info.value)
    assert message.startswith(f"{path}: 7 malformed lines: line 2: not JSON")
    assert "line 4: input_length: expected a positive integer, got 0" in message
    assert "line 5: hash_ids: 3 blocks of 512 tokens for input_length 1024 (at most 2)" in message
    assert "line 6: expected a JSON object, got list" in message
    assert "line 8: timestamp: must be a finite number >= 0" in message
    assert message.endswith("(and 2 more)")  # lines 9 and 10: only the first five are named
    assert "line 1:" not in message and "line 7:" not in message


def test_unreadable_and_empty_traces(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read the trace"):
        load_mooncake_trace(tmp_path / "missing.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(TraceError, match="no requests"):
        load_mooncake_trace(empty)


def test_the_sample_trace_has_shared_prefixes() -> None:
    requests = load_mooncake_trace(sample_trace_path())
    assert len(requests) == 200
    assert 55 <= requests[-1].timestamp_s <= 60
    assert all(r.input_length + r.output_length < 16384 for r in requests)
    # Most requests re-send an earlier request's blocks (the sessions' history).
    seen: set[int] = set()
    reused = 0
    for r in requests:
        reused += bool(r.hash_ids) and r.hash_ids[0] in seen
        seen.update(r.hash_ids)
    assert reused > 150
