"""The OpenAI-compatible front door through a real deployment (Ray actors hosting
simulated engines, the executor, aiohttp beside grpc.aio), driven by the official
`openai` SDK, unchanged, and by the README's examples verbatim."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from orchestrator.client import Client

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"
TOKEN = "front-door-token"
_NAMESPACES = itertools.count()
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Compare H100 and B200 for agents."},
]


@contextlib.contextmanager
def deployment(server: dict[str, Any], time_scale: float = 0.0) -> Iterator[Any]:
    """A deployment of simulated replicas on its own event loop thread. It joins the
    session's Ray cluster when one runs (as in a full run, where live_server started it)
    and otherwise starts a private one for this module alone, stopped after: no vLLM
    engine is needed here, so running this file alone does not start one."""
    from orchestrator.config import DeploymentConfig
    from orchestrator.server.app import Deployment

    config = DeploymentConfig.model_validate(
        {
            "ray": {
                "address": "local",
                "num_cpus": 2,
                "namespace": f"inflection-front-door-{next(_NAMESPACES)}",
            },
            "server": {"host": "127.0.0.1", "port": 0, "http_port": 0, **server},
            "replicas": {
                "count": 2,
                "backend": "sim",
                "num_cpus": 0,
                "sim": {"time_scale": time_scale},
            },
            "limits": {"max_tokens_per_call": 1024},
        }
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="front-door", daemon=True)
    thread.start()
    try:
        running = asyncio.run_coroutine_threadsafe(Deployment.start(config), loop).result(300)
        try:
            yield running
        finally:
            asyncio.run_coroutine_threadsafe(running.stop(), loop).result(timeout=120)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture(scope="module")
def doors() -> Iterator[dict[str, Any]]:
    """Three deployments on one Ray connection: open (instant replicas), locked (a
    bearer token) and real time (simulated seconds are wall seconds). Nested in one
    fixture so that a private Ray cluster, when this module started one, outlives all."""
    with (
        deployment({}) as open_door,
        deployment({"auth_token": TOKEN}) as locked_door,
        deployment({}, time_scale=1.0) as real_time_door,
    ):
        yield {"open": open_door, "locked": locked_door, "real_time": real_time_door}


@pytest.fixture(scope="module")
def open_door(doors: dict[str, Any]) -> Any:
    return doors["open"]


@pytest.fixture(scope="module")
def locked_door(doors: dict[str, Any]) -> Any:
    return doors["locked"]


@pytest.fixture(scope="module")
def real_time_door(doors: dict[str, Any]) -> Any:
    return doors["real_time"]


@pytest.fixture
def client(open_door: Any) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=open_door.http_url, api_key="unused", max_retries=0) as c:
        yield c


def test_models_lists_the_agents_then_the_served_model(
    client: openai.OpenAI, open_door: Any
) -> None:
    models = list(client.models.list())
    ids = [m.id for m in models]
    with Client(open_door.address, timeout=30) as grpc_client:
        agents = sorted(a.name for a in grpc_client.list_agents())
        served = grpc_client.cluster_status().model
    assert ids == [*agents, served]
    assert {m.owned_by for m in models} == {"inflection"}
    assert models[-1].model_extra == {"inflection": {"kind": "model"}}


def test_chat_completion_whole_and_streamed_agree(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(
        model="plan_execute", messages=MESSAGES, max_tokens=24, seed=5
    )
    answer = whole.choices[0].message.content
    assert answer and whole.choices[0].finish_reason == "length"  # synthetic: max_tokens
    assert whole.model == "plan_execute"
    extension = whole.model_extra["inflection"]
    usage = extension["usage"]
    assert usage["llm_calls"] == 5 and usage["final_output_tokens"] == 24
    assert whole.usage is not None
    assert whole.usage.prompt_tokens == usage["prompt_tokens_total"]
    assert whole.usage.completion_tokens == usage["output_tokens_total"]
    assert whole.usage.total_tokens == usage["prompt_tokens_total"] + usage["output_tokens_total"]
    assert whole.usage.prompt_tokens_details is not None
    assert whole.usage.prompt_tokens_details.cached_tokens == usage["cached_tokens_total"]
    assert whole.id == f"chatcmpl-{extension['task_id']}"

    chunks = list(
        client.chat.completions.create(
            model="plan_execute",
            messages=MESSAGES,
            max_tokens=24,
            seed=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == answer  # simulated replicas: same seed, same tokens
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    streamed_usage = finals[0].model_extra["inflection"]["usage"]
    assert chunks[-1].usage.prompt_tokens == streamed_usage["prompt_tokens_total"]
    assert chunks[-1].usage.completion_tokens == usage["output_tokens_total"]


def test_inflection_options_pass_through_extra_body(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="plan_execute",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Plan a launch."}]}],
        extra_body={"inflection": {"step_max_tokens": {"synthesizer": 7, "planner": 3}}},
    )
    usage = reply.model_extra["inflection"]["usage"]
    assert usage["final_output_tokens"] == 7


def test_completions_whole_and_streamed(client: openai.OpenAI, open_door: Any) -> None:
    model = list(client.models.list())[-1].id
    whole = client.completions.create(model=model, prompt="Prefix caching is", max_tokens=8, seed=3)
    assert whole.object == "text_completion" and whole.choices[0].text
    assert whole.usage is not None and whole.usage.completion_tokens == 8
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + 8
    ids = client.completions.create(model=model, prompt=[5, 6, 7, 8], max_tokens=4)
    assert ids.usage is not None and ids.usage.prompt_tokens == 4
    chunks = list(
        client.completions.create(
            model=model,
            prompt="Prefix caching is",
            max_tokens=8,
            seed=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


def test_errors_are_the_sdks_own_exceptions(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no_such_agent", messages=MESSAGES)
    assert missing.value.code == "model_not_found" and "no_such_agent" in missing.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="plan_execute", messages=MESSAGES, max_tokens=5000)
    assert bad.value.param == "max_tokens" and "1024" in bad.value.message
    with pytest.raises(openai.BadRequestError, match="role 'user'"):
        client.chat.completions.create(
            model="plan_execute", messages=[{"role": "system", "content": "Hi."}]
        )
    with pytest.raises(openai.BadRequestError, match="max_model_len"):
        client.chat.completions.create(
            model="plan_execute",
            messages=[{"role": "user", "content": "plan the plan " * 8000}],
        )
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="plan_execute", prompt="hi")


def test_a_task_past_its_deadline_is_a_504_with_partial_usage(real_time_door: Any) -> None:
    url = real_time_door.http_url
    with (
        openai.OpenAI(base_url=url, api_key="x", max_retries=0) as client,
        pytest.raises(openai.InternalServerError) as failed,
    ):
        client.chat.completions.create(
            model="plan_execute",
            messages=MESSAGES,
            extra_body={"inflection": {"deadline_ms": 300, "step_max_tokens": {"worker": 900}}},
        )
    assert failed.value.status_code == 504 and failed.value.code == "deadline_exceeded"
    body = failed.value.body
    assert isinstance(body, dict) and "deadline" in body["message"]
    assert body["inflection"]["usage"]["llm_calls"] >= 1


def test_auth_wrong_or_missing_key_is_refused(locked_door: Any) -> None:
    with openai.OpenAI(base_url=locked_door.http_url, api_key="wrong", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError):
            c.models.list()
        with pytest.raises(openai.AuthenticationError):
            c.chat.completions.create(model="plan_execute", messages=MESSAGES)
    with openai.OpenAI(base_url=locked_door.http_url, api_key=TOKEN, max_retries=0) as c:
        assert c.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=4)


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_goes_away_cancels_its_task(real_time_door: Any, stream: bool) -> None:
    url = real_time_door.http_url
    with Client(real_time_door.address, timeout=30) as grpc_client:

        def in_flight() -> int:
            return sum(r.in_flight_calls for r in grpc_client.cluster_status().replicas)

        # Real time: three workers of 900 tokens take over 6 s; the client leaves at 1 s.
        with (
            openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=1.0) as client,
            pytest.raises((openai.APITimeoutError, httpx.TimeoutException)),
        ):
            reply = client.chat.completions.create(
                model="plan_execute",
                messages=MESSAGES,
                stream=stream,
                extra_body={"inflection": {"step_max_tokens": {"worker": 900}}},
            )
            if stream:
                list(reply)
        deadline = time.monotonic() + 2.0
        while in_flight():
            assert time.monotonic() < deadline, "the task kept running"
            time.sleep(0.05)


def _readme_examples() -> tuple[str, str, str]:
    """The section's curl, Python and `inflection load` examples."""
    section = README.read_text().split("## OpenAI-compatible front door", 1)[1]
    section = section.split("\n## ", 1)[0]
    curl, load = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    (python,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return curl, python, load


def test_the_readme_examples_run_verbatim(open_door: Any) -> None:
    curl, python, _ = _readme_examples()
    base = "http://127.0.0.1:8000/v1"
    assert base in curl and base in python
    done = subprocess.run(
        ["bash", "-c", curl.replace(base, open_door.http_url)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    reply = json.loads(done.stdout)
    assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["content"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = python.replace(base, open_door.http_url)
        exec(compile(code, "README.md front door example", "exec"), {})
    printed = out.getvalue()
    assert "'plan_execute'" in printed
    assert re.search(r"^\d+ tokens over 5 calls$", printed, flags=re.M), printed
    assert re.search(r"^streamed; \d+ tokens$", printed, flags=re.M), printed


def test_the_openai_target_drives_the_front_door(
    client: openai.OpenAI, open_door: Any, tmp_path: Path
) -> None:
    """`inflection load --target openai` at Inflection's own front door (simulated
    replicas, no vLLM): every call a streaming token-id completion, the task driver in
    the client. Nothing fails, the token ids come back (`return_token_ids`), and the
    calls are exact: synthetic mode's `ignore_eos` holds every output to its max_tokens."""
    import shlex
    import sys

    from orchestrator.replicas.tiny_model import build_tiny_model, default_tiny_model_dir

    kind = {"inflection": {"kind": "model"}}
    served = [m.id for m in client.models.list() if m.model_extra == kind]
    host = open_door.http_url.removesuffix("/v1")
    tokenizer = str(build_tiny_model(default_tiny_model_dir()))
    _, _, load = _readme_examples()
    argv = shlex.split(load.replace("\\\n", " "))
    assert argv[:4] == ["inflection", "load", "--target", "openai"]
    # The README's example, verbatim but for the address, the tokenizer and the output.
    argv = [{"http://127.0.0.1:8000": host, "DIR": tokenizer}.get(a, a) for a in argv[2:]]
    assert argv[argv.index("--model") + 1] == served[0]  # the served model, as listed
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "loadtests.cli", "load", *argv,
        "--out", str(out), "--export-calls",
    ]  # fmt: skip
    root = README.parent
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads((out / "locust_agentic.json").read_text())["summary"]
    assert figures["ok"] > 0 and figures["failed"] == 0, figures
    tasks = [json.loads(line) for line in (out / "tasks.jsonl").read_text().splitlines()]
    calls = [c for t in tasks for c in t["calls"] if c["kind"] == "llm"]
    assert calls and all(c["replica"] == host for c in calls)
    assert all(t["usage"]["llm_calls"] == 5 for t in tasks if t["ok"])
    # ignore_eos: each call ran to its max_tokens, as synthetic mode asks.
    assert {c["finish_reason"] for c in calls} == {"length"}
