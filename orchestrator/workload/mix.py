"""The workload mix: which agent programs tasks run, how long their inputs are, and the
input text itself (`input_text`), for the simulator and the load generator alike."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

# Words the orchestrator's tokenizers (and the simulator's) encode as one token each, so
# an input of n words is n tokens.
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
WORDS = tuple(f" {a}{b}{c}" for a in _SYLLABLES[:8] for b in _SYLLABLES for c in "ny")


def input_text(rng: random.Random | np.random.Generator, tokens: int) -> str:
    """A user input of `tokens` one-token words (drawn with numpy's `integers` from a
    Generator, as the simulator draws, or `choice` from a random.Random)."""
    if isinstance(rng, np.random.Generator):
        words = "".join(WORDS[w] for w in rng.integers(0, len(WORDS), tokens).tolist())
    else:
        words = "".join(rng.choice(WORDS) for _ in range(tokens))
    return words.lstrip()


def lognormal_mu(mean: float, sigma: float) -> float:
    """The mu of a log-normal whose mean (not median) is `mean`."""
    return math.log(mean) - sigma**2 / 2


def choose_agent(mix: Mapping[str, float], rng: random.Random) -> str:
    """An agent of the mix, drawn in proportion to its weight."""
    names = list(mix)
    return rng.choices(names, weights=[mix[n] for n in names])[0]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputLength(BaseModel):
    """Lognormal input length with the given mean (tokens) and log-space sigma."""

    model_config = ConfigDict(extra="forbid")

    mean: float = Field(gt=0, description="Mean input length, tokens.")
    sigma: float = Field(default=0.0, ge=0, le=3, description="Sigma of log(length).")
    min: int = Field(default=1, ge=1, description="Lower clip, tokens.")
    max: int = Field(default=32_768, ge=1, description="Upper clip, tokens.")

    @model_validator(mode="after")
    def _ordered(self) -> InputLength:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self

    def draw(self, rng: random.Random) -> int:
        mu = lognormal_mu(self.mean, self.sigma)
        value = round(rng.lognormvariate(mu, self.sigma)) if self.sigma else round(self.mean)
        return max(self.min, min(self.max, value))


class WorkloadConfig(_Strict):
    mix: dict[str, float] = Field(
        default_factory=lambda: {"plan_execute": 1.0},
        description="Agent program -> weight; tasks pick a program in these proportions.",
    )
    input_tokens_mean: float = Field(
        default=64, ge=1, description="Mean user-input length in tokens (log-normal)."
    )
    input_tokens_sigma: float = Field(
        default=0.5, ge=0, description="Log-space spread of the input length; 0: fixed."
    )
    programs: tuple[str, ...] = Field(
        default=(), description="YAML program files or folders beside the built-ins."
    )

    def draw_input_tokens(self, rng: np.random.Generator) -> int:
        """A task's input length: log-normal whose mean is input_tokens_mean (at least 1)."""
        if not self.input_tokens_sigma:
            return max(1, round(self.input_tokens_mean))
        median = self.input_tokens_mean / math.exp(self.input_tokens_sigma**2 / 2.0)
        return max(1, round(float(rng.lognormal(math.log(median), self.input_tokens_sigma))))
