"""Wiring: Ray, the replica pool, the executor and the gRPC server, from one config.

`Deployment` is what `inflection serve` and `inflection run` start, and what the tests
start once per session. Plain functions build each part from config; nothing here makes
decisions of its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import os
import signal
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from agents import BUILTIN_PROGRAMS
from agents.tools import BUILTIN_TOOLS
from agents.yaml_loader import load_programs
from orchestrator.api.v1 import inflection_pb2 as pb
from orchestrator.config import (
    Backend,
    DeploymentConfig,
    LimitsConfig,
    PriorityPolicy,
    RayConfig,
    ReplicasConfig,
    ServerConfig,
    SimEngineConfig,
    TlsConfig,
    engine_for_routing,
)
from orchestrator.executor.executor import Dispatcher, Drained, Executor, Tokenizer
from orchestrator.replicas.healing import ServiceHealth, service_health
from orchestrator.replicas.openai_pool import EndpointStartError, OpenAIPool
from orchestrator.replicas.pool import ReplicaPool
from orchestrator.replicas.tiny_model import build_tiny_model, default_tiny_model_dir
from orchestrator.routing import make_router
from orchestrator.server.auth import AuthFailures, BearerTokenInterceptor
from orchestrator.server.edge import add_orchestrator_to_server
from orchestrator.server.metrics import Metrics, serve_metrics
from orchestrator.server.servicer import ClusterView, OrchestratorServicer
from orchestrator.server.tls import grpc_server_credentials, http_ssl_context

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Orchestrator"].full_name


class StartupError(Exception):
    """A deployment that cannot start, said in one line for the user (no traceback)."""


@dataclass(slots=True, frozen=True)
class RayTarget:
    """Which Ray cluster a deployment uses."""

    address: str | None  # None: start a private local cluster (and stop it with the server)
    source: str  # where the address came from, named in messages: "ray.address", "RAY_ADDRESS"


def ray_target(config: RayConfig, environ: Mapping[str, str]) -> RayTarget:
    """Decide the cluster: an explicit address, else RAY_ADDRESS (set by `ray job submit`
    for its driver), else a private one. Never Ray's own discovery of whatever cluster
    runs on the host: a stranger's cluster measures someone else's load, and a dead one
    hangs start-up for minutes."""
    if config.address is not None:
        address = None if config.address == "local" else config.address
        return RayTarget(address, "ray.address")
    env = environ.get("RAY_ADDRESS", "")
    if env:
        return RayTarget(None if env == "local" else env, "RAY_ADDRESS")
    return RayTarget(None, "default")


def describe_ray_target(config: RayConfig) -> str:
    """Where replicas will run, for the start-up line."""
    target = ray_target(config, os.environ)
    if target.address is None:
        return "a private local Ray cluster"
    return f"the Ray cluster at {target.address} (from {target.source})"


def gcs_endpoint(address: str) -> tuple[str, int]:
    """`host:port` (or `ray://host:port`, `[v6]:port`) as a TCP endpoint to probe."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise StartupError(
            f"ray address {address!r} is not host:port (or 'auto', or 'local' to start "
            "a private cluster)"
        )
    return host.strip("[]"), int(port)


_T = TypeVar("_T")
# Threads still inside ray.init after their deadline: a dead GCS keeps Ray's C++ client
# retrying for minutes, and a thread cannot be stopped, only left behind at exit.
_abandoned_joins: list[threading.Thread] = []


def ray_join_abandoned() -> bool:
    """True when a timed-out ray.init is still running: exit with os._exit, since
    interpreter shutdown would wait for it."""
    return any(thread.is_alive() for thread in _abandoned_joins)


def _in_daemon_thread(
    fn: Callable[[], _T], hold: threading.Event
) -> tuple[asyncio.Future[_T], threading.Thread]:
    """Run `fn` in a daemon thread (asyncio.to_thread's workers block interpreter exit),
    which then lives until `hold` is set: Ray ties the processes of a cluster it starts
    to the life of the thread that started them (PR_SET_PDEATHSIG kills them with it)."""
    done: concurrent.futures.Future[_T] = concurrent.futures.Future()

    def run() -> None:
        if not done.set_running_or_notify_cancel():
            return
        try:
            done.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            done.set_exception(exc)
            return
        hold.wait()

    thread = threading.Thread(target=run, name="inflection-ray", daemon=True)
    thread.start()
    return asyncio.wrap_future(done), thread


# Set when this process's Ray connection ends, letting the thread that made it end.
_ray_thread_hold: threading.Event | None = None


async def leave_ray() -> None:
    """Disconnect from Ray (stopping a cluster this process started)."""
    global _ray_thread_hold
    import ray

    await asyncio.to_thread(ray.shutdown)
    if _ray_thread_hold is not None:
        _ray_thread_hold.set()
        _ray_thread_hold = None


class _DropThreadWarning(logging.Filter):
    # ray.init installs a SIGTERM handler (sys.exit) only from the main thread and warns
    # otherwise; not having it is the point, since the CLI owns SIGTERM.
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("SIGTERM handler is not set")


_DROP_THREAD_WARNING = _DropThreadWarning()


def _restore_sigterm(handler: signal.Handlers | Callable[..., object] | int | None) -> None:
    # Ray's C++ core installs a crash handler for SIGTERM that prints a stack and aborts
    # (SIGABRT): SIGTERM goes back to whoever had it (the CLI stops cleanly on it).
    if handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


async def join_ray(config: RayConfig) -> bool:
    """Join or start the Ray cluster `ray_target` decides, off the event loop so that
    signals are handled meanwhile. Joining gives up after `connect_timeout_s` with a
    StartupError. Returns True when this process connected Ray (and so disconnects it,
    stopping a cluster it started, at the end)."""
    global _ray_thread_hold
    import ray

    if ray.is_initialized():
        return False
    target = ray_target(config, os.environ)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.connect_timeout_s
    where = f"{target.address} (from {target.source})"

    def failed(reason: str) -> StartupError:
        return StartupError(
            f"could not join the Ray cluster at {where} within {config.connect_timeout_s:g} s "
            f"({reason}; is it running? set ray.address: local to start a private one)"
        )

    common: dict[str, Any] = {"namespace": config.namespace, "log_to_driver": False}
    kwargs: dict[str, Any]
    if target.address is None:
        kwargs = {"address": "local", "num_cpus": config.num_cpus, "include_dashboard": False}
    else:
        address = target.address
        if address == "auto":
            from ray._private.services import canonicalize_bootstrap_address

            found = await asyncio.to_thread(canonicalize_bootstrap_address, "auto")
            if found is None:
                raise StartupError(
                    f"ray.address is auto (from {target.source}) but no Ray cluster runs on "
                    "this host (start one with `ray start --head`, or set ray.address: local)"
                )
            address = found
            where = f"{address} (auto)"
        host, port = gcs_endpoint(address)
        # A refused or silent port fails here, in one line, instead of in Ray's retries.
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), max(deadline - loop.time(), 0.001)
            )
        except TimeoutError:
            raise failed("no answer") from None
        except OSError as exc:
            raise failed(os.strerror(exc.errno) if exc.errno else str(exc)) from None
        writer.close()
        kwargs = {"address": address}
    logging.getLogger("ray._private.worker").addFilter(_DROP_THREAD_WARNING)  # added once
    sigterm = signal.getsignal(signal.SIGTERM)
    _ray_thread_hold = threading.Event()
    init, thread = _in_daemon_thread(lambda: ray.init(**kwargs, **common), _ray_thread_hold)
    init.add_done_callback(lambda _: _restore_sigterm(sigterm))
    # Starting a private cluster is bounded by Ray itself; joining by our deadline.
    timeout = None if target.address is None else max(deadline - loop.time(), 0.001)
    try:
        await asyncio.wait_for(asyncio.shield(init), timeout)
    except TimeoutError:
        _abandoned_joins.append(thread)
        raise failed("no Ray answer") from None
    except asyncio.CancelledError:
        # Stopped meanwhile: let ray.init finish, so that a cluster it is starting is
        # stopped rather than left running (joining stays bounded by the deadline).
        remaining = None if timeout is None else max(deadline - loop.time(), 0.001)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(init, remaining)
        if init.done() and not init.cancelled() and init.exception() is None:
            await leave_ray()
        elif thread.is_alive():
            _abandoned_joins.append(thread)
        raise
    except Exception as exc:  # noqa: BLE001 - whatever ray.init raises, said in one line
        if target.address is None:
            raise StartupError(f"could not start a local Ray cluster: {exc}") from None
        raise failed(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    return True


class HfTokenizer:
    """The model's tokenizer, loaded in the orchestrator process so prompts are built
    as token ids without a Ray round trip."""

    def __init__(self, model: str) -> None:
        from transformers import AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(model)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self._tok.encode(text, add_special_tokens=False)
        return ids

    @property
    def bos_token_id(self) -> int | None:
        bos: int | None = self._tok.bos_token_id
        return bos

    @property
    def vocab_size(self) -> int:
        return len(self._tok)


class ServingTokenizer(Tokenizer, Protocol):
    """What the executor and the servicer need of the model's tokenizer."""

    @property
    def vocab_size(self) -> int: ...


def sim_model_name(config: SimEngineConfig) -> str:
    """How a simulated replica's model is shown, e.g. "llama-3.1-8b on h100"."""
    gpus = f"{config.tensor_parallel_size}x {config.gpu}"
    return f"{config.model} on {gpus if config.tensor_parallel_size > 1 else config.gpu}"


def sim_tokenizer(config: SimEngineConfig) -> ServingTokenizer:
    """The simulated model's tokenizer (its catalog vocabulary; nothing downloaded).
    Builds the replica once here, so an unknown GPU or model, or a model that does not
    fit, fails before Ray starts (CatalogError, SimConfigError)."""
    from orchestrator.sim.build import build_replica
    from orchestrator.sim.tokens import SimTokenizer

    return SimTokenizer(build_replica(config).perf.hw.model.vocab)


def engines_for(config: DeploymentConfig) -> ReplicasConfig:
    """The replicas' config as the engines need it: program-aware priority turns on the
    engines' priority scheduling (vLLM refuses a priority without it)."""
    replicas = config.replicas
    return replicas.model_copy(
        update={
            "engine": engine_for_routing(config.routing, replicas.engine),
            "sim": engine_for_routing(config.routing, replicas.sim),
        }
    )


def resolve_model(config: DeploymentConfig) -> str:
    """vLLM: the model path or id, building the tiny local model when none is configured.
    Sim: the simulated model's display name."""
    if config.replicas.backend is Backend.SIM:
        return sim_model_name(config.replicas.sim)
    if config.replicas.engine.model is not None:
        return config.replicas.engine.model
    return str(build_tiny_model(default_tiny_model_dir()))


async def start_openai_pool(config: DeploymentConfig) -> OpenAIPool:
    """The pool of existing OpenAI-compatible servers, started (each endpoint answered
    /v1/models with the model). Raises StartupError naming the endpoint that cannot."""
    pool = OpenAIPool(
        config.replicas, send_priority=config.routing.priority is PriorityPolicy.PROGRAM_AWARE
    )
    try:
        await pool.start()  # closes its session itself if cancelled or failed
    except EndpointStartError as exc:
        raise StartupError(str(exc)) from None
    return pool


def openai_tokenizer(config: DeploymentConfig, model: str) -> ServingTokenizer:
    """The served model's tokenizer for backend openai: replicas.openai.tokenizer, else
    the model name when it is a local directory. Raises StartupError."""
    source = config.replicas.openai.tokenizer or model
    if config.replicas.openai.tokenizer is None and not Path(model).is_dir():
        raise StartupError(
            f"the endpoints serve {model!r}, which is not a local directory: set "
            "replicas.openai.tokenizer to a directory holding its tokenizer"
        )
    try:
        return HfTokenizer(source)
    except Exception as exc:  # noqa: BLE001 - whatever transformers raises, in one line
        raise StartupError(f"cannot load the tokenizer from {source!r}: {exc}") from None


def max_request_bytes(config: DeploymentConfig) -> int:
    """The largest request the server accepts: the configured one, else room for the
    longest input `limits` allows in UTF-8's worst case (4 bytes a character) or a prompt
    of max_model_len token ids (5 bytes each as varints), plus 64 KiB for the rest."""
    if config.server.max_request_bytes is not None:
        return config.server.max_request_bytes
    replicas = config.replicas
    max_model_len = (
        replicas.sim.max_model_len
        if replicas.backend is Backend.SIM
        else replicas.engine.max_model_len
    )
    return max(4 * config.limits.max_input_chars, 5 * max_model_len) + 64 * 1024


def grpc_server_options(config: DeploymentConfig) -> list[tuple[str, int]]:
    """gRPC channel arguments of the server, from config."""
    server = config.server
    return [
        # gRPC's default lets a second server bind the same port and take half the
        # connections; a port in use must be an error instead.
        ("grpc.so_reuseport", 0),
        ("grpc.max_concurrent_streams", server.max_concurrent_streams),
        ("grpc.max_receive_message_length", max_request_bytes(config)),
        ("grpc.keepalive_time_ms", round(server.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", round(server.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms",
         round(server.min_client_ping_interval_s * 1000)),
        ("grpc.http2.max_ping_strikes", 2),
    ]  # fmt: skip


def _port_in_use(host: str, port: int) -> bool:
    """Whether another socket listens on host:port, found by binding as gRPC does
    (SO_REUSEADDR, no SO_REUSEPORT): gRPC's own failure logs a C-core error line."""
    if port == 0:
        return False
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return False  # let gRPC report an unusable host
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def check_port(config: ServerConfig) -> None:
    """Refuse a port another process listens on (StartupError), before anything slow:
    the gRPC port, and the HTTP front door's when it is on."""
    if _port_in_use(config.host, config.port):
        raise StartupError(f"port {config.host}:{config.port} is in use")
    if config.http_port is not None and _port_in_use(config.host, config.http_port):
        raise StartupError(f"port {config.host}:{config.http_port} (server.http_port) is in use")
    if config.metrics_port is not None and _port_in_use(config.host, config.metrics_port):
        raise StartupError(
            f"port {config.host}:{config.metrics_port} (server.metrics_port) is in use"
        )


def http_max_body_bytes(config: DeploymentConfig) -> int:
    """The HTTP front door's body limit: gRPC's, doubled, since JSON spends more bytes
    than protobuf on the same request (decimal token ids, escaped characters)."""
    return 2 * max_request_bytes(config)


def server_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """The front door's SSLContext from server.tls. Raises StartupError for files that
    do not make a certificate and its key."""
    try:
        return http_ssl_context(tls)
    except (ssl.SSLError, OSError) as exc:
        raise StartupError(
            f"server.tls: cannot use cert {tls.cert} with key {tls.key}: {exc}"
        ) from None


async def start_http(
    config: DeploymentConfig,
    executor: Executor,
    model: str,
    vocab_size: int,
    auth_failures: AuthFailures | None = None,
) -> tuple[web.AppRunner, int]:
    """Start the OpenAI-compatible front door on server.host:server.http_port. Raises
    StartupError for a port in use. `auth_failures`: the gRPC server's (None: its own)."""
    from orchestrator.server.http import FrontDoor, serve_http

    server = config.server
    assert server.http_port is not None
    door = FrontDoor(
        executor,
        model,
        config.limits,
        vocab_size,
        auth_token=server.auth_token,
        max_body_bytes=http_max_body_bytes(config),
        auth_failures=auth_failures if auth_failures is not None else AuthFailures(),
    )
    ssl_context = server_ssl_context(server.tls) if server.tls is not None else None
    try:
        return await serve_http(door, server.host, server.http_port, ssl_context=ssl_context)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {server.host}:{server.http_port} (server.http_port) is in use"
            ) from None
        raise StartupError(
            f"cannot serve HTTP on {server.host}:{server.http_port}: {exc.strerror or exc}"
        ) from None


async def start_metrics(
    config: DeploymentConfig, metrics: Metrics, pool: Pool, executor: Executor
) -> tuple[web.AppRunner, int]:
    """Serve /metrics on server.host:server.metrics_port; each scrape reads the replicas'
    status and admission's queue first. Raises StartupError for a port in use."""
    server = config.server
    assert server.metrics_port is not None

    async def refresh() -> None:
        metrics.read_status(await pool.status())
        admission = executor.admission
        metrics.read_admission(admission.queued, admission.refused, admission.wait_limit_s())

    ssl_context = server_ssl_context(server.tls) if server.tls is not None else None
    try:
        return await serve_metrics(
            metrics,
            refresh,
            server.host,
            server.metrics_port,
            auth_token=server.auth_token,
            ssl_context=ssl_context,
        )
    except OSError as exc:
        what = "is in use" if exc.errno == errno.EADDRINUSE else f"failed: {exc.strerror or exc}"
        raise StartupError(
            f"port {server.host}:{server.metrics_port} (server.metrics_port) {what}"
        ) from None


def bind_grpc_server(
    config: DeploymentConfig, auth_failures: AuthFailures | None = None
) -> tuple[grpc.aio.Server, int]:
    """A gRPC server holding its port, not yet serving. Raises StartupError.
    `auth_failures`: shared with the HTTP front door (None: its own)."""
    host, port = config.server.host, config.server.port
    in_use = StartupError(f"port {host}:{port} is in use")
    check_port(config.server)
    interceptors = (
        [BearerTokenInterceptor(config.server.auth_token, auth_failures)]
        if config.server.auth_token
        else []
    )
    tls = config.server.tls
    credentials = None
    if tls is not None:
        server_ssl_context(tls)  # a key that does not match its cert fails here, by name
        credentials = grpc_server_credentials(tls)
    server = grpc.aio.server(interceptors=interceptors, options=grpc_server_options(config))
    try:
        if credentials is None:
            bound = server.add_insecure_port(f"{host}:{port}")
        else:
            bound = server.add_secure_port(f"{host}:{port}", credentials)
    except RuntimeError:
        raise in_use from None  # taken between the probe and the bind
    return server, bound


async def serve_grpc(
    server: grpc.aio.Server, servicer: OrchestratorServicer
) -> health_aio.HealthServicer:
    """Register the services on a bound server and start serving; returns the health
    service (SERVING for "" and SERVICE_NAME) for `follow_replicas` to keep current."""
    add_orchestrator_to_server(servicer, server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    return health


# How often the service's health is compared with its replicas' (a local read).
SERVING_CHECK_S = 0.25
_HEALTH_STATUS = {
    ServiceHealth.SERVING: health_pb2.HealthCheckResponse.SERVING,
    ServiceHealth.NOT_SERVING: health_pb2.HealthCheckResponse.NOT_SERVING,
}


async def follow_replicas(
    health: health_aio.HealthServicer, pool: Dispatcher, current: ServiceHealth
) -> None:
    """Keep the gRPC health of "" and SERVICE_NAME on the replicas' (`current` is what
    it says now): NOT_SERVING while no replica is healthy, when every task would fail
    UNAVAILABLE, SERVING again once one is. Each change is logged once."""
    while True:
        await asyncio.sleep(SERVING_CHECK_S)
        views = pool.views()
        serving = service_health(v.healthy for v in views)
        if serving is current:
            continue
        for service in ("", SERVICE_NAME):
            await health.set(service, _HEALTH_STATUS[serving])
        current = serving
        healthy = sum(v.healthy for v in views)
        log.warning("health %s: %d of %d replicas healthy", serving.value, healthy, len(views))


async def start_grpc_server(
    servicer: OrchestratorServicer, config: ServerConfig, limits: LimitsConfig | None = None
) -> tuple[grpc.aio.Server, int]:
    """Bind and start a server for `servicer` (the tests' entry point)."""
    deployment = DeploymentConfig(server=config, limits=limits or LimitsConfig())
    server, port = bind_grpc_server(deployment)
    await serve_grpc(server, servicer)
    return server, port


class Pool(Dispatcher, ClusterView, Protocol):
    """What a deployment, its executor (`Dispatcher`) and its servicer (`ClusterView`)
    use of its replicas: `ReplicaPool` (Ray actors) or `OpenAIPool` (existing
    OpenAI-compatible servers)."""

    @property
    def model(self) -> str: ...

    async def shutdown(self) -> None: ...


@dataclass(slots=True)
class Deployment:
    """A running orchestrator: replicas in Ray plus the gRPC server in front of them."""

    config: DeploymentConfig
    pool: Pool  # a ReplicaPool (Ray actors) or, with backend openai, an OpenAIPool
    server: grpc.aio.Server
    port: int
    owns_ray: bool
    http: web.AppRunner | None = None  # the OpenAI-compatible front door, when on
    http_port: int | None = None
    # Keeps the gRPC health service on the replicas' health (follow_replicas).
    health_task: asyncio.Task[None] | None = None
    # The gRPC health service ("" and SERVICE_NAME) and the executor, for `drain`.
    health: health_aio.HealthServicer | None = None
    executor: Executor | None = None
    metrics_http: web.AppRunner | None = None  # /metrics, when server.metrics_port is set
    metrics_port: int | None = None

    @property
    def address(self) -> str:
        return f"{self.config.server.host}:{self.port}"

    @property
    def http_url(self) -> str | None:
        """Base URL of the OpenAI-compatible API (`.../v1`), None when it is off."""
        if self.http_port is None:
            return None
        scheme = "https" if self.config.server.tls is not None else "http"
        return f"{scheme}://{self.config.server.host}:{self.http_port}/v1"

    @classmethod
    async def start(cls, config: DeploymentConfig) -> Deployment:
        """Start everything; cancellable at any await, stopping what had started.
        Raises StartupError (one line) for a port in use or an unreachable cluster."""
        # Programs first: a bad program file should fail before any engine starts.
        programs = dict(BUILTIN_PROGRAMS)
        programs.update(
            load_programs(
                [Path(p) for p in config.programs], tools=BUILTIN_TOOLS, reserved=BUILTIN_PROGRAMS
            )
        )
        # Then the port: a second server on it is refused before Ray or replicas start.
        check_port(config.server)
        owns_ray = False
        server: grpc.aio.Server | None = None
        pool: ReplicaPool | OpenAIPool | None = None
        http: web.AppRunner | None = None
        http_port: int | None = None
        metrics_http: web.AppRunner | None = None
        metrics_port: int | None = None
        metrics = Metrics() if config.server.metrics_port is not None else None
        health_task: asyncio.Task[None] | None = None
        auth_failures = AuthFailures()  # both listeners lock a token guesser out together
        try:
            tokenizer: ServingTokenizer
            if config.replicas.backend is Backend.OPENAI:
                # Existing servers: no Ray and no replica actors; the endpoints are
                # called from this process (README "Existing OpenAI-compatible servers").
                server, port = bind_grpc_server(config, auth_failures)
                pool = await start_openai_pool(config)
                model = pool.model
                tokenizer = await asyncio.to_thread(openai_tokenizer, config, model)
            elif config.replicas.backend is Backend.SIM:
                tokenizer = sim_tokenizer(config.replicas.sim)
                model = resolve_model(config)
                owns_ray = await join_ray(config.ray)
            else:
                owns_ray = await join_ray(config.ray)
                model = await asyncio.to_thread(resolve_model, config)
                tokenizer = await asyncio.to_thread(HfTokenizer, model)
            # Bound only once Ray runs: a process with gRPC's threads running forks Ray's
            # processes (GCS, raylet) badly (a start that stalled on the GCS's port file).
            # Still before the replicas, so a port taken meanwhile costs no engine start.
            if pool is None:
                server, port = bind_grpc_server(config, auth_failures)
                pool = ReplicaPool(engines_for(config), model, config.ray.namespace)
                await pool.start()  # stops its replicas itself if cancelled or failed
            assert server is not None  # bound in either branch
            executor = Executor(
                pool,
                make_router(config.routing.router_settings()),
                tokenizer,
                programs,
                max_concurrent_calls_per_task=config.limits.max_concurrent_calls_per_task,
                max_retries=config.limits.max_retries,
                priority=config.routing.priority_settings(),
                admission=config.admission,
                observer=metrics,
            )
            servicer = OrchestratorServicer(executor, pool, config.limits, tokenizer.vocab_size)
            health = await serve_grpc(server, servicer)
            health_task = asyncio.create_task(
                follow_replicas(health, pool, ServiceHealth.SERVING), name="follow-replicas"
            )
            if config.server.http_port is not None:
                http, http_port = await start_http(
                    config, executor, model, tokenizer.vocab_size, auth_failures
                )
            if metrics is not None:
                metrics_http, metrics_port = await start_metrics(config, metrics, pool, executor)
        except BaseException:
            if health_task is not None:
                health_task.cancel()
            if metrics_http is not None:
                await metrics_http.cleanup()
            if http is not None:
                await http.cleanup()
            if server is not None:
                await server.stop(None)
            if pool is not None:
                await pool.shutdown()
            if owns_ray:
                await leave_ray()
            raise
        log.info("serving %s on %s:%d", SERVICE_NAME, config.server.host, port)
        if http_port is not None:
            log.info("serving the OpenAI-compatible API on %s:%d", config.server.host, http_port)
        if metrics_port is not None:
            log.info("serving Prometheus metrics on %s:%d", config.server.host, metrics_port)
        return cls(
            config,
            pool,
            server,
            port,
            owns_ray,
            http,
            http_port,
            health_task,
            health,
            executor,
            metrics_http,
            metrics_port,
        )

    @property
    def in_flight(self) -> int:
        """Tasks and generations running now."""
        return 0 if self.executor is None else self.executor.in_flight

    async def drain(self, timeout_s: float | None = None) -> Drained:
        """Begin stopping gracefully: health NOT_SERVING for "" and SERVICE_NAME, new
        tasks and generations refused (gRPC UNAVAILABLE with a retry-after-ms trailer,
        HTTP 503 with Retry-After), and those in flight given `timeout_s` (default
        server.drain_timeout_s) to finish before they are stopped with their partial
        usage. ListAgents and GetClusterStatus keep answering; `stop` ends the rest."""
        timeout = self.config.server.drain_timeout_s if timeout_s is None else timeout_s
        await self._stop_following()  # or it would set SERVING again
        if self.health is not None:
            for service in ("", SERVICE_NAME):
                await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.executor is None:
            return Drained(0, 0, 0.0)
        return await self.executor.drain(timeout)

    async def _stop_following(self) -> None:
        if self.health_task is not None:
            self.health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.health_task
            self.health_task = None

    async def stop(self) -> None:
        """Stop the servers, the replicas and (when this process joined it) Ray; calls
        still open get 2 s (`drain` first, to let tasks finish)."""
        await self._stop_following()
        if self.http is not None:
            await self.http.cleanup()
        await self.server.stop(grace=2.0)
        if self.metrics_http is not None:  # after the tasks: a last scrape sees them end
            await self.metrics_http.cleanup()
        await self.pool.shutdown()
        if self.owns_ray:
            await leave_ray()
