"""Prometheus metrics (`server.metrics_port`) of a real deployment of simulated replicas
in real time: a scrape after real tasks over gRPC counts them, by agent and outcome,
with their calls by replica, the routing decisions and each replica's gauges; a
scrape without the server's token is refused."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.client import Client, InvalidArgument
from tests.integration.test_deadlines_sim import sim_deployment

pytestmark = pytest.mark.slow

TOKEN = "metrics-test-token"


def scrape(port: int, token: str | None = TOKEN) -> dict[str, list[Any]]:
    """GET /metrics; the samples of each metric family by family name."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(families: dict[str, list[Any]], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    family = name.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
    family = family.removesuffix("_bucket")
    return sum(
        s.value
        for s in families.get(family, [])
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


@pytest.fixture(scope="module")
def deployment() -> Iterator[Any]:
    replicas = {"count": 2, "sim": {"time_scale": 1.0}}
    with sim_deployment(replicas, server={"metrics_port": 0, "auth_token": TOKEN}) as running:
        yield running


def test_a_scrape_counts_the_tasks_and_calls_it_served(deployment: Any) -> None:
    with Client(deployment.address, timeout=120, token=TOKEN) as client:
        results = [client.run("plan_execute", f"Plan trip {i}.", max_tokens=8) for i in range(3)]
        with pytest.raises(InvalidArgument):
            client.run("plan_execute", "")  # refused before it runs: no task, no metric
    families = scrape(deployment.metrics_port)
    calls = sum(r.usage.llm_calls for r in results)
    assert value(families, "inflection_tasks_total", agent="plan_execute", outcome="ok") == 3
    assert value(families, "inflection_task_latency_seconds_count", agent="plan_execute") == 3
    latency = value(families, "inflection_task_latency_seconds_sum", agent="plan_execute")
    assert latency == pytest.approx(sum(r.usage.task_latency for r in results), rel=1e-6)
    amplification = value(families, "inflection_task_token_amplification_sum")
    assert amplification == pytest.approx(sum(r.usage.token_amplification for r in results))
    assert value(families, "inflection_calls_total", outcome="ok") == calls
    assert value(families, "inflection_routing_decisions_total") == calls
    assert value(families, "inflection_call_ttft_seconds_count") == calls
    output = value(families, "inflection_task_tokens_total", kind="output")
    assert output == sum(r.usage.output_tokens_total for r in results)
    # Each replica's gauges, read at the scrape.
    names = {s.labels["replica"] for s in families["inflection_replica_healthy"]}
    assert len(names) == 2
    assert value(families, "inflection_replica_healthy") == 2
    assert value(families, "inflection_replica_replacements") == 0
    assert value(families, "inflection_admission_queued_tasks") == 0


def test_a_scrape_without_the_token_is_refused(deployment: Any) -> None:
    for token in (None, "wrong"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            scrape(deployment.metrics_port, token)
        assert refused.value.code == 401
