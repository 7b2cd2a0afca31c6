"""TLS and credential failures against one server with TLS and a bearer token: each
wrong way in is refused with a status that says why, the right way works, and the
server keeps serving after all of them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from orchestrator.client import Client, InflectionError
from tests.integration.test_front_door import deployment
from tests.reliability.conftest import Figures
from tests.tls_certs import Pki, make_pki

TOKEN = "reliability-token"
SCENARIO = "TLS and credential failures"


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pki, Pki]:
    """The server's PKI and a stranger's (another CA, which the server's is not)."""
    return make_pki(tmp_path_factory.mktemp("pki")), make_pki(tmp_path_factory.mktemp("other"))


@pytest.fixture(scope="module")
def door(pkis: tuple[Pki, Pki]) -> Iterator[Any]:
    pki = pkis[0]
    with deployment(
        {"auth_token": TOKEN, "tls": {"cert": str(pki.cert), "key": str(pki.key)}}
    ) as d:
        yield d


def outcome(attempt: Callable[[Client], object], address: str, **options: Any) -> str:
    """The status code name an attempt ends with ("OK" when it succeeds) and why."""
    with Client(address, timeout=10, **options) as client:
        try:
            attempt(client)
        except InflectionError as error:
            return f"{error.code.name}: {error.details}"
    return grpc.StatusCode.OK.name


def one_task(client: Client) -> object:
    return client.run("plan_execute", "Hello.", max_tokens=4)


def test_wrong_ways_in_are_refused_and_the_server_keeps_serving(
    door: Any, pkis: tuple[Pki, Pki], figures: Figures
) -> None:
    pki, stranger = pkis
    attempts: list[tuple[str, dict[str, Any], str]] = [
        ("plaintext client", {"token": TOKEN}, "UNAVAILABLE"),
        ("client trusting another CA", {"token": TOKEN, "ca": stranger.ca}, "UNAVAILABLE"),
        ("no token", {"ca": pki.ca}, "UNAUTHENTICATED"),
        ("wrong token", {"ca": pki.ca, "token": "not-" + TOKEN}, "UNAUTHENTICATED"),
        ("right token and CA", {"ca": pki.ca, "token": TOKEN}, "OK"),
    ]
    seen = {}
    for name, options, expected in attempts:
        seen[name] = outcome(one_task, door.address, **options)
        figures.record(SCENARIO, name, seen[name].split(":")[0], "", expected)
    after = outcome(one_task, door.address, ca=pki.ca, token=TOKEN)
    figures.record(SCENARIO, "a task after all of them", after, "", "OK")
    assert {name: status.split(":")[0] for name, status in seen.items()} == {
        name: expected for name, _, expected in attempts
    }, seen
    assert after == "OK"
    # Each refusal says why in words, the plaintext one what to do about it.
    assert all(len(status) > len("UNAUTHENTICATED: ") for status in seen.values() if status != "OK")
    assert "--tls" in seen["plaintext client"]
