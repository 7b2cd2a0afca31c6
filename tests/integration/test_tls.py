"""`server.tls` through a real deployment of simulated replicas: the SDK with `ca=` runs
a task over TLS, a plaintext SDK is told why it cannot connect, the official `openai`
SDK reaches the https front door trusting the test CA, and with `client_ca` (mutual TLS)
a client without a certificate is refused by gRPC and by the front door alike."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from orchestrator.client import Client, Unavailable
from tests.integration.test_front_door import MESSAGES, deployment
from tests.tls_certs import Pki, make_pki

pytestmark = pytest.mark.slow

TOKEN = "tls-token"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def doors(pki: Pki) -> Iterator[dict[str, Any]]:
    """A TLS deployment with a bearer token and a mutual-TLS one, on one Ray connection."""
    tls = {"cert": str(pki.cert), "key": str(pki.key)}
    with (
        deployment({"auth_token": TOKEN, "tls": tls}) as tls_door,
        deployment({"tls": {**tls, "client_ca": str(pki.ca)}}) as mutual_door,
    ):
        yield {"tls": tls_door, "mutual": mutual_door}


def test_sdk_with_the_ca_runs_a_task_over_tls(doors: dict[str, Any], pki: Pki) -> None:
    with Client(doors["tls"].address, token=TOKEN, ca=pki.ca, timeout=30) as client:
        result = client.run("plan_execute", "Compare H100 and B200.")
    assert result.answer and result.usage.llm_calls > 0


def test_plaintext_sdk_fails_with_a_hint_about_tls(doors: dict[str, Any]) -> None:
    with (
        Client(doors["tls"].address, token=TOKEN, timeout=10) as client,
        pytest.raises(Unavailable) as caught,
    ):
        client.list_agents()
    assert "--tls" in str(caught.value) and "ca=PATH" in str(caught.value)


def test_sdk_not_trusting_the_ca_is_refused(doors: dict[str, Any]) -> None:
    # tls=True trusts the system roots only: the test CA's certificate is not among them.
    with (
        Client(doors["tls"].address, token=TOKEN, tls=True, timeout=10) as client,
        pytest.raises(Unavailable),
    ):
        client.list_agents()


def test_openai_sdk_over_https_trusting_the_ca(doors: dict[str, Any], pki: Pki) -> None:
    url = doors["tls"].http_url
    assert url.startswith("https://")
    with (
        httpx.Client(verify=ssl.create_default_context(cafile=str(pki.ca))) as http,
        openai.OpenAI(base_url=url, api_key=TOKEN, http_client=http, max_retries=0) as client,
    ):
        reply = client.chat.completions.create(
            model="plan_execute", messages=MESSAGES, max_tokens=8
        )
    assert reply.choices[0].message.content
    # Plain http to the https port: the server drops it (no response, nothing served).
    with pytest.raises((httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)):
        httpx.get(url.replace("https://", "http://") + "/models", timeout=10)


def test_mutual_tls_refuses_a_client_without_a_certificate(doors: dict[str, Any], pki: Pki) -> None:
    door = doors["mutual"]
    with Client(door.address, ca=pki.ca, timeout=10) as client, pytest.raises(Unavailable):
        client.list_agents()
    context = ssl.create_default_context(cafile=str(pki.ca))
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(door.http_url + "/models", verify=context, timeout=10)


def test_mutual_tls_admits_a_client_with_a_certificate(doors: dict[str, Any], pki: Pki) -> None:
    door = doors["mutual"]
    client_cert = {"cert": pki.client_cert, "key": pki.client_key}
    with Client(door.address, ca=pki.ca, timeout=30, **client_cert) as client:
        assert client.list_agents()
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    reply = httpx.get(door.http_url + "/models", verify=context, timeout=10)
    assert reply.status_code == 200


def test_unreadable_tls_files_fail_at_config_load(tmp_path: Path, pki: Pki) -> None:
    from orchestrator.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text(f"server:\n  tls:\n    cert: {tmp_path / 'missing.pem'}\n    key: {pki.key}\n")
    with pytest.raises(ConfigError, match=r"server\.tls\.cert.*cannot read .*missing\.pem"):
        load_config(path)
