"""`inflection load --target openai` against an https server with a self-signed
certificate (a stub on 127.0.0.1: /v1/models lists the tiny model, every completion is a
503, so a call that got through TLS fails as http_5xx).

- `SSL_CERT_FILE=ca.pem` (OpenSSL's own variable) makes the OpenAI target trust the CA:
  calls reach the server;
- `--tls-ca ca.pem` does the same without touching the process's trust store.

Runs in the main pytest process: `inflection load` is a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
]

REPO = Path(__file__).resolve().parents[2]


class _Stub(BaseHTTPRequestHandler):
    model = ""

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        listing = {"object": "list", "data": [{"id": self.model, "max_model_len": 1024}]}
        self._reply(200, json.dumps(listing).encode())

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._reply(503, b'{"error": {"message": "stub: no engine"}}')

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(https URL, the self-signed certificate to trust)."""
    from orchestrator.replicas.tiny_model import build_tiny_model, default_tiny_model_dir

    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    _Stub.model = str(build_tiny_model(default_tiny_model_dir()))  # its tokenizer is used
    server = HTTPServer(("127.0.0.1", 0), _Stub)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="tls-stub", daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()


def _load(url: str, out: Path, *flags: str, **env: str) -> subprocess.CompletedProcess[str]:
    workload = out.parent / "workload.yaml"  # short plan_execute tasks: all fit 1024 tokens
    workload.write_text("agents: {plan_execute: 1}\ninput_tokens: 24\n")
    command = [
        *(sys.executable, "-m", "loadtests.cli", "load", "--target", "openai", "--host", url),
        *("--workload", str(workload), "--users", "1", "--run-time", "3s", "--out", str(out)),
        *flags,
    ]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=90,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
    )


def _calls_got_through(done: subprocess.CompletedProcess[str], out: Path) -> None:
    assert "CERTIFICATE_VERIFY_FAILED" not in done.stderr, done.stderr[-2000:]
    figures = json.loads((out / "locust_agentic.json").read_text())["summary"]
    assert figures["failed"] >= 1 and set(figures["failures"]) == {"http_5xx"}, figures


def test_ssl_cert_file_trusts_a_self_signed_server(
    tls_server: tuple[str, Path], tmp_path: Path
) -> None:
    url, cert = tls_server
    done = _load(url, tmp_path / "out", SSL_CERT_FILE=str(cert))
    _calls_got_through(done, tmp_path / "out")


def test_tls_ca_trusts_a_self_signed_server(tls_server: tuple[str, Path], tmp_path: Path) -> None:
    url, cert = tls_server
    done = _load(url, tmp_path / "out", "--tls-ca", str(cert))
    _calls_got_through(done, tmp_path / "out")
