"""Fidelity: every calibration row of docs/simulation.md, reproduced with the row's
configuration, lands within 15% of the published measurement (docs/simulation.md's goal:
every point <= 15%, median <= 10%); every held-out point lands on the error
orchestrator/sim/README.md reports for it, the known misses included."""

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


# The held-out points' errors as orchestrator/sim/README.md reports them ("Held-out
# points"). The sim is deterministic, so each must reproduce within a percentage point:
# a model change that moves one shows up here, and the README table gets updated.
HELD_OUT_ERRORS = {
    ("llama70b-h100-tp4-singlestep", Metric.OUTPUT_TPS): +0.067,
    ("llama70b-h100-tp4-singlestep", Metric.TPOT_P50_MS): -0.092,
    ("qwen3-32b-tp2-c8", Metric.TPOT_MEAN_MS): -0.023,
    ("qwen3-32b-tp2-c128", Metric.TPOT_MEAN_MS): -0.075,
    ("qwen3-32b-tp4-c32", Metric.TPOT_MEAN_MS): -0.146,
    # Known misses. The all-reduce latency grows with the TP degree; docs/simulation.md's
    # alpha_ar is a constant (README: left as written, not fitted to held-out points).
    ("qwen3-32b-tp8-c32", Metric.TPOT_MEAN_MS): -0.254,
    # TTFT under concurrency depends on the clients' arrival phase (README: "-47% to
    # -84%" for the four Qwen3-32B rows; the sim starts clients out of phase).
    ("qwen3-32b-tp2-c8", Metric.TTFT_MEAN_MS): -0.473,
    ("qwen3-32b-tp2-c128", Metric.TTFT_MEAN_MS): -0.835,
    ("qwen3-32b-tp4-c32", Metric.TTFT_MEAN_MS): -0.732,
    ("qwen3-32b-tp8-c32", Metric.TTFT_MEAN_MS): -0.759,
}
HELD_OUT_MISSES = {
    ("qwen3-32b-tp8-c32", Metric.TPOT_MEAN_MS),
    *((row.key, Metric.TTFT_MEAN_MS) for row in HELD_OUT if row.key.startswith("qwen3")),
}


@pytest.fixture(scope="module")
def held_out() -> dict[str, Outcome]:
    catalog = load_catalog()
    return {row.key: reproduce(row, catalog) for row in HELD_OUT}


def test_every_held_out_point_has_a_documented_error() -> None:
    assert {(row.key, metric) for row in HELD_OUT for metric in row.measured} == set(
        HELD_OUT_ERRORS
    )
    assert all(row.held_out for row in HELD_OUT)
    assert not any(row.held_out for row in ROWS)


@pytest.mark.parametrize(
    ("key", "metric"),
    [(row.key, metric) for row in HELD_OUT for metric in row.measured],
    ids=lambda v: v if isinstance(v, str) else v.name,
)
def test_held_out_point_matches_its_documented_error(
    held_out: dict[str, Outcome], key: str, metric: Metric
) -> None:
    outcome = held_out[key]
    error = outcome.error(metric)
    documented = HELD_OUT_ERRORS[(key, metric)]
    detail = (
        f"{key} {metric.value}: simulated {outcome.simulated[metric]:.2f}, measured "
        f"{outcome.row.measured[metric]:.2f} ({error:+.1%}; README says {documented:+.1%})"
    )
    if (key, metric) in HELD_OUT_MISSES:
        assert abs(error) > 0.15, f"now fits: update the README and this test. {detail}"
    else:
        assert abs(error) <= 0.15, detail
    assert error == pytest.approx(documented, abs=0.01), detail


def test_every_row_names_its_source_and_configuration() -> None:
    for row in ROWS + HELD_OUT:
        assert row.source and row.setup
        assert row.measured
