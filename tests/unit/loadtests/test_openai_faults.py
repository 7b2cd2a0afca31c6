"""A misbehaving OpenAI server (a raw socket server in this process, one behaviour per
model name) against the OpenAI target's client and runner: every fault is a failure
counted by its cause, never an exception out of a user."""

from __future__ import annotations

import locust

# isort: split
import argparse
import json
import socket
import socketserver
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from locust.env import Environment

from agents.library import BUILTIN_PROGRAMS
from loadtests.openai_http import CallFailure, Endpoint, OpenAIClient, StreamFold
from loadtests.openai_user import OpenAIRunner, Target
from loadtests.state import state_of
from loadtests.workload import Workload
from orchestrator.executor.driver import filler_tokens
from orchestrator.executor.interpreter import Encoder, Interpreter

_ = locust

MODELS = ["ok", "status500", "status400", "garbage", "truncated", "nousage", "drop"]


def _sse(*payloads: str) -> bytes:
    return b"".join(f"data: {p}\n\n".encode() for p in payloads)


def _stream(body: dict[str, Any]) -> bytes:
    n = int(body["max_tokens"])
    chunks = [
        json.dumps({"choices": [{"text": "x", "token_ids": [7], "finish_reason": None}]})
        for _ in range(n - 1)
    ]
    chunks.append(
        json.dumps({"choices": [{"text": "x", "token_ids": [7], "finish_reason": "length"}]})
    )
    usage = {
        "prompt_tokens": len(body["prompt"]),
        "completion_tokens": n,
        "prompt_tokens_details": {"cached_tokens": 2},
    }
    return _sse(*chunks, json.dumps({"choices": [], "usage": usage}), "[DONE]")


def _reply(status: str, body: bytes, content_type: str = "text/event-stream") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nConnection: close\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


class _Handler(socketserver.StreamRequestHandler):
    seen_headers: ClassVar[list[dict[str, str]]] = []
    seen_bodies: ClassVar[list[dict[str, Any]]] = []
    seen_ports: ClassVar[list[int]] = []  # the server port of each completion

    def handle(self) -> None:
        request_line = self.rfile.readline().decode()
        headers: dict[str, str] = {}
        while (line := self.rfile.readline().decode().strip()) != "":
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        _Handler.seen_headers.append(headers)
        size = int(headers.get("content-length", "0"))
        raw = self.rfile.read(size) if size else b""
        if request_line.startswith("GET /v1/models"):
            listing = {"data": [{"id": m, "max_model_len": 4096} for m in MODELS]}
            self.wfile.write(_reply("200 OK", json.dumps(listing).encode(), "application/json"))
            return
        body = json.loads(raw)
        _Handler.seen_bodies.append(body)
        _Handler.seen_ports.append(self.server.server_address[1])
        model = body["model"]
        out = self.wfile
        if model == "ok":
            out.write(_reply("200 OK", _stream(body)))
        elif model == "status500":
            out.write(_reply("500 Internal Server Error", b'{"error": {"message": "boom"}}'))
        elif model == "status400":
            out.write(_reply("400 Bad Request", b'{"error": {"message": "bad max_tokens"}}'))
        elif model == "garbage":
            out.write(_reply("200 OK", b"data: {not json\n\n"))
        elif model == "truncated":
            out.write(_reply("200 OK", _stream(body)[:40]))
        elif model == "nousage":
            out.write(_reply("200 OK", _stream(body).replace(b'"usage"', b'"nothing"')))
        elif model == "drop":
            whole = _reply("200 OK", _stream(body))
            out.write(whole[: len(whole) // 2])
            out.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        else:
            message = f'{{"error": {{"message": "The model `{model}` does not exist."}}}}'
            out.write(_reply("404 Not Found", message.encode(), "application/json"))


def _serve() -> Iterator[str]:
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    yield from _serve()


@pytest.fixture(scope="module")
def second_server() -> Iterator[str]:
    yield from _serve()


@pytest.mark.parametrize(
    ("model", "cause"),
    [
        ("status500", "http_5xx"),
        ("status400", "http_4xx"),
        ("garbage", "bad_sse"),
        ("truncated", "bad_sse"),
        ("nousage", "no_usage"),
        ("drop", "connection"),
        ("gpt-nope", "unknown_model"),
    ],
)
def test_client_names_each_fault(server: str, model: str, cause: str) -> None:
    client = OpenAIClient(Endpoint.parse(server), read_timeout_s=5)
    body = {"model": model, "prompt": [1, 2, 3], "max_tokens": 4, "stream": True}
    with pytest.raises(CallFailure) as raised:
        client.stream_call("/v1/completions", body, StreamFold("c", 0.0))
    assert raised.value.cause == cause, raised.value
    client.close()


def test_client_streams_a_good_call(server: str) -> None:
    client = OpenAIClient(Endpoint.parse(server), read_timeout_s=5)
    body = {"model": "ok", "prompt": [1, 2, 3], "max_tokens": 4, "stream": True}
    result = client.stream_call("/v1/completions", body, StreamFold("c", 0.0))
    assert result.token_ids == (7, 7, 7, 7) and result.usage.cached_prompt_tokens == 2
    client.close()


def test_refused_connection() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client = OpenAIClient(Endpoint.parse(f"http://127.0.0.1:{port}"))
    with pytest.raises(CallFailure) as raised:
        client.get_json("/v1/models")
    assert raised.value.cause == "connection"


class _Chars:
    """A tokenizer for tests: one token per character."""

    bos_token_id = 1

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [2 + ord(c) % 250 for c in text]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids)


def _runner(server: str, model: str, events: list[dict[str, Any]]) -> OpenAIRunner:
    env = Environment(host=server)
    env.parsed_options = argparse.Namespace(
        api="completions", model=model, tokenizer="", affinity_header="", priority=True, token=""
    )
    env.events.request.add_listener(lambda **kw: events.append(kw))  # type: ignore[no-untyped-call]
    state_of(env).workload = Workload(agents={"plan_execute": 1}, input_tokens=8)
    runner = OpenAIRunner(env, server)
    tokenizer = _Chars()
    encoder = Encoder(tokenizer.encode, tokenizer.bos_token_id)
    runner._target = Target(
        options=runner.options,
        model=model,
        max_model_len=4096,
        tokenizer=tokenizer,
        encoder=encoder,
        interpreters={n: Interpreter(p, encoder) for n, p in BUILTIN_PROGRAMS.items()},
        filler=filler_tokens(encoder),
    )
    return runner


def test_runner_counts_tasks_and_failures_by_cause(server: str) -> None:
    events: list[dict[str, Any]] = []
    good = _runner(server, "ok", events)
    _Handler.seen_headers.clear()
    _Handler.seen_bodies.clear()
    sample = good.run_one("plan_execute", seed=3)
    assert sample.ok and sample.llm_calls == 5 and sample.cached_tokens == 10
    sent = [h for h in _Handler.seen_headers if "x-session-id" in h]
    assert len(sent) == 5 and len({h["x-session-id"] for h in sent}) == 1
    assert sent[0]["x-session-token"] == sent[0]["x-dynamo-session-id"] == sent[0]["x-session-id"]
    assert events[-1]["exception"] is None and events[-1]["name"] == "plan_execute"
    # --priority: the driver's priority in vLLM's field; synthetic mode: exact lengths.
    assert all("priority" in b and b["ignore_eos"] for b in _Handler.seen_bodies)
    for model, cause in [
        ("status500", "http_5xx"),
        ("drop", "connection"),
        ("zzz", "unknown_model"),
    ]:
        runner = _runner(server, model, events)
        failed = runner.run_one("plan_execute")
        assert not failed.ok and failed.status == cause
        assert str(events[-1]["exception"]).startswith(f"{cause}: ")
        assert runner.stats.snapshot()["summary"]["failures"] == {cause: 1}


def test_several_hosts_take_the_calls_in_turn(server: str, second_server: str) -> None:
    """--host A,B: each call goes to the next server, as behind a round-robin balancer,
    across tasks; every call's sample names the server it went to."""
    events: list[dict[str, Any]] = []
    runner = _runner(f"{server},{second_server}", "ok", events)
    runner.stats.keep_calls = True
    _Handler.seen_ports.clear()
    samples = [runner.run_one("react", seed=s) for s in (1, 2)]
    assert all(s.ok for s in samples)
    ports = [int(u.rsplit(":", 1)[1]) for u in (server, second_server)]
    calls = len(_Handler.seen_ports)
    assert calls == sum(s.llm_calls for s in samples) >= 4
    assert sorted(set(_Handler.seen_ports)) == sorted(ports)
    # Strict alternation where calls are sequential (react's steps are).
    assert all(a != b for a, b in zip(_Handler.seen_ports, _Handler.seen_ports[1:], strict=False))
    replicas = [c.target for s in samples for c in s.calls if c.kind == "llm"]
    assert set(replicas) == {server, second_server}
    runner.close()


def test_several_hosts_must_all_serve_the_model(server: str) -> None:
    from loadtests.openai_user import OpenAIOptions, TargetError, served_model

    dead = f"http://127.0.0.1:{_free_port()}"
    env = Environment(host=f"{server},{dead}")
    env.parsed_options = argparse.Namespace(
        api="completions", model="ok", tokenizer="", affinity_header="", priority=False
    )
    options = OpenAIOptions.of(env)
    assert [e.url for e in options.endpoints] == [server, dead]
    with pytest.raises(TargetError) as raised:
        served_model(options)
    assert raised.value.cause == "connection" and dead in str(raised.value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _collect(events: list[dict[str, Any]]) -> Any:
    return lambda **kw: events.append(kw)


def test_trace_replay_over_openai(server: str) -> None:
    from loadtests.openai_trace import OpenAITraceReplayer
    from loadtests.trace_user import TraceConfig
    from orchestrator.workload.traces import TraceRequest

    requests = [TraceRequest(i + 1, 0.01 * i, 20, 3, ()) for i in range(3)]
    results = {}
    for model in ("ok", "status500"):
        events: list[dict[str, Any]] = []
        env = Environment(host=server)
        env.parsed_options = argparse.Namespace(
            api="completions", model=model, tokenizer="", affinity_header="", priority=False
        )
        env.events.request.add_listener(_collect(events))  # type: ignore[no-untyped-call]
        replayer = OpenAITraceReplayer(env, server, TraceConfig(requests, vocab_size=100))
        replayer.replay(0, 1)
        replayer.close()
        results[model] = state_of(env).stats.snapshot()["summary"]
        assert [e["request_type"] for e in events] == ["generate"] * 3
    assert results["ok"]["ok"] == 3 and results["ok"]["prefix_hit_rate"] == 0.1  # 2 of 20
    assert results["status500"]["failures"] == {"http_5xx": 3}


def test_an_inflection_front_door_model_is_chosen_over_its_agents() -> None:
    from loadtests.openai_user import TargetError, check_models

    def entry(name: str, kind: str | None = None) -> dict[str, Any]:
        return {"id": name, **({"inflection": {"kind": kind}} if kind else {})}

    door = {"data": [entry("chat", "agent"), entry("react", "agent"), entry("m x", "model")]}
    assert check_models(door, None) == ("m x", None)
    assert check_models(door, "react") == ("react", None)  # asked for: taken as named
    plain = {"data": [entry("a"), {"id": "b", "max_model_len": 2048}]}
    assert check_models(plain, None) == ("a", None)
    assert check_models(plain, "b") == ("b", 2048)
    with pytest.raises(TargetError) as raised:
        check_models(plain, "c")
    assert raised.value.cause == "unknown_model" and "a, b" in str(raised.value)
