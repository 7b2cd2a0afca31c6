"""Streaming calls to an OpenAI-compatible server (vLLM, SGLang, llm-d, Dynamo, ...) for
the load generator's OpenAI target (loadtests.openai_user).

Two layers:

- pure: the chat request body (`chat_body`), failure causes (`CallFailure`,
  `stream_failure` for what the fold of a stream refused); the completions body and the
  error text of a response (`completions_body`, `error_message`: orchestrator.openai_api),
  the SSE line parser and the fold of one stream into a `CallResult` (`sse_data`,
  `StreamFold`: orchestrator.openai_stream) are the orchestrator's, which its
  `backend: openai` uses too; unit-tested without a server;
- `OpenAIClient`: geventhttpclient (what Locust's FastHttpUser uses: C parser, gevent
  sockets, a connection pool), one per Locust user, `stream_call` reading the SSE stream
  line by line as it arrives, so TTFT and inter-token gaps are measured client-side.

Every way a server can misbehave ends in `CallFailure(cause, message)`, cause one of
CAUSES: an HTTP 4xx or 5xx status, a connection that could not be made or dropped, an
event stream that is not JSON or ends before its last chunk (`bad_sse`), a stream without
the `usage` chunk that `stream_options.include_usage` asks for (`no_usage`), and a model
the server does not serve (`unknown_model`). Nothing else escapes `stream_call`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, Self

from orchestrator.domain import CallResult, Sampling
from orchestrator.openai_api import ServerURL, error_message, sampling_fields
from orchestrator.openai_api import completions_body as completions_body
from orchestrator.openai_stream import StreamError, StreamFault, sse_data
from orchestrator.openai_stream import StreamFold as StreamFold

CAUSES = ("http_4xx", "http_5xx", "connection", "bad_sse", "no_usage", "unknown_model")

# Session-affinity headers sent with every call of a task (value: the task id), so a
# router in front of several engines keeps a task's calls together.
DEFAULT_AFFINITY_HEADERS = (
    "x-session-token",  # llm-d
    "X-Dynamo-Session-ID",  # NVIDIA Dynamo
    "x-smg-routing-key",  # SGLang model gateway
    "x-session-id",  # generic
)

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 300.0  # between two reads of a stream (a loaded server still sends)


class CallFailure(Exception):
    """A call that failed; `cause` is one of CAUSES, the message one line."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(cause, message)
        self.cause = cause
        self.message = message

    def __str__(self) -> str:
        return f"{self.cause}: {self.message}"


class Endpoint(ServerURL):
    """Where the server is: `--host http://H:P` (an optional /v1 suffix is dropped; a URL
    without a scheme is http)."""

    __slots__ = ()

    @classmethod
    def parse(cls, url: str | None) -> Self:
        if not url:
            raise ValueError("--host is required: the server's URL, e.g. http://127.0.0.1:8000")
        if "://" not in url:
            url = f"http://{url}"
        try:
            return super().parse(url)
        except ValueError as exc:
            raise ValueError(f"--host {url!r}: {exc}") from None


# ---- request bodies ---------------------------------------------------------------------


def chat_body(
    model: str,
    messages: Sequence[Mapping[str, str]],
    sampling: Sampling,
    priority: int | None = None,
) -> dict[str, Any]:
    """A streaming /v1/chat/completions request."""
    return {"model": model, "messages": list(messages), **sampling_fields(sampling, priority)}


# ---- the stream -------------------------------------------------------------------------


def classify_status(status: int, body: bytes, model: str) -> CallFailure:
    """The failure of a non-200 reply; a 404 (or 400) naming the model is unknown_model."""
    message = error_message(body, 200) or "(empty body)"
    lowered = message.lower()
    if (
        status in (400, 404)
        and "model" in lowered
        and ("not exist" in lowered or "not found" in lowered or model.lower() in lowered)
    ):
        return CallFailure("unknown_model", f"HTTP {status}: {message}")
    cause = "http_5xx" if status >= 500 else "http_4xx"
    return CallFailure(cause, f"HTTP {status}: {message}")


# What the fold of a stream refused, as a cause: an error the server put in the stream
# (vLLM's when its engine failed) counts as a 5xx.
_FAULT_CAUSES = {
    StreamFault.NOT_JSON: "bad_sse",
    StreamFault.NOT_A_CHUNK: "bad_sse",
    StreamFault.UNFINISHED: "bad_sse",
    StreamFault.ERROR: "http_5xx",
    StreamFault.NO_USAGE: "no_usage",
}


def stream_failure(error: StreamError) -> CallFailure:
    """The failure of a stream that `StreamFold` refused."""
    return CallFailure(_FAULT_CAUSES[error.fault], error.message)


# ---- the client -------------------------------------------------------------------------


class OpenAIClient:
    """A pooled geventhttpclient connection to one server (one per Locust user)."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        token: str | None = None,
        concurrency: int = 64,
        read_timeout_s: float = READ_TIMEOUT_S,
        ca_file: str | None = None,
    ) -> None:
        """`ca_file`: with an https endpoint, trust this CA bundle (PEM; `--tls-ca`)
        instead of the system's roots."""
        from geventhttpclient import HTTPClient

        self.endpoint = endpoint
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._http = HTTPClient(
            endpoint.host,
            endpoint.port,
            ssl=endpoint.tls,
            ssl_options={"ca_certs": ca_file} if endpoint.tls and ca_file else None,
            concurrency=concurrency,
            connection_timeout=CONNECT_TIMEOUT_S,
            network_timeout=read_timeout_s,
        )

    def close(self) -> None:
        self._http.close()

    def get_json(self, api_path: str) -> Any:
        """GET a JSON document; raises CallFailure."""
        try:
            response = self._http.get(self.endpoint.path(api_path), headers=self._headers)
            try:
                body = response.read()
            finally:
                response.release()
        except Exception as exc:  # noqa: BLE001 (socket, DNS, TLS, timeout: all one cause)
            raise CallFailure("connection", _describe(exc)) from None
        if response.status_code != 200:
            raise classify_status(response.status_code, body, "")
        try:
            return json.loads(body)
        except ValueError:
            raise CallFailure("bad_sse", f"{api_path}: not JSON") from None

    def stream_call(
        self,
        api_path: str,
        body: Mapping[str, Any],
        fold: StreamFold,
        headers: Mapping[str, str] | None = None,
    ) -> CallResult:
        """POST one streaming request and fold its SSE stream; raises CallFailure. A
        greenlet kill closes the connection (the server aborts the request)."""
        payload = json.dumps(body).encode()
        all_headers = {**self._headers, **(headers or {})}
        model = str(body.get("model", ""))
        fold.sent_at = time.perf_counter()
        try:
            response = self._http.post(
                self.endpoint.path(api_path), body=payload, headers=all_headers
            )
        except Exception as exc:  # noqa: BLE001
            raise CallFailure("connection", _describe(exc)) from None
        try:
            if response.status_code != 200:
                raise classify_status(response.status_code, _read_all(response), model)
            while True:
                try:
                    line = response.readline(b"\n")
                except Exception as exc:  # noqa: BLE001 (the connection dropped mid-stream)
                    raise CallFailure("connection", f"mid-stream: {_describe(exc)}") from None
                if not line:
                    break
                data = sse_data(line)
                if data is None:
                    continue
                if not fold.done:  # read on to the end of the message: the connection
                    fold.feed(data, time.perf_counter())  # goes back to the pool
            return fold.result()
        except StreamError as error:
            raise stream_failure(error) from None
        finally:
            response.release()


def _read_all(response: Any) -> bytes:
    try:
        body: bytes = response.read()
        return body
    except Exception:  # noqa: BLE001
        return b""


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
