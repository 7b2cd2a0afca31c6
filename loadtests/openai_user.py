"""The load generator's OpenAI target: Locust users that run each agent program
themselves, client-side, through the task driver (orchestrator.executor.driver), issuing
every LLM call as a streaming request to an OpenAI-compatible server.

This is the driver's third shell (after the asyncio executor and the simulator), on
gevent: a `Dispatch` spawns a greenlet that streams the call (loadtests.openai_http) and
puts its outcome on the task's queue; a `RunTool` sleeps the simulated tool's latency (a
registered tool runs in gevent's thread pool); `Cancel` kills the greenlets (closing their
connections, so the server aborts the requests); `Finish` records the task's `TaskSample`
exactly as the gRPC user does, so every agentic figure, web-UI tab, report, sweep and
distributed run works unchanged. Parallel branches are concurrent requests.

- `--api completions` (default): token-id prompts (exact token counts; vLLM returns the
  output's token ids with `return_token_ids`, so each context is an exact prefix of the
  next and prefix caching sees what the orchestrator would send);
- `--api chat`: each step's context becomes the message history (the program's system
  prompt; the task's earlier outputs found in the context as assistant turns, the text
  between them as user turns); token counts are the server's.

Every call carries the task id in the session-affinity headers (`--affinity-header`) and,
with `--priority`, the driver's priority in vLLM's `priority` field. Locust's request
event is one per task (request_type "task", name = agent) as for the gRPC target; a failed
task's message starts with its cause (http_4xx, http_5xx, connection, bad_sse, no_usage,
unknown_model, or DEADLINE_EXCEEDED / INVALID_ARGUMENT from the driver), and
`TaskSample.status` is that cause, so the agentic `failures` figure counts them by cause.

Imports no Ray (orchestrator.routing and the driver are pure), so it runs in Locust.
"""

from __future__ import annotations

import locust

# isort: split
import json
import random
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import gevent.queue

from agents.dsl import Program
from agents.library import BUILTIN_PROGRAMS
from loadtests.metrics import StepFold, TaskSample
from loadtests.openai_http import (
    DEFAULT_AFFINITY_HEADERS,
    CallFailure,
    Endpoint,
    OpenAIClient,
    StreamFold,
    chat_body,
    completions_body,
)
from loadtests.options import parse_hosts
from loadtests.state import state_of
from loadtests.user import (
    AgentUser,
    OpenLoopUser,
    Runner,
    fire_sample_events,
    tls_of,
    token_of,
)
from orchestrator.config import PriorityPolicy, PrioritySettings
from orchestrator.domain import (
    CallResult,
    ErrorCode,
    StepFinished,
    TaskSpec,
    TaskUsage,
)
from orchestrator.executor.driver import (
    Cancel,
    Dispatch,
    Emit,
    Finish,
    RunTool,
    TaskDriver,
    TaskFailed,
    filler_tokens,
    prepare_task,
    simulated_tool_outcome,
)
from orchestrator.executor.interpreter import Action, Encoder, Interpreter, Outcome
from orchestrator.replicas.engine import EngineError
from orchestrator.routing import ReplicaView, RoundRobinRouter
from orchestrator.workload.mix import input_text

_ = locust  # imported first for its gevent monkey-patching

COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"
# Where a call failure leaves the task: the driver's error code for each cause.
_CODES = {
    "connection": ErrorCode.UNAVAILABLE,
    "http_5xx": ErrorCode.UNAVAILABLE,
    "http_4xx": ErrorCode.INVALID_ARGUMENT,
    "unknown_model": ErrorCode.NOT_FOUND,
    "bad_sse": ErrorCode.INTERNAL,
    "no_usage": ErrorCode.INTERNAL,
}


class TargetError(Exception):
    """The target cannot run the workload; the message is one line, `cause` the failure
    cause its tasks are counted under."""

    def __init__(self, message: str, cause: str = "connection") -> None:
        super().__init__(message)
        self.cause = cause


@dataclass(slots=True, frozen=True)
class OpenAIOptions:
    """The OpenAI target's options, read from Locust's parsed options."""

    endpoints: tuple[Endpoint, ...]  # --host A,B,...: the calls go round robin over them
    model: str | None  # None: the first model the server lists
    api: str  # "completions" | "chat"
    tokenizer: str | None  # a tokenizer directory (default: --model when it is one)
    affinity_headers: tuple[str, ...]
    priority: bool  # send the driver's priority in vLLM's `priority` field
    token: str | None
    tls_ca: str | None = None  # --tls-ca: trust this CA bundle for https:// servers

    @classmethod
    def of(cls, environment: Any, host: str | None = None) -> OpenAIOptions:
        options = environment.parsed_options
        api = str(getattr(options, "api", "completions") or "completions")
        if api not in ("completions", "chat"):
            raise TargetError(f"--api: {api!r} is not completions or chat")
        return cls(
            endpoints=_endpoints(host if host is not None else environment.host),
            model=getattr(options, "model", "") or None,
            api=api,
            tokenizer=getattr(options, "tokenizer", "") or None,
            affinity_headers=parse_affinity_headers(
                str(getattr(options, "affinity_header", "") or "")
            ),
            priority=bool(getattr(options, "priority", False)),
            token=token_of(environment),
            tls_ca=tls_of(environment)[1],
        )

    @property
    def endpoint(self) -> Endpoint:
        """The first server: the one a trace replay and the start-up checks talk to first."""
        return self.endpoints[0]


def _endpoints(host: str | None) -> tuple[Endpoint, ...]:
    try:
        return parse_hosts(host)
    except ValueError as exc:
        raise TargetError(str(exc)) from None


def parse_affinity_headers(text: str) -> tuple[str, ...]:
    """--affinity-header: comma-separated header names; "" for the defaults (llm-d,
    Dynamo, SGLang gateway, generic); "none" for no header."""
    text = text.strip()
    if not text:
        return DEFAULT_AFFINITY_HEADERS
    if text.lower() == "none":
        return ()
    return tuple(h.strip() for h in text.split(",") if h.strip())


@dataclass(slots=True)
class Target:
    """What every user of one process shares: the served model, its context length, the
    tokenizer and the agent interpreters."""

    options: OpenAIOptions
    model: str
    max_model_len: int
    tokenizer: Any
    encoder: Encoder
    interpreters: dict[str, Interpreter]
    filler: tuple[int, ...]
    programs: Mapping[str, Program] = field(default_factory=dict)


def _kind(entry: Mapping[str, Any]) -> str | None:
    """What an Inflection front door says an entry of /v1/models is: agent or model."""
    extension = entry.get("inflection")
    return str(extension.get("kind")) if isinstance(extension, dict) else None


def check_models(listing: Any, wanted: str | None) -> tuple[str, int | None]:
    """(the model to use, its max_model_len when listed) from a /v1/models reply; raises
    TargetError naming the served models when `wanted` is not among them."""
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list):
        raise TargetError("/v1/models: not an OpenAI model list")
    served = {str(m.get("id")): m for m in data if isinstance(m, dict) and m.get("id")}
    if not served:
        raise TargetError("/v1/models: the server lists no model")
    # An Inflection front door lists its agents first, then the model it serves.
    models = [name for name, m in served.items() if _kind(m) == "model"]
    model = wanted or (models or list(served))[0]
    if model not in served:
        raise TargetError(
            f"--model {model!r} is not served; the server has: {', '.join(sorted(served))}",
            "unknown_model",
        )
    length = served[model].get("max_model_len")
    return model, int(length) if isinstance(length, int) else None


class FastTokenizer:
    """A tokenizer directory's `tokenizer.json` through the `tokenizers` library alone:
    what a Hugging Face fast tokenizer encodes, without importing transformers (~5-30 s
    on this machine, counted against Locust's --run-time)."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.bos_token_id: int | None = None
        config = path / "tokenizer_config.json"
        if config.is_file():
            bos = json.loads(config.read_text()).get("bos_token")
            if isinstance(bos, dict):
                bos = bos.get("content")
            if isinstance(bos, str):
                self.bos_token_id = self._tokenizer.token_to_id(bos)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        text: str = self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        return text


def load_tokenizer(path: str) -> Any:
    """The tokenizer of a directory on disk (no Hub here): its tokenizer.json when it has
    one, else transformers' AutoTokenizer. Raises TargetError."""
    folder = Path(path).expanduser()
    try:
        if (folder / "tokenizer.json").is_file():
            return FastTokenizer(folder)
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001 (missing files, bad config: one line)
        raise TargetError(
            f"--tokenizer {path!r}: cannot load a tokenizer ({type(exc).__name__}); give "
            "the model's tokenizer directory on disk (token-id prompts need it)",
            "tokenizer",
        ) from None


_TARGETS: dict[tuple[Any, ...], Target] = {}


def served_model(options: OpenAIOptions) -> tuple[str, int | None]:
    """(the model to use, its max_model_len when listed), from every server's
    `/v1/models`: with several servers, each must serve that model (the shortest context
    of theirs is the one a task must fit). Raises TargetError with one line."""
    model = options.model
    lengths: list[int] = []
    for endpoint in options.endpoints:
        client = OpenAIClient(endpoint, token=options.token, concurrency=1, ca_file=options.tls_ca)
        try:
            listing = client.get_json("/v1/models")
        except CallFailure as exc:
            raise TargetError(
                f"cannot list the models of {endpoint.url} (/v1/models): {exc}", exc.cause
            ) from None
        finally:
            client.close()
        try:
            model, length = check_models(listing, model)
        except TargetError as exc:
            where = f"{endpoint.url}: " if len(options.endpoints) > 1 else ""
            raise TargetError(f"{where}{exc}", exc.cause) from None
        if length is not None:
            lengths.append(length)
    assert model is not None
    return model, min(lengths) if lengths else None


def connect(options: OpenAIOptions, agents: list[str] | None = None) -> Target:
    """Ask the server which models it serves (`/v1/models`), load the tokenizer and build
    the interpreters; cached per process. Raises TargetError with one line."""
    key = (options.endpoints, options.model, options.tokenizer, options.token, options.tls_ca)
    target = _TARGETS.get(key)
    if target is None:
        model, length = served_model(options)
        path = options.tokenizer or model
        tokenizer = load_tokenizer(path)
        encoder = Encoder(
            lambda text: list(tokenizer.encode(text, add_special_tokens=False)),
            tokenizer.bos_token_id,
        )
        programs = dict(BUILTIN_PROGRAMS)
        target = Target(
            options=options,
            model=model,
            max_model_len=length or int(getattr(tokenizer, "model_max_length", 0) or 4096),
            tokenizer=tokenizer,
            encoder=encoder,
            interpreters={n: Interpreter(p, encoder) for n, p in programs.items()},
            filler=filler_tokens(encoder),
            programs=programs,
        )
        _TARGETS[key] = target
    missing = sorted(set(agents or ()) - set(target.interpreters))
    if missing:
        raise TargetError(
            f"unknown agent{'s' if len(missing) > 1 else ''} in the workload: "
            f"{', '.join(missing)}; known agents: {', '.join(sorted(target.interpreters))}"
        )
    return target


# ---- the shell ---------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class _Done:
    action_id: str
    result: CallResult
    first_token_at: float | None


@dataclass(slots=True, frozen=True)
class _CallFailed:
    action_id: str
    failure: CallFailure


@dataclass(slots=True, frozen=True)
class _ToolDone:
    action_id: str
    outcome: Outcome
    ok: bool


_Message = _Done | _CallFailed | _ToolDone


# One round robin per process and set of servers, shared by every user: the calls of all
# tasks take the servers in turn, as behind a round-robin load balancer.
_ROUTERS: dict[tuple[Endpoint, ...], RoundRobinRouter] = {}
# --priority: the orchestrator's program-aware levels (orchestrator.routing.priority).
PRIORITY = PrioritySettings(policy=PriorityPolicy.PROGRAM_AWARE)


class OpenAIRunner:
    """Runs tasks of the workload against the servers of --host; shared by a user's
    greenlets. A server's URL is its replica name in the driver's routing, so each call
    goes to the next server in turn (one server: every call goes to it, and its own
    router, if any, spreads them)."""

    def __init__(self, environment: Any, host: str | None) -> None:
        self.environment = environment
        self.workload = state_of(environment).workload
        self.stats = state_of(environment).stats
        self.options = OpenAIOptions.of(environment, host)
        self.rng = random.Random()
        self.clients = {
            e.url: OpenAIClient(
                e, token=self.options.token, concurrency=256, ca_file=self.options.tls_ca
            )
            for e in self.options.endpoints
        }
        self.router = _ROUTERS.setdefault(self.options.endpoints, RoundRobinRouter())
        self._views = tuple(ReplicaView(url, True, 0) for url in self.clients)
        self._target: Target | None = None

    def close(self) -> None:
        for client in self.clients.values():
            client.close()

    def target(self) -> Target:
        if self._target is None:
            self._target = connect(self.options)
        return self._target

    def spec(self, agent: str, seed: int | None = None) -> TaskSpec:
        w = self.workload
        return TaskSpec(
            agent=agent,
            input=input_text(self.rng, w.draw_input_tokens(self.rng)),
            mode=w.mode,
            max_tokens=w.max_tokens,
            deadline_s=w.deadline_s,
            step_max_tokens=tuple(sorted(w.step_max_tokens.items())),
            seed=seed,
        )

    def run_one(self, agent: str | None = None, seed: int | None = None) -> TaskSample:
        """Run one task to its end, record its sample and fire its Locust event (`seed`:
        the task's shape, as in a TaskRequest; drawn when None)."""
        agent = agent or self.workload.choose_agent(self.rng)
        target: Target | TargetError
        try:
            target = self.target()  # once per process: /v1/models and the tokenizer
        except TargetError as exc:
            target = exc
        sent_at = time.perf_counter()
        recorder = _Recorder(agent, sent_at, keep_calls=self.stats.keep_calls)
        try:
            if isinstance(target, TargetError):
                raise target
            outcome = self._run(target, self.spec(agent, seed), recorder)
        except TargetError as exc:
            outcome = (exc.cause, str(exc), None)
        except TaskFailed as exc:  # prepare_task: the agent or the context length
            outcome = (exc.code.name, exc.message, exc.usage)
        except Exception as exc:  # noqa: BLE001 (a bug here still never crashes the user)
            outcome = ("INTERNAL", f"client-side: {exc!r}"[:300], None)
        status, error, usage = outcome
        now = time.perf_counter()
        sample = recorder.sample(now, time.time(), status, usage)
        self.stats.add(sample)
        fire: Any = self.environment.events.request.fire
        fire_sample_events(fire, "task", agent, sample, now - sent_at, status, error)
        return sample

    def _run(
        self, target: Target, spec: TaskSpec, recorder: _Recorder
    ) -> tuple[str, str | None, TaskUsage | None]:
        """(status, error or None, usage) of one task, driven to its end."""
        task_id = f"task-{uuid.uuid4().hex[:12]}"
        progress = prepare_task(target.interpreters, spec, task_id, target.max_model_len)
        interpreter = target.interpreters[spec.agent]
        driver = TaskDriver(
            interpreter,
            progress,
            self.router,
            lambda: self._views,
            accepted_at=time.perf_counter(),
            stream_answer=False,  # every call streams; task TTFT is its first answer token
            # --priority: the program-aware levels the orchestrator would give each call.
            priority=PRIORITY if self.options.priority else None,
        )
        queue: gevent.queue.Queue[_Message] = gevent.queue.Queue()
        running: dict[str, gevent.Greenlet] = {}
        headers = dict.fromkeys(self.options.affinity_headers, task_id)
        cause: str | None = None  # the call failure that ended the task
        outputs: list[tuple[int, ...]] = []  # chat: the task's outputs, for its messages
        try:
            commands = driver.start(time.perf_counter())
            while True:
                for command in commands:
                    if isinstance(command, Dispatch):
                        running[command.action.action_id] = gevent.spawn(
                            self._call,
                            target,
                            interpreter.program,
                            command,
                            headers,
                            queue,
                            outputs,
                        )
                    elif isinstance(command, RunTool):
                        running[command.action.action_id] = gevent.spawn(
                            self._tool, target, command.action, queue
                        )
                    elif isinstance(command, Cancel):
                        _kill(running)
                    elif isinstance(command, Emit):
                        recorder.on_step(command.event, time.perf_counter())
                    elif isinstance(command, Finish):
                        if command.result is not None:
                            return "OK", None, command.result.usage
                        failure = command.failure
                        assert failure is not None
                        status = cause or failure.code.name
                        return status, failure.message, failure.usage
                timeout = None if driver.deadline is None else driver.deadline - time.perf_counter()
                try:
                    if timeout is not None and timeout <= 0:
                        raise gevent.queue.Empty
                    message = queue.get(timeout=timeout)
                except gevent.queue.Empty:
                    commands = driver.expire(time.perf_counter())
                    continue
                now = time.perf_counter()
                running.pop(message.action_id, None)
                if isinstance(message, _Done):
                    commands = driver.call_done(
                        message.action_id, message.result, now, message.first_token_at
                    )
                elif isinstance(message, _ToolDone):
                    commands = driver.tool_done(message.action_id, message.outcome, message.ok, now)
                else:
                    failure = message.failure
                    error = EngineError(_CODES[failure.cause], str(failure))
                    commands = driver.call_failed(message.action_id, error, now, retryable=False)
                    if any(isinstance(c, Finish) for c in commands):
                        cause = failure.cause
        finally:
            driver.abandon()
            _kill(running)

    def _call(
        self,
        target: Target,
        program: Program,
        dispatch: Dispatch,
        headers: Mapping[str, str],
        queue: gevent.queue.Queue[_Message],
        outputs: list[tuple[int, ...]],
    ) -> None:
        """One streaming call; its outcome goes to the task's queue."""
        request = dispatch.request
        call_id = request.call_id
        client = self.clients[dispatch.replica]
        priority = request.priority if self.options.priority else None
        chat = self.options.api == "chat"
        fold = StreamFold(call_id, time.perf_counter(), chat=chat)
        try:
            if chat:
                messages = chat_messages(
                    target.tokenizer, program, request.prompt_token_ids, outputs
                )
                body = chat_body(target.model, messages, request.sampling, priority)
                result = client.stream_call(CHAT, body, fold, headers)
                # The context goes on in token ids: the local tokenizer's, of the text.
                if not result.token_ids:
                    ids = tuple(target.encoder(result.text))
                    result = CallResult(
                        result.call_id,
                        ids,
                        result.text,
                        result.finish_reason,
                        result.usage,
                        result.timings,
                    )
                outputs.append(result.token_ids)
            else:
                body = completions_body(
                    target.model, request.prompt_token_ids, request.sampling, priority
                )
                result = client.stream_call(COMPLETIONS, body, fold, headers)
                if len(result.token_ids) != result.usage.output_tokens:
                    raise CallFailure(
                        "bad_sse",
                        f"{len(result.token_ids)} token ids for {result.usage.output_tokens} "
                        "output tokens (does the server support return_token_ids?)",
                    )
        except CallFailure as exc:
            queue.put(_CallFailed(call_id, exc))
        except Exception as exc:  # noqa: BLE001 (never a crashed user)
            queue.put(_CallFailed(call_id, CallFailure("bad_sse", repr(exc)[:200])))
        else:
            queue.put(_Done(call_id, result, fold.first_token_at))

    def _tool(self, target: Target, action: Action, queue: gevent.queue.Queue[_Message]) -> None:
        if action.tool is None:
            gevent.sleep(action.latency_s)
            queue.put(
                _ToolDone(action.action_id, simulated_tool_outcome(action, target.filler), True)
            )
            return
        from agents.tools import get_tool

        try:
            tool = get_tool(action.tool)
            pool = gevent.get_hub().threadpool
            result = pool.apply(tool.run, (action.argument,), {"time_limit_s": action.time_limit_s})
            outcome = Outcome(target.encoder(result.text), result.text)
            queue.put(_ToolDone(action.action_id, outcome, bool(result.ok)))
        except Exception as exc:  # noqa: BLE001
            text = f"tool {action.tool!r} failed: {exc!r}"
            queue.put(_ToolDone(action.action_id, Outcome(target.encoder(text), text), False))


def assistant_spans(
    ids: Sequence[int], outputs: Iterable[tuple[int, ...]]
) -> list[tuple[int, int]]:
    """Where earlier outputs of the task (two tokens or more) sit in a context, as sorted,
    non-overlapping (start, end) spans; the longest outputs are placed first."""
    taken = [False] * len(ids)
    spans: list[tuple[int, int]] = []
    for out in sorted({o for o in outputs if len(o) >= 2}, key=len, reverse=True):
        n, i = len(out), 0
        while i <= len(ids) - n:
            if ids[i] == out[0] and tuple(ids[i : i + n]) == out and not any(taken[i : i + n]):
                spans.append((i, i + n))
                taken[i : i + n] = [True] * n
                i += n
            else:
                i += 1
    return sorted(spans)


def chat_messages(
    tokenizer: Any,
    program: Program,
    prompt_ids: Sequence[int],
    outputs: Iterable[tuple[int, ...]] = (),
) -> list[dict[str, str]]:
    """A step's context as the message history: the program's system prompt, then user
    turns (the input, step instructions, tool results) and assistant turns (the task's
    earlier outputs found in the context), ending with a user turn."""
    ids = list(prompt_ids)
    messages: list[dict[str, str]] = []

    def add(role: str, segment: Sequence[int]) -> None:
        text = str(tokenizer.decode(list(segment), skip_special_tokens=True))
        if not text:
            return
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += text
        else:
            messages.append({"role": role, "content": text})

    position = 0
    for start, end in assistant_spans(ids, outputs):
        add("user", ids[position:start])
        add("assistant", ids[start:end])
        position = end
    add("user", ids[position:])
    head = program.system + "\nUser: "
    if messages and messages[0]["role"] == "user" and messages[0]["content"].startswith(head):
        messages[0]["content"] = messages[0]["content"][len(head) :]
    if not messages or messages[-1]["role"] != "user":
        messages.append({"role": "user", "content": "Continue."})
    system = [{"role": "system", "content": program.system}] if program.system else []
    return [*system, *messages]


def _kill(running: dict[str, gevent.Greenlet]) -> None:
    greenlets = list(running.values())
    running.clear()
    if greenlets:
        gevent.killall(greenlets, block=True, timeout=5)


class _Recorder(StepFold):
    """A task's steps as its Emit commands told them, folded into a TaskSample (as the
    gRPC user's TaskRecorder folds the RunTask stream's)."""

    def on_step(self, event: Any, now: float) -> None:
        if not isinstance(event, StepFinished):
            return
        if event.tool is not None:
            self.add_tool(event.tool, now)
        elif event.call is not None:
            call = event.call
            self.add_llm(call, call.timings.tpot, call.finish_reason.value, now)

    def sample(self, now: float, wall: float, status: str, usage: TaskUsage | None) -> TaskSample:
        """Task TTFT is the driver's (accepted -> first answer token), of OK tasks only;
        the latency is request sent -> task ended."""
        ttft = usage.task_ttft if usage is not None and usage.task_ttft > 0 else None
        return self.task_sample(
            wall,
            status,
            usage,
            task_ttft=ttft if status == "OK" else None,
            task_latency=now - self.sent_at,
        )


# ---- the users ---------------------------------------------------------------------------


class OpenAIAgentUser(AgentUser):
    """Closed loop against an OpenAI-compatible server: one task at a time per user, with
    the workload's think time between tasks (loadtests.user.AgentUser, this target's
    runner)."""

    def make_runner(self) -> Runner:
        return OpenAIRunner(self.environment, self.host)


class OpenAIOpenLoopUser(OpenLoopUser):
    """Open loop against an OpenAI-compatible server (loadtests.user.OpenLoopUser's
    dispatcher, this target's runner)."""

    def make_runner(self) -> Runner:
        return OpenAIRunner(self.environment, self.host)
