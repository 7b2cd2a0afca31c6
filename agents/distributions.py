"""Seeded distributions for program shapes: output lengths, fan-out widths, loop
iterations, simulated tool latencies and result sizes.

Every distribution is frozen data with an analytic mean where one exists; sampling takes
a numpy Generator, so the same seed gives the same program shape and token counts. In
YAML a distribution is a number (a constant) or a one-key mapping:

    max_tokens: 64
    max_tokens: {uniform: [32, 96]}
    max_tokens: {normal: {mean: 64, std: 16, min: 8, max: 128}}
    max_tokens: {lognormal: {median: 400, sigma: 0.8, max: 4000}}
    max_tokens: {empirical: [12, 40, 40, 300]}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

# Anything above this is a typo, not a workload (a token count or a second count).
ABSURD = 10_000_000.0


class DistributionError(ValueError):
    """A distribution that cannot be used; the message names where it was given."""


class Distribution(Protocol):
    def sample(self, rng: np.random.Generator) -> float: ...

    def mean(self) -> float: ...

    def upper(self) -> float:
        """The largest value it can produce (for worst-case context checks)."""
        ...


def _pdf(x: float) -> float:
    """Standard normal density."""
    return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def _cdf(x: float) -> float:
    """Standard normal distribution function."""
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _check(where: str, ok: bool, message: str) -> None:
    if not ok:
        raise DistributionError(f"{where}: {message}")


def _finite(where: str, name: str, value: float, minimum: float = 0.0) -> None:
    _check(where, math.isfinite(value), f"{name} must be a finite number, got {value}")
    _check(where, value >= minimum, f"{name} must be >= {minimum}, got {value}")
    _check(where, value <= ABSURD, f"{name} of {value} is absurd (limit {ABSURD:.0f})")


@dataclass(slots=True, frozen=True)
class Constant:
    value: float

    def sample(self, rng: np.random.Generator) -> float:
        return self.value

    def mean(self) -> float:
        return self.value

    def upper(self) -> float:
        return self.value


@dataclass(slots=True, frozen=True)
class Uniform:
    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))

    def mean(self) -> float:
        return (self.low + self.high) / 2

    def upper(self) -> float:
        return self.high


@dataclass(slots=True, frozen=True)
class NormalClipped:
    """A normal distribution clipped (not truncated) to [low, high]."""

    mu: float
    std: float
    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(np.clip(rng.normal(self.mu, self.std), self.low, self.high))

    def mean(self) -> float:
        # Mean of a normal clipped to [a, b]: mass beyond each bound sits on the bound.
        if self.std == 0:
            return float(min(max(self.mu, self.low), self.high))
        a = (self.low - self.mu) / self.std
        b = (self.high - self.mu) / self.std
        inside = self.mu * (_cdf(b) - _cdf(a)) + self.std * (_pdf(a) - _pdf(b))
        return inside + self.low * _cdf(a) + self.high * (1 - _cdf(b))

    def upper(self) -> float:
        return self.high


@dataclass(slots=True, frozen=True)
class LogNormal:
    """Heavy-tailed lengths (tool outputs, documents): median and log-space sigma,
    clipped to `high`."""

    median: float
    sigma: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(min(rng.lognormal(math.log(self.median), self.sigma), self.high))

    def mean(self) -> float:
        # E[min(X, h)] for X ~ LogNormal(mu, s): mean of the part below h plus h times
        # the probability of exceeding it.
        mu, s, h = math.log(self.median), self.sigma, self.high
        z = (math.log(h) - mu) / s
        below = math.exp(mu + s * s / 2) * _cdf(z - s)
        return below + h * (1 - _cdf(z))

    def upper(self) -> float:
        return self.high


@dataclass(slots=True, frozen=True)
class Empirical:
    """Draws uniformly from observed values (e.g. lengths from a trace)."""

    values: tuple[float, ...]

    def sample(self, rng: np.random.Generator) -> float:
        return self.values[int(rng.integers(len(self.values)))]

    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    def upper(self) -> float:
        return max(self.values)


AnyDistribution = Constant | Uniform | NormalClipped | LogNormal | Empirical


def sample_int(dist: AnyDistribution, rng: np.random.Generator, minimum: int = 0) -> int:
    """An integer draw (token counts, widths, iterations): rounded, at least `minimum`."""
    return max(minimum, round(dist.sample(rng)))


def _number(where: str, name: str, raw: Any) -> float:
    """A YAML number (not a bool, not a numeric string) as a float."""
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise DistributionError(f"{where}: {name} must be a number, got {raw!r}")
    try:
        return float(raw)
    except OverflowError:
        raise DistributionError(f"{where}: {name} is too large") from None


def parse(raw: Any, where: str, *, minimum: float = 0.0) -> AnyDistribution:
    """A distribution from its YAML/JSON form; errors name `where` (a field path)."""
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = _number(where, "value", raw)
        _finite(where, "value", value, minimum)
        return Constant(value)
    if not isinstance(raw, dict) or len(raw) != 1:
        raise DistributionError(
            f"{where}: expected a number or a one-key mapping "
            f"(constant, uniform, normal, lognormal, empirical), got {raw!r}"
        )
    kind, args = next(iter(raw.items()))
    at = f"{where}.{kind}"
    try:
        if kind == "constant":
            value = _number(at, "value", args)
            _finite(at, "value", value, minimum)
            return Constant(value)
        if kind == "uniform":
            _check(at, isinstance(args, list) and len(args) == 2, "expected [low, high]")
            low, high = _number(at, "low", args[0]), _number(at, "high", args[1])
            _finite(at, "low", low, minimum)
            _finite(at, "high", high, minimum)
            _check(at, low <= high, f"low ({low}) must not exceed high ({high})")
            return Uniform(low, high)
        if kind == "normal":
            _check(at, isinstance(args, dict), "expected {mean, std, min, max}")
            unknown = set(args) - {"mean", "std", "min", "max"}
            _check(at, not unknown, f"unknown keys {sorted(map(str, unknown))}")
            mu, std = _number(at, "mean", args["mean"]), _number(at, "std", args["std"])
            low = _number(at, "min", args.get("min", minimum))
            high = _number(at, "max", args.get("max", mu + 4 * std))
            _finite(at, "mean", mu, minimum)
            _finite(at, "std", std)
            _finite(at, "min", low, minimum)
            _finite(at, "max", high, minimum)
            _check(at, low <= high, f"min ({low}) must not exceed max ({high})")
            _check(at, low <= mu <= high, f"mean ({mu}) must lie within [min, max]")
            return NormalClipped(mu, std, low, high)
        if kind == "lognormal":
            _check(at, isinstance(args, dict), "expected {median, sigma, max}")
            unknown = set(args) - {"median", "sigma", "max"}
            _check(at, not unknown, f"unknown keys {sorted(map(str, unknown))}")
            median = _number(at, "median", args["median"])
            sigma = _number(at, "sigma", args["sigma"])
            high = _number(at, "max", args["max"])
            _finite(at, "median", median)
            _check(at, median > 0, f"median must be > 0, got {median}")
            _finite(at, "sigma", sigma)
            _check(at, 0 < sigma <= 5, f"sigma must be in (0, 5], got {sigma}")
            _finite(at, "max", high, minimum)
            _check(at, high >= median, f"max ({high}) must be >= median ({median})")
            return LogNormal(median, sigma, high)
        if kind == "empirical":
            _check(at, isinstance(args, list) and len(args) > 0, "expected a non-empty list")
            values = tuple(_number(f"{at}[{i}]", "value", v) for i, v in enumerate(args))
            for i, v in enumerate(values):
                _finite(f"{at}[{i}]", "value", v, minimum)
            return Empirical(values)
    except KeyError as exc:
        raise DistributionError(f"{at}: missing {exc.args[0]!r}") from None
    except (TypeError, ValueError, OverflowError) as exc:
        if isinstance(exc, DistributionError):
            raise
        raise DistributionError(f"{at}: {exc}") from None
    raise DistributionError(
        f"{where}: unknown distribution {kind!r} "
        "(known: constant, uniform, normal, lognormal, empirical)"
    )
