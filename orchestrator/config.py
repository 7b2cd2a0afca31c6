"""Deployment configuration: pydantic models validated once, where config enters.

A YAML file (see cluster/*.yaml) or CLI flags become a `DeploymentConfig`; everything
downstream receives typed, validated values. Unknown keys are errors, so a typo in a
config file fails at load time with the file and the field named.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator.openai_api import ServerURL


# The routing knobs are plain data owned here: `orchestrator.routing` reads them, and
# config never imports routing (the dependency runs one way, config <- routing).
class RoutingPolicy(enum.Enum):
    ROUND_ROBIN = "round_robin"
    LEAST_LOAD = "least_load"
    PREFIX_AFFINITY = "prefix_affinity"
    PROGRAM_AWARE = "program_aware"


class PriorityPolicy(enum.Enum):
    FCFS = "fcfs"
    PROGRAM_AWARE = "program_aware"


@dataclass(slots=True, frozen=True)
class RouterSettings:
    """The knobs of `orchestrator.routing.make_router` (from `RoutingConfig`)."""

    policy: RoutingPolicy = RoutingPolicy.ROUND_ROBIN
    load_epsilon: float = 0.25
    min_match_ratio: float = 0.1
    load_slack_tokens: int = 16384
    overlap_weight: float = 4.0


@dataclass(slots=True, frozen=True)
class PrioritySettings:
    """The knobs of call priority (`orchestrator.routing.priority`)."""

    policy: PriorityPolicy = PriorityPolicy.FCFS
    quantum_s: float = 0.5  # attained service of the first level
    levels: int = 8
    urgent_slack_s: float = 1.0
    starvation_ratio: float = 4.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SchedulingPolicy(enum.Enum):
    FCFS = "fcfs"
    PRIORITY = "priority"


class VllmEngineConfig(_Strict):
    """Arguments for vLLM's `AsyncEngineArgs`, one replica's engine."""

    model: str | None = Field(
        default=None,
        description="Local path or Hugging Face id. None: a tiny random Llama generated "
        "locally (for machines without a GPU and for tests).",
    )
    dtype: str = Field(default="bfloat16", description="Weight and activation dtype.")
    tensor_parallel_size: int = Field(
        default=1, ge=1, description="GPUs per replica; >1 gets a placement group."
    )
    max_model_len: int = Field(
        default=16384,
        ge=16,
        description="Context length in tokens (the built-in coding agent needs ~15k).",
    )
    max_num_seqs: int = Field(default=64, ge=1, description="Sequences per engine step.")
    max_num_batched_tokens: int | None = Field(
        default=None, ge=1, description="Token budget per engine step; None: vLLM's default."
    )
    enable_prefix_caching: bool = Field(
        default=True, description="Automatic prefix caching (agent contexts reuse it)."
    )
    speculative_config: dict[str, Any] | None = Field(
        default=None, description="vLLM speculative decoding config, passed through."
    )
    quantization: str | None = Field(default=None, description="e.g. 'fp8'; None: none.")
    kv_cache_dtype: str = Field(default="auto", description="e.g. 'fp8' for an FP8 KV cache.")
    gpu_memory_utilization: float = Field(
        default=0.9, gt=0.0, le=1.0, description="Fraction of GPU memory vLLM may use."
    )
    enforce_eager: bool = Field(
        default=True, description="Skip CUDA graph capture (faster start; required on CPU)."
    )
    scheduling_policy: SchedulingPolicy = Field(
        default=SchedulingPolicy.FCFS, description="'priority' honours each call's priority."
    )
    seed: int = Field(default=0, description="Engine seed.")
    cpu_kvcache_space_gib: int = Field(
        default=1, ge=1, description="KV cache size on vLLM's CPU build (VLLM_CPU_KVCACHE_SPACE)."
    )
    extra_args: dict[str, Any] = Field(
        default_factory=dict, description="Further AsyncEngineArgs fields, passed through."
    )


class Backend(enum.Enum):
    """What serves calls inside each replica."""

    SIM = "sim"  # the simulated GPU engine (orchestrator/sim): runs anywhere, in seconds
    VLLM = "vllm"  # a real vLLM engine (CUDA, or vLLM's CPU build)
    OPENAI = "openai"  # existing OpenAI-compatible servers, one replica per endpoint


class SpeculativeConfig(_Strict):
    k: int = Field(ge=1, le=16, description="Draft tokens proposed per step.")
    alpha: float = Field(ge=0.0, le=1.0, description="Probability each draft token is accepted.")
    draft_cost: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="One draft step's cost as a fraction of the target's weight-read time.",
    )


class SimEngineConfig(_Strict):
    """One simulated replica: a vLLM engine on `gpu` serving `model` (docs/simulation.md)."""

    gpu: str = Field(default="h100", description="GPU catalog name, e.g. h100, h200, b200.")
    model: str = Field(default="llama-3.1-8b", description="Model catalog name.")
    tensor_parallel_size: int = Field(default=1, ge=1, description="GPUs per replica.")
    weights: str = Field(default="bf16", description="Weight format: bf16, fp8, int8, w4a16.")
    kv_cache_dtype: str = Field(default="bf16", description="KV cache format: bf16 or fp8.")
    family: str = Field(
        default="vllm", description="Engine family whose fitted constants apply (catalog)."
    )
    max_model_len: int = Field(default=16384, ge=16, description="Context length in tokens.")
    max_num_seqs: int = Field(default=1024, ge=1, description="Sequences per engine step.")
    max_num_batched_tokens: int = Field(
        default=8192, ge=16, description="Token budget per engine step (vLLM serve's default)."
    )
    enable_chunked_prefill: bool = Field(default=True, description="Split long prefills.")
    enable_prefix_caching: bool = Field(default=True, description="Automatic prefix caching.")
    scheduling_policy: SchedulingPolicy = Field(
        default=SchedulingPolicy.FCFS, description="'priority' honours each call's priority."
    )
    gpu_memory_utilization: float = Field(
        default=0.9, gt=0.0, le=1.0, description="Fraction of GPU memory the engine may use."
    )
    num_scheduler_steps: int = Field(
        default=1, ge=1, description="vLLM 0.6 multi-step scheduling (CPU cost per N steps)."
    )
    speculative: SpeculativeConfig | None = Field(
        default=None, description="Speculative decoding; None: off."
    )
    catalogs: tuple[str, ...] = Field(
        default=(), description="Extra catalog YAML files (GPUs, models, families, prices)."
    )
    time_scale: float = Field(
        default=1.0,
        ge=0.0,
        description="Wall seconds per simulated second in a live deployment: 1 = real "
        "time, 0 = instant (no sleeping; for measuring the orchestrator itself).",
    )
    seed: int = Field(default=0, description="Seed of the simulated model's output tokens.")


class OpenAIReplicasConfig(_Strict):
    """Existing OpenAI-compatible servers (e.g. `vllm serve`) as the replicas (backend:
    openai): one replica per endpoint, called over HTTP from the orchestrator process."""

    endpoints: tuple[str, ...] = Field(
        default=(),
        description="Base URLs of the servers, e.g. http://10.0.0.5:8000 (a trailing /v1 "
        "is dropped); one replica each, named host:port.",
    )
    model: str | None = Field(
        default=None,
        description="The served model every endpoint must list in /v1/models; None: the "
        "first model the first endpoint lists.",
    )
    api_key_env: str | None = Field(
        default=None,
        description="Name of the environment variable holding the servers' API key (sent "
        "as 'Authorization: Bearer KEY'); None: no key.",
    )
    tokenizer: str | None = Field(
        default=None,
        description="Local directory of the model's tokenizer, for the orchestrator's own "
        "prompt building; None: the model name, when it is a local directory.",
    )
    request_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="Longest one completion may take; beyond it the call fails UNAVAILABLE "
        "and is retried on another endpoint.",
    )
    start_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="How long every endpoint may take to answer /v1/models at start.",
    )
    max_model_len: int = Field(
        default=4096,
        ge=16,
        description="Context length assumed for a server whose /v1/models does not report "
        "max_model_len (vLLM reports it).",
    )

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, endpoints: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for url in endpoints:
            try:
                ServerURL.parse(url)
            except ValueError as exc:
                raise ValueError(f"{url!r}: {exc}") from None
            clean = url.strip().rstrip("/")
            clean = clean.removesuffix("/v1")
            if clean in out:
                raise ValueError(f"{url!r} is listed twice")
            out.append(clean)
        return tuple(out)


class ReplicasConfig(_Strict):
    count: int = Field(
        default=1,
        ge=1,
        description="Number of replicas (Ray actors). Ignored by backend openai: one "
        "replica per endpoint.",
    )
    backend: Backend = Field(
        default=Backend.SIM,
        description="'sim' (simulated GPU), 'vllm' (a real engine) or 'openai' (existing "
        "servers, replicas.openai).",
    )
    openai: OpenAIReplicasConfig = Field(
        default_factory=OpenAIReplicasConfig,
        description="Existing OpenAI-compatible servers (backend: openai).",
    )
    sim: SimEngineConfig = Field(
        default_factory=SimEngineConfig, description="The simulated engine (backend: sim)."
    )
    num_cpus: float = Field(default=1.0, ge=0.0, description="Ray CPUs reserved per replica.")
    use_gpus: bool | None = Field(
        default=None,
        description="Place replicas on GPUs (tensor_parallel_size each). None: when the "
        "Ray cluster has GPUs.",
    )
    engine: VllmEngineConfig = Field(
        default_factory=VllmEngineConfig, description="The vLLM engine (backend: vllm)."
    )
    start_timeout_s: float = Field(
        default=600.0, gt=0, description="How long a replica may take to load its engine."
    )
    health_period_s: float = Field(
        default=2.0, gt=0, description="Seconds between health checks of each replica."
    )
    stats_period_s: float = Field(
        default=0.5,
        gt=0,
        description="Seconds between refreshes of each engine's load statistics (queue "
        "depth, KV usage, prefix hits), which routing reads locally.",
    )
    liveness_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="How long a replica may take to answer a liveness check (every "
        "health_period_s) before the check counts as failed. Generous: a slow or busy "
        "replica is not a dead one, and a late stats read never counts.",
    )
    liveness_failures: int = Field(
        default=3,
        ge=1,
        description="Failed liveness checks in a row that mark a replica unhealthy (calls "
        "go to the others until it answers again). An actor Ray reports dead is replaced "
        "at once instead.",
    )
    restart_backoff_initial_s: float = Field(
        default=0.5,
        ge=0,
        description="Seconds before a dead replica's actor is replaced; each further "
        "restart in a row (a crash loop) waits twice as long, up to restart_backoff_max_s. "
        "The pool keeps trying while it runs.",
    )
    restart_backoff_max_s: float = Field(
        default=60.0, gt=0, description="Longest wait between restarts of a crash-looping replica."
    )
    restart_stable_s: float = Field(
        default=60.0,
        gt=0,
        description="A replaced replica that runs this long before dying again was not "
        "crash-looping: its next restart waits restart_backoff_initial_s again.",
    )

    @model_validator(mode="after")
    def _openai_endpoints(self) -> ReplicasConfig:
        if self.backend is Backend.OPENAI and not self.openai.endpoints:
            raise ValueError("backend openai needs replicas.openai.endpoints (one URL or more)")
        return self


class TlsConfig(_Strict):
    """TLS for the gRPC server and the HTTP front door (the same files for both). The
    files are read when the config loads, so a missing or unreadable one fails there."""

    cert: Path = Field(description="The server's certificate chain (PEM).")
    key: Path = Field(description="The private key of `cert` (PEM, unencrypted).")
    client_ca: Path | None = Field(
        default=None,
        description="If set, mutual TLS: clients must present a certificate this CA bundle "
        "(PEM) signed; a client without one is refused during the handshake.",
    )

    @field_validator("cert", "key", "client_ca")
    @classmethod
    def _readable_pem(cls, path: Path | None) -> Path | None:
        if path is None:
            return None
        path = path.expanduser()
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
        if b"-----BEGIN " not in pem:
            raise ValueError(f"{path} is not a PEM file")
        return path


class ServerConfig(_Strict):
    """The gRPC server: where it listens and the limits gRPC itself enforces per
    connection, before any request reaches the servicer."""

    host: str = Field(default="127.0.0.1", description="Interface the gRPC server binds.")
    port: int = Field(
        default=50051,
        ge=0,
        le=65535,
        description="0: an ephemeral port. A port another process listens on is refused "
        "at start (no SO_REUSEPORT sharing).",
    )
    auth_token: str | None = Field(
        default=None, description="If set, clients must send 'authorization: Bearer TOKEN'."
    )
    tls: TlsConfig | None = Field(
        default=None,
        description="TLS (cert, key, optional client_ca for mutual TLS) for the gRPC server "
        "and the HTTP front door; None: plaintext, so a bearer token travels in clear.",
    )
    http_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of the OpenAI-compatible HTTP front door (/v1/models, "
        "/v1/chat/completions, /v1/completions) on the same host; None: off. 0: an "
        "ephemeral port. Same auth_token and request size limit as gRPC.",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of the Prometheus endpoint (GET /metrics) on the same host; "
        "None: off. 0: an ephemeral port. With auth_token set a scrape must send it "
        "(Prometheus: `authorization: {credentials: TOKEN}`); https when tls is set.",
    )
    max_concurrent_streams: int = Field(
        default=1024,
        ge=1,
        description="RPCs one client connection may have open at once (HTTP/2 "
        "MAX_CONCURRENT_STREAMS); further calls wait in the client, or are refused with "
        "UNAVAILABLE (never started, safe to retry) when sent before the client saw the limit.",
    )
    max_request_bytes: int | None = Field(
        default=None,
        ge=1024,
        description="Largest request message accepted; larger ones get gRPC's "
        "RESOURCE_EXHAUSTED before they are parsed. None: room for limits.max_input_chars "
        "characters of 4 bytes or a prompt of max_model_len token ids, plus 64 KiB.",
    )
    keepalive_time_s: float = Field(
        default=60.0,
        gt=0,
        description="The server pings a connection idle this long, to find clients that "
        "went away without closing it.",
    )
    keepalive_timeout_s: float = Field(
        default=20.0, gt=0, description="A ping unanswered this long closes the connection."
    )
    drain_timeout_s: float = Field(
        default=30.0,
        ge=0,
        description="On SIGTERM or SIGINT: health turns NOT_SERVING, new tasks are refused "
        "with UNAVAILABLE and a retry hint, and tasks in flight get this long to finish "
        "before they are cancelled (with their partial usage).",
    )
    min_client_ping_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="Clients may send keepalive pings (also with no call open) at most this "
        "often; a client pinging faster is disconnected (GOAWAY too_many_pings).",
    )


class LimitsConfig(_Strict):
    max_tokens_per_call: int = Field(
        default=4096, ge=1, description="Largest max_tokens a request may ask for."
    )
    max_input_chars: int = Field(
        default=200_000, ge=1, description="Largest user input or prompt, in characters."
    )
    max_concurrent_calls_per_task: int = Field(
        default=32, ge=1, description="Calls of one task in flight at once."
    )
    max_retries: int = Field(
        default=2,
        ge=0,
        le=16,
        description="Times a call whose replica failed is sent again to another replica.",
    )


class RoutingConfig(_Strict):
    """How calls pick replicas and in what order engines serve them (README "Routing")."""

    policy: RoutingPolicy = Field(
        default=RoutingPolicy.PROGRAM_AWARE,
        description="round_robin, least_load, prefix_affinity or program_aware.",
    )
    load_epsilon: float = Field(
        default=0.25,
        gt=0,
        description="prefix_affinity: no replica takes more than (1 + epsilon) x the mean "
        "outstanding tokens.",
    )
    min_match_ratio: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="prefix_affinity: a cached prefix shorter than this fraction of the "
        "prompt does not count as a match (the call goes to the least loaded replica).",
    )
    load_slack_tokens: int = Field(
        default=16384,
        ge=0,
        description="prefix_affinity: outstanding tokens a replica may carry beyond the "
        "(1 + epsilon) bound.",
    )
    overlap_weight: float = Field(
        default=4.0,
        ge=0,
        description="program_aware: weight of each prompt block a replica would have to "
        "compute, against one block of outstanding load.",
    )
    priority: PriorityPolicy = Field(
        default=PriorityPolicy.FCFS,
        description="fcfs, or program_aware (least attained service first; turns on the "
        "engines' priority scheduling).",
    )
    priority_quantum_s: float = Field(
        default=0.5, gt=0, description="Attained service of the first priority level."
    )
    priority_levels: int = Field(default=8, ge=2, le=64, description="Priority levels.")

    def router_settings(self) -> RouterSettings:
        return RouterSettings(
            policy=self.policy,
            load_epsilon=self.load_epsilon,
            min_match_ratio=self.min_match_ratio,
            load_slack_tokens=self.load_slack_tokens,
            overlap_weight=self.overlap_weight,
        )

    def priority_settings(self) -> PrioritySettings:
        return PrioritySettings(
            policy=self.priority, quantum_s=self.priority_quantum_s, levels=self.priority_levels
        )


EngineConfigT = TypeVar("EngineConfigT", VllmEngineConfig, SimEngineConfig)


def engine_for_routing(routing: RoutingConfig, engine: EngineConfigT) -> EngineConfigT:
    """An engine's config as the routing needs it: program-aware priority turns on the
    engine's priority scheduling (vLLM refuses a priority without it). The live
    deployment and the fast-forward simulator both take their engines through here."""
    if routing.priority is not PriorityPolicy.PROGRAM_AWARE:
        return engine
    return engine.model_copy(update={"scheduling_policy": SchedulingPolicy.PRIORITY})


class AdmissionConfig(_Strict):
    """Back-pressure when the replicas are saturated (README "Admission control")."""

    enabled: bool = Field(default=True, description="False: admit every task at once.")
    max_outstanding_tokens_per_replica: int = Field(
        default=262_144,
        ge=1,
        description="New tasks wait while the cluster's outstanding tokens (prompt + "
        "max_tokens of calls in flight) reach this times the healthy replicas.",
    )
    max_queued_tasks: int = Field(
        default=1024,
        ge=0,
        description="Tasks that may wait; beyond this they are refused with "
        "RESOURCE_EXHAUSTED and a retry-after hint.",
    )
    adaptive: bool = Field(
        default=True,
        description="True: new tasks wait on what the engines do (a call limit learned "
        "from the calls, the engines' queues) and, while tasks arrive faster than they "
        "leave, at most max_queue_wait_s, then are refused; holds latency and throughput "
        "at 10x overload. False: only the token bound, and a waiting task waits until its "
        "deadline.",
    )
    max_calls_per_replica: int | None = Field(
        default=None,
        ge=1,
        description="New tasks wait while the calls in flight reach this times the healthy "
        "replicas. None: learned from the calls (the limit grows while their time per "
        "output token stays within 5x the best seen and they spend at most 60% of their "
        "time queued in the engine, and is cut beyond), and new tasks also wait while the "
        "engines report more requests waiting than 1/8 of those running.",
    )
    max_queue_wait_s: float | None = Field(
        default=None,
        gt=0,
        description="Longest a task waits for admission while tasks arrive faster than "
        "they leave (a burst or a closed loop of clients waits its turn): a task that "
        "would wait longer is refused with RESOURCE_EXHAUSTED and a retry-after hint. "
        "None: the median run time of the tasks completed lately (at least 0.5 s; 5 s "
        "until one has), so that a task admitted under overload takes about what it takes "
        "at capacity, plus at most that.",
    )


class RayConfig(_Strict):
    address: str | None = Field(
        default=None,
        description="Ray cluster to join: 'host:port' of its GCS, 'auto' (the cluster of "
        "`ray start` on this host) or 'local' (always start a private cluster, stopped "
        "with the server). None: the cluster in RAY_ADDRESS if set (as inside `ray job "
        "submit`), else a private local cluster; never a cluster that merely happens to "
        "run on the host.",
    )
    connect_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="How long joining an existing cluster may take before the command "
        "gives up with one line (a dead GCS otherwise retries for minutes).",
    )
    num_cpus: int | None = Field(
        default=None, ge=1, description="CPUs of a locally started cluster; None: all."
    )
    namespace: str = Field(default="inflection", description="Ray namespace of the actors.")


class DeploymentConfig(_Strict):
    programs: tuple[str, ...] = Field(
        default=(),
        description="YAML agent program files or folders, served beside the built-in "
        "programs (relative paths are relative to the working directory).",
    )
    ray: RayConfig = Field(default_factory=RayConfig, description="Where replicas run.")
    replicas: ReplicasConfig = Field(default_factory=ReplicasConfig, description="Replicas.")
    server: ServerConfig = Field(default_factory=ServerConfig, description="gRPC server.")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Request limits.")
    routing: RoutingConfig = Field(
        default_factory=RoutingConfig, description="Routing policy and call priority."
    )
    admission: AdmissionConfig = Field(
        default_factory=AdmissionConfig, description="Task admission under saturation."
    )


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the field."""


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each bad field: `replicas.count: Input should be ...; ...`."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
    )


M = TypeVar("M", bound=BaseModel)


def load_yaml_model(path: Path, model: type[M]) -> M:
    """Read a YAML mapping from `path` and validate it as `model`; raises ConfigError
    naming the file (and the fields) when it cannot be used."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc)}") from exc


def load_config(path: Path) -> DeploymentConfig:
    return load_yaml_model(path, DeploymentConfig)
