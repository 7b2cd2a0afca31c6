"""The workload mix's shared draws (orchestrator/workload/mix.py)."""

from __future__ import annotations

import random

import numpy as np

from orchestrator.workload.mix import WORDS, InputLength, WorkloadConfig, input_text


def test_input_text_is_one_word_per_token_from_either_generator() -> None:
    assert len(input_text(random.Random(1), 17).split()) == 17
    text = input_text(np.random.default_rng(3), 9)
    drawn = np.random.default_rng(3).integers(0, len(WORDS), 9).tolist()
    assert text == "".join(WORDS[w] for w in drawn).lstrip()  # the simulator's draws


def test_both_input_lengths_have_the_asked_mean() -> None:
    config = WorkloadConfig(input_tokens_mean=64, input_tokens_sigma=0.5)
    rng = np.random.default_rng(0)
    assert abs(np.mean([config.draw_input_tokens(rng) for _ in range(20_000)]) - 64) < 1.5
    length = InputLength(mean=64, sigma=0.5)
    py = random.Random(0)
    assert abs(np.mean([length.draw(py) for _ in range(20_000)]) - 64) < 1.5
    assert WorkloadConfig(input_tokens_mean=3.4, input_tokens_sigma=0).draw_input_tokens(rng) == 3
