"""Fidelity: every calibration row of SIMULATION.md, reproduced with the row's
configuration, lands within 15% of the published measurement (SIMULATION.md's goal:
every point <= 15%, median <= 10%)."""

from __future__ import annotations

import statistics

import pytest

from orchestrator.sim.calibration import HELD_OUT, ROWS, Metric, Outcome, reproduce
from orchestrator.sim.catalog import load_catalog

pytestmark = pytest.mark.slow

# Points the model does not reproduce, and why (docs/simulation.md says the same). The
# test insists they still miss, so a model change that fixes one shows up here.
KNOWN_MISSES = {
    # 3,958 tok/s x 196 ms = 776 sequences decoding at once, with max-num-seqs 256: the
    # two published figures cannot both hold for one run of the row's configuration.
    ("3-llama8b-h100-singlestep", Metric.TPOT_P50_MS),
    # The benchmark client's phase is not recorded: with clients in step (all start at
    # once, fixed 1024/1024) the sim gives ~589 ms, out of phase ~83 ms; 237 ms lies between.
    ("qwen3-32b-tp2-c32", Metric.TTFT_MEAN_MS),
}


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    catalog = load_catalog()
    return {row.key: reproduce(row, catalog) for row in ROWS}


@pytest.mark.parametrize(
    ("key", "metric"),
    [(row.key, metric) for row in ROWS for metric in row.measured],
    ids=lambda v: v if isinstance(v, str) else v.name,
)
def test_calibration_point_within_15_percent(
    outcomes: dict[str, Outcome], key: str, metric: Metric
) -> None:
    outcome = outcomes[key]
    error = outcome.error(metric)
    if (key, metric) in KNOWN_MISSES:
        assert abs(error) > 0.15, f"{key} {metric.value} now fits ({error:+.1%}): update docs"
    else:
        assert abs(error) <= 0.15, (
            f"{key} {metric.value}: simulated {outcome.simulated[metric]:.1f}, "
            f"measured {outcome.row.measured[metric]:.1f} ({error:+.1%})"
        )


def test_median_error_meets_the_goal(outcomes: dict[str, Outcome]) -> None:
    errors = [abs(o.error(m)) for o in outcomes.values() for m in o.row.measured]
    assert statistics.median(errors) <= 0.10


def test_every_row_names_its_source_and_configuration() -> None:
    for row in ROWS + HELD_OUT:
        assert row.source and row.setup
        assert row.measured
