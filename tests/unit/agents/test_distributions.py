"""Seeded distributions: analytic means match sampling, draws are reproducible, and
parse errors name the field path."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agents.distributions import (
    ABSURD,
    AnyDistribution,
    Constant,
    DistributionError,
    Empirical,
    LogNormal,
    NormalClipped,
    Uniform,
    parse,
    sample_int,
)

DISTRIBUTIONS: list[AnyDistribution] = [
    Constant(64.0),
    Uniform(32.0, 96.0),
    NormalClipped(64.0, 16.0, 8.0, 128.0),
    NormalClipped(10.0, 20.0, 0.0, 30.0),  # clipped hard on both sides
    NormalClipped(5.0, 0.0, 0.0, 10.0),
    LogNormal(400.0, 0.8, 4000.0),
    LogNormal(100.0, 2.0, 500.0),  # most of the tail lands on the bound
    Empirical((12.0, 40.0, 40.0, 300.0)),
]


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=repr)
def test_analytic_mean_matches_monte_carlo_within_one_percent(dist: AnyDistribution) -> None:
    rng = np.random.default_rng(1234)
    # Degenerate distributions need few draws; the rest enough for a 1% tolerance.
    degenerate = dist.upper() == dist.mean() or (isinstance(dist, NormalClipped) and not dist.std)
    samples = 1_000 if degenerate else 100_000
    draws = np.array([dist.sample(rng) for _ in range(samples)])
    assert dist.mean() == pytest.approx(float(draws.mean()), rel=0.01)
    assert draws.max() <= dist.upper()


@pytest.mark.parametrize("dist", DISTRIBUTIONS, ids=repr)
def test_the_same_seed_gives_the_same_draws(dist: AnyDistribution) -> None:
    first = [dist.sample(np.random.default_rng(7)) for _ in range(3)]
    assert first == [dist.sample(np.random.default_rng(7)) for _ in range(3)]


def test_upper_is_the_largest_possible_value() -> None:
    assert [d.upper() for d in DISTRIBUTIONS] == [64, 96, 128, 30, 10, 4000, 500, 300]


def test_sample_int_rounds_and_respects_the_minimum() -> None:
    rng = np.random.default_rng(0)
    assert sample_int(Constant(2.4), rng) == 2
    assert sample_int(Constant(2.6), rng) == 3
    assert sample_int(Constant(0.0), rng, minimum=1) == 1
    draws = {sample_int(Uniform(1.0, 3.0), rng, minimum=1) for _ in range(200)}
    assert draws == {1, 2, 3}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (64, Constant(64.0)),
        (0.5, Constant(0.5)),
        ({"constant": 3}, Constant(3.0)),
        ({"uniform": [32, 96]}, Uniform(32.0, 96.0)),
        ({"uniform": [5, 5]}, Uniform(5.0, 5.0)),
        ({"normal": {"mean": 64, "std": 16, "min": 8, "max": 128}}, NormalClipped(64, 16, 8, 128)),
        ({"normal": {"mean": 64, "std": 16}}, NormalClipped(64, 16, 0, 128)),
        ({"lognormal": {"median": 400, "sigma": 0.8, "max": 4000}}, LogNormal(400, 0.8, 4000)),
        ({"empirical": [12, 40, 40, 300]}, Empirical((12.0, 40.0, 40.0, 300.0))),
    ],
)
def test_parse_accepts_every_documented_form(raw: Any, expected: AnyDistribution) -> None:
    assert parse(raw, "max_tokens") == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (-1, r"^agents\.a\.max_tokens: value must be >= 0\.0, got -1\.0"),
        (1e12, r"^agents\.a\.max_tokens: value of 1000000000000\.0 is absurd \(limit 10000000\)"),
        (float("nan"), r"^agents\.a\.max_tokens: value must be a finite number"),
        (float("inf"), r"^agents\.a\.max_tokens: value must be a finite number"),
        (True, r"^agents\.a\.max_tokens: expected a number or a one-key mapping .*got True"),
        (False, r"^agents\.a\.max_tokens: expected a number or a one-key mapping .*got False"),
        ("64", r"^agents\.a\.max_tokens: expected a number or a one-key mapping"),
        ({}, r"^agents\.a\.max_tokens: expected a number or a one-key mapping"),
        ({"uniform": [1, 2], "constant": 3}, r"^agents\.a\.max_tokens: expected a number or"),
        ({"poisson": 3}, r"^agents\.a\.max_tokens: unknown distribution 'poisson' \(known: "),
        ({"constant": -2}, r"^agents\.a\.max_tokens\.constant: value must be >= 0"),
        ({"constant": True}, r"^agents\.a\.max_tokens\.constant: value must be a number, got True"),
        ({"constant": "3"}, r"^agents\.a\.max_tokens\.constant: value must be a number, got '3'"),
        ({"uniform": [9, 3]}, r"^agents\.a\.max_tokens\.uniform: low \(9\.0\) must not exceed"),
        ({"uniform": [1]}, r"^agents\.a\.max_tokens\.uniform: expected \[low, high\]"),
        ({"uniform": [-1, 3]}, r"^agents\.a\.max_tokens\.uniform: low must be >= 0"),
        (
            {"uniform": [1, 1e9]},
            r"^agents\.a\.max_tokens\.uniform: high of 1000000000\.0 is absurd",
        ),
        ({"uniform": [1, "x"]}, r"^agents\.a\.max_tokens\.uniform: high must be a number, got 'x'"),
        ({"uniform": ["1", 2]}, r"^agents\.a\.max_tokens\.uniform: low must be a number, got '1'"),
        (
            {"uniform": [True, 5]},
            r"^agents\.a\.max_tokens\.uniform: low must be a number, got True",
        ),
        (
            {"empirical": [40, True]},
            r"^agents\.a\.max_tokens\.empirical\[1\]: value must be a number, got True",
        ),
        (
            {"normal": {"mean": 5, "std": True}},
            r"^agents\.a\.max_tokens\.normal: std must be a number, got True",
        ),
        (
            {"normal": {"mean": 50, "std": 1, "min": 0, "max": 10}},
            r"^agents\.a\.max_tokens\.normal: mean \(50\.0\) must lie within \[min, max\]",
        ),
        ({"empirical": []}, r"^agents\.a\.max_tokens\.empirical: expected a non-empty list"),
        ({"empirical": 5}, r"^agents\.a\.max_tokens\.empirical: expected a non-empty list"),
        ({"empirical": [3, -1]}, r"^agents\.a\.max_tokens\.empirical\[1\]: value must be >= 0"),
        (
            {"normal": {"mean": 5, "std": 1, "min": 9, "max": 3}},
            r"^agents\.a\.max_tokens\.normal: min \(9\.0\) must not exceed max \(3\.0\)",
        ),
        (
            {"normal": {"mean": 5, "std": 1, "mode": 3}},
            r"^agents\.a\.max_tokens\.normal: unknown keys \['mode'\]",
        ),
        ({"normal": {"mean": 5}}, r"^agents\.a\.max_tokens\.normal: missing 'std'"),
        ({"normal": {"mean": 5, "std": -1}}, r"^agents\.a\.max_tokens\.normal: std must be >= 0"),
        ({"normal": [5, 1]}, r"^agents\.a\.max_tokens\.normal: expected \{mean, std, min, max\}"),
        (
            {"lognormal": {"median": 400, "sigma": 0.8, "max": 4000, "p99": 1}},
            r"^agents\.a\.max_tokens\.lognormal: unknown keys \['p99'\]",
        ),
        (
            {"lognormal": {"median": 0, "sigma": 0.8, "max": 10}},
            r"^agents\.a\.max_tokens\.lognormal: median must be > 0",
        ),
        (
            {"lognormal": {"median": 10, "sigma": 9, "max": 100}},
            r"^agents\.a\.max_tokens\.lognormal: sigma must be in \(0, 5\]",
        ),
        (
            {"lognormal": {"median": 100, "sigma": 1, "max": 10}},
            r"^agents\.a\.max_tokens\.lognormal: max \(10\.0\) must be >= median \(100\.0\)",
        ),
        ({"lognormal": {"median": 100, "sigma": 1}}, r"lognormal: missing 'max'"),
    ],
)
def test_parse_errors_name_the_path(raw: Any, message: str) -> None:
    with pytest.raises(DistributionError, match=message):
        parse(raw, "agents.a.max_tokens")


def test_parse_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="latency_s"):
        parse(-1, "latency_s")


def test_minimum_is_enforced_for_every_parameter() -> None:
    with pytest.raises(DistributionError, match=r"^w: value must be >= 1, got 0\.0"):
        parse(0, "w", minimum=1)
    with pytest.raises(DistributionError, match=r"^w\.uniform: low must be >= 1, got 0\.0"):
        parse({"uniform": [0, 3]}, "w", minimum=1)
    assert parse({"normal": {"mean": 3, "std": 1}}, "w", minimum=1) == NormalClipped(3, 1, 1, 7)


def test_the_absurd_limit_itself_is_accepted() -> None:
    assert parse(ABSURD, "x") == Constant(ABSURD)
