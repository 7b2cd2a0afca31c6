"""The simulated model's tokenizer and outputs: deterministic, inside the vocabulary, at
about BPE rates, with lines for live plans and a documented way of stopping."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.sim.tokens import (
    EOS_ID,
    MIN_VOCAB,
    SimTokenizer,
    output_token_ids,
    synthetic_output,
)

VOCAB = 128_256  # Llama-3.1's
PROSE = (
    "Inflection is an agentic workload orchestrator and load generator. Ray actors host "
    "model replicas, a gRPC orchestrator runs multi-step agent programs across those "
    "replicas, and Locust drives agentic traffic at it to measure token amplification, "
    "time to first token, throughput and latency. This page is a guide, not a cage: where "
    "the code teaches you something better, do the better thing and say why in your note."
)


def test_english_costs_about_what_a_bpe_tokenizer_charges() -> None:
    ids = SimTokenizer(VOCAB).encode(PROSE)
    assert 1.15 <= len(ids) / len(PROSE.split()) <= 1.5


def test_encoding_is_the_same_in_every_tokenizer_and_process() -> None:
    # Ids are content hashes (not Python's salted hash): the server encodes, the
    # replica processes decode.
    assert SimTokenizer(VOCAB).encode(PROSE) == SimTokenizer(VOCAB).encode(PROSE)
    code = (
        "from orchestrator.sim.tokens import SimTokenizer as T; print(T(128256).encode('Hi, you!'))"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in (1, 2)
    }
    assert runs == {f"{SimTokenizer(VOCAB).encode('Hi, you!')}\n"}


def test_a_shared_text_prefix_gives_a_shared_token_prefix() -> None:
    # What lets an agent's growing context hit the prefix cache.
    tok = SimTokenizer(VOCAB)
    head = tok.encode(PROSE)
    assert tok.encode(PROSE + "\nObservation: 42 rows.")[: len(head)] == head


@given(st.text(max_size=300), st.integers(MIN_VOCAB, 200_000))
def test_every_id_is_inside_the_vocabulary(text: str, vocab: int) -> None:
    tok = SimTokenizer(vocab)
    ids = tok.encode(text)
    assert all(0 <= i < vocab for i in ids)
    assert tok.bos_token_id not in ids and tok.eos_token_id not in ids
    assert isinstance(tok.decode(ids), str)


def test_newlines_and_punctuation_survive_decoding() -> None:
    tok = SimTokenizer(VOCAB)
    text = tok.decode(tok.encode("Plan:\n1. fetch the data,\n2. check it!"))
    assert text.count("\n") == 2
    assert text.splitlines()[0].endswith(":")
    assert "," in text and text.endswith("!")


def test_decoding_piecewise_equals_decoding_the_whole() -> None:
    # Streamed deltas concatenate to the final text.
    tok = SimTokenizer(VOCAB)
    ids = output_token_ids(0, "call-1", 200, VOCAB)
    assert "".join(tok.decode(ids[i : i + 7]) for i in range(0, 200, 7)) == tok.decode(ids)


def test_special_ids_decode_to_nothing() -> None:
    tok = SimTokenizer(VOCAB)
    assert tok.decode([tok.bos_token_id, EOS_ID, 0]) == ""


def test_a_tiny_vocabulary_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        SimTokenizer(100)


def test_outputs_are_seeded_by_engine_seed_and_call_key() -> None:
    a = output_token_ids(0, "call-1", 64, VOCAB)
    assert a == output_token_ids(0, "call-1", 64, VOCAB)
    assert a != output_token_ids(0, "call-2", 64, VOCAB)
    assert a != output_token_ids(1, "call-1", 64, VOCAB)
    assert output_token_ids(0, 7, 64, VOCAB) == output_token_ids(0, 7, 64, VOCAB)


def test_a_longer_output_starts_with_the_shorter_one() -> None:
    assert output_token_ids(3, "k", 500, VOCAB)[:40] == output_token_ids(3, "k", 40, VOCAB)


def test_outputs_have_lines_for_live_plans_to_fan_out_over() -> None:
    tok = SimTokenizer(VOCAB)
    lines = [
        sum(1 for line in tok.decode(output_token_ids(0, f"plan-{i}", 120, VOCAB)).splitlines()
            if line.strip())
        for i in range(50)
    ]  # fmt: skip
    # About one newline in 16 tokens: a 120-token plan has several lines, rarely one.
    assert 4 <= sum(lines) / len(lines) <= 12
    assert sum(n >= 2 for n in lines) >= 45


def test_ignore_eos_writes_exactly_max_tokens() -> None:
    out = synthetic_output(0, "c", 100, VOCAB, ignore_eos=True)
    assert len(out.token_ids) == 100 and not out.stopped
    assert EOS_ID not in out.token_ids


def test_without_ignore_eos_the_model_stops_between_half_and_all_of_max_tokens() -> None:
    lengths = []
    for i in range(300):
        out = synthetic_output(0, f"c{i}", 100, VOCAB, ignore_eos=False)
        n = len(out.token_ids)
        assert math.ceil(100 / 2) <= n <= 100
        # It stopped at end-of-sequence exactly when it stopped early.
        assert out.stopped == (n < 100)
        assert (out.token_ids[-1] == EOS_ID) == out.stopped
        assert EOS_ID not in out.token_ids[:-1]
        lengths.append(n)
    assert 65 <= sum(lengths) / len(lengths) <= 85  # uniform over [50, 100]
    assert len(set(lengths)) > 30
    # The same call stops at the same place.
    assert synthetic_output(0, "c1", 100, VOCAB, ignore_eos=False) == synthetic_output(
        0, "c1", 100, VOCAB, ignore_eos=False
    )


def test_one_token_calls_always_write_one_token() -> None:
    out = synthetic_output(0, "c", 1, VOCAB, ignore_eos=False)
    assert len(out.token_ids) == 1 and not out.stopped
